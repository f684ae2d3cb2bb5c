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
with its file and line. Registered as format `dcase2018_task1`; each clip's group is its location.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord, Listed
from harmonia.data.registry import Format, Read, ReadOptions, register
from harmonia.data.text import read_lines, read_tsv, safe_filename

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


def _read_meta(root: Path, out: Collector) -> dict[str, MetaRow]:
    path = root / META_FILE
    if not path.is_file():
        out.error(META_FILE, None, f"not found (expected {'<TAB>'.join(META_COLUMNS)} with a header line)")
        return {}
    rows: dict[str, MetaRow] = {}
    for line, row in read_tsv(path, META_FILE, META_COLUMNS, out):
        name = row["filename"]
        if not name or not safe_filename(name):
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


def _read_fold(path: Path, rel: str, columns: tuple[str, ...], out: Collector):
    """Yield (line, {column: value}); a first line starting with `filename` is a header."""
    lines = read_lines(path, rel, out)
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


def _read_folds(root: Path, meta: dict[str, MetaRow], fold: int, out: Collector) -> dict[str, dict[str, int]]:
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


def read(root: Path, options: ReadOptions, out: Collector, fold: int = 1,
         valid_fraction: float = VALID_FRACTION) -> Read:
    """Parse meta.csv and the fold files into clip records (valid: whole locations of the train fold)."""
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
        clips[name] = ClipRecord(split, name, root / name, META_FILE, row.line, weak=[row.scene], clip_id=name,
                                 group=Listed(row.identifier, META_FILE, row.line),
                                 extra={"identifier": row.identifier})
    classes = sorted({row.scene for row in meta.values()})
    files = {"train": [META_FILE, fold_file("train", fold)], "valid": [f"locations of {fold_file('train', fold)}"],
             "test": [fold_file("evaluate", fold)]}
    return Read(clips, classes, False, files)


def detect(root: Path) -> list[str]:
    return [] if is_scene_dataset(root) else [f"no {META_FILE} and no {SETUP_DIR}/"]


FORMAT = register(Format("dcase2018_task1", f"{META_FILE} (filename, scene_label, identifier) with "
                                            f"{SETUP_DIR}/fold1_{{train,evaluate}}.csv", detect, read))
