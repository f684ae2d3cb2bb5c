"""Loading a dataset folder (any registered format, `harmonia.data.formats`) into the Dataset contract
tables: `clips` (clip_id, path, split, duration, tags, sequence, group[, fold]) and strong `events`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harmonia.data.problems import Problem
from harmonia.data.records import SPLIT_NAMES
from harmonia.data.registry import ReadOptions, Source, resolve_format
from harmonia.data.scan import scan_dataset
from harmonia.data.tables import CLIP_COLUMNS, EVENT_COLUMNS, FOLD_COLUMN, tables

__all__ = ["CLIP_COLUMNS", "EVENT_COLUMNS", "FOLD_COLUMN", "Dataset", "DatasetError", "check_task_data",
           "dataset_present", "load_dataset", "read_options"]


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message lists each problem as file:line: message."""


def _format_problems(root: Path, headline: str, problems: list[Problem]) -> str:
    lines = [f"{root}: {len(problems)} error(s) in dataset (run `harmonia data check {root}` for a full report):",
             f"  {headline}"]
    lines += [f"  {p.file}{'' if p.line is None else f':{p.line}'}: {p.message}" for p in problems]
    return "\n".join(lines)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    clips: pd.DataFrame
    events: pd.DataFrame
    has_strong: bool
    format: str = "harmonia"

    def split(self, name: str) -> pd.DataFrame:
        """Clips of one split (`validation` is accepted for `valid`), index reset."""
        canonical = SPLIT_NAMES.get(name)
        present = list(dict.fromkeys(self.clips["split"]))
        if canonical not in present:
            raise DatasetError(f"{self.root}: no split {name!r} (present: {present})")
        return self.clips[self.clips["split"] == canonical].reset_index(drop=True)

    @property
    def is_scene(self) -> bool:
        """A DCASE 2018 task 1 dataset: one scene label per clip (the table has an `identifier` column)."""
        return "identifier" in self.clips.columns

    @property
    def has_folds(self) -> bool:
        """The format defines folds (ESC-50, UrbanSound8K): the table has a `fold` column."""
        return FOLD_COLUMN in self.clips.columns

    def targets(self, split: str) -> np.ndarray:
        """[N, C] float32 multi-hot clip tags (one-hot for scenes), rows in the order of `split(name)`."""
        index = {c: i for i, c in enumerate(self.classes)}
        tags = self.split(split)["tags"]
        y = np.zeros((len(tags), len(self.classes)), dtype=np.float32)
        for row, labels in enumerate(tags):
            y[row, [index[t] for t in labels]] = 1.0
        return y

    def save_table(self, path: str | Path) -> Path:
        """Write the clips table as Parquet (list columns kept as Arrow lists)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.clips.to_parquet(path, index=False)
        return path


def read_options(data=None, features=None, sample_rate: int | None = None) -> ReadOptions:
    """ReadOptions from the config's `data:` (a DataConfig) and `features:` (a FeatureConfig)."""
    extra: dict = {}
    if features is not None:
        extra = {"frame_seconds": features.hop_length / features.sample_rate}
    if sample_rate is not None:
        extra["sample_rate"] = sample_rate
    if data is None:
        return ReadOptions(**extra)
    splits = {split: tuple(Source(s.metadata, s.audio, s.durations) for s in sources)
              for split, sources in data.splits.items()}
    return ReadOptions(format=data.format, splits=splits, subsets=dict(data.subsets), test_fold=data.test_fold,
                       valid_fold=data.valid_fold, clip_seconds=data.clip_seconds, **extra)


def dataset_present(root: str | Path, format: str | None = None) -> bool:
    """Whether `root` holds a dataset to read (so nothing is synthesized there): a format is configured,
    a registered format recognises the folder, or it has a `metadata/` folder (read, and its errors shown)."""
    root = Path(root)
    if not root.is_dir():
        return False
    return format is not None or (root / "metadata").is_dir() or resolve_format(root, None).format is not None


def load_dataset(root: str | Path, strict: bool = True, sample_rate: int | None = None,
                 options: ReadOptions | None = None) -> Dataset:
    """Load a dataset folder in any registered format (configured in `options`, else detected); strict
    raises DatasetError listing every error-level problem.

    Non-strict drops what is broken (unreadable clips, malformed or invalid rows) and keeps the rest.
    """
    options = options or ReadOptions(sample_rate=sample_rate)
    scan = scan_dataset(root, options)
    errors = scan.report.errors
    if errors and (strict or scan.report.format is None):
        raise DatasetError(_format_problems(scan.root, scan.report.headline(), errors))
    clips, events = tables(scan)
    if clips.empty:
        raise DatasetError(f"{scan.root}: no usable clips found")
    return Dataset(scan.root, list(scan.classes), clips, events, scan.has_strong, scan.report.format or "")


def check_task_data(ds: Dataset, task: str) -> None:
    """DatasetError when `ds` lacks the labels `task` trains on: strong labels for sed and sequence
    (frame activity, the order of events), exactly one label per labelled clip for scene."""
    if task in ("sed", "sequence") and not ds.has_strong:
        what = "frame targets" if task == "sed" else "the order of events"
        raise DatasetError(f"{ds.root}: task {task!r} needs strong labels (metadata/<split>.tsv with onset, offset, "
                           f"event_label) for {what}; this dataset has none")
    if task == "scene":
        labeled = ds.clips[ds.clips["split"] != "unlabeled"]
        counts = labeled["tags"].map(len)
        if (counts != 1).any():
            bad = labeled[counts != 1].iloc[0]
            raise DatasetError(f"{ds.root}: task 'scene' needs exactly one label per clip (a DCASE 2018 task 1 "
                               f"folder: meta.csv + evaluation_setup/); {int((counts != 1).sum())} clips have "
                               f"another number, e.g. {bad['clip_id']} with {list(bad['tags'])}")
