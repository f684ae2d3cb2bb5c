"""Bad input through `harmonia search`: a clear error naming the file and line or the key, before any
trial starts, and nothing already computed (feature cache, finished runs) lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harmonia.cli import app
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A tiny synthesized dataset with its feature cache filled."""
    from harmonia.featureset import prepare

    base = tmp_path_factory.mktemp("clean")
    cfg = tiny_config(base, name="bad")
    prepare(cfg, progress=False)
    return base, cfg


def _tsv_append(root: Path, row: str, split: str = "train") -> int:
    path = root / "metadata" / f"{split}.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, row]) + "\n")
    return len(lines) + 1


def _first_train_wav(root: Path) -> Path:
    return sorted((root / "audio" / "train").glob("*.wav"))[0]


def _break_audio(content: bytes):
    def apply(root: Path) -> str:
        wav = _first_train_wav(root)
        wav.write_bytes(content)
        return wav.name
    return apply


def _break_row(row_of):
    def apply(root: Path) -> str:
        first = (root / "metadata" / "train.tsv").read_text().splitlines()[1].split("\t")[0]
        line = _tsv_append(root, row_of(first))
        return f"train.tsv:{line}"
    return apply


DATASET_CASES = {
    "corrupt wav": _break_audio(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40),
    "zero-length file": _break_audio(b""),
    "text named .wav": _break_audio(b"this is not audio\n" * 20),
    "unsupported format": _break_audio(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200),
    "row naming a missing file": _break_row(lambda f: "ghost.wav\t0.1\t0.5\tbeep"),
    "onset after offset": _break_row(lambda f: f"{f}\t1.5\t0.5\tbeep"),
    "negative time": _break_row(lambda f: f"{f}\t-0.5\t0.5\tbeep"),
    "event past the end": _break_row(lambda f: f"{f}\t0.5\t99.0\tbeep"),
    "unknown label": _break_row(lambda f: f"{f}\t0.1\t0.5\tdragon"),
    "filename escaping the root": _break_row(lambda f: "../../etc/passwd\t0.1\t0.5\tbeep"),
}


def _duplicate(root: Path) -> str:
    rows = (root / "metadata" / "train.tsv").read_text().splitlines()
    return f"train.tsv:{_tsv_append(root, rows[1])}"


DATASET_CASES["duplicate row"] = _duplicate


def _run(cfg, base: Path, extra: dict | None = None, raw: str | None = None):
    path = base / "config.yaml"
    data = yaml.safe_load(cfg.model_dump_json()) | (extra or {})
    path.write_text(raw if raw is not None else yaml.safe_dump(data))
    return CliRunner().invoke(app, ["search", str(path)])


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_dataset_is_refused_before_any_trial(clean, tmp_path, case):
    base, cfg = clean
    root = tmp_path / "data"
    shutil.copytree(base / "data", root)
    cache = Path(cfg.features.cache_dir)
    before = sorted(p.name for p in cache.rglob("*.npy"))
    where = DATASET_CASES[case](root)
    c = cfg.model_copy(deep=True)
    c.data.root = str(root)
    c.search.storage_path = str(tmp_path / "ray_results")
    res = _run(c, tmp_path)
    assert res.exit_code == 2, res.output
    assert where in res.output.replace("\n", "")
    assert not (tmp_path / "ray_results").exists()  # no Tuner, no trial
    assert sorted(p.name for p in cache.rglob("*.npy")) == before  # the cache is intact


@pytest.mark.parametrize("extra, raw, expected", [
    (None, "name: x\nsearch: [1, 2\n", "config.yaml:"),
    ({"search": {"num_sample": 3}}, None, "search.num_sample"),
    ({"search": {"num_samples": "many"}}, None, "search.num_samples"),
    ({"space": {"batch_size": []}}, None, "space.batch_size: empty choice list"),
    ({"space": {"lr": {"low": 1.0, "high": 0.1}}}, None, "space.lr: inverted"),
    ({"space": {"crnn.blockz": 2}}, None, "space.crnn.blockz: unknown parameter"),
])
def test_bad_config_is_refused_naming_the_key(clean, tmp_path, extra, raw, expected):
    _, cfg = clean
    c = cfg.model_copy(deep=True)
    c.search.storage_path = str(tmp_path / "ray_results")
    if extra and "search" in extra:
        extra = {"search": {**yaml.safe_load(c.search.model_dump_json()), **extra["search"]}}
    res = _run(c, tmp_path, extra, raw)
    assert res.exit_code == 2, res.output
    assert expected in res.output.replace("\n", " ")
    assert not (tmp_path / "ray_results").exists()


def test_mixed_sample_rates_are_resampled_not_refused(clean, tmp_path):
    import numpy as np

    from harmonia.data.audio import audio_info, load_audio, write_wav
    from harmonia.data.data_check import check_dataset

    base, cfg = clean
    root = tmp_path / "data"
    shutil.copytree(base / "data", root)
    wav = _first_train_wav(root)
    y = load_audio(wav, 16000)
    import librosa
    write_wav(wav, librosa.resample(y, orig_sr=16000, target_sr=22050), 22050)
    assert audio_info(wav)[0] == 22050
    report = check_dataset(root)
    assert not report.errors and any("resampled" in p.message for p in report.warnings)
    assert np.isfinite(load_audio(wav, 16000)).all()
