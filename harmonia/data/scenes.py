"""Acoustic scene datasets in the DCASE 2018 task 1 development-set format.

    meta.csv                          filename<TAB>scene_label<TAB>identifier<TAB>source_label (header)
    audio/airport-barcelona-0-0-a.wav ...
    evaluation_setup/fold1_train.csv  filename<TAB>scene_label
    evaluation_setup/fold1_evaluate.csv filename<TAB>scene_label
    evaluation_setup/fold1_test.csv   filename

`identifier` is the recording location (city-location: "barcelona-0"); the official folds never
put one location in both train and evaluate. harmonia's splits: test = fold<k>_evaluate; valid =
whole locations of fold<k>_train (about `valid_fraction` of each scene's clips, chosen by a fixed
seed), so that no location is in both train and valid; train = the rest of fold<k>_train.
Fold files may have a header line (the 2018 release has one) or not. Every problem is reported
with its file and line, as `harmonia data check` does for task-4 folders.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harmonia.data.data_check import (CheckReport, ClipRecord, Scan, Summary, _check_audio, _Collector, _read_lines,
                                 _read_tsv, _safe_filename)

META_FILE = "meta.csv"
SETUP_DIR = "evaluation_setup"
META_COLUMNS: tuple[str, ...] = ("filename", "scene_label", "identifier", "source_label")
FOLD_PARTS: dict[str, tuple[str, ...]] = {
    "train": ("filename", "scene_label"),
    "evaluate": ("filename", "scene_label"),
    "test": ("filename",),
}
VALID_FRACTION = 0.2
VALID_SEED = 0


def is_scene_dataset(root: str | Path) -> bool:
    """True for a DCASE 2018 task 1 folder (meta.csv or evaluation_setup/ at the root)."""
    root = Path(root)
    return (root / META_FILE).is_file() or (root / SETUP_DIR).is_dir()


def fold_file(part: str, fold: int = 1) -> str:
    return f"{SETUP_DIR}/fold{fold}_{part}.csv"


@dataclass
class MetaRow:
    line: int
    scene: str
    identifier: str
    source: str


@dataclass
class SceneScan(Scan):
    """A Scan whose clips are keyed by their meta.csv filename, with each clip's location."""

    identifiers: dict[str, str] = field(default_factory=dict)


def _read_meta(root: Path, out: _Collector) -> dict[str, MetaRow]:
    path = root / META_FILE
    if not path.is_file():
        out.error(META_FILE, None, f"not found (expected {'<TAB>'.join(META_COLUMNS)} with a header line)")
        return {}
    rows: dict[str, MetaRow] = {}
    for line, row in _read_tsv(path, META_FILE, META_COLUMNS, out):
        name = row["filename"]
        if not name or not _safe_filename(name):
            out.error(META_FILE, line, f"filename {name!r} is empty or escapes the dataset root")
            continue
        empty = [c for c in ("scene_label", "identifier") if not row[c]]
        if empty:
            out.error(META_FILE, line, f"malformed row: empty {' and '.join(empty)}")
            continue
        if name in rows:
            out.error(META_FILE, line, f"duplicate row for {name!r} (first at line {rows[name].line})")
            continue
        rows[name] = MetaRow(line, row["scene_label"], row["identifier"], row["source_label"])
    if not rows and not out.problems:
        out.error(META_FILE, None, "no clips listed")
    return rows


def _read_fold(path: Path, rel: str, columns: tuple[str, ...], out: _Collector):
    """Yield (line, {column: value}); a first line starting with `filename` is a header."""
    lines = _read_lines(path, rel, out)
    if lines is None:
        return
    start, header = 1, list(columns)
    if lines and lines[0].split("\t")[0].strip() == "filename":
        header = [h.strip() for h in lines[0].split("\t")]
        missing = [c for c in columns if c not in header]
        if missing:
            out.error(rel, 1, f"header {header} lacks column(s) {missing} (expected {'<TAB>'.join(columns)})")
            return
        start = 2
    for number, raw in enumerate(lines[start - 1:], start=start):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if len(fields) != len(header):
            out.error(rel, number, f"malformed row: expected {len(header)} tab-separated columns "
                                   f"({', '.join(header)}), got {len(fields)}")
            continue
        yield number, {h: v.strip() for h, v in zip(header, fields)}


def _read_folds(root: Path, meta: dict[str, MetaRow], fold: int, out: _Collector) -> dict[str, dict[str, int]]:
    """part -> {filename: line} for fold<k>_{train,evaluate,test}.csv, checked against meta.csv."""
    parts: dict[str, dict[str, int]] = {}
    for part, columns in FOLD_PARTS.items():
        rel = fold_file(part, fold)
        path = root / rel
        if not path.is_file():
            if part == "test":
                out.warning(rel, None, f"not found; test clips are those of {fold_file('evaluate', fold)} anyway")
            else:
                out.error(rel, None, f"not found (expected {'<TAB>'.join(columns)} per line)")
            continue
        seen: dict[str, int] = {}
        for line, row in _read_fold(path, rel, columns, out):
            name = row["filename"]
            if name in seen:
                out.error(rel, line, f"duplicate row for {name!r} (first at line {seen[name]})")
                continue
            if name not in meta:
                out.error(rel, line, f"{name!r} is not in {META_FILE}")
                continue
            label = row.get("scene_label")
            if label is not None and label != meta[name].scene:
                out.error(rel, line, f"scene_label {label!r} differs from {META_FILE}:{meta[name].line} "
                                     f"({meta[name].scene!r})")
                continue
            seen[name] = line
        parts[part] = seen
    train, evaluate = parts.get("train", {}), parts.get("evaluate", {})
    for name, line in evaluate.items():
        if name in train:
            out.error(fold_file("evaluate", fold), line,
                      f"{name!r} is also in {fold_file('train', fold)}:{train[name]}")
    if "test" in parts and evaluate:
        for name, line in parts["test"].items():
            if name not in evaluate:
                out.warning(fold_file("test", fold), line, f"{name!r} is not in {fold_file('evaluate', fold)}; ignored")
    shared = {meta[n].identifier for n in train} & {meta[n].identifier for n in evaluate if n not in train}
    for ident in sorted(shared):
        out.warning(fold_file("evaluate", fold), None, f"location {ident!r} is in both train and evaluate folds")
    for name, row in meta.items():
        if name not in train and name not in evaluate:
            out.warning(META_FILE, row.line, f"{name!r} is in no fold of {fold_file('*', fold)}; not used")
    return parts


