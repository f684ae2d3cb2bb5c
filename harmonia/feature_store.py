"""Features larger than memory: above `features.memory_budget_mb` the search writes each split once
into one consolidated, normalized .npy under the feature cache, and the object store carries only a
`MappedFeatureSet` handle; each trial opens it as a FeatureSet of read-only memory maps.

Layout: `cache_dir/<config hash>/sets/<set key>/` with `<split>.x.npy` [N, T, F] float32 (normalized
as the in-memory FeatureSet is, the same bits), `<split>.y.npy`, `<split>.y_frames.npy`,
`<split>.y_seq.npy`, `<split>.verified.npy` (FSDKaggle2018's manually_verified, where the format has it),
`train@<copy>.x.npy` (+ `.y_frames.npy`) per waveform copy, `unlabeled.x.npy` (a semi-supervised search's
`unlabeled` clips), and `meta.json` (classes, feature dict, normalizer, frames, clip ids, unlabelled clip
ids, copy names, key). The key hashes the feature config, the clip length, every clip's file content
hash (the unlabelled clips' too), the copies, the targets and the verified flags, so the folder is
reused by a later search on the same data and never serves stale rows. It is written under a temporary
name and renamed into place: a folder with `meta.json` is complete. `meta.json` also holds
each file's CRC-32: the driver checks them before a search reuses a folder (one that fails is reported
and rebuilt), and the cache entries are checked as they are stacked (`FeatureCache.reread`). Trials map
the files unchecked: a check there would read the whole set once per trial.

On a cluster every trial opens the folder on its own node: `features.cache_dir` must be storage that
every node mounts at the same path (NFS, a mounted bucket). A node that does not see it fails the
trial with a FileNotFoundError naming the path and the node; one that sees other contents there
fails with a key mismatch. Tune retries a failed trial (`search.max_failures`), possibly elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harmonia.cache_entry import file_crc32
from harmonia.config import FeatureConfig
from harmonia.data.datasets import Dataset
from harmonia.features import FeatureCache, Normalizer, WaveCopy, row_chunks, stack_frames, wave_copies
from harmonia.featureset import (FeatureSet, SplitArrays, build_feature_set, frame_targets, recorded_feature,
                                 scale_events, split_ids, split_targets, verified_flags)
from harmonia.progress import console, progress_bar

META_FILE = "meta.json"
TARGETS = ("y", "y_frames", "y_seq")


@dataclass(frozen=True)
class MappedFeatureSet:
    """What the object store carries instead of a FeatureSet: the folder of its consolidated files and
    their key. `open()` (on any node that mounts the cache) gives the FeatureSet over memory maps."""

    root: str
    key: str

    def open(self) -> FeatureSet:
        """The FeatureSet with every feature and frame-target array a read-only np.memmap."""
        meta = read_meta(Path(self.root), self.key)
        d = Path(self.root)
        splits = {name: open_split(d, name, ids) for name, ids in meta["clip_ids"].items()}
        copies = [open_copy(d, splits["train"], name) for name in meta["copy_names"]]
        u_ids = list(meta.get("unlabeled_ids", []))
        unlabeled = SplitArrays(u_ids, np.load(d / "unlabeled.x.npy", mmap_mode="r"),
                                np.zeros((len(u_ids), len(meta["classes"])), np.float32)) if u_ids else None
        return FeatureSet(meta["classes"], meta["feature"], Normalizer.from_dict(meta["normalizer"]),
                          int(meta["frames"]), splits, copies, list(meta["copy_names"]), unlabeled)


def read_meta(root: Path, key: str) -> dict:
    """The folder's meta.json, checked against `key`; the errors say what a node that misses it should mount."""
    path = root / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found on node {socket.gethostname()}: the features exceed features.memory_budget_mb, "
            "so trials memory-map them from features.cache_dir, which must be storage that every node mounts "
            "at the same path (NFS, a mounted bucket); mount it there, or raise features.memory_budget_mb "
            "so that the features go through Ray's object store")
    meta = json.loads(path.read_text())
    if meta.get("key") != key:
        raise ValueError(f"{path}: holds features {meta.get('key')!r}, the search wrote {key!r} (is "
                         f"features.cache_dir a different folder on node {socket.gethostname()}?)")
    return meta


