"""Shared reading of DCASE task-4 style TSVs, for harmonia's own layout, its flat variant and DESED.

A metadata file's header says what it holds: `filename onset offset event_label` (strong events),
`filename event_labels` (weak tags) or `filename` alone (unlabelled clips). Any of them may carry a
`group` column (which clips share a source); all rows of one clip must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord, Listed, StrongRow
from harmonia.data.registry import ReadOptions, Source
from harmonia.data.text import EMPTY_VALUES, filename_ok, parse_time, read_lines, read_tsv, rel, tsv_header

STRONG_COLUMNS: tuple[str, ...] = ("filename", "onset", "offset", "event_label")
WEAK_COLUMNS: tuple[str, ...] = ("filename", "event_labels")
DURATION_COLUMNS: tuple[str, ...] = ("filename", "duration")
GROUP_COLUMN = "group"
CLASSES_FILE = "metadata/classes.txt"


def no_group(filename: str) -> str | None:
    return None


@dataclass(frozen=True)
class TsvSource:
    """A metadata file of one split, the audio folder of its filenames, and how clip ids are made."""

    split: str
    metadata: Path
    audio: Path
    prefix: str = ""  # clip id = prefix + filename
    durations: Path | None = None
    group_of: Callable[[str], str | None] = no_group  # a group from the filename (DESED's YouTube id)


def metadata_kind(path: Path) -> str:
    """'strong', 'weak' or 'unlabeled' from a TSV's header."""
    header = set(tsv_header(path))
    if {"onset", "offset", "event_label"} <= header:
        return "strong"
    return "weak" if "event_labels" in header else "unlabeled"


Prefix = Callable[[str, Source], str]


def with_overrides(root: Path, found: list[TsvSource], options: ReadOptions, prefix: Prefix,
                   group_of: Callable[[str], str | None] = no_group) -> list[TsvSource]:
    """`found` with the splits named in `data.splits` replaced by the configured sources; `prefix(split,
    source)` makes their clip ids."""
    kept = [s for s in found if s.split not in options.splits]
    for split, sources in options.splits.items():
        kept += [TsvSource(split, root / s.metadata, root / s.audio, prefix(split, s),
                           root / s.durations if s.durations else None, group_of) for s in sources]
    return kept


def add_audio_dirs(root: Path, files: dict[str, list[str]], sources: list[TsvSource]) -> dict[str, list[str]]:
    """Each split's file list followed by its audio folder(s), as `data check` shows them."""
    for s in sources:
        audio = rel(s.audio, root) + "/"
        if audio not in files.setdefault(s.split, []):
            files[s.split].append(audio)
    return files


