"""Checker: every injected problem is reported with its file and line; strict loading refuses them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from harmonia.data.audio import AudioError, audio_info, load_audio, write_wav
from harmonia.data.data_check import CheckReport, Problem, check_dataset
from harmonia.data.datasets import DatasetError, load_dataset
from harmonia.data.synth import CLASSES, synthesize

TRAIN = "metadata/train.tsv"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("check") / "clean", clips=20, seconds=1.5, seed=5)


def _append(path: Path, rows: list[str]) -> list[int]:
    """Append rows to a tsv and return their 1-based line numbers."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + rows) + "\n")
    return list(range(len(lines) + 1, len(lines) + 1 + len(rows)))


def _first_line(path: Path, filename: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(filename + "\t"))


@pytest.fixture(scope="module")
def broken(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, int | None]]]:
    root = Path(shutil.copytree(clean, tmp_path_factory.mktemp("check") / "broken"))
    audio, meta = root / "audio" / "train", root / "metadata"
    where: dict[str, tuple[str, int | None]] = {}

    where["missing"] = (TRAIN, _first_line(meta / "train.tsv", "synth_000000.wav"))
    (audio / "synth_000000.wav").unlink()
    data = (audio / "synth_000001.wav").read_bytes()
    (audio / "synth_000001.wav").write_bytes(data[:12] + b"\xff" * 40 + data[52:])
    where["corrupt"] = ("audio/train/synth_000001.wav", None)
    (audio / "synth_000002.wav").write_text("filename\tonset\n this is a text file, not audio\n")
    where["not an audio file"] = ("audio/train/synth_000002.wav", None)
    write_wav(audio / "synth_000003.wav", np.zeros(0, dtype=np.float32), 16000)
    where["0 samples"] = ("audio/train/synth_000003.wav", None)
    (audio / "synth_000004.wav").write_bytes(b"")
    where["0 bytes"] = ("audio/train/synth_000004.wav", None)
    write_wav(audio / "synth_000005.wav", np.zeros(12000, dtype=np.float32), 8000)
    where["resampled to 16000 Hz"] = ("audio/train/synth_000005.wav", None)

    duplicate = (meta / "train.tsv").read_text().splitlines()[_first_line(meta / "train.tsv", "synth_000007.wav") - 1]
    rows = {
        "ends after the clip": "synth_000006.wav\t0.500\t9.000\tbeep",
        "starts before the clip": "synth_000006.wav\t-0.500\t0.200\tbeep",
        ">= offset": "synth_000006.wav\t0.800\t0.300\tbeep",
        "'dog' is not in metadata/classes.txt": "synth_000006.wav\t0.100\t0.300\tdog",
        "duplicate row": duplicate,
        "escapes the dataset root": "../../secret.wav\t0.100\t0.200\tbeep",
        "expected 4 tab-separated columns": "synth_000006.wav\t0.100\tbeep",
        "'abc' is not a number": "synth_000006.wav\tabc\t0.500\tbeep",
    }
    for (key, _), line in zip(rows.items(), _append(meta / "train.tsv", list(rows.values()))):
        where[key] = (TRAIN, line)

    weak = meta / "valid_weak.tsv"
    lines = weak.read_text().splitlines()
    name = lines[1].split("\t")[0]
    lines[1] = f"{name}\tbeep,cat"
    weak.write_text("\n".join(lines) + "\n")
    where["'cat' is not in metadata/classes.txt"] = ("metadata/valid_weak.tsv", 2)
    (line,) = _append(weak, [f"../{name}\tbeep"])
    where["'../"] = ("metadata/valid_weak.tsv", line)
    (line,) = _append(meta / "durations.tsv", ["train/synth_000006.wav\tlong"])
    where["'long' is not a number"] = ("metadata/durations.tsv", line)
    return root, where


@pytest.fixture(scope="module")
def broken_report(broken) -> CheckReport:
    return check_dataset(broken[0])


def _find(report: CheckReport, text: str) -> list[Problem]:
    return [p for p in report.problems if text in p.message]


def test_clean_dataset_has_no_problems(clean: Path):
    report = check_dataset(clean)
    assert report.problems == [] and report.ok
    s = report.summary
    assert s.clips_per_split == {"train": 12, "valid": 4, "test": 4}
    assert s.classes == list(CLASSES)
    events = sum(len(f.read_text().splitlines()) - 1 for f in (clean / "metadata").glob("[tv]*[!k].tsv"))
    assert sum(s.events_per_class.values()) == events
    assert all(n > 0 for n in s.events_per_class.values())
    assert s.total_hours == pytest.approx(20 * 1.5 / 3600)


