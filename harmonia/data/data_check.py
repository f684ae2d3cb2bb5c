"""`harmonia data check`: the report of one scan of a dataset folder (see `harmonia.data.scan`)."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.problems import MAX_RENDERED_PROBLEMS, CheckReport, Problem, Summary
from harmonia.data.registry import ReadOptions
from harmonia.data.scan import scan_dataset

__all__ = ["MAX_RENDERED_PROBLEMS", "CheckReport", "Problem", "Summary", "check_dataset"]


def check_dataset(root: str | Path, sample_rate: int | None = None, options: ReadOptions | None = None) -> CheckReport:
    """Validate a dataset folder in any registered format; `sample_rate` is the rate audio will be resampled to."""
    return scan_dataset(root, options or ReadOptions(sample_rate=sample_rate)).report