def read_classes(root: Path, out: Collector) -> tuple[list[str] | None, dict[str, tuple[str, int | None]]]:
    """metadata/classes.txt (one class per line) when present, with each class's line."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None, {}
    lines = read_lines(path, CLASSES_FILE, out) or []
    where: dict[str, tuple[str, int | None]] = {}
    for number, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        if name in where:
            out.error(CLASSES_FILE, number, f"duplicate class {name!r} (first at line {where[name][1]})")
            continue
        where[name] = (CLASSES_FILE, number)
    if not where:
        out.error(CLASSES_FILE, None, "no classes listed (expected one class per line)")
    return list(where), where


def _record(clips: dict[str, ClipRecord], src: TsvSource, name: str, rel_name: str, line: int) -> ClipRecord:
    key = f"{src.split}|{src.prefix}{name}"
    if key not in clips:
        clips[key] = ClipRecord(src.split, name, src.audio / name, rel_name, line, clip_id=f"{src.prefix}{name}")
    return clips[key]


def _set_group(clip: ClipRecord, value: str, rel_name: str, line: int, out: Collector) -> None:
    if not value or value.lower() in EMPTY_VALUES:
        return
    if clip.group is not None and clip.group.value != value:
        out.error(rel_name, line, f"group {value!r} of {clip.filename!r} differs from {clip.group.value!r} at "
                                  f"{clip.group.file}:{clip.group.line} (all rows of one clip must agree)")
        return
    if clip.group is None or clip.group.file == "":
        clip.group = Listed(value, rel_name, line)


def _strong_row(row: dict[str, str], rel_name: str, line: int, out: Collector) -> StrongRow | None:
    values = [row["onset"], row["offset"], row["event_label"]]
    empty = [v.lower() in EMPTY_VALUES for v in values]
    if all(empty):
        return StrongRow(line, None, None, None)
    if any(empty):
        out.error(rel_name, line, "malformed row: onset, offset and event_label must be all set or all empty")
        return None
    onset = parse_time(row["onset"], "onset", rel_name, line, out)
    offset = parse_time(row["offset"], "offset", rel_name, line, out)
    if onset is None or offset is None:
        return None
    return StrongRow(line, onset, offset, row["event_label"])


def read_source(root: Path, src: TsvSource, clips: dict[str, ClipRecord], out: Collector) -> str:
    """Add the rows of one metadata file to `clips`; returns its kind (strong, weak, unlabeled)."""
    rel_name, where = rel(src.metadata, root), rel(src.audio, root)
    kind = metadata_kind(src.metadata)
    columns = {"strong": STRONG_COLUMNS, "weak": WEAK_COLUMNS, "unlabeled": ("filename",)}[kind]
    seen: dict[tuple, int] = {}
    for line, row in read_tsv(src.metadata, rel_name, columns, out):
        name = row["filename"]
        if not filename_ok(name, rel_name, line, where, out):
            continue
        if kind == "strong":
            event = _strong_row(row, rel_name, line, out)
            if event is None:
                continue
            key: tuple = (name, event.onset, event.offset, event.label)
        else:
            key = (name,)
        if key in seen:
            what = "same as line" if kind == "strong" else "first at line"
            out.error(rel_name, line, f"duplicate row for {name!r} ({what} {seen[key]})")
            continue
        seen[key] = line
        clip = _record(clips, src, name, rel_name, line)
        if kind == "strong":
            clip.in_strong = True
            clip.strong.append(event)
        elif kind == "weak":
            labels = [] if row["event_labels"].lower() in EMPTY_VALUES else row["event_labels"].split(",")
            clip.weak = sorted({x.strip() for x in labels if x.strip()})
            clip.weak_file, clip.weak_line = rel_name, line
        derived = src.group_of(name)
        if derived is not None and clip.group is None:
            clip.group = Listed(derived, "", 0)
        if GROUP_COLUMN in row:
            _set_group(clip, row[GROUP_COLUMN], rel_name, line, out)
    return kind


def read_durations(root: Path, path: Path, clip_id_of: Callable[[str], str | None], expected: str,
                   out: Collector) -> dict[str, Listed]:
    """clip id -> listed duration from a `filename duration` TSV; `clip_id_of` None: malformed name."""
    if not path.is_file():
        return {}
    rel_name = rel(path, root)
    found: dict[str, Listed] = {}
    for line, row in read_tsv(path, rel_name, DURATION_COLUMNS, out):
        clip_id = clip_id_of(row["filename"])
        if clip_id is None:
            out.error(rel_name, line, f"malformed row: filename {row['filename']!r} must be {expected}")
            continue
        value = parse_time(row["duration"], "duration", rel_name, line, out)
        if value is None:
            continue
        if value <= 0:
            out.error(rel_name, line, f"duration {value} must be positive")
            continue
        if clip_id in found:
            out.error(rel_name, line, f"duplicate row for {row['filename']!r} (first at line {found[clip_id].line})")
            continue
        found[clip_id] = Listed(value, rel_name, line)
    return found


def attach_durations(clips: dict[str, ClipRecord], durations: dict[str, Listed]) -> None:
    for clip in clips.values():
        if clip.clip_id in durations:
            clip.listed_duration = durations[clip.clip_id]


def read_all(root: Path, sources: list[TsvSource], out: Collector) -> tuple[dict[str, ClipRecord], bool,
                                                                              dict[str, list[str]]]:
    """Every source's rows: (clips, any strong file, split -> metadata files read)."""
    clips: dict[str, ClipRecord] = {}
    has_strong = False
    files: dict[str, list[str]] = {}
    for src in sources:
        if not src.metadata.is_file():
            out.error(rel(src.metadata, root), None, f"metadata file of split {src.split} not found")
            continue
        has_strong |= read_source(root, src, clips, out) == "strong"
        files.setdefault(src.split, []).append(rel(src.metadata, root))
    return clips, has_strong, files
