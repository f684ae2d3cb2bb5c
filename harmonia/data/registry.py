"""The registry of dataset formats: each format module registers how to recognise a folder and read it.

A reader turns a folder as distributed into clip records plus problems with file and line; loading
(`harmonia.data.datasets`) and checking (`harmonia.data.data_check`) run the same scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord


@dataclass(frozen=True)
class Source:
    """One metadata file and the audio folder its filenames are relative to (a per-split override)."""

    metadata: str
    audio: str
    durations: str | None = None


@dataclass(frozen=True)
class ReadOptions:
    """How to read a folder: from `data:` in the config (format, per-split sources, subset mapping, folds)
    and the feature front end (what one frame is)."""

    format: str | None = None
    splits: dict[str, tuple[Source, ...]] = field(default_factory=dict)
    subsets: dict[str, str] = field(default_factory=dict)
    test_fold: int | None = None
    valid_fold: int | None = None
    sample_rate: int | None = None
    frame_seconds: float = 320 / 16000  # one feature frame (a hop) of the default features
    clip_seconds: float | None = None


@dataclass
class Read:
    """What a reader found: clips keyed uniquely, declared classes (or None), the files of each split."""

    clips: dict[str, ClipRecord]
    classes: list[str] | None
    has_strong: bool
    sources: dict[str, list[str]]
    names_identify_clips: bool = True  # same filename in two splits is the same clip (a leak)
    class_lines: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # where each class is declared


@dataclass(frozen=True)
class Format:
    """A registered format: `detect(root)` lists what is missing (empty: it matches); `read` parses it."""

    name: str
    looks_for: str  # one line: the files that make this format
    detect: Callable[[Path], list[str]]
    read: Callable[[Path, ReadOptions, Collector], Read]
    accepts_sources: bool = False  # data.splits overrides apply


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format to the registry (one call per format module, at import)."""
    if fmt.name in FORMATS:
        raise ValueError(f"dataset format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


@dataclass(frozen=True)
class Resolution:
    """The format to read a folder with, how it was chosen, or why none could be (one line per format)."""

    format: Format | None
    how: str
    misses: dict[str, str]


def resolve_format(root: Path, configured: str | None) -> Resolution:
    """The configured format, else the only one whose files are present; several or none: the reasons."""
    if configured is not None:
        if configured not in FORMATS:
            known = ", ".join(sorted(FORMATS))
            return Resolution(None, "configured", {"data.format": f"unknown format {configured!r} (known: {known})"})
        return Resolution(FORMATS[configured], "configured", {})
    missing = {name: fmt.detect(root) for name, fmt in FORMATS.items()}
    matches = [name for name, miss in missing.items() if not miss]
    if len(matches) == 1:
        return Resolution(FORMATS[matches[0]], "auto-detected", {})
    if matches:
        names = ", ".join(matches)
        return Resolution(None, "auto-detected", {"data.format": f"the folder matches formats {names}; name one in "
                                                                 f"the config (data: {{format: NAME}}) or --format"})
    return Resolution(None, "auto-detected", {
        name: f"looked for {FORMATS[name].looks_for}; missing: {'; '.join(miss)}" for name, miss in missing.items()})
