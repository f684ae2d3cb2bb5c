"""FSD50K as distributed: `FSD50K.ground_truth/{dev,eval,vocabulary}.csv` (dev: fname, labels, mids,
split; eval: fname, labels, mids; vocabulary: index, label, mid without a header) and audio in
`FSD50K.dev_audio/`, `FSD50K.eval_audio/` as `<fname>.wav`. dev's split column makes train and valid
(`data.subsets`: train -> train, val -> valid by default), eval is test. `fname` is the Freesound id:
each clip's group and its clip id."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.formats.csv_clips import SKIP, add_clip
from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord
from harmonia.data.registry import Format, Read, ReadOptions, register
from harmonia.data.text import read_csv

TRUTH = "FSD50K.ground_truth"
DEV, EVAL, VOCABULARY = f"{TRUTH}/dev.csv", f"{TRUTH}/eval.csv", f"{TRUTH}/vocabulary.csv"
DEV_AUDIO, EVAL_AUDIO = "FSD50K.dev_audio", "FSD50K.eval_audio"
DEFAULT_DEV_SPLITS: dict[str, str] = {"train": "train", "val": "valid"}


def detect(root: Path) -> list[str]:
    missing = [f"no {name}" for name in (DEV, EVAL, VOCABULARY) if not (root / name).is_file()]
    return missing + [f"no {d}/ folder" for d in (DEV_AUDIO, EVAL_AUDIO) if not (root / d).is_dir()]


def _vocabulary(root: Path, out: Collector) -> tuple[list[str], dict[str, tuple[str, int | None]]]:
    where = {row["label"]: (VOCABULARY, line)
             for line, row in read_csv(root / VOCABULARY, VOCABULARY, ("index", "label", "mid"), out, header=False)}
    return list(where), where


def _labels(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    dev_splits = {**DEFAULT_DEV_SPLITS, **options.subsets}
    classes, class_lines = _vocabulary(root, out)
    clips: dict[str, ClipRecord] = {}
    for line, row in read_csv(root / DEV, DEV, ("fname", "labels", "split"), out):
        split = dev_splits.get(row["split"])
        if split is None:
            out.error(DEV, line, f"split {row['split']!r} is not one of {sorted(dev_splits)} (data.subsets maps them)")
        elif split != SKIP:
            add_clip(clips, split, f"{row['fname']}.wav", root / DEV_AUDIO, DEV, line, _labels(row["labels"]), out,
                     group=row["fname"], clip_id=row["fname"])
    for line, row in read_csv(root / EVAL, EVAL, ("fname", "labels"), out):
        add_clip(clips, "test", f"{row['fname']}.wav", root / EVAL_AUDIO, EVAL, line, _labels(row["labels"]), out,
                 group=row["fname"], clip_id=row["fname"])
    files = {"train": [f"{DEV} split train", f"{DEV_AUDIO}/"], "valid": [f"{DEV} split val", f"{DEV_AUDIO}/"],
             "test": [EVAL, f"{EVAL_AUDIO}/"]}
    return Read(clips, classes or None, False, files, class_lines=class_lines)


FORMAT = register(Format("fsd50k", f"{DEV}, {EVAL}, {VOCABULARY} with {DEV_AUDIO}/ and {EVAL_AUDIO}/",
                         detect, read))
