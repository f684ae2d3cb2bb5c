"""Features above `features.memory_budget_mb`: consolidated per-split .npy files in the cache that trials
memory-map, giving the same arrays, the same training and the same scores as the in-memory FeatureSet.
On real WAV files written into tmp (1–1.3 s clips at 16 kHz, 32 mel bands, two classes)."""

from __future__ import annotations

import os
import pickle
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harmonia import tracking
from harmonia.config import FeatureConfig, parse_config
from harmonia.data.audio import write_wav
from harmonia.data.datasets import Dataset
from harmonia.feature_store import MappedFeatureSet, build_mapped_feature_set, load_feature_sets, scan_cache
from harmonia.featureset import FeatureSet, PickedRows, build_feature_set, pick_feature_set
from harmonia.trainables.cross_validation import CrossValidatedTrainer
from harmonia.trainables.training import Trainer

from tests.conftest import tiny_config

SR = 16000
CLASSES = {"low": 400.0, "high": 2500.0}
PARAMS = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 4, "crnn.gru_size": 4, "batch_size": 3,
          "aug.waveform_copies": True, "aug.mixup": True, "lr": 3e-3}


def clip_audio(seconds: float, events: list[tuple[float, float, str]], seed: int) -> np.ndarray:
    """Quiet noise plus a tone of each event's class between its onset and offset."""
    y = (0.003 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    t = np.arange(len(y)) / SR
    for onset, offset, label in events:
        a, b = int(onset * SR), int(offset * SR)
        y[a:b] += (0.4 * np.sin(2 * np.pi * CLASSES[label] * t[a:b])).astype(np.float32)
    return y


def make_dataset(root: Path, n_train: int = 9, n_other: int = 4) -> Dataset:
    """Train/valid/test clips with strong events of two classes (each clip one or both), on disk as WAVs."""
    rows, events = [], []
    for split, n in (("train", n_train), ("valid", n_other), ("test", n_other)):
        for i in range(n):
            clip_id = f"{split}{i}"
            labels = [["low"], ["high"], ["low", "high"]][i % 3]
            ev = [(0.1 + 0.2 * k, 0.5 + 0.2 * k, lab) for k, lab in enumerate(labels)]
            seconds = 1.0 + 0.1 * (i % 4)  # unequal lengths: cropped and padded to the median
            path = root / "audio" / f"{clip_id}.wav"
            write_wav(path, clip_audio(seconds, ev, seed=zlib.crc32(clip_id.encode())), SR)
            rows.append((clip_id, str(path), split, seconds, sorted(labels), labels))
            events += [(clip_id, *e) for e in ev]
    clips = pd.DataFrame(rows, columns=["clip_id", "path", "split", "duration", "tags", "sequence"])
    ev = pd.DataFrame(events, columns=["clip_id", "onset", "offset", "event_label"])
    return Dataset(root, sorted(CLASSES), clips, ev, has_strong=True)


def feature_config(root: Path, **kw) -> FeatureConfig:
    return FeatureConfig(sample_rate=SR, n_fft=512, hop_length=256, n_mels=32, cache_dir=str(root / "cache"), **kw)


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[Dataset, FeatureConfig, FeatureSet, MappedFeatureSet]:
    """The in-memory FeatureSet and the memory-mapped handle of one dataset with two waveform copies."""
    root = tmp_path_factory.mktemp("memmap")
    ds = make_dataset(root)
    cfg = feature_config(root, augmented_copies={"pitch_shift_semitones": [1], "time_stretch_rates": [1.25]})
    fs = build_feature_set(ds, cfg, progress=False, workers=1)
    return ds, cfg, fs, build_mapped_feature_set(ds, cfg, progress=False, workers=1)


def assert_same_split(a, b) -> None:
    assert a.clip_ids == b.clip_ids
    for name in ("x", "y", "y_frames", "y_seq"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


def test_mapped_files_hold_the_in_memory_arrays_bit_for_bit(both):
    ds, cfg, fs, handle = both
    ms = handle.open()
    assert list(ms.splits) == list(fs.splits) == ["train", "valid", "test"]
    for split in fs.splits:
        assert isinstance(ms.splits[split].x, np.memmap) and isinstance(ms.splits[split].y_frames, np.memmap)
        assert_same_split(fs.splits[split], ms.splits[split])
    assert ms.copy_names == fs.copy_names == ["pitch_shift+1", "time_stretch1.25"]
    for a, b in zip(fs.train_copies, ms.train_copies, strict=True):
        assert_same_split(a, b)
    # the time-stretched copy has its own frame targets, not the original's
    assert not np.array_equal(ms.train_copies[1].y_frames, ms.splits["train"].y_frames)
    np.testing.assert_array_equal(fs.normalizer.mean, ms.normalizer.mean)
    np.testing.assert_array_equal(fs.normalizer.std, ms.normalizer.std)
    assert (ms.frames, ms.feature, ms.classes) == (fs.frames, fs.feature, fs.classes)
    # what the object store carries: a path and a key, not the arrays
    small, full = len(pickle.dumps(handle)), len(pickle.dumps(fs))
    assert small < 400 and 100 * small < full
    assert pick_feature_set({"logmel": handle}, {"features.kind": "logmel"}).splits["test"].clip_ids == \
        fs.splits["test"].clip_ids


def test_the_consolidated_folder_is_reused_and_keyed_by_targets(both, tmp_path):
    ds, cfg, fs, handle = both
    x = Path(handle.root) / "train.x.npy"
    stamp = (x.stat().st_ino, x.stat().st_mtime_ns)
    assert build_mapped_feature_set(ds, cfg, progress=False, workers=1) == handle
    assert (x.stat().st_ino, x.stat().st_mtime_ns) == stamp  # not rewritten
    assert not [p for p in Path(handle.root).parent.iterdir() if p.name.endswith(".tmp")]
    relabelled = Dataset(ds.root, ds.classes, ds.clips, ds.events.assign(offset=ds.events.offset + 0.1), True)
    other = build_mapped_feature_set(relabelled, cfg, progress=False, workers=1)
    assert other.key != handle.key and Path(other.root).is_dir()


def test_scan_sizes_the_in_memory_feature_set_exactly(both):
    ds, cfg, fs, _ = both
    arrays = [*fs.splits.values(), *fs.train_copies]
    assert scan_cache(ds, cfg, workers=1, progress=False).nbytes == sum(a.x.nbytes + a.y_frames.nbytes for a in arrays)


def test_the_budget_chooses_memory_or_memory_maps(both):
    ds, cfg, fs, handle = both
    nbytes = scan_cache(ds, cfg, workers=1, progress=False).nbytes
    at = cfg.model_copy(update={"memory_budget_mb": nbytes / 2**20})
    below = cfg.model_copy(update={"memory_budget_mb": (nbytes - 1) / 2**20})
    assert isinstance(load_feature_sets(ds, at, ["logmel"], progress=False, workers=1)["logmel"], FeatureSet)
    assert load_feature_sets(ds, below, ["logmel"], progress=False, workers=1) == {"logmel": handle}
    # all kinds together count: two kinds at the budget of one go to memory maps
    two = load_feature_sets(ds, at, ["logmel", "nnf_logmel"], progress=False, workers=1)
    assert all(isinstance(v, MappedFeatureSet) for v in two.values()) and two["logmel"] == handle
    # the budget is no feature identity: the cache key and the models' feature dict ignore it
    assert below.key() == cfg.key() and "memory_budget_mb" not in fs.feature
    assert parse_config({}).features.memory_budget_mb == 2048  # the quickstart's ~30 MB stay in memory


def train(data: FeatureSet, task: str, epochs: int = 3):
    t = Trainer(PARAMS, data, max_epochs=epochs, patience=epochs, seed=0, device=torch.device("cpu"), task=task)
    metrics = [t.run_epoch().metrics for _ in range(epochs)]
    return metrics, t.predict("valid"), t.predict("test", model=t.best_model())


@pytest.mark.parametrize("task", ["tagging", "sed"])
def test_tiny_budget_trains_to_the_same_scores_as_in_memory(both, task):
    torch.set_num_threads(1)
    _, _, fs, handle = both
    mem, mapped = train(fs, task), train(handle.open(), task)
    np.testing.assert_equal(mapped[0], mem[0])  # every epoch's loss and valid scores (NaN-aware)
    assert mem[0][-1]["valid_auc"] > 0 and mem[0][0]["train_loss"] != mem[0][-1]["train_loss"]
    for (a_clip, a_frames), (b_clip, b_frames) in zip(mem[1:], mapped[1:]):
        np.testing.assert_allclose(b_clip, a_clip, rtol=0, atol=1e-6)
        np.testing.assert_allclose(b_frames, a_frames, rtol=0, atol=1e-6)


def test_cross_validated_trials_read_their_folds_lazily_to_the_same_scores(both):
    torch.set_num_threads(1)
    _, _, fs, handle = both
    runs = []
    for data in (fs, handle.open()):
        t = CrossValidatedTrainer(PARAMS, data, folds=2, max_epochs=2, patience=2, seed=0, split_seed=0,
                                  device=torch.device("cpu"), task="sed")
        runs.append((t, [t.run_epoch().metrics for _ in range(2)]))
    (mem, mem_metrics), (mapped, mapped_metrics) = runs
    fold_train = mapped.trainers[0].data.splits["train"]
    assert isinstance(fold_train.x, PickedRows) and isinstance(mem.trainers[0].data.splits["train"].x, np.ndarray)
    np.testing.assert_array_equal(np.asarray(fold_train.x),
                                  mem.trainers[0].data.splits["train"].x)
    np.testing.assert_equal(mapped_metrics, mem_metrics)
    np.testing.assert_array_equal(mapped.best_valid[0], mem.best_valid[0])


def test_picked_rows_read_only_the_rows_asked_for_and_flatten():
    a, b = np.arange(12.0).reshape(6, 2), 100 + np.arange(12.0).reshape(6, 2)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"picked-{os.getpid()}.npy"
    np.save(path, b)
    try:
        mb = np.load(path, mmap_mode="r")
        rows = PickedRows([a, mb], np.array([0, 1, 1, 0]), np.array([5, 0, 3, 1]))
        np.testing.assert_array_equal(rows[:], [a[5], b[0], b[3], a[1]])
        np.testing.assert_array_equal(rows[np.array([2, 0])], [b[3], a[5]])
        np.testing.assert_array_equal(rows[1], b[0])
        nested = PickedRows([rows, a], np.array([1, 0, 0]), np.array([2, 3, 1]))
        assert len(nested.sources) == 3 and nested.shape == (3, 2)  # flattened onto the arrays themselves
        np.testing.assert_array_equal(np.asarray(nested), [a[2], a[1], b[0]])
    finally:
        path.unlink()


def test_a_node_without_the_cache_path_fails_with_a_clear_error(both, tmp_path):
    _, _, _, handle = both
    copy = tmp_path / "set"
    shutil.copytree(handle.root, copy)
    moved = MappedFeatureSet(str(tmp_path / "not-mounted"), handle.key)
    with pytest.raises(FileNotFoundError, match=r"not-mounted/meta\.json not found on node .*every node mounts"):
        moved.open()
    with pytest.raises(ValueError, match="holds features .* the search wrote 'other'"):
        MappedFeatureSet(str(copy), "other").open()
    assert MappedFeatureSet(str(copy), handle.key).open().splits["valid"].clip_ids == ["valid0", "valid1", "valid2",
                                                                                      "valid3"]


@pytest.fixture(scope="module")
def two_searches(ray_local, tmp_path_factory):
    """The same one-trial search twice on one synthetic dataset: in memory, and with a zero budget."""
    from harmonia.search.tuner import run_search

    base = tmp_path_factory.mktemp("memmap_search")
    out = {}
    for name, budget in (("in_memory", 2048.0), ("mapped", 0.0)):
        cfg = tiny_config(base, name, num_samples=1, max_concurrent=1, max_epochs=2)
        cfg.features.memory_budget_mb = budget
        out[name] = (cfg, run_search(cfg, progress=False))
    return out


def test_a_search_above_the_budget_logs_the_same_trial_as_in_memory(two_searches, tmp_path):
    (cfg, mem), (_, mapped) = two_searches["in_memory"], two_searches["mapped"]
    sets = list((Path(cfg.features.cache_dir) / cfg.features.key() / "sets").glob("*/meta.json"))
    assert len(sets) == 1  # only the zero-budget search wrote consolidated files
    c = tracking.client(cfg.tracking.uri)
    runs = {}
    for name, result in (("in_memory", mem), ("mapped", mapped)):
        assert list(result.trials["status"]) == ["TERMINATED"]
        runs[name] = result.trials.iloc[0]["run_id"]
    assert mem.trials.iloc[0]["params"] == mapped.trials.iloc[0]["params"]
    for key in ("train_loss", "valid_mAP", "valid_loss"):
        h = {n: [m.value for m in c.get_metric_history(r, key)] for n, r in runs.items()}
        assert len(h["mapped"]) == 2
        np.testing.assert_allclose(h["mapped"], h["in_memory"], rtol=0, atol=1e-6)
    for split in ("valid", "test"):
        frames = {n: pd.read_parquet(c.download_artifacts(r, f"predictions/{split}.parquet", str(tmp_path / n)))
                  for n, r in runs.items()}
        assert list(frames["mapped"]["clip_id"]) == list(frames["in_memory"]["clip_id"])
        np.testing.assert_allclose(frames["mapped"].iloc[:, 1:].to_numpy(), frames["in_memory"].iloc[:, 1:].to_numpy(),
                                   rtol=0, atol=1e-6)