def open_split(d: Path, name: str, ids: list[str]) -> SplitArrays:
    """One split's arrays: features and frame targets memory-mapped, clip and sequence targets and the
    verified flags loaded."""
    x = np.load(d / f"{name}.x.npy", mmap_mode="r")
    y = np.load(d / f"{name}.y.npy")
    yf = np.load(d / f"{name}.y_frames.npy", mmap_mode="r") if (d / f"{name}.y_frames.npy").is_file() else None
    ys = np.load(d / f"{name}.y_seq.npy") if (d / f"{name}.y_seq.npy").is_file() else None
    verified = np.load(d / f"{name}.verified.npy") if (d / f"{name}.verified.npy").is_file() else None
    return SplitArrays(list(ids), x, y, yf, ys, verified)


def open_copy(d: Path, train: SplitArrays, name: str) -> SplitArrays:
    """One waveform copy of the train split (its own features and frame targets, the train clip targets)."""
    stem = d / f"train@{name}"
    yf = np.load(f"{stem}.y_frames.npy", mmap_mode="r") if Path(f"{stem}.y_frames.npy").is_file() else None
    return SplitArrays(train.clip_ids, np.load(f"{stem}.x.npy", mmap_mode="r"), train.y, yf, train.y_seq)


@dataclass
class CacheScan:
    """Every cache entry a FeatureSet of `cfg` reads (filled), their shapes and the clip length: enough to
    size the FeatureSet before building it."""

    cfg: FeatureConfig
    ids_of: dict[str, list[str]]
    entries: dict[str, list[Path]]  # split → entry per clip; `train@<copy>` → entry per train clip
    frames: int
    copies: list[WaveCopy]
    has_frames: bool  # strong labels: frame targets [N, T, C] uint8 per split and copy
    n_classes: int
    cache: FeatureCache  # knows each entry's audio file: an entry altered since the scan is rebuilt from it
    unlabeled_ids: list[str] = field(default_factory=list)  # entries["unlabeled"]: features only, no targets

    @property
    def nbytes(self) -> int:
        """Bytes of the in-memory FeatureSet: features (float32) of every row, frame targets (uint8) of the
        labelled ones."""
        rows = sum(len(e) for e in self.entries.values())
        labelled = rows - len(self.unlabeled_ids)
        return self.frames * (rows * 4 * self.cfg.n_features + (labelled * self.n_classes if self.has_frames else 0))


def scan_cache(ds: Dataset, cfg: FeatureConfig, workers: int | None = None, progress: bool = True,
               unlabeled: bool = False) -> CacheScan:
    """Fill the cache for train/valid/test (and the train copies; with `unlabeled`, the `unlabeled` split's
    clips) without holding any array in memory."""
    cache, copies = FeatureCache(cfg), wave_copies(cfg.augmented_copies)
    ids_of = split_ids(ds)
    path_of = dict(zip(ds.clips["clip_id"], ds.clips["path"]))
    entries: dict[str, list[Path]] = {}
    lengths: list[int] = []
    for split, ids in ids_of.items():
        variants = (None, *copies) if split == "train" else (None,)
        rows, shapes = cache.fill([path_of[i] for i in ids], variants, workers=workers, progress=progress)
        entries[split] = [r[0] for r in rows]
        if split == "train":
            entries |= {f"train@{c.name}": [r[j] for r in rows] for j, c in enumerate(copies, start=1)}
            lengths = [s[0][0] for s in shapes]
    u_ids = list(ds.clips.loc[ds.clips["split"] == "unlabeled", "clip_id"]) if unlabeled else []
    if u_ids:
        entries["unlabeled"] = [r[0] for r in cache.fill([path_of[i] for i in u_ids], (None,), workers=workers,
                                                         progress=progress)[0]]
    # The clip length (median over train) as build_feature_set fits it.
    return CacheScan(cfg, ids_of, entries, int(np.median(lengths)), copies, ds.has_strong, len(ds.classes), cache,
                     u_ids)


