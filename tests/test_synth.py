"""Synthetic dataset: determinism, DESED layout, label coverage and round trip through the loader."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from harmonia.data.datasets import load_dataset
from harmonia.data.synth import CLASSES, EVENT_SECONDS, synthesize

SPLITS = ("train", "valid", "test")
CLIPS, SECONDS, SR = 30, 2.0, 16000


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("synth")
    a = synthesize(base / "a", clips=CLIPS, seconds=SECONDS, seed=7, sample_rate=SR)
    b = synthesize(base / "b", clips=CLIPS, seconds=SECONDS, seed=7, sample_rate=SR)
    c = synthesize(base / "c", clips=CLIPS, seconds=SECONDS, seed=8, sample_rate=SR)
    return a, b, c


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _strong(root: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(root / "metadata" / f"{split}.tsv", sep="\t", dtype={"event_label": str})


def _weak(root: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(root / "metadata" / f"{split}_weak.tsv", sep="\t", dtype=str, keep_default_na=False)


def test_same_arguments_give_identical_bytes(runs):
    a, b, c = runs
    fa, fb = _files(a), _files(b)
    assert len(fa) == CLIPS + 3 * 2 + 2
    assert fa.keys() == fb.keys()
    assert [k for k in fa if fa[k] != fb[k]] == []
    fc = _files(c)
    assert fa["metadata/train.tsv"] != fc["metadata/train.tsv"]
    assert fa["audio/train/synth_000000.wav"] != fc["audio/train/synth_000000.wav"]


def test_metadata_headers_and_classes(runs):
    root = runs[0]
    meta = root / "metadata"
    for split in SPLITS:
        assert (meta / f"{split}.tsv").read_text().splitlines()[0] == "filename\tonset\toffset\tevent_label"
        assert (meta / f"{split}_weak.tsv").read_text().splitlines()[0] == "filename\tevent_labels"
    assert (meta / "durations.tsv").read_text().splitlines()[0] == "filename\tduration"
    classes = (meta / "classes.txt").read_text().splitlines()
    assert classes == list(CLASSES) and len(classes) >= 8


def test_audio_is_16bit_mono_at_rate(runs):
    root = runs[0]
    wavs = sorted((root / "audio").rglob("*.wav"))
    assert len(wavs) == CLIPS
    for wav in wavs:
        info = sf.info(wav)
        assert (info.subtype, info.channels, info.samplerate, info.frames) == ("PCM_16", 1, SR, int(SECONDS * SR))
        y, _ = sf.read(wav)
        assert 0.0 < np.abs(y).max() < 1.0


def test_splits_are_60_20_20_and_every_class_everywhere(runs):
    root = runs[0]
    sizes = {s: len(list((root / "audio" / s).glob("*.wav"))) for s in SPLITS}
    assert sizes == {"train": 18, "valid": 6, "test": 6}
    for split in SPLITS:
        strong, weak = _strong(root, split), _weak(root, split)
        assert set(strong["event_label"]) == set(CLASSES), split
        assert set(",".join(weak["event_labels"]).split(",")) == set(CLASSES), split
        assert set(weak["filename"]) == {p.name for p in (root / "audio" / split).glob("*.wav")}


def test_events_per_clip_times_and_overlaps(runs):
    root = runs[0]
    overlaps = single = 0
    for split in SPLITS:
        strong = _strong(root, split)
        text = (root / "metadata" / f"{split}.tsv").read_text().splitlines()[1:]
        assert all(re.fullmatch(r"synth_\d{6}\.wav\t\d+\.\d{3}\t\d+\.\d{3}\t\w+", line) for line in text)
        assert (strong["onset"] >= 0).all() and (strong["offset"] <= SECONDS).all()
        length = strong["offset"] - strong["onset"]
        assert (length >= EVENT_SECONDS[0] - 1e-9).all() and (length <= EVENT_SECONDS[1] + 1e-9).all()
        for _, group in strong.groupby("filename"):
            assert 1 <= len(group) <= 4
            assert list(group["onset"]) == sorted(group["onset"])
            single += len(group) == 1
            ends = group["offset"].to_numpy()
            overlaps += any(group["onset"].to_numpy()[i + 1] < ends[: i + 1].max() for i in range(len(group) - 1))
    assert overlaps > 0
    assert single > 0


def test_weak_tsv_matches_strong(runs):
    root = runs[0]
    for split in SPLITS:
        strong = _strong(root, split).groupby("filename")["event_label"].apply(lambda s: ",".join(sorted(set(s))))
        weak = _weak(root, split).set_index("filename")["event_labels"]
        assert strong.sort_index().to_dict() == weak.sort_index().to_dict()


def test_durations_cover_every_clip(runs):
    root = runs[0]
    durations = pd.read_csv(root / "metadata" / "durations.tsv", sep="\t")
    on_disk = {p.relative_to(root / "audio").as_posix() for p in (root / "audio").rglob("*.wav")}
    assert set(durations["filename"]) == on_disk
    assert np.allclose(durations["duration"], SECONDS)


def test_loader_targets_match_weak_tsv(runs):
    root = runs[0]
    ds = load_dataset(root)
    assert ds.has_strong and ds.classes == list(CLASSES)
    for split in SPLITS:
        weak = _weak(root, split).sort_values("filename").reset_index(drop=True)
        clips = ds.split(split)
        y = ds.targets(split)
        assert y.shape == (len(weak), len(CLASSES)) and y.dtype == np.float32
        assert list(clips["clip_id"]) == [f"{split}/{f}" for f in weak["filename"]]
        rows = [[c in labels.split(",") for c in CLASSES] for labels in weak["event_labels"]]
        expected = np.array(rows, dtype=np.float32)
        np.testing.assert_array_equal(y, expected)
        strong = _strong(root, split).sort_values(["filename", "onset", "offset"], kind="stable")
        sequences = strong.groupby("filename")["event_label"].apply(list).to_dict()
        assert [sequences[f] for f in weak["filename"]] == list(clips["sequence"])


def test_difficulty_knobs_and_bad_arguments(tmp_path: Path, runs):
    easy = synthesize(tmp_path / "easy", clips=15, seconds=1.0, seed=7, snr_db=(20.0, 20.0), similarity=0.0,
                      distractors=0.0)
    hard = synthesize(tmp_path / "hard", clips=15, seconds=1.0, seed=7, snr_db=(-6.0, -6.0), similarity=1.0,
                      distractors=3.0)
    assert (easy / "metadata/train.tsv").read_text() == (hard / "metadata/train.tsv").read_text()
    y_easy, _ = sf.read(easy / "audio/train/synth_000000.wav")
    y_hard, _ = sf.read(hard / "audio/train/synth_000000.wav")
    assert not np.array_equal(y_easy, y_hard)
    with pytest.raises(ValueError, match="too few"):
        synthesize(tmp_path / "tiny", clips=5)
    with pytest.raises(ValueError, match="similarity"):
        synthesize(tmp_path / "bad", clips=15, similarity=2.0)
    with pytest.raises(ValueError, match="distractors"):
        synthesize(tmp_path / "bad", clips=15, distractors=-1.0)


def test_progress_bar_runs(tmp_path: Path, capsys):
    synthesize(tmp_path / "p", clips=15, seconds=0.5, seed=1, progress=True)
    assert len(list((tmp_path / "p" / "audio").rglob("*.wav"))) == 15