@pytest.mark.parametrize(
    "key",
    [
        "missing", "corrupt", "not an audio file", "0 samples", "0 bytes", "resampled to 16000 Hz",
        "ends after the clip", "starts before the clip", ">= offset", "'dog' is not in metadata/classes.txt",
        "duplicate row", "escapes the dataset root", "expected 4 tab-separated columns", "'abc' is not a number",
        "'cat' is not in metadata/classes.txt", "'../", "'long' is not a number",
    ],
)
def test_each_injected_problem_is_reported_where_it_is(broken, broken_report: CheckReport, key: str):
    where, report = broken[1], broken_report
    text = "not found" if key == "missing" else key
    found = [(p.file, p.line) for p in _find(report, text)]
    assert where[key] in found, (key, found, [str(p) for p in report.problems])


def test_severities_and_messages(broken):
    root, _ = broken
    report = check_dataset(root)
    (missing,) = _find(report, "not found")
    assert "audio/train/synth_000000.wav" in missing.message and missing.severity == "error"
    (rate,) = _find(report, "resampled")
    assert rate.severity == "warning" and "8000 Hz" in rate.message
    (dup,) = _find(report, "duplicate row")
    assert "same as line" in dup.message
    # the broken train clips held the only click_train events: its threshold cannot be fitted (issue 10)
    (coverage,) = _find(report, "has no positive clip in train")
    assert coverage.severity == "warning" and (coverage.file, coverage.line) == ("metadata/classes.txt", 6)
    assert "'click_train'" in coverage.message
    assert {p.severity for p in report.problems if p not in (rate, coverage)} == {"error"}
    assert len(report.errors) == 16 and len(report.warnings) == 2
    assert check_dataset(root, sample_rate=8000).warnings[0].file != "audio/train/synth_000005.wav"


def test_strict_load_raises_naming_files(broken):
    root, where = broken
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    message = str(err.value)
    for key, (file, line) in where.items():
        if key != "resampled to 16000 Hz":
            assert (f"{file}:{line}" if line else file) in message, key
    assert "resampled" not in message


def test_lenient_load_drops_what_is_broken(broken, clean: Path):
    root, _ = broken
    ds = load_dataset(root, strict=False)
    ids = set(ds.clips["clip_id"])
    assert not {f"train/synth_00000{i}.wav" for i in range(5)} & ids
    assert "train/synth_000005.wav" in ids
    assert set(ds.events["event_label"]) <= set(CLASSES)
    assert len(ds.events[ds.events["clip_id"] == "train/synth_000007.wav"]) == len(
        load_dataset(clean).events.query("clip_id == 'train/synth_000007.wav'")
    )
    assert (ds.events["onset"] >= 0).all() and (ds.events["onset"] < ds.events["offset"]).all()
    assert "cat" not in {t for tags in ds.clips["tags"] for t in tags}


def test_render_lists_problems_and_summary(broken):
    root, _ = broken
    buf = io.StringIO()
    check_dataset(root).render(Console(file=buf, width=300))
    out = buf.getvalue()
    assert "audio/train/synth_000001.wav" in out and "metadata/durations.tsv" in out
    assert "Clips per split" in out and "16 errors, 2 warnings" in out
    assert out.splitlines()[0].startswith("format harmonia (auto-detected) · train: metadata/train.tsv")


def test_audio_io(tmp_path: Path):
    stereo = np.stack([np.full(800, 0.5), np.zeros(800)], axis=1).astype(np.float32)
    sf.write(tmp_path / "st.wav", stereo, 8000, subtype="PCM_16")
    y = load_audio(tmp_path / "st.wav", 16000)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 1600
    assert np.median(y) == pytest.approx(0.25, abs=0.01)
    assert audio_info(tmp_path / "st.wav") == (8000, 800, 2)
    (tmp_path / "text.wav").write_text("not audio at all")
    (tmp_path / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 100)
    write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    cases = {"missing.wav": "not found", "text.wav": "not an audio file", "song.m4a": "unsupported audio format",
             "empty.wav": "0 samples"}
    for name, reason in cases.items():
        for call in (lambda p: load_audio(p, 16000), audio_info):
            with pytest.raises(AudioError, match=reason) as err:
                call(tmp_path / name)
            assert str(tmp_path / name) in str(err.value) and "expected" in str(err.value)
