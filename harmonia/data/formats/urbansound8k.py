"""UrbanSound8K as distributed: `metadata/UrbanSound8K.csv` (slice_file_name, fsID, start, end, salience,
fold, classID, class) and `audio/fold1…fold10/`. The predefined folds drive the splits:
`data.test_fold` (default 10) is test, `data.valid_fold` (default 9) valid, the others train; each clip
keeps its `fold`, its group is its Freesound recording (`fsID`)."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.formats.csv_clips import add_clip, fold_split, folded_rows
from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord
from harmonia.data.registry import Format, Read, ReadOptions, register

META = "metadata/UrbanSound8K.csv"
COLUMNS: tuple[str, ...] = ("slice_file_name", "fsID", "fold", "class")
TEST_FOLD, VALID_FOLD = 10, 9


def detect(root: Path) -> list[str]:
    missing = [] if (root / META).is_file() else [f"no {META}"]
    return missing + ([] if (root / "audio" / "fold1").is_dir() else ["no audio/fold1/ folder"])


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    test_fold, valid_fold = options.test_fold or TEST_FOLD, options.valid_fold or VALID_FOLD
    clips: dict[str, ClipRecord] = {}
    for line, row, fold in folded_rows(root, META, COLUMNS, test_fold, valid_fold, out):
        add_clip(clips, fold_split(fold, test_fold, valid_fold), row["slice_file_name"],
                 root / "audio" / f"fold{fold}", META, line, [row["class"]], out, group=row["fsID"], fold=fold)
    files = {"train": [f"{META} other folds", "audio/fold*/"], "valid": [f"{META} fold {valid_fold}"],
             "test": [f"{META} fold {test_fold}"]}
    return Read(clips, None, False, files)


FORMAT = register(Format("urbansound8k", f"{META} with audio/fold<k>/", detect, read))
