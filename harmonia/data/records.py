"""What a format's reader produces: one record per clip (labels, where it was listed) and the scan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harmonia.data.problems import CheckReport

SPLIT_NAMES: dict[str, str] = {"train": "train", "valid": "valid", "validation": "valid", "test": "test",
                               "unlabeled": "unlabeled"}
SPLIT_ORDER: tuple[str, ...] = ("train", "valid", "test", "unlabeled")
LABELED_SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass
class StrongRow:
    line: int
    onset: float | None
    offset: float | None
    label: str | None
    valid: bool = True


@dataclass
class Listed:
    """A value read from a metadata row, with the file and line it came from."""

    value: str | float
    file: str
    line: int


@dataclass
class ClipRecord:
    split: str
    filename: str
    path: Path
    meta_file: str
    line: int
    strong: list[StrongRow] = field(default_factory=list)
    weak: list[str] | None = None
    weak_file: str = ""
    weak_line: int = 0
    in_strong: bool = False
    duration: float | None = None
    sample_rate: int | None = None
    audio_ok: bool = False
    clip_id: str = ""  # the format's id; harmonia's own layout: <split>/<filename>
    group: Listed | None = None  # which clips share a source; None: the clip is its own group
    fold: int | None = None  # predefined fold (ESC-50, UrbanSound8K)
    listed_duration: Listed | None = None  # from a durations file; the audio is the truth
    extra: dict[str, str] = field(default_factory=dict)  # format columns kept in the table (scene identifier)

    def __post_init__(self) -> None:
        if not self.clip_id:
            self.clip_id = f"{self.split}/{self.filename}"

    @property
    def group_name(self) -> str:
        return self.clip_id if self.group is None else str(self.group.value)


@dataclass
class Scan:
    root: Path
    classes: list[str]
    has_strong: bool
    clips: dict[str, ClipRecord]
    report: CheckReport


def clip_tags(clip: ClipRecord) -> list[str]:
    """Sorted unique labels: valid strong events united with weak labels."""
    labels = {ev.label for ev in clip.strong if ev.label is not None and ev.valid}
    return sorted(labels | set(clip.weak or []))
