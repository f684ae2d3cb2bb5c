"""DCASE 2018 task 2 / FSDKaggle2018 as distributed on Kaggle: `train.csv` (fname, label,
manually_verified), `test_post_competition.csv` (fname, label, usage), `audio_train/`, `audio_test/`.
train.csv is train; test clips go by `usage` (`data.subsets`; default Public -> valid, Private ->
test, Ignored -> none). An optional `freesound_id` column gives each clip's group."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.formats.csv_clips import SKIP, add_clip
from harmonia.data.problems import Collector
from harmonia.data.records import SPLIT_ORDER, ClipRecord
from harmonia.data.registry import Format, Read, ReadOptions, register
from harmonia.data.text import read_csv

TRAIN, TEST = "train.csv", "test_post_competition.csv"
TRAIN_COLUMNS: tuple[str, ...] = ("fname", "label", "manually_verified")
TEST_COLUMNS: tuple[str, ...] = ("fname", "label", "usage")
DEFAULT_USAGE: dict[str, str] = {"Public": "valid", "Private": "test", "Ignored": SKIP}
VERIFIED = "verified"


def detect(root: Path) -> list[str]:
    missing = [f"no {name}" for name in (TRAIN, TEST) if not (root / name).is_file()]
    return missing + [f"no {d}/ folder" for d in ("audio_train", "audio_test") if not (root / d).is_dir()]


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    usage = {**DEFAULT_USAGE, **options.subsets}
    clips: dict[str, ClipRecord] = {}
    files: dict[str, list[str]] = {"train": [TRAIN, "audio_train/"]}
    for line, row in read_csv(root / TRAIN, TRAIN, TRAIN_COLUMNS, out):
        rec = add_clip(clips, "train", row["fname"], root / "audio_train", TRAIN, line, [row["label"]], out,
                       group=row.get("freesound_id"))
        verified = row["manually_verified"].strip()
        if verified not in ("0", "1"):
            out.error(TRAIN, line, f"manually_verified {verified!r}: expected 0 or 1")
        elif rec is not None:
            rec.extra[VERIFIED] = verified  # the table's `verified` column ("" for test clips: all verified)
    for line, row in read_csv(root / TEST, TEST, TEST_COLUMNS, out):
        split = usage.get(row["usage"])
        if split is None:
            out.error(TEST, line, f"usage {row['usage']!r} is not one of {sorted(usage)} (data.subsets maps usages)")
        elif split != SKIP:
            add_clip(clips, split, row["fname"], root / "audio_test", TEST, line, [row["label"]], out,
                     group=row.get("freesound_id"))
            files.setdefault(split, [f"{TEST} usage {', '.join(u for u, s in usage.items() if s == split)}",
                                     "audio_test/"])
    files = {s: files[s] for s in SPLIT_ORDER if s in files}
    return Read(clips, None, False, files)


FORMAT = register(Format("fsdkaggle2018", f"{TRAIN} and {TEST} with audio_train/ and audio_test/", detect, read))