def set_key(scan: CacheScan, targets: dict[str, tuple]) -> str:
    """Hash of everything the consolidated files hold: features config, clip length, clip contents, targets."""
    h = hashlib.sha256(json.dumps({"features": scan.cfg.key(), "frames": scan.frames, "ids": scan.ids_of,
                                   "entries": {k: [p.name for p in v] for k, v in scan.entries.items()},
                                   **({"unlabeled": scan.unlabeled_ids} if scan.unlabeled_ids else {})},
                                  sort_keys=True).encode())
    for name in sorted(targets):
        for a in targets[name]:
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def write_stacked(path: Path, entries: list[Path], frames: int, cache: FeatureCache, advance) -> np.memmap:
    """[N, frames, F] float32 .npy of the cache entries (checksums checked as read) cropped/padded, written
    chunk by chunk."""
    n_features = cache.cfg.n_features
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(entries), frames, n_features))
    for c in row_chunks(len(entries), frames * n_features):
        stack_frames([cache.reread(e) for e in entries[c]], frames, out=mm[c])
        advance(c.stop - c.start)
    return mm


def normalize_in_place(mm: np.memmap, norm: Normalizer) -> None:
    """Standardize a memory-mapped [N, T, F] array chunk by chunk (the same values as `norm(x)`)."""
    for c in row_chunks(len(mm), int(np.prod(mm.shape[1:]))):
        mm[c] = norm(mm[c])
    mm.flush()


def save_optional(path: Path, a: np.ndarray | None) -> None:
    if a is not None:
        np.save(path, a, allow_pickle=False)