def split_by_location(clips: list[tuple[str, str, str]], fraction: float = VALID_FRACTION,
                      seed: int = VALID_SEED) -> set[str]:
    """Filenames of (filename, scene, identifier) train clips that go to valid: per scene, whole
    locations are moved while that brings the scene's valid share closer to `fraction` (at least
    one, the closest in size; ties in a seeded order), and one location at least stays in train.
    A location belongs to the scene most of its clips have. Same input, same split."""
    groups: dict[str, list[str]] = defaultdict(list)
    scenes: dict[str, Counter[str]] = defaultdict(Counter)
    for name, scene, ident in clips:
        groups[ident].append(name)
        scenes[ident][scene] += 1
    idents = sorted(groups)
    order = [idents[i] for i in np.random.default_rng(seed).permutation(len(idents))]
    main = {i: sorted(scenes[i].items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for i in idents}
    total = Counter(scene for _, scene, _ in clips)
    valid: set[str] = set()
    for scene in sorted(total):
        candidates = [i for i in order if main[i] == scene]
        target, have = fraction * total[scene], 0
        while len(candidates) > 1:
            best = min(candidates, key=lambda i: abs(have + len(groups[i]) - target))
            if have and abs(have + len(groups[best]) - target) >= abs(have - target):
                break
            valid.update(groups[best])
            have += len(groups[best])
            candidates.remove(best)
    return valid


def scan_scene_dataset(root: str | Path, sample_rate: int | None = None, fold: int = 1,
                       valid_fraction: float = VALID_FRACTION) -> SceneScan:
    """Parse meta.csv, the fold files and the audio headers once, recording every problem with file and line."""
    root = Path(root)
    out = _Collector()
    meta = _read_meta(root, out)
    parts = _read_folds(root, meta, fold, out) if meta else {}
    train = parts.get("train", {})
    valid = split_by_location([(n, meta[n].scene, meta[n].identifier) for n in sorted(train)], valid_fraction)
    clips: dict[str, ClipRecord] = {}
    for name in sorted(meta):
        if name in train:
            split = "valid" if name in valid else "train"
        elif name in parts.get("evaluate", {}):
            split = "test"
        else:
            continue
        row = meta[name]
        clips[name] = ClipRecord(split, name, root / name, META_FILE, row.line, weak=[row.scene])
    _check_audio(root, clips, {}, sample_rate, out)
    classes = sorted({row.scene for row in meta.values()})
    problems = sorted(out.problems, key=lambda p: (p.file, p.line or 0))
    report = CheckReport(root, problems, _summary(clips, classes))
    return SceneScan(root, classes, False, clips, report, {n: meta[n].identifier for n in clips})


def _summary(clips: dict[str, ClipRecord], classes: list[str]) -> Summary:
    usable = [c for c in clips.values() if c.audio_ok]
    per_split = {s: sum(c.split == s for c in usable) for s in ("train", "valid", "test")
                 if any(c.split == s for c in clips.values())}
    per_scene = Counter(c.weak[0] for c in usable)
    hours = sum(c.duration or 0.0 for c in usable) / 3600
    return Summary(per_split, classes, {k: per_scene.get(k, 0) for k in classes}, hours)


def scene_tables(scan: SceneScan):
    """(clips, events) tables of the Dataset contract: clip_id is the meta.csv filename, `tags` the one
    scene label, `sequence` empty, plus an `identifier` column (the recording location); no events."""
    import pandas as pd

    from harmonia.data.datasets import CLIP_COLUMNS, EVENT_COLUMNS

    order = {s: i for i, s in enumerate(("train", "valid", "test"))}
    usable = sorted((c for c in scan.clips.values() if c.audio_ok), key=lambda c: (order[c.split], c.filename))
    clips = pd.DataFrame(
        {
            "clip_id": pd.Series([c.filename for c in usable], dtype="str"),
            "path": pd.Series([str(c.path.absolute()) for c in usable], dtype="str"),
            "split": pd.Series([c.split for c in usable], dtype="str"),
            "duration": pd.Series([float(c.duration) for c in usable], dtype="float64"),
            "tags": pd.Series([list(c.weak) for c in usable], dtype=object),
            "sequence": pd.Series([[] for _ in usable], dtype=object),
            "identifier": pd.Series([scan.identifiers[c.filename] for c in usable], dtype="str"),
        },
        columns=[*CLIP_COLUMNS, "identifier"],
    )
    events = pd.DataFrame({c: pd.Series([], dtype="float64" if c in ("onset", "offset") else "str")
                           for c in EVENT_COLUMNS})
    return clips, events
