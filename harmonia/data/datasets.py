"""Loader for DCASE task-4 style datasets (strong, weak or both) and DCASE 2018 task 1 scene datasets
(`harmonia.data.scenes`) into the Dataset contract tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harmonia.data.data_check import SPLIT_NAMES, SPLIT_ORDER, ClipRecord, Problem, Scan, clip_tags, scan_dataset

CLIP_COLUMNS: tuple[str, ...] = ("clip_id", "path", "split", "duration", "tags", "sequence")
EVENT_COLUMNS: tuple[str, ...] = ("clip_id", "onset", "offset", "event_label")


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message lists each problem as file:line: message."""


def _format_problems(root: Path, problems: list[Problem]) -> str:
    lines = [f"{root}: {len(problems)} error(s) in dataset (run `harmonia data check {root}` for a full report):"]
    lines += [f"  {p.file}{'' if p.line is None else f':{p.line}'}: {p.message}" for p in problems]
    return "\n".join(lines)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    clips: pd.DataFrame
    events: pd.DataFrame
    has_strong: bool

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


def _sequence(clip: ClipRecord) -> list[str]:
    events = sorted((ev.onset, ev.offset, ev.label) for ev in clip.strong if ev.label is not None and ev.valid)
    return [label for _, _, label in events]


def _tables(scan: Scan) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    usable = sorted((c for c in scan.clips.values() if c.audio_ok), key=lambda c: (order[c.split], c.filename))
    known = set(scan.classes)
    clips = pd.DataFrame(
        {
            "clip_id": pd.Series([c.clip_id for c in usable], dtype="str"),
            "path": pd.Series([str(c.path.absolute()) for c in usable], dtype="str"),
            "split": pd.Series([c.split for c in usable], dtype="str"),
            "duration": pd.Series([float(c.duration) for c in usable], dtype="float64"),
            "tags": pd.Series([[t for t in clip_tags(c) if t in known] for c in usable], dtype=object),
            "sequence": pd.Series([[t for t in _sequence(c) if t in known] for c in usable], dtype=object),
        },
        columns=list(CLIP_COLUMNS),
    )
    rows = [
        (c.clip_id, ev.onset, ev.offset, ev.label)
        for c in usable
        for ev in sorted(c.strong, key=lambda e: (e.onset or 0.0, e.offset or 0.0, e.label or ""))
        if ev.label is not None and ev.valid and ev.label in known
    ]
    events = pd.DataFrame(
        {
            "clip_id": pd.Series([r[0] for r in rows], dtype="str"),
            "onset": pd.Series([r[1] for r in rows], dtype="float64"),
            "offset": pd.Series([r[2] for r in rows], dtype="float64"),
            "event_label": pd.Series([r[3] for r in rows], dtype="str"),
        },
        columns=list(EVENT_COLUMNS),
    )
    return clips, events


def load_dataset(root: str | Path, strict: bool = True, sample_rate: int | None = None) -> Dataset:
    """Load a DCASE task-4 folder, or a DCASE 2018 task 1 scene folder (meta.csv + evaluation_setup/);
    strict raises DatasetError listing every error-level problem.

    Non-strict drops what is broken (unreadable clips, malformed or invalid rows) and keeps the rest.
    """
    from harmonia.data.scenes import SceneScan, scene_tables

    scan = scan_dataset(root, sample_rate)
    errors = scan.report.errors
    if strict and errors:
        raise DatasetError(_format_problems(scan.root, errors))
    clips, events = scene_tables(scan) if isinstance(scan, SceneScan) else _tables(scan)
    if clips.empty:
        raise DatasetError(f"{scan.root}: no usable clips found")
    return Dataset(scan.root, list(scan.classes), clips, events, scan.has_strong)


def check_task_data(ds: Dataset, task: str) -> None:
    """DatasetError when `ds` lacks the labels `task` trains on: strong labels for sed and sequence
    (frame activity, the order of events), exactly one label per clip for scene."""
    if task in ("sed", "sequence") and not ds.has_strong:
        what = "frame targets" if task == "sed" else "the order of events"
        raise DatasetError(f"{ds.root}: task {task!r} needs strong labels (metadata/<split>.tsv with onset, offset, "
                           f"event_label) for {what}; this dataset has none")
    if task == "scene":
        counts = ds.clips["tags"].map(len)
        if (counts != 1).any():
            bad = ds.clips[counts != 1].iloc[0]
            raise DatasetError(f"{ds.root}: task 'scene' needs exactly one label per clip (a DCASE 2018 task 1 "
                               f"folder: meta.csv + evaluation_setup/); {int((counts != 1).sum())} clips have "
                               f"another number, e.g. {bad['clip_id']} with {list(bad['tags'])}")
