"""The arrays every trial trains on: normalized features and targets per split, built from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from harmonia.config import FEATURE_KIND_PARAM, FeatureConfig
from harmonia.data.datasets import Dataset
from harmonia.features import FeatureCache, Normalizer, WaveCopy, stack_frames, wave_copies

SPLITS = ("train", "valid", "test")


PAD = -1
"""Padding of `SplitArrays.y_seq` after the end of a clip's sequence."""


class PickedRows:
    """Row i is `sources[which[i]][index[i]]`, read only when indexed: a lazy row selection over
    memory-mapped arrays (a fold's rows, an epoch's pick of waveform copies) that copies nothing."""

    def __init__(self, sources: list, which: np.ndarray, index: np.ndarray):
        which, index = np.asarray(which, np.int64), np.asarray(index, np.int64)
        self.sources: list = []
        self.which, self.index = np.empty_like(which), np.empty_like(index)
        for s, src in enumerate(sources):  # a PickedRows source is flattened onto its own sources
            m = which == s
            if isinstance(src, PickedRows):
                self.which[m] = src.which[index[m]] + len(self.sources)
                self.index[m] = src.index[index[m]]
                self.sources.extend(src.sources)
            else:
                self.which[m], self.index[m] = len(self.sources), index[m]
                self.sources.append(src)
        self.shape = (len(which), *self.sources[0].shape[1:]) if self.sources else (0,)
        self.dtype = self.sources[0].dtype if self.sources else np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        """Rows `key` (int, slice or index array) as a new in-memory array, read source by source."""
        rows = np.arange(len(self))[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.sources[self.which[rows]][self.index[rows]])
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        which, index = self.which[rows], self.index[rows]
        for s in np.unique(which):
            m = which == s
            out[m] = self.sources[s][index[m]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def is_mapped(x) -> bool:
    """Whether x is read from disk on indexing (a np.memmap or a PickedRows), not held in memory."""
    return isinstance(x, (np.memmap, PickedRows))


def gather_rows(sources: list, which: np.ndarray, index: np.ndarray) -> "np.ndarray | PickedRows":
    """Rows `sources[which[i]][index[i]]`: lazy (`PickedRows`) when a source is memory-mapped, else a
    new in-memory array with the same values."""
    rows = PickedRows(sources, which, index)
    return rows if any(is_mapped(s) for s in sources) else rows[:]


@dataclass
class SplitArrays:
    clip_ids: list[str]
    x: "np.ndarray | PickedRows"  # [N, T, F] float32, normalized; np.memmap or PickedRows above the memory budget
    y: np.ndarray  # [N, C] float32 multi-hot (one-hot for scenes)
    y_frames: "np.ndarray | PickedRows | None" = None  # [N, T, C] uint8, strong labels only
    y_seq: np.ndarray | None = None  # [N, L] int64 class indices in order of onset, PAD after; strong labels only
    verified: np.ndarray | None = None  # [N] bool: labels checked by a person (FSDKaggle2018 manually_verified)

    def sequences(self) -> list[list[int]]:
        """The ordered class indices of each clip (what CTC is trained on), padding removed."""
        if self.y_seq is None:
            raise ValueError("this split has no ordered event sequences (they come from strong labels)")
        return [[int(k) for k in row if k != PAD] for row in self.y_seq]


@dataclass
class FeatureSet:
    """Everything a trial needs, small enough to `ray.put` once and share by reference.

    `train_copies[j]` holds the features of the j-th precomputed waveform copy (pitch shift or time
    stretch, `features.augmented_copies`) of every train clip, rows in the order of `splits["train"]`,
    normalized with the train statistics of the originals; `copy_names[j]` names it.
    """

    classes: list[str]
    feature: dict
    normalizer: Normalizer
    frames: int
    splits: dict[str, SplitArrays] = field(default_factory=dict)
    train_copies: list[SplitArrays] = field(default_factory=list)
    copy_names: list[str] = field(default_factory=list)
    unlabeled: SplitArrays | None = None  # the `unlabeled` split's features (zero targets), for semi-supervised trials

    @property
    def n_features(self) -> int:
        """Features per frame (n_mels, or n_mfcc for MFCC): the models' input width."""
        return FeatureConfig.model_validate(self.feature).n_features

    @property
    def n_mels(self) -> int:
        """Alias of `n_features` (the name predates MFCC features)."""
        return self.n_features

    def epoch_train(self, pick: np.ndarray | None) -> SplitArrays:
        """The train split for one epoch with clip i taken from variant `pick[i]`: 0 the original,
        j ≥ 1 `train_copies[j - 1]` (features and frame targets; clip targets are the same).

        The Trainer draws `pick` uniformly from {0, …, len(train_copies)} per clip and epoch when
        `aug.waveform_copies` is on; None (or no copies) gives the original split itself.
        """
        base = self.splits["train"]
        if pick is None or not self.train_copies:
            return base
        pick = np.asarray(pick)
        if pick.shape != (len(base.y),) or pick.min() < 0 or pick.max() > len(self.train_copies):
            raise ValueError(f"pick must be {len(base.y)} ints in [0, {len(self.train_copies)}]")
        keep = np.arange(len(pick))
        x = gather_rows([base.x, *(c.x for c in self.train_copies)], pick, keep)
        yf = None
        if base.y_frames is not None:
            frames = [base.y_frames, *(base.y_frames if c.y_frames is None else c.y_frames for c in self.train_copies)]
            yf = gather_rows(frames, pick, keep)
        return replace(base, x=x, y_frames=yf)

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


def sequence_targets(sequences, classes: list[str]) -> np.ndarray:
    """Ordered labels per clip → [N, L] int64 class indices padded with PAD (L ≥ 1, the longest)."""
    cls = {c: i for i, c in enumerate(classes)}
    rows = [[cls[t] for t in seq if t in cls] for seq in sequences]
    out = np.full((len(rows), max([1, *map(len, rows)])), PAD, np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def scale_events(events, factor: float):
    """Events with onset and offset × factor (a time stretch by rate r moves them by 1 / r)."""
    if factor == 1.0:
        return events
    out = events.copy()
    out["onset"] = out["onset"] * factor
    out["offset"] = out["offset"] * factor
    return out


def split_ids(ds: Dataset) -> dict[str, list[str]]:
    """Clip ids of the non-empty splits among train/valid/test (others, e.g. `unlabeled`, are not trained on)."""
    ids_of = {split: list(ds.split(split)["clip_id"]) for split in SPLITS}
    ids_of = {split: ids for split, ids in ids_of.items() if ids}
    if "train" not in ids_of:
        raise ValueError(f"{ds.root}: the dataset has no train split")
    return ids_of


def split_targets(ds: Dataset, split: str, ids: list[str], frames: int,
                  hop: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Clip targets [N, C], and for strong labels frame [N, T, C] and sequence [N, L] targets, of one split."""
    yf = frame_targets(ds.events, ids, list(ds.classes), frames, hop) if ds.has_strong else None
    ys = sequence_targets(ds.split(split)["sequence"], list(ds.classes)) if ds.has_strong else None
    return ds.targets(split), yf, ys


def verified_flags(ds: Dataset, split: str) -> np.ndarray | None:
    """[N] bool of a split in table order where the format says whose labels were checked (`verified`
    column: "0" unverified; "1" or empty verified); None for formats without the column."""
    if "verified" not in ds.clips.columns:
        return None
    return (ds.split(split)["verified"].astype(str) != "0").to_numpy()


def recorded_feature(cfg: FeatureConfig) -> dict:
    """The feature dict a FeatureSet records with each model: what inference needs to recompute the
    features (`FeatureConfig(**feature)`), plus the augmented copies when there are any."""
    feature = cfg.identity()
    if cfg.augmented_copies.n_copies:
        feature["augmented_copies"] = cfg.augmented_copies.model_dump()
    return feature


def build_feature_set(ds: Dataset, cfg: FeatureConfig, progress: bool = True,
                      workers: int | None = None, unlabeled: bool = False) -> FeatureSet:
    """Read (or fill) the feature cache for every clip and every augmented copy of the train clips;
    normalization statistics from the train originals only. With `unlabeled` (a semi-supervised search)
    the `unlabeled` split's clips get features too, in `FeatureSet.unlabeled`."""
    cache = FeatureCache(cfg)
    wanted = SPLITS + (("unlabeled",) if unlabeled else ())
    all_clips = ds.clips[ds.clips["split"].isin(wanted)]  # else an `unlabeled` split is kept in the Dataset only
    arrays = cache.get_many(list(all_clips["path"]), workers=workers, progress=progress)
    by_id = dict(zip(all_clips["clip_id"], arrays))
    ids_of = split_ids(ds)
    # The clip length (median over train) is fitted like the normalizer: valid/test change neither.
    frames = int(np.median([by_id[i].shape[0] for i in ids_of["train"]]))
    raw = {split: (ids, stack_frames((by_id[i] for i in ids), frames)) for split, ids in ids_of.items()}
    norm = Normalizer.fit(raw["train"][1])
    fs = FeatureSet(list(ds.classes), recorded_feature(cfg), norm, frames)
    for split, (ids, x) in raw.items():
        fs.splits[split] = SplitArrays(ids, norm(x), *split_targets(ds, split, ids, frames, cfg.hop_seconds),
                                       verified=verified_flags(ds, split))
    copies = wave_copies(cfg.augmented_copies)
    if copies:
        _add_train_copies(fs, ds, cache, copies, workers, progress)
    u_ids = list(ds.clips.loc[ds.clips["split"] == "unlabeled", "clip_id"]) if unlabeled else []
    if u_ids:
        x = norm(stack_frames((by_id[i] for i in u_ids), frames))
        fs.unlabeled = SplitArrays(u_ids, x, np.zeros((len(u_ids), len(fs.classes)), np.float32))
    return fs


def build_feature_sets(ds: Dataset, cfg: FeatureConfig, kinds: list[str], progress: bool = True,
                       workers: int | None = None) -> dict[str, FeatureSet]:
    """One FeatureSet per feature kind (`cfg` with its `kind` replaced; each read from or added to the
    cache once), in the order of `kinds`: what a search whose space samples `features.kind` trains on."""
    return {k: build_feature_set(ds, cfg.model_copy(update={"kind": k}), progress=progress, workers=workers)
            for k in dict.fromkeys(kinds)}


@runtime_checkable
class FeatureSource(Protocol):
    """A small picklable stand-in for a FeatureSet (memory-mapped features, `harmonia.feature_store`):
    what the object store carries; a trial opens it on its node."""

    def open(self) -> FeatureSet: ...


def pick_feature_set(data: "FeatureSet | FeatureSource | dict", params: dict) -> FeatureSet:
    """The FeatureSet of the kind a trial sampled (`params["features.kind"]`) from the search's mapping
    kind → FeatureSet (or FeatureSource, opened here); a lone one is returned as is (opened). A trial
    without the param (sampled before the kind was searchable, then resumed) takes the first, the config's kind."""
    if not isinstance(data, dict):
        return data.open() if isinstance(data, FeatureSource) else data
    kind = params.get(FEATURE_KIND_PARAM)
    if kind is None:
        return pick_feature_set(next(iter(data.values())), params)
    try:
        return pick_feature_set(data[kind], params)
    except KeyError:
        raise ValueError(f"{FEATURE_KIND_PARAM}={kind!r}: the search built features of {', '.join(data)} only") from None


def _add_train_copies(fs: FeatureSet, ds: Dataset, cache: FeatureCache, copies: list[WaveCopy],
                      workers: int | None, progress: bool) -> None:
    """Fill `fs.train_copies` from the cache (computing missing copies once, in parallel): cropped or
    padded to `fs.frames`; for strong labels, event times × 1 / rate so frame targets follow."""
    train = fs.splits["train"]
    paths = dict(zip(ds.clips["clip_id"], ds.clips["path"]))
    per_copy = cache.get_copies([paths[i] for i in train.clip_ids], copies, workers=workers, progress=progress)
    for copy, arrays in zip(copies, per_copy):
        yf = None
        if train.y_frames is not None:
            events = scale_events(ds.events, copy.time_scale)
            yf = frame_targets(events, train.clip_ids, fs.classes, fs.frames, cache.cfg.hop_seconds)
        fs.train_copies.append(replace(train, x=fs.normalizer(stack_frames(arrays, fs.frames)), y_frames=yf))
        fs.copy_names.append(copy.name)


def prepare(cfg, progress: bool = True) -> tuple[Dataset, FeatureSet]:
    """Dataset (see `load_data`) and its FeatureSet."""
    ds = load_data(cfg, progress)
    return ds, build_feature_set(ds, cfg.features, progress=progress)


def load_data(cfg, progress: bool = True) -> Dataset:
    """Dataset (synthesized on the spot when absent and the config allows: task-4 events, or DCASE 2018
    task 1 scenes for task scene), validated; a dataset without the task's labels is refused."""
    from pathlib import Path

    from harmonia.data.datasets import check_task_data, dataset_present, load_dataset, read_options
    from harmonia.data.synth import synthesize, synthesize_scenes

    root = Path(cfg.data.root)
    task = getattr(cfg, "task", "tagging")
    if not dataset_present(root, cfg.data.format):
        expected = f"{root}/meta.csv + evaluation_setup/" if task == "scene" else f"{root}/metadata/*.tsv"
        if cfg.data.synth is None:
            raise FileNotFoundError(f"{root}: no dataset here (expected {expected}) and data.synth is off")
        s = cfg.data.synth
        if root.resolve() != Path(s.root).resolve():
            raise FileNotFoundError(
                f"data.root {root}: no dataset here (expected {expected}); data.synth generates one only at its "
                f"default location {Path(s.root).resolve()} (data.synth.root). Check data.root for a typo, or "
                f"generate one there: harmonia data synth {root}")
        if task == "scene":
            synthesize_scenes(root, clips=s.clips, seconds=s.seconds, seed=s.seed, sample_rate=s.sample_rate,
                              progress=progress, scenes=s.scenes)
        else:
            synthesize(root, clips=s.clips, seconds=s.seconds, seed=s.seed, sample_rate=s.sample_rate, progress=progress)
    ds = load_dataset(root, options=read_options(cfg.data, getattr(cfg, "features", None)))
    check_task_data(ds, task)
    return ds
