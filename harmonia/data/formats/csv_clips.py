"""Shared reading of clip-per-row CSV formats (FSD, ESC-50, UrbanSound8K): records and predefined folds."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord, Listed
from harmonia.data.text import EMPTY_VALUES, filename_ok, parse_int, read_csv

SKIP = "none"


def add_clip(clips: dict[str, ClipRecord], split: str, filename: str, audio: Path, rel_name: str, line: int,
             labels: list[str], out: Collector, group: str | None = None, fold: int | None = None,
             clip_id: str | None = None) -> ClipRecord | None:
    """One clip from one CSV row; a repeated clip id is an error at its second row."""
    if not filename_ok(filename, rel_name, line, audio.name, out):
        return None
    key = clip_id or filename
    if key in clips:
        first = clips[key]
        out.error(rel_name, line, f"duplicate row for {key!r} (first at {first.meta_file}:{first.line})")
        return None
    has_group = group is not None and group.lower() not in EMPTY_VALUES
    clips[key] = ClipRecord(split, filename, audio / filename, rel_name, line, weak=sorted(set(labels)),
                            weak_file=rel_name, weak_line=line, clip_id=key, fold=fold,
                            group=Listed(group, rel_name, line) if has_group else None)
    return clips[key]


def fold_split(fold: int, test_fold: int, valid_fold: int) -> str:
    """The split of a clip from its predefined fold: the test fold, the valid fold, the rest train."""
    return "test" if fold == test_fold else "valid" if fold == valid_fold else "train"


def check_folds(folds: set[int], test_fold: int, valid_fold: int, file: str, out: Collector) -> bool:
    """The configured test and valid folds must differ and be among the dataset's folds."""
    if test_fold == valid_fold:
        out.error("data.valid_fold", None, f"valid fold {valid_fold} is the test fold; choose another")
        return False
    for name, fold in (("data.test_fold", test_fold), ("data.valid_fold", valid_fold)):
        if folds and fold not in folds:
            out.error(file, None, f"{name}={fold} is not a fold of this dataset (folds: {sorted(folds)})")
            return False
    return True


def folded_rows(root: Path, meta: str, columns: tuple[str, ...], test_fold: int, valid_fold: int,
                out: Collector) -> list[tuple[int, dict[str, str], int]]:
    """(line, row, fold) of a fold-numbered metadata CSV; empty when the configured folds do not fit it."""
    rows = []
    for line, row in read_csv(root / meta, meta, columns, out):
        fold = parse_int(row["fold"], "fold", meta, line, out)
        if fold is not None:
            rows.append((line, row, fold))
    return rows if check_folds({f for _, _, f in rows}, test_fold, valid_fold, meta, out) else []
