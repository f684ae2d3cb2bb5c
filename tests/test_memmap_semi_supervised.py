"""Memory-mapped features carry what semi-supervised trials read: the `unlabeled` split's features and the
`verified` flags (FSDKaggle2018's manually_verified), the same bits as in memory and the same training.
On real WAV files written into tmp (tests/test_memmap_features.py's two-tone clips)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harmonia.data.audio import write_wav
from harmonia.data.datasets import Dataset
from harmonia.feature_store import MappedFeatureSet, build_mapped_feature_set, load_feature_sets, scan_cache
from harmonia.featureset import FeatureSet, build_feature_set
from harmonia.trainables.training import Trainer

from tests.test_memmap_features import PARAMS, SR, clip_audio, feature_config, make_dataset

SEMI = {"semi.mean_teacher": True, "mean_teacher.ema_decay": 0.99, "mean_teacher.weight": 1.0,
        "mean_teacher.rampup_epochs": 1, "semi.label_smoothing": True, "label_smoothing.epsilon": 0.2}


def with_unlabeled_and_verified(ds: Dataset, n: int = 5) -> Dataset:
    """`ds` plus `n` unlabelled clips (WAVs with events nobody annotated) and a `verified` column: every third
    train clip "0" (unverified), the rest "1", valid/test empty (verified, as the FSDKaggle2018 test set)."""
    rows = []
    for i in range(n):
        clip_id = f"unlabeled{i}"
        path = ds.root / "audio" / f"{clip_id}.wav"
        label = ("low", "high")[i % 2]
        write_wav(path, clip_audio(1.1, [(0.2, 0.7, label)], seed=zlib.crc32(clip_id.encode())), SR)
        rows.append((clip_id, str(path), "unlabeled", 1.1, [], []))
    clips = pd.concat([ds.clips, pd.DataFrame(rows, columns=list(ds.clips.columns))], ignore_index=True)
    train_index = clips.groupby("split").cumcount()
    clips["verified"] = np.where(clips["split"] != "train", "", np.where(train_index % 3 == 0, "0", "1"))
    return Dataset(ds.root, ds.classes, clips, ds.events, has_strong=True)


@pytest.fixture(scope="module")
def semi(tmp_path_factory) -> tuple[Dataset, object, FeatureSet, MappedFeatureSet]:
    root = tmp_path_factory.mktemp("memmap_semi")
    ds = with_unlabeled_and_verified(make_dataset(root))
    cfg = feature_config(root)
    fs = build_feature_set(ds, cfg, progress=False, workers=1, unlabeled=True)
    return ds, cfg, fs, build_mapped_feature_set(ds, cfg, progress=False, workers=1, unlabeled=True)


def test_mapped_set_carries_the_unlabeled_clips_and_verified_flags(semi):
    ds, cfg, fs, handle = semi
    ms = handle.open()
    assert ms.unlabeled is not None and isinstance(ms.unlabeled.x, np.memmap)
    assert ms.unlabeled.clip_ids == fs.unlabeled.clip_ids == [f"unlabeled{i}" for i in range(5)]
    np.testing.assert_array_equal(np.asarray(ms.unlabeled.x), fs.unlabeled.x)  # normalized with the train stats
    np.testing.assert_array_equal(ms.unlabeled.y, fs.unlabeled.y)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(ms.splits[split].verified, fs.splits[split].verified, err_msg=split)
    assert ms.splits["train"].verified.tolist() == [i % 3 != 0 for i in range(9)]
    assert ms.splits["valid"].verified.all()
    # the budget counts the unlabelled features: the scan sizes the in-memory set, unlabelled rows included
    arrays = list(fs.splits.values())
    nbytes = scan_cache(ds, cfg, workers=1, progress=False, unlabeled=True).nbytes
    assert nbytes == sum(a.x.nbytes + a.y_frames.nbytes for a in arrays) + fs.unlabeled.x.nbytes
    # above it a semi-supervised search memory-maps them too (it used to hold them in memory)
    below = cfg.model_copy(update={"memory_budget_mb": (nbytes - 1) / 2**20})
    assert load_feature_sets(ds, below, ["logmel"], progress=False, workers=1, unlabeled=True) == {"logmel": handle}
    # a search without semi-supervised methods gets its own folder, without the unlabelled clips
    plain = build_mapped_feature_set(ds, cfg, progress=False, workers=1)
    assert plain.key != handle.key and plain.open().unlabeled is None
    assert not (Path(plain.root) / "unlabeled.x.npy").exists()
    np.testing.assert_array_equal(plain.open().splits["train"].verified, fs.splits["train"].verified)


def test_the_verified_flags_are_part_of_the_key(semi):
    ds, cfg, _, handle = semi
    flipped = ds.clips.assign(verified=ds.clips["verified"].replace({"0": "1"}))
    other = build_mapped_feature_set(Dataset(ds.root, ds.classes, flipped, ds.events, True), cfg, progress=False,
                                     workers=1, unlabeled=True)
    assert other.key != handle.key and other.open().splits["train"].verified.all()


def test_mean_teacher_and_label_smoothing_train_the_same_on_memory_maps(semi):
    torch.set_num_threads(1)
    _, _, fs, handle = semi
    runs = []
    for data in (fs, handle.open()):
        t = Trainer({**PARAMS, **SEMI}, data, max_epochs=2, patience=2, seed=0, device=torch.device("cpu"), task="sed")
        runs.append([t.run_epoch().metrics for _ in range(2)])
    np.testing.assert_equal(runs[1], runs[0])  # every epoch's loss and valid scores
    assert runs[0][0]["train_loss"] != runs[0][1]["train_loss"]