def build_mapped_feature_set(ds: Dataset, cfg: FeatureConfig, scan: CacheScan | None = None,
                             progress: bool = True, workers: int | None = None,
                             unlabeled: bool = False) -> MappedFeatureSet:
    """The consolidated files of `build_feature_set(ds, cfg, unlabeled=unlabeled)` (same values), reused when
    already written; a given `scan` decides the unlabelled clips itself."""
    scan = scan or scan_cache(ds, cfg, workers, progress, unlabeled)
    hop = cfg.hop_seconds
    targets = {split: split_targets(ds, split, ids, scan.frames, hop) for split, ids in scan.ids_of.items()}
    verified = {split: v for split in scan.ids_of if (v := verified_flags(ds, split)) is not None}
    copy_frames = {c.name: frame_targets(scale_events(ds.events, c.time_scale), scan.ids_of["train"],
                                         list(ds.classes), scan.frames, hop) if ds.has_strong else None
                   for c in scan.copies}
    key = set_key(scan, {**targets, **{f"train@{k}": (v,) for k, v in copy_frames.items()},
                         **{f"{k}.verified": (v,) for k, v in verified.items()}})
    final = FeatureCache(cfg).dir / "sets" / key
    if (final / META_FILE).is_file() and set_intact(final):
        return MappedFeatureSet(str(final), key)
    tmp = final.parent / f".{key}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)  # with the umask's permissions: other users' nodes may read a shared cache
    try:
        meta = write_set(tmp, scan, targets, copy_frames, progress, verified)
        meta.update(key=key, classes=list(ds.classes), feature=recorded_feature(cfg))
        (tmp / META_FILE).write_text(json.dumps(meta))
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed a complete copy into place first
            if not (final / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MappedFeatureSet(str(final), key)


def write_set(d: Path, scan: CacheScan, targets: dict, copy_frames: dict, progress: bool,
              verified: dict[str, np.ndarray] | None = None) -> dict:
    """Write every split's and copy's features (normalized with the train statistics), targets and verified
    flags into d."""
    rows = sum(len(e) for e in scan.entries.values())
    with progress_bar(f"memory-mapped features ({rows} rows)", rows, enabled=progress) as advance:
        mms = {name: write_stacked(d / f"{name}.x.npy", e, scan.frames, scan.cache, advance)
               for name, e in scan.entries.items()}
    norm = Normalizer.fit(mms["train"])
    for mm in mms.values():
        normalize_in_place(mm, norm)
    del mms
    for split, arrays in targets.items():
        for name, a in zip(TARGETS, arrays, strict=True):
            save_optional(d / f"{split}.{name}.npy", a)
    for split, flags in (verified or {}).items():
        save_optional(d / f"{split}.verified.npy", flags)
    for name, yf in copy_frames.items():
        save_optional(d / f"train@{name}.y_frames.npy", yf)
    return {"frames": scan.frames, "normalizer": norm.to_dict(), "clip_ids": scan.ids_of,
            "unlabeled_ids": scan.unlabeled_ids,
            "copy_names": [c.name for c in scan.copies],
            "checksums": {f.name: file_crc32(f) for f in sorted(d.glob("*.npy"))}}


def set_intact(d: Path) -> bool:
    """Whether every consolidated file of a complete folder matches the CRC-32 in its meta.json (read once
    by the driver before a search reuses it; trials memory-map it unchecked). A folder that fails, or one
    written before the checksums, is moved aside and removed, reported, and then rebuilt."""
    sums = json.loads((d / META_FILE).read_text()).get("checksums")
    files = {f.name for f in d.glob("*.npy")}
    if sums is None:
        why = "has no checksums (written before harmonia checksummed its cache): its values cannot be trusted"
    else:
        bad = sorted(files ^ set(sums)) + sorted(n for n in files & set(sums) if file_crc32(d / n) != sums[n])
        if not bad:
            return True
        why = f"failed its checksums ({', '.join(bad)}): its files changed after harmonia wrote them"
    console.print(f"feature cache: {d} {why}; rebuilt", soft_wrap=True, markup=False, highlight=False)
    stale = d.parent / f".{d.name}.stale.{uuid.uuid4().hex[:8]}"
    try:
        os.replace(d, stale)  # trials of another search that mapped it keep their open maps
    except OSError:
        return False
    shutil.rmtree(stale, ignore_errors=True)
    return False


def load_feature_sets(ds: Dataset, cfg: FeatureConfig, kinds: list[str], progress: bool = True,
                      workers: int | None = None, unlabeled: bool = False) -> dict[str, "FeatureSet | MappedFeatureSet"]:
    """kind → FeatureSet, as `build_feature_sets`, while all kinds together fit `cfg.memory_budget_mb`;
    above it kind → MappedFeatureSet (each trial memory-maps its kind's files; see the module docstring).
    `unlabeled` (a semi-supervised search) adds the `unlabeled` clips' features, counted in the budget."""
    cfgs = {k: cfg.model_copy(update={"kind": k}) for k in dict.fromkeys(kinds)}
    scans = {k: scan_cache(ds, c, workers, progress, unlabeled) for k, c in cfgs.items()}
    total = sum(s.nbytes for s in scans.values())
    if total <= cfg.memory_budget_mb * 2**20:
        return {k: build_feature_set(ds, c, progress=progress, workers=workers, unlabeled=unlabeled)
                for k, c in cfgs.items()}
    if progress:
        console.print(f"features: {total / 2**20:.0f} MB > features.memory_budget_mb={cfg.memory_budget_mb:g}: "
                      f"trials memory-map them from {cfg.cache_dir} (on a cluster every node must mount it)")
    return {k: build_mapped_feature_set(ds, c, scans[k], progress, workers) for k, c in cfgs.items()}


def open_feature_set(data: "FeatureSet | MappedFeatureSet") -> FeatureSet:
    """A FeatureSet as is, or a handle opened (memory maps) on this node."""
    return data.open() if isinstance(data, MappedFeatureSet) else data
