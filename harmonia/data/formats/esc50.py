"""ESC-50 as distributed: `meta/esc50.csv` (filename, fold, target, category, esc10, src_file, take) and
`audio/`. The predefined folds drive the splits: `data.test_fold` (default 5) is test, `data.valid_fold`
(default 4) valid, the others train; each clip keeps its `fold`, its group is `src_file`."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.formats.csv_clips import add_clip, fold_split, folded_rows
from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord
from harmonia.data.registry import Format, Read, ReadOptions, register

META = "meta/esc50.csv"
COLUMNS: tuple[str, ...] = ("filename", "fold", "category", "src_file")
TEST_FOLD, VALID_FOLD = 5, 4


def detect(root: Path) -> list[str]:
    missing = [] if (root / META).is_file() else [f"no {META}"]
    return missing + ([] if (root / "audio").is_dir() else ["no audio/ folder"])


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    test_fold, valid_fold = options.test_fold or TEST_FOLD, options.valid_fold or VALID_FOLD
    clips: dict[str, ClipRecord] = {}
    for line, row, fold in folded_rows(root, META, COLUMNS, test_fold, valid_fold, out):
        add_clip(clips, fold_split(fold, test_fold, valid_fold), row["filename"], root / "audio", META, line,
                 [row["category"]], out, group=row["src_file"], fold=fold)
    files = {s: [f"{META} fold {f}" if s != "train" else f"{META} other folds", "audio/"]
             for s, f in (("train", None), ("valid", valid_fold), ("test", test_fold))}
    return Read(clips, None, False, files)


FORMAT = register(Format("esc50", f"{META} with audio/", detect, read))
