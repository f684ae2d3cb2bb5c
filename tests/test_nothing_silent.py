"""Issue 12: nothing silent, nothing lost, nothing open. Bad input is an error naming what is wrong,
deterministic trial errors are not retried, partial output is kept, integrity covers every file read,
local servers listen on loopback only, and what a person sees names what it shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harmonia.cli import app
from tests.conftest import tiny_config


def _says(output: str, expected: str) -> bool:
    """Whether `expected` is in the console output, ignoring where rich wrapped the lines."""
    return "".join(expected.split()) in "".join(output.split())


def _write_config(cfg, path: Path, **extra) -> Path:
    data = yaml.safe_load(cfg.model_dump_json()) | extra
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ 1. empty config, missing quickstart PATH
@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_config_file_is_an_error_naming_it(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    res = CliRunner().invoke(app, ["search", str(path)])
    assert res.exit_code == 2, res.output
    assert _says(res.output, f"{path}: empty config file"), res.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "ray_results").exists()


def test_quickstart_with_a_missing_path_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "configs" / "quikstart.yaml"
    res = CliRunner().invoke(app, ["quickstart", str(missing)])
    assert res.exit_code == 2, res.output
    assert _says(res.output, f"{missing}: config file not found"), res.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns.db").exists()


def test_quickstart_without_a_path_takes_the_packaged_config(tmp_path, monkeypatch):
    from harmonia.cli import QUICKSTART_CONFIG, quickstart_config

    monkeypatch.chdir(tmp_path)
    assert quickstart_config(None) is None  # no configs/quickstart.yaml here: the built-in defaults
    (tmp_path / "configs").mkdir()
    (tmp_path / QUICKSTART_CONFIG).write_text("name: here\n")
    assert quickstart_config(None) == QUICKSTART_CONFIG
    assert quickstart_config(Path("other.yaml")) == Path("other.yaml")


# ------------------------------------------------------------------ 2. every parameter has a domain
@pytest.mark.parametrize("override, expected", [
    ({"lr": {"low": -0.1, "high": 0.01, "log": False}}, "space.lr: range end -0.1 is outside the parameter's "
                                                         "domain: a number > 0"),
    ({"lr": 0}, "space.lr: 0 is outside the parameter's domain: a number > 0"),
    ({"crnn.dropout": 1.0}, "space.crnn.dropout: 1.0 is outside the parameter's domain: a number in [0, 1)"),
    ({"tid.p": [0.2, 1.5]}, "space.tid.p: choice 1.5 is outside the parameter's domain: a number in [0, 1]"),
    ({"chunkmix.p": {"low": 0.5, "high": 1.2}}, "space.chunkmix.p: range end 1.2 is outside"),
    ({"crnn.channels": [0, 8]}, "space.crnn.channels: choice 0 is outside the parameter's domain: an integer >= 1"),
    ({"crnn.blocks": {"low": 0, "high": 3}}, "space.crnn.blocks: range end 0 is outside the parameter's domain: "
                                              "an integer >= 1"),
    ({"mixup.alpha": -1.0}, "space.mixup.alpha: -1.0 is outside the parameter's domain: a number > 0"),
    ({"specaugment.time_width": 2.5}, "space.specaugment.time_width: 2.5 is outside the parameter's domain: "
                                      "an integer >= 1"),
])
def test_override_outside_the_domain_is_refused_before_ray(tmp_path, monkeypatch, override, expected):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path)
    path = _write_config(cfg, tmp_path / "config.yaml", space={**cfg.space, **override})
    res = CliRunner().invoke(app, ["search", str(path)])
    assert res.exit_code == 2, res.output
    assert _says(res.output, expected), res.output
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "data").exists()


def test_every_numeric_parameter_declares_a_domain_its_defaults_lie_in():
    from harmonia.spaces.compose import training_space
    from harmonia.spaces.architectures import ARCHITECTURE_SPACES
    from harmonia.spaces.augmentations import AUGMENTATION_SPACES
    from harmonia.spaces.core import RecordingTrial, Space

    seen = {}
    for fn in [*ARCHITECTURE_SPACES.values(), *AUGMENTATION_SPACES.values(), training_space]:
        s = Space(RecordingTrial())
        fn(s)
        for name, default in s.defaults.items():
            seen[name] = (s.domains[name], default)
    numeric = {n: v for n, v in seen.items()
               if isinstance(v[1], tuple) or all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                 for c in v[1])}
    assert {"lr", "batch_size", "crnn.dropout", "tid.p", "chunkmix.p", "specaugment.freq_width"} <= set(numeric)
    missing = sorted(n for n, (domain, _) in numeric.items() if domain is None)
    assert not missing, f"numeric parameters without a domain: {missing}"
    assert str(seen["lr"][0]) == "a number > 0" and str(seen["crnn.dropout"][0]) == "a number in [0, 1)"
    assert str(seen["batch_size"][0]) == "an integer >= 1" and str(seen["tid.p"][0]) == "a number in [0, 1]"


# ------------------------------------------------------------------ 3. no dataset generated at a typo
def test_mistyped_data_root_is_an_error_not_a_new_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path)
    raw = yaml.safe_load(cfg.model_dump_json())
    raw["data"] = {"root": "data/synht", "synth": {"clips": 12, "seconds": 1.0}}  # default synth.root: data/synth
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["search", str(path)])
    assert res.exit_code == 2, res.output
    typo = tmp_path.resolve() / "data" / "synht"
    assert _says(res.output, f"data.root {typo}: no dataset here"), res.output
    assert _says(res.output, f"only at its default location {tmp_path.resolve() / 'data' / 'synth'}"), res.output
    assert _says(res.output, f"harmonia data synth {typo}"), res.output
    assert not typo.exists() and not (tmp_path / "data" / "synth").exists()
    assert not (tmp_path / "ray_results").exists()


def test_missing_dataset_at_the_default_location_is_generated(tmp_path, monkeypatch):
    from harmonia.config import parse_config
    from harmonia.featureset import load_data

    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"data": {"synth": {"clips": 30, "seconds": 1.0}}}).resolved(tmp_path)
    ds = load_data(cfg, progress=False)
    assert Path(cfg.data.root) == tmp_path.resolve() / "data" / "synth"
    assert len(ds.clips) == 30 and (tmp_path / "data" / "synth" / "metadata").is_dir()


# ------------------------------------------------------------------ 4. a trial's own error is not retried
def test_deterministic_trial_errors_are_not_retried_and_a_search_of_failures_fails(ray_local, tmp_path, capfd):
    from harmonia import tracking

    cfg = tiny_config(tmp_path, name="allnan", num_samples=2, max_epochs=2, max_concurrent=2)
    cfg.space["lr"] = 1e30  # Adam at lr 1e30: non-finite loss in epoch 1, every time
    cfg.search.max_failures = 3
    path = _write_config(cfg, tmp_path / "config.yaml")
    res = CliRunner().invoke(app, ["search", str(path)])
    out = res.output + "".join(capfd.readouterr())
    assert res.exit_code == 1, out
    assert _says(out, "search allnan: all 2 trials failed; the search run is marked FAILED"), out
    assert _says(out, "2 × NonFiniteLossError"), out
    assert out.count("failed: NonFiniteLossError") == 2, out  # one console line per trial
    assert "Traceback" not in out, out
    # one attempt each: Tune wrote one failure per trial, and no retry reopened the run
    errors = sorted((tmp_path / "ray_results" / "allnan").glob("*/error.txt"))
    assert len(errors) == 2 and all(e.read_text().count("Failure #") == 1 for e in errors)
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name("allnan")
    runs = c.search_runs([exp.experiment_id])
    search = [r for r in runs if r.data.tags[tracking.KIND_TAG] == "search"]
    trials = [r for r in runs if r.data.tags[tracking.KIND_TAG] == "trial"]
    assert len(search) == 1 and search[0].info.status == "FAILED"
    assert "2 × NonFiniteLossError" in search[0].data.tags["harmonia.error"]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FAILED"}
    assert all(r.data.tags["harmonia.error"].startswith("NonFiniteLossError") for r in trials)


def test_infrastructure_errors_stay_retryable_and_own_errors_do_not():
    import torch

    from harmonia.tracking import TrackingError
    from harmonia.trainables.failures import TrialFailed, is_deterministic
    from harmonia.trainables.training import NonFiniteLossError

    own = [NonFiniteLossError("loss nan"), ValueError("bad config"),
           RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x2)"), TrialFailed("x")]
    infra = [ConnectionError("reset"), OSError(28, "No space left on device"), TrackingError("unreachable"),
             torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("CUDA error: an illegal memory access")]
    assert [is_deterministic(e) for e in own] == [True] * len(own)
    assert [is_deterministic(e) for e in infra] == [False] * len(infra)


# ------------------------------------------------------------------ 7. a corrupt WAV is named a WAV
def test_corrupt_wav_names_the_format_its_extension_and_header_claim(tmp_path):
    import numpy as np

    from harmonia.data.audio import AudioError, audio_info, load_audio, write_wav

    good = tmp_path / "good.wav"
    write_wav(good, np.zeros(1600, np.float32), 16000)
    data = good.read_bytes()
    cases = {
        "sync.wav": (b"\xff\xfb" + data[2:], "corrupt or unreadable WAV file (named .wav, but it does not start "
                                             "with a WAV header: first bytes ff fb 46 46"),
        "garbage.wav": (b"\xff" * 200, "corrupt or unreadable WAV file (named .wav, but it does not start with a "
                                       "WAV header: first bytes ff ff ff ff ff ff ff ff)"),
        "riff.wav": (data[:12] + b"\xff" * 40 + data[52:], "corrupt or unreadable WAV file (its header could not "
                                                           "be parsed)"),
        "flac.wav": (b"fLaC" + b"\x00" * 100, "named .wav (WAV) but its header is FLAC"),
        "real.mp3": (b"\xff\xfb" + b"\x00" * 100, "corrupt or unreadable MP3 file"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for read in (lambda p: audio_info(p), lambda p: load_audio(p, 16000)):
            with pytest.raises(AudioError) as err:
                read(path)
            assert expected in err.value.reason and str(path) in str(err.value), (name, err.value.reason)
            if name.endswith(".wav"):
                assert "MP3" not in err.value.reason, (name, err.value.reason)


# ------------------------------------------------------------------ 5, 6, 8: predict, export, bundle integrity
@pytest.fixture(scope="module")
def bundled(searched, tmp_path_factory):
    """An ensemble run of the shared search and its exported bundle."""
    from harmonia.ensembles.bundle import export_bundle
    from harmonia.ensembles.stage import build_ensemble

    cfg, result = searched
    report = build_ensemble(cfg.tracking.uri, cfg.name, method="selection", size=5, metric="mAP", top_k=2,
                            progress=False)
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path_factory.mktemp("bundled") / "bundle")
    return cfg, result, report.run_id, out


def test_predict_writes_the_good_files_and_reports_each_bad_one(bundled, tmp_path):
    import pandas as pd

    from harmonia.data.datasets import load_dataset

    cfg, _, _, bundle = bundled
    a, c = list(load_dataset(cfg.data.root).split("test")["path"][:2])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio\n" * 20)
    missing = tmp_path / "gone.wav"
    out = tmp_path / "tags.tsv"
    res = CliRunner().invoke(app, ["predict", str(bundle), a, str(bad), c, str(missing), "-o", str(out)])
    assert res.exit_code == 1, res.output
    df = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert list(df["filename"]) == [a, c]
    assert _says(res.output, f"skipped: {bad}: not an audio file (content is text"), res.output
    assert _says(res.output, f"skipped: {missing}: file not found"), res.output
    assert _says(res.output, f"2 of 4 files could not be read; their rows are missing from {out}"), res.output
    assert _says(res.output, f"wrote 2 rows to {out}"), res.output


def test_export_refuses_a_non_empty_folder_unless_forced(bundled, tmp_path):
    cfg, _, run_id, _ = bundled
    out = tmp_path / "b"
    out.mkdir()
    (out / "quickstart_tags.tsv").write_text("keep me\n")
    args = ["export", str(out), "--run", run_id, "--tracking-uri", cfg.tracking.uri]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert _says(res.output, f"{out}: not empty (quickstart_tags.tsv)"), res.output
    assert _says(res.output, "pass --force"), res.output
    assert (out / "quickstart_tags.tsv").read_text() == "keep me\n" and not (out / "ensemble.json").exists()
    res = CliRunner().invoke(app, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert (out / "ensemble.json").is_file() and not (out / "quickstart_tags.tsv").exists()


def test_export_of_an_unknown_or_a_non_ensemble_run_says_what_it_is_in_one_line(bundled, tmp_path):
    from harmonia import tracking

    cfg, result, run_id, _ = bundled
    trial_id = next(r for r in result.trials["run_id"] if r)
    cases = {"0123456789abcdef0123456789abcdef": "no run with this id in",
             trial_id: f"a trial run of experiment {cfg.name}, not an ensemble run",
             result.search_run_id: f"a search run of experiment {cfg.name}, not an ensemble run"}
    for rid, expected in cases.items():
        out = tmp_path / rid
        res = CliRunner().invoke(app, ["export", str(out), "--run", rid, "--tracking-uri", cfg.tracking.uri])
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output and res.output.startswith("error: "), res.output
        assert _says(res.output, f"--run {rid}: {expected}"), res.output
        assert _says(res.output, f"ensemble runs: {run_id}"), res.output
        assert _says(res.output, f"tags.{tracking.KIND_TAG} = 'ensemble'"), res.output
        assert not out.exists()


def _copy_bundle(bundle: Path, dst: Path) -> tuple[Path, dict]:
    import json
    import shutil

    shutil.copytree(bundle, dst)
    return dst, json.loads((dst / "ensemble.json").read_text())


def _save(bundle: Path, spec: dict) -> None:
    import json

    (bundle / "ensemble.json").write_text(json.dumps(spec))


def test_bundle_hashes_cover_every_file_the_loader_reads(bundled, tmp_path):
    from harmonia.ensembles.bundle import BundleError
    from harmonia.ensembles.predictor import EnsemblePredictor

    _, _, _, bundle = bundled
    # an emptied sha256 map with tampered weights must not load
    b, spec = _copy_bundle(bundle, tmp_path / "emptied")
    member = spec["members"][0]
    weights = b / member["path"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    member["sha256"] = {}
    _save(b, spec)
    with pytest.raises(BundleError, match=r"config.json is read by the loader but not listed in its sha256 map"):
        EnsemblePredictor.load(b)
    # config.json listed but the weights not
    b, spec = _copy_bundle(bundle, tmp_path / "weights")
    spec["members"][0]["sha256"].pop("model.safetensors")
    _save(b, spec)
    with pytest.raises(BundleError, match=r"model.safetensors is read by the loader but not listed"):
        EnsemblePredictor.load(b)
    # a tampered config.json (listed) is refused before it is parsed
    b, spec = _copy_bundle(bundle, tmp_path / "config")
    cfg_file = b / spec["members"][0]["path"] / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"arch"', '"arch" ', 1))
    with pytest.raises(BundleError, match="config.json: hash mismatch"):
        EnsemblePredictor.load(b)
    assert EnsemblePredictor.load(bundle).members  # the untouched bundle still loads


@pytest.mark.parametrize("where", ["key", "path"])
def test_bundle_paths_and_hash_keys_outside_the_bundle_are_refused(bundled, tmp_path, where):
    from harmonia.ensembles.bundle import BundleError, read_bundle, sha256

    _, _, _, bundle = bundled
    b, spec = _copy_bundle(bundle, tmp_path / "escape")
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours\n")
    member = spec["members"][0]
    if where == "key":
        key = "../../../outside.txt"
        assert (b / member["path"] / key).resolve() == outside.resolve()
        member["sha256"][key] = sha256(outside)
        expected = r"hashed file '\.\./\.\./\.\./outside\.txt' resolves outside its folder"
    else:
        member["path"] = "members/../.."  # the bundle's parent folder
        assert (b / member["path"]).resolve() == tmp_path.resolve()
        expected = r"member path 'members/\.\./\.\.' escapes the bundle"
    _save(b, spec)
    with pytest.raises(BundleError, match=expected):
        read_bundle(b)


# ------------------------------------------------------------------ 10. spaces show: ranges, sampleable parts
def test_spaces_show_prints_ranges_and_only_the_sampleable_architectures(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("space:\n  arch: [crnn, cnn8]\n  crnn.dropout: {low: 0.1, high: 0.3}\n  lr: 0.003\n"
                    "  aug.tid: false\n")
    res = CliRunner().invoke(app, ["spaces", "show", str(path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip()
            for line in res.output.splitlines() if line.count("│") == 4}
    assert rows["arch"] == "choices crnn, cnn8"
    assert rows["crnn.blocks"] == "range [2, 4]" and rows["crnn.dropout"] == "range [0.1, 0.3]"
    assert rows["crnn.pooling"] == "choices max, avg, attention" and rows["cnn8.channels"] == "choices 16, 32, 64"
    assert rows["lr"] == "fixed 0.003" and rows["batch_size"] == "choices 16, 32, 64"
    assert rows["mixup.alpha"] == "range [0.1, 2] log" and rows["aug.mixup"] == "on or off"
    assert rows["aug.tid"] == "off" and "tid.p" not in rows
    assert not any(n.startswith(("gated_crnn.", "elu_crnn.", "multi_input_cnn.", "crnn_ctc.")) for n in rows)
    assert "default" not in " ".join(rows.values())
    path.write_text("task: sequence\nsearch: {metric: seq_acc}\n")
    res = CliRunner().invoke(app, ["spaces", "show", str(path)], env={"COLUMNS": "200"})
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip()
            for line in res.output.splitlines() if line.count("│") == 4}
    assert res.exit_code == 0 and rows["arch"] == "fixed crnn_ctc" and "crnn.blocks" not in rows
    assert "aug.mixup" not in rows and "crnn_ctc.time_pool" in rows


# ------------------------------------------------------------------ 11. noise: dcase_util, pyfunc type hints
def test_sed_eval_import_shows_no_pkg_resources_warning():
    import subprocess
    import sys

    code = "from harmonia.metrics import import_sed_eval; print(import_sed_eval().__name__)"
    p = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "sed_eval", p.stderr
    assert "pkg_resources" not in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-W", "default", "-c",
                        "import harmonia.metrics, sys; print('dcase_util' in sys.modules)"],
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "False", "dcase_util is imported only where event metrics are computed"


def test_registered_pyfunc_has_a_signature_and_no_type_hint_warning(bundled, tmp_path):
    import warnings

    import mlflow

    from harmonia.data.datasets import load_dataset
    from harmonia.ensembles.bundle import register_model
    from harmonia.ensembles.predictor import EnsemblePredictor

    cfg, _, run_id, bundle = bundled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = register_model(cfg.tracking.uri, bundle, run_id, "harmonia-noise")
    noise = [str(w.message) for w in caught if "type hints" in str(w.message) or "input example" in str(w.message)]
    assert not noise, noise
    mlflow.set_tracking_uri(cfg.tracking.uri)
    sig = mlflow.models.get_model_info(ref).signature
    classes = EnsemblePredictor.load(bundle).classes
    assert sig.inputs.input_names() == ["path", "audio"]  # audio paths, or audio bytes (tests/test_serving.py)
    assert sig.outputs.input_names() == ["filename", *classes, "event_labels"]
    wav = str(load_dataset(cfg.data.root).split("test")["path"].iloc[0])
    import pandas as pd

    out = mlflow.pyfunc.load_model(ref).predict(pd.DataFrame({"path": [wav]}))
    expected = EnsemblePredictor.load(bundle).predict_files([wav])
    assert list(out["filename"]) == [wav] and list(out.columns) == list(expected.columns)
    assert abs(out[classes].to_numpy() - expected[classes].to_numpy()).max() < 1e-6


# ------------------------------------------------------------------ 12. trial run names, experiment description
def test_trial_runs_are_named_at_a_glance_and_the_experiment_is_described(searched):
    from harmonia import tracking
    from harmonia.trainables.naming import trial_run_name

    assert trial_run_name({"arch": "crnn", "crnn.pooling": "attention", "aug.mixup": True, "aug.tid": True,
                           "aug.chunkmix": False, "mixup.alpha": 1.0}, 7) == "crnn-attention mixup+tid #7"
    assert trial_run_name({"arch": "cnn8", "cnn8.pooling": "max"}, 1) == "cnn8-max no-aug #1"
    cfg, result = searched
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment(result.experiment_id)
    assert exp.tags["mlflow.note.content"].startswith(f"harmonia search `{cfg.name}`: task tagging")
    assert "`ARCH-POOLING AUGMENTATIONS #N`" in exp.tags["mlflow.note.content"]
    runs = c.search_runs([result.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")
    assert len(runs) == 4
    numbers = []
    for r in runs:
        p = r.data.params
        augs = sorted(k[4:] for k, v in p.items() if k.startswith("aug.") and k.count(".") == 1 and v == "True")
        head, _, n = r.info.run_name.rpartition(" #")
        assert head == f"crnn-{p['crnn.pooling']} {'+'.join(augs) or 'no-aug'}", r.info.run_name
        numbers.append(int(n))
    assert sorted(numbers) == [1, 2, 3, 4]
