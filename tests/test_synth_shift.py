"""Synthetic splits with real shift: disjoint source instances per split, a group per clip, a measurable
drop on test; and the default (unshifted) output unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonia.data.audio import load_audio
from harmonia.data.datasets import load_dataset
from harmonia.data.shift import SHIFT_INSTANCES, SHIFT_SPLITS, plan_world
from harmonia.data.synth import CLASSES, synthesize

SEED = 3


def _tsv(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "metadata" / name, sep="\t", dtype=str, keep_default_na=False)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("shift") / "s", clips=60, seconds=2.0, seed=SEED, shift=True)


def test_instances_and_backgrounds_are_disjoint_between_splits():
    world = plan_world(SEED, CLASSES)
    for label in CLASSES:
        ids = [{i.id for i in world.instances[s][label]} for s in SHIFT_SPLITS]
        seeds = [{i.seed for i in world.instances[s][label]} for s in SHIFT_SPLITS]
        assert [len(x) for x in ids] == list(SHIFT_INSTANCES) == [4, 2, 2]
        assert [len(x) for x in seeds] == list(SHIFT_INSTANCES)
        for a in range(3):
            for b in range(a + 1, 3):
                assert not ids[a] & ids[b] and not seeds[a] & seeds[b], label
    beds = [{b.id for b in world.backgrounds[s]} for s in SHIFT_SPLITS]
    assert sum(map(len, beds)) == len(set().union(*beds)) == 9
    assert {b.color for b in world.backgrounds["test"]} <= {"brown", "white"}
    assert plan_world(SEED, CLASSES) == world and plan_world(SEED + 1, CLASSES) != world


def test_every_clip_has_one_group_within_its_split(shifted: Path):
    world = plan_world(SEED, CLASSES)
    seen: dict[str, set[str]] = {}
    for split in SHIFT_SPLITS:
        weak, strong = _tsv(shifted, f"{split}_weak.tsv"), _tsv(shifted, f"{split}.tsv")
        assert list(weak.columns) == ["filename", "event_labels", "group"]
        assert list(strong.columns) == ["filename", "onset", "offset", "event_label", "group"]
        wavs = {p.name for p in (shifted / "audio" / split).glob("*.wav")}
        assert set(weak["filename"]) == wavs and set(strong["filename"]) == wavs
        assert (weak["group"] != "").all()
        groups = weak.set_index("filename")["group"]
        assert (strong["group"] == strong["filename"].map(groups)).all()  # all rows of a clip agree
        for name, group in groups.items():
            label = group.split("-")[1]
            assert group.startswith(f"{split}-") and label in weak.set_index("filename").loc[name, "event_labels"]
            assert group in {i.id for i in world.instances[split][label]}
        seen[split] = set(groups)
    assert not seen["train"] & seen["valid"] and not seen["train"] & seen["test"] and not seen["valid"] & seen["test"]
    assert min(len(g) for g in seen.values()) >= 5


def test_shifted_output_is_deterministic_and_loads(shifted: Path, tmp_path: Path):
    again = synthesize(tmp_path / "again", clips=60, seconds=2.0, seed=SEED, shift=True)
    assert _digest(again) == _digest(shifted)
    ds = load_dataset(shifted)
    assert len(ds.clips) == 60 and sorted(ds.clips["split"].value_counts().to_dict().items()) == [
        ("test", 12), ("train", 36), ("valid", 12)]


def test_default_output_is_unchanged(tmp_path: Path):
    """sha256 of the unshifted output as written before the shift option existed."""
    root = synthesize(tmp_path / "d", clips=30, seconds=2.0, seed=7)
    assert _digest(root) == "85b63e9a04ba3ac73f9b1f13ea5dd546398a74a15d19578ab248018fc32c69f8"
    assert "group" not in (root / "metadata" / "train.tsv").read_text()


def _event_features(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: mean and std of its log-mel frames, its label, its clip."""
    import librosa

    mel = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=40)
    rows, labels, clips = [], [], []
    strong = _tsv(root, f"{split}.tsv")
    for name, events in strong.groupby("filename"):
        y = load_audio(root / "audio" / split / name, 16000)
        frames = np.lib.stride_tricks.sliding_window_view(y, 1024)[::512] * np.hanning(1024)
        logmel = np.log(np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ mel.T + 1e-10)  # frame i: samples 512 i ...
        for onset, offset, label in zip(events["onset"], events["offset"], events["event_label"]):
            first, last = int(np.ceil(float(onset) * 16000 / 512)), int((float(offset) * 16000 - 1024) // 512)
            part = logmel[first:max(first + 1, last + 1)]
            rows.append(np.concatenate([part.mean(0), part.std(0)]))
            labels.append(label)
            clips.append(name)
    return np.array(rows), np.array(labels), np.array(clips)


def _accuracies(root: Path) -> tuple[float, float, float]:
    """(1-NN test accuracy, centroid accuracy on held-out train clips, centroid test accuracy); all
    fitted on train (the centroid on its first two thirds of clips), features z-scored on train."""
    x, y, clip = _event_features(root, "train")
    xt, yt, _ = _event_features(root, "test")
    mu, sd = x.mean(0), x.std(0) + 1e-9
    x, xt = (x - mu) / sd, (xt - mu) / sd
    nn = y[((xt[:, None] - x[None]) ** 2).sum(-1).argmin(1)]
    fit = np.isin(clip, np.unique(clip)[: 2 * len(np.unique(clip)) // 3])
    cents = np.stack([x[fit & (y == c)].mean(0) for c in CLASSES])

    def centroid(a: np.ndarray, b: np.ndarray) -> float:
        return float((np.array(CLASSES)[((a[:, None] - cents[None]) ** 2).sum(-1).argmin(1)] == b).mean())

    return float((nn == yt).mean()), centroid(x[~fit], y[~fit]), centroid(xt, yt)


def test_a_model_fitted_on_train_drops_on_shifted_test(tmp_path: Path):
    """Clear, loud events (SNR 10-20 dB, no distractors) so that what differs is the sources."""
    results = {}
    for shift in (False, True):
        runs = [_accuracies(synthesize(tmp_path / f"{shift}{seed}", clips=150, seconds=4.0, seed=seed, shift=shift,
                                       snr_db=(10.0, 20.0), distractors=0.0)) for seed in (0, 1, 2)]
        results[shift] = np.mean(runs, axis=0)
    print({k: np.round(v, 3).tolist() for k, v in results.items()})
    (nn_plain, held_plain, test_plain), (nn_shift, held_shift, test_shift) = results[False], results[True]
    assert nn_shift < nn_plain - 0.08  # nearest neighbour: new sources on test
    assert held_shift - test_shift > 0.10  # centroid: the held-out train clips share train's sources
    assert abs(held_plain - test_plain) < 0.10  # without shift, held-out train and test are alike
    assert test_shift < test_plain
