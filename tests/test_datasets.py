"""Loader: weak-only, strong-only, DESED empty-event rows, the `validation` alias, the Arrow table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonia.data.audio import write_wav
from harmonia.data.datasets import CLIP_COLUMNS, EVENT_COLUMNS, DatasetError, load_dataset
from harmonia.data.synth import CLASSES, synthesize

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("ds") / "base", clips=20, seconds=1.5, seed=3)


@pytest.fixture
def copy(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "copy"))


def _weak_tags(root: Path, split: str) -> dict[str, list[str]]:
    weak = pd.read_csv(root / "metadata" / f"{split}_weak.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {f"{split}/{f}": sorted(t.split(",")) for f, t in zip(weak["filename"], weak["event_labels"])}


def test_full_dataset_tables(base: Path):
    ds = load_dataset(base)
    assert list(ds.clips.columns) == list(CLIP_COLUMNS)
    assert list(ds.events.columns) == list(EVENT_COLUMNS)
    assert list(dict.fromkeys(ds.clips["split"])) == list(SPLITS)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in ds.clips["path"])
    assert np.allclose(ds.clips["duration"], 1.5)
    strong = pd.read_csv(base / "metadata" / "train.tsv", sep="\t")
    train_events = ds.events[ds.events["clip_id"].str.startswith("train/")]
    assert len(train_events) == len(strong)
    assert ds.events["onset"].dtype == np.float64 and ds.events["offset"].dtype == np.float64
    for split in SPLITS:
        assert dict(zip(ds.split(split)["clip_id"], ds.split(split)["tags"])) == _weak_tags(base, split)


def test_weak_only(copy: Path, base: Path):
    for split in SPLITS:
        (copy / "metadata" / f"{split}.tsv").unlink()
    ds = load_dataset(copy)
    assert not ds.has_strong
    assert ds.events.empty and list(ds.events.columns) == list(EVENT_COLUMNS)
    assert all(seq == [] for seq in ds.clips["sequence"])
    assert ds.classes == list(CLASSES)
    for split in SPLITS:
        assert dict(zip(ds.split(split)["clip_id"], ds.split(split)["tags"])) == _weak_tags(base, split)
        assert ds.targets(split).sum(axis=1).min() >= 1


def test_strong_only_without_classes_or_durations(copy: Path, base: Path):
    for split in SPLITS:
        (copy / "metadata" / f"{split}_weak.tsv").unlink()
    (copy / "metadata" / "classes.txt").unlink()
    (copy / "metadata" / "durations.tsv").unlink()
    ds = load_dataset(copy)
    assert ds.has_strong
    assert ds.classes == sorted(CLASSES)
    assert np.allclose(ds.clips["duration"], 1.5)
    for split in SPLITS:
        assert dict(zip(ds.split(split)["clip_id"], ds.split(split)["tags"])) == _weak_tags(base, split)
    full = load_dataset(base)
    assert list(ds.clips["sequence"]) == list(full.clips["sequence"])


def test_desed_empty_event_rows(copy: Path):
    write_wav(copy / "audio" / "train" / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    write_wav(copy / "audio" / "train" / "quiet.wav", np.zeros(8000, dtype=np.float32), 16000)
    with (copy / "metadata" / "train.tsv").open("a") as fh:
        fh.write("silent.wav\t\t\t\nquiet.wav\tNaN\tNaN\tNaN\n")
    (copy / "metadata" / "durations.tsv").write_text(
        (copy / "metadata" / "durations.tsv").read_text() + "train/silent.wav\t1.000\n"
    )
    ds = load_dataset(copy)
    train = ds.split("train")
    for name, seconds in (("silent.wav", 1.0), ("quiet.wav", 0.5)):
        row = train[train["clip_id"] == f"train/{name}"].iloc[0]
        assert row["tags"] == [] and row["sequence"] == [] and row["duration"] == pytest.approx(seconds)
        assert not ds.targets("train")[train.index[train["clip_id"] == f"train/{name}"][0]].any()
        assert f"train/{name}" not in set(ds.events["clip_id"])


def test_validation_alias(copy: Path):
    meta = copy / "metadata"
    (meta / "valid.tsv").rename(meta / "validation.tsv")
    (meta / "valid_weak.tsv").rename(meta / "validation_weak.tsv")
    (copy / "audio" / "valid").rename(copy / "audio" / "validation")
    durations = meta / "durations.tsv"
    durations.write_text(durations.read_text().replace("valid/", "validation/"))
    ds = load_dataset(copy)
    valid = ds.split("valid")
    assert len(valid) == 4 and set(valid["split"]) == {"valid"}
    assert all(c.startswith("valid/") for c in valid["clip_id"])
    assert all("/audio/validation/" in p for p in valid["path"])
    assert ds.split("validation").equals(valid)
    assert ds.targets("validation").shape == (4, len(CLASSES))


def test_save_table_round_trip(base: Path, tmp_path: Path):
    ds = load_dataset(base)
    path = ds.save_table(tmp_path / "clips.parquet")
    back = pd.read_parquet(path)
    assert list(back.columns) == list(CLIP_COLUMNS)
    assert list(back["clip_id"]) == list(ds.clips["clip_id"])
    assert [list(t) for t in back["tags"]] == list(ds.clips["tags"])
    assert [list(s) for s in back["sequence"]] == list(ds.clips["sequence"])


def test_unknown_split_and_missing_root(base: Path, tmp_path: Path):
    ds = load_dataset(base)
    with pytest.raises(DatasetError, match="eval"):
        ds.split("eval")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no metadata"):
        load_dataset(tmp_path / "empty")
