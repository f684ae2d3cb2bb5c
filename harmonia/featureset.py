"""The arrays every trial trains on: normalized features and targets per split, built from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harmonia.config import FeatureConfig
from harmonia.datasets import Dataset
from harmonia.features import FeatureCache, Normalizer, stack_frames

SPLITS = ("train", "valid", "test")


@dataclass
class SplitArrays:
    clip_ids: list[str]
    x: np.ndarray  # [N, T, F] float32, normalized
    y: np.ndarray  # [N, C] float32 multi-hot
    y_frames: np.ndarray | None = None  # [N, T, C] uint8, strong labels only


@dataclass
class FeatureSet:
    """Everything a trial needs, small enough to `ray.put` once and share by reference."""

    classes: list[str]
    feature: dict
    normalizer: Normalizer
    frames: int
    splits: dict[str, SplitArrays] = field(default_factory=dict)

    @property
    def n_mels(self) -> int:
        return int(self.feature["n_mels"])

    @property
    def hop_seconds(self) -> float:
        return self.feature["hop_length"] / self.feature["sample_rate"]


def frame_targets(events, clip_ids: list[str], classes: list[str], frames: int, hop: float) -> np.ndarray:
    """Strong events → [N, T, C] frame activity; frame t covers [t·hop, (t+1)·hop)."""
    index = {c: i for i, c in enumerate(clip_ids)}
    cls = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(clip_ids), frames, len(classes)), np.uint8)
    for clip_id, onset, offset, label in events[["clip_id", "onset", "offset", "event_label"]].itertuples(index=False):
        if clip_id in index and label in cls:
            a, b = int(np.floor(onset / hop)), int(np.ceil(offset / hop))
            out[index[clip_id], max(a, 0):min(b, frames), cls[label]] = 1
    return out


def build_feature_set(ds: Dataset, cfg: FeatureConfig, progress: bool = True) -> FeatureSet:
    """Read (or fill) the feature cache for every clip; normalization statistics from train only."""
    cache = FeatureCache(cfg)
    all_clips = ds.clips
    arrays = cache.get_many(list(all_clips["path"]), progress=progress)
    frames = int(np.median([a.shape[0] for a in arrays]))
    by_id = dict(zip(all_clips["clip_id"], arrays))
    raw: dict[str, tuple[list[str], np.ndarray]] = {}
    for split in SPLITS:
        rows = ds.split(split)
        if len(rows):
            ids = list(rows["clip_id"])
            raw[split] = (ids, stack_frames((by_id[i] for i in ids), frames))
    if "train" not in raw:
        raise ValueError(f"{ds.root}: the dataset has no train split")
    norm = Normalizer.fit(raw["train"][1])
    fs = FeatureSet(list(ds.classes), cfg.model_dump(exclude={"cache_dir"}), norm, frames)
    for split, (ids, x) in raw.items():
        yf = frame_targets(ds.events, ids, fs.classes, frames, cfg.hop_seconds) if ds.has_strong else None
        fs.splits[split] = SplitArrays(ids, norm(x), ds.targets(split), yf)
    return fs


def prepare(cfg, progress: bool = True) -> tuple[Dataset, FeatureSet]:
    """Dataset (synthesized on the spot when absent and the config allows) and its FeatureSet."""
    from pathlib import Path

    from harmonia.datasets import load_dataset
    from harmonia.synth import synthesize

    root = Path(cfg.data.root)
    if not (root / "metadata").is_dir():
        if cfg.data.synth is None:
            raise FileNotFoundError(f"{root}: no dataset here (expected {root}/metadata/*.tsv) and data.synth is off")
        s = cfg.data.synth
        synthesize(root, clips=s.clips, seconds=s.seconds, seed=s.seed, sample_rate=s.sample_rate, progress=progress)
    ds = load_dataset(root)
    return ds, build_feature_set(ds, cfg.features, progress=progress)
