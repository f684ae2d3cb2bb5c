"""Issue 12: the registered pyfunc takes audio bytes as well as paths: raw bytes from Python, base64 text
over HTTP. A real `mlflow models serve` on loopback scores a posted WAV as `harmonia predict` scores
the file; a bad row is an error naming the row and the expected format."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from harmonia.ensembles.serving import AUDIO_COLUMN, PATH_COLUMN, ServingInputError, audio_bytes, parse_rows

from tests.test_nothing_silent import bundled  # noqa: F401  (the module fixture: search → ensemble → bundle)

WAV = b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00"  # the start of a real WAV header (NUL bytes in it)


def test_audio_cells_take_raw_bytes_or_base64_text():
    b64 = base64.b64encode(WAV)
    assert audio_bytes(WAV) == WAV
    assert audio_bytes(b64.decode()) == WAV  # str (a Python caller, MLflow's dataframe_* JSON decoded)
    assert audio_bytes(b64) == WAV  # bytes of base64 text: what MLflow's `inputs` JSON passes through
    assert audio_bytes(base64.encodebytes(WAV * 8).decode()) == WAV * 8  # line-wrapped base64
    assert audio_bytes(b"thisisnotaudio12") == b"thisisnotaudio12"  # base64 characters, but no audio inside
    with pytest.raises(ValueError, match="not valid base64.*paths go in the `path` column"):
        audio_bytes("clips/a.wav")
    with pytest.raises(ValueError, match="a int"):
        audio_bytes(3)


def test_request_rows_are_named_and_each_bad_row_is_reported():
    df = pd.DataFrame({PATH_COLUMN: ["a.wav", None, "c.wav", None, None],
                       AUDIO_COLUMN: [None, WAV, WAV, None, "not base64!"]})
    rows, bad = parse_rows(df)
    assert [r.name if r else None for r in rows] == ["a.wav", "audio[1]", None, None, None]
    assert rows[1].source == WAV
    assert bad == {2: "both `path` and `audio` given (expected one per row)",
                   3: "neither `path` nor `audio` given (expected one per row)",
                   4: bad[4]} and bad[4].startswith("`audio`: text that is not valid base64")
    assert [r.source for r in parse_rows([WAV, WAV])[0]] == [WAV, WAV]
    assert [r.source for r in parse_rows(["x.wav"])[0]] == ["x.wav"]
    with pytest.raises(ServingInputError, match=r"columns \['file'\]; expected a `path` column .* or an `audio`"):
        parse_rows(pd.DataFrame({"file": ["x.wav"]}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, limit_s: float = 240) -> None:
    t = time.time()
    while time.time() - t < limit_s:
        assert proc.poll() is None, f"mlflow models serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise AssertionError(f"mlflow models serve not up after {limit_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_served_model_scores_posted_wav_like_harmonia_predict(bundled, tmp_path):  # noqa: F811
    import mlflow
    from typer.testing import CliRunner

    from harmonia.cli import app
    from harmonia.data.datasets import load_dataset
    from harmonia.ensembles.bundle import register_model

    cfg, _, run_id, bundle = bundled
    ref = register_model(cfg.tracking.uri, bundle, run_id, "harmonia-serving")
    mlflow.set_tracking_uri(cfg.tracking.uri)
    sig = mlflow.models.get_model_info(ref).signature
    assert [(c.name, c.type.name, c.required) for c in sig.inputs.inputs] == [
        ("path", "string", False), ("audio", "binary", False)]
    wav = str(load_dataset(cfg.data.root).split("test")["path"].iloc[0])
    data = Path(wav).read_bytes()
    tsv = tmp_path / "tags.tsv"
    res = CliRunner().invoke(app, ["predict", str(bundle), wav, "-o", str(tsv)])
    assert res.exit_code == 0, res.output
    expected = pd.read_csv(tsv, sep="\t", keep_default_na=False)
    classes = [c for c in expected.columns if c not in ("filename", "event_labels")]

    def same_scores(rows: pd.DataFrame) -> None:
        assert abs(rows[classes].to_numpy(float) - expected[classes].to_numpy(float)).max() < 1e-6
        assert list(rows["event_labels"]) == list(expected["event_labels"])

    # from Python: raw bytes, and a path and bytes in one request
    model = mlflow.pyfunc.load_model(ref)
    out = model.predict(pd.DataFrame({"audio": [data]}))
    assert list(out["filename"]) == ["audio[0]"]
    same_scores(out)
    both = model.predict(pd.DataFrame({"path": [wav, None], "audio": [None, data]}))
    assert list(both["filename"]) == [wav, "audio[1]"]
    same_scores(both.iloc[:1]), same_scores(both.iloc[1:])

    port, log = _free_port(), tmp_path / "serve.log"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", ref, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking.uri}
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/ping", proc, log)
        url = f"http://127.0.0.1:{port}/invocations"
        b64 = base64.b64encode(data).decode()
        for payload in ({"dataframe_split": {"columns": ["audio"], "data": [[b64]]}},
                        {"inputs": {"audio": [b64]}}):
            status, body = _post(url, payload)
            assert status == 200, body
            served = pd.DataFrame(body["predictions"])
            assert list(served["filename"]) == ["audio[0]"], body
            same_scores(served)
        status, body = _post(url, {"dataframe_split": {"columns": ["audio"], "data": [[b64], [base64.b64encode(
            b"this is not audio\n" * 4).decode()]]}})
        assert status == 400, body
        assert "1 of 2 input rows cannot be scored: row 1: `audio`: not audio (content is text; expected the " \
               "bytes of a WAV, FLAC" in body["message"], body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
