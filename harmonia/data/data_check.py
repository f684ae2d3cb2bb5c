"""Validation of DCASE task-4 style datasets: metadata rows, audio headers, labels and times.

`scan_dataset` parses everything once and records every problem with its file and line;
`check_dataset` returns the report and `harmonia.data.datasets.load_dataset` builds its tables
from the same scan, so the rules live in one place.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Literal

from harmonia.data.audio import AudioError, audio_info

SPLIT_NAMES: dict[str, str] = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}
SPLIT_ORDER: tuple[str, ...] = ("train", "valid", "test")
STRONG_COLUMNS: tuple[str, ...] = ("filename", "onset", "offset", "event_label")
WEAK_COLUMNS: tuple[str, ...] = ("filename", "event_labels")
DURATION_COLUMNS: tuple[str, ...] = ("filename", "duration")
TIME_TOLERANCE_S: float = 0.05
MAX_RENDERED_PROBLEMS: int = 200
_EMPTY = {"", "nan", "n/a", "none", "null"}

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class Summary:
    clips_per_split: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    events_per_class: dict[str, int] = field(default_factory=dict)
    total_hours: float = 0.0


@dataclass
class CheckReport:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self, console=None) -> None:
        """Print problems, then per-split and per-class summaries, as rich tables."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        if self.problems:
            table = Table(title=f"Problems in {self.root}", show_lines=False)
            for col in ("severity", "file", "line", "message"):
                table.add_column(col, overflow="fold")
            for p in self.problems[:MAX_RENDERED_PROBLEMS]:
                style = "red" if p.severity == "error" else "yellow"
                table.add_row(f"[{style}]{p.severity}[/]", p.file, "" if p.line is None else str(p.line), p.message)
            console.print(table)
            if len(self.problems) > MAX_RENDERED_PROBLEMS:
                console.print(f"... and {len(self.problems) - MAX_RENDERED_PROBLEMS} more problems")
        s = self.summary
        splits = Table(title="Clips per split")
        splits.add_column("split")
        splits.add_column("clips", justify="right")
        for name, n in s.clips_per_split.items():
            splits.add_row(name, str(n))
        splits.add_row("[bold]total[/]", f"[bold]{sum(s.clips_per_split.values())}[/] ({s.total_hours:.2f} h)")
        console.print(splits)
        classes = Table(title=f"{len(s.classes)} classes")
        classes.add_column("class")
        classes.add_column("events", justify="right")
        for name in s.classes:
            classes.add_row(name, str(s.events_per_class.get(name, 0)))
        console.print(classes)
        verdict = "[green]no errors[/]" if self.ok else f"[red]{len(self.errors)} errors[/]"
        console.print(f"{verdict}, {len(self.warnings)} warnings")


@dataclass
class StrongRow:
    line: int
    onset: float | None
    offset: float | None
    label: str | None
    valid: bool = True


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

    @property
    def clip_id(self) -> str:
        return f"{self.split}/{self.filename}"


@dataclass
class Scan:
    root: Path
    classes: list[str]
    has_strong: bool
    clips: dict[str, ClipRecord]
    report: CheckReport


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem("error", file, line, message))

    def warning(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem("warning", file, line, message))


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_lines(path: Path, rel: str, out: _Collector) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        out.error(rel, None, f"not UTF-8 text ({err.reason} at byte {err.start})")
        return None
    except OSError as err:
        out.error(rel, None, f"cannot read: {err.strerror}")
        return None
    return text.splitlines()


def _read_tsv(path: Path, rel: str, columns: tuple[str, ...], out: _Collector) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (1-based line, {column: stripped value}) for well-formed rows; report the others."""
    lines = _read_lines(path, rel, out)
    if lines is None:
        return
    if not lines or not lines[0].strip():
        out.error(rel, 1, f"missing header (expected {'<TAB>'.join(columns)})")
        return
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        out.error(rel, 1, f"header {header} lacks column(s) {missing} (expected {'<TAB>'.join(columns)})")
        return
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if len(fields) != len(header):
            cols = ", ".join(header)
            out.error(rel, number, f"malformed row: expected {len(header)} tab-separated columns ({cols}), got {len(fields)}")
            continue
        yield number, {h: v.strip() for h, v in zip(header, fields)}


def _parse_time(value: str, name: str, rel: str, line: int, out: _Collector) -> float | None:
    try:
        t = float(value)
    except ValueError:
        out.error(rel, line, f"malformed row: {name} {value!r} is not a number")
        return None
    if not math.isfinite(t):
        out.error(rel, line, f"malformed row: {name} {value!r} is not a finite number")
        return None
    return t


def _safe_filename(name: str) -> bool:
    """True when `name` stays inside its audio/<split>/ folder (relative, no `..` part)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    drive = len(name) > 1 and name[1] == ":"
    return bool(name) and not posix.is_absolute() and not drive and ".." not in posix.parts


def _read_classes(root: Path, out: _Collector) -> list[str] | None:
    path = root / "metadata" / "classes.txt"
    if not path.is_file():
        return None
    rel = _rel(path, root)
    lines = _read_lines(path, rel, out) or []
    classes: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        if name in seen:
            out.error(rel, number, f"duplicate class {name!r} (first at line {seen[name]})")
            continue
        seen[name] = number
        classes.append(name)
    if not classes:
        out.error(rel, None, "no classes listed (expected one class per line)")
    return classes


def _split_files(root: Path, out: _Collector) -> dict[str, tuple[str, Path | None, Path | None]]:
    """canonical split -> (name on disk, strong tsv or None, weak tsv or None)."""
    meta = root / "metadata"
    found: dict[str, tuple[str, Path | None, Path | None]] = {}
    for disk_name, split in SPLIT_NAMES.items():
        strong, weak = meta / f"{disk_name}.tsv", meta / f"{disk_name}_weak.tsv"
        strong_p = strong if strong.is_file() else None
        weak_p = weak if weak.is_file() else None
        if strong_p is None and weak_p is None:
            continue
        if split in found:
            out.warning(_rel(strong_p or weak_p, root), None,
                        f"both '{found[split][0]}' and '{disk_name}' metadata exist; using '{found[split][0]}'")
            continue
        found[split] = (disk_name, strong_p, weak_p)
    return found


def _audio_dir(root: Path, split: str, disk_name: str) -> Path:
    for name in (disk_name, split, *[k for k, v in SPLIT_NAMES.items() if v == split]):
        if (root / "audio" / name).is_dir():
            return root / "audio" / name
    return root / "audio" / disk_name


def _clip(clips: dict[str, ClipRecord], split: str, filename: str, audio_dir: Path, rel: str, line: int) -> ClipRecord:
    key = f"{split}/{filename}"
    if key not in clips:
        clips[key] = ClipRecord(split, filename, audio_dir / filename, rel, line)
    return clips[key]


def _filename_ok(name: str, rel: str, line: int, where: str, out: _Collector) -> bool:
    if not name:
        out.error(rel, line, "malformed row: empty filename")
        return False
    if not _safe_filename(name):
        out.error(rel, line, f"filename {name!r} escapes the dataset root (must stay under {where}/)")
        return False
    return True


def _parse_strong(
    root: Path, split: str, path: Path, audio_dir: Path, clips: dict[str, ClipRecord], out: _Collector
) -> None:
    rel = _rel(path, root)
    seen: dict[tuple, int] = {}
    for line, row in _read_tsv(path, rel, STRONG_COLUMNS, out):
        name = row["filename"]
        if not _filename_ok(name, rel, line, _rel(audio_dir, root), out):
            continue
        values = [row["onset"], row["offset"], row["event_label"]]
        empty = [v.lower() in _EMPTY for v in values]
        if all(empty):
            key: tuple = (name, None, None, None)
            record = StrongRow(line, None, None, None)
        elif any(empty):
            out.error(rel, line, "malformed row: onset, offset and event_label must be all set or all empty")
            continue
        else:
            onset = _parse_time(row["onset"], "onset", rel, line, out)
            offset = _parse_time(row["offset"], "offset", rel, line, out)
            if onset is None or offset is None:
                continue
            key = (name, onset, offset, row["event_label"])
            record = StrongRow(line, onset, offset, row["event_label"])
        if key in seen:
            out.error(rel, line, f"duplicate row for {name!r} (same as line {seen[key]})")
            continue
        seen[key] = line
        clip = _clip(clips, split, name, audio_dir, rel, line)
        clip.in_strong = True
        clip.strong.append(record)


def _parse_weak(
    root: Path, split: str, path: Path, audio_dir: Path, clips: dict[str, ClipRecord], out: _Collector
) -> None:
    rel = _rel(path, root)
    seen: dict[str, int] = {}
    for line, row in _read_tsv(path, rel, WEAK_COLUMNS, out):
        name = row["filename"]
        if not _filename_ok(name, rel, line, _rel(audio_dir, root), out):
            continue
        if name in seen:
            out.error(rel, line, f"duplicate row for {name!r} (first at line {seen[name]})")
            continue
        seen[name] = line
        labels = [] if row["event_labels"].lower() in _EMPTY else row["event_labels"].split(",")
        clip = _clip(clips, split, name, audio_dir, rel, line)
        clip.weak = sorted({x.strip() for x in labels if x.strip()})
        clip.weak_file, clip.weak_line = rel, line


def _read_durations(root: Path, out: _Collector) -> dict[str, tuple[float, int]]:
    """clip_id -> (duration, line) from metadata/durations.tsv when present."""
    path = root / "metadata" / "durations.tsv"
    if not path.is_file():
        return {}
    rel = _rel(path, root)
    found: dict[str, tuple[float, int]] = {}
    for line, row in _read_tsv(path, rel, DURATION_COLUMNS, out):
        split, _, name = row["filename"].partition("/")
        if not name or split not in SPLIT_NAMES:
            expected = f"<split>/<clip> with split in {sorted(SPLIT_NAMES)}"
            out.error(rel, line, f"malformed row: filename {row['filename']!r} must be {expected}")
            continue
        value = _parse_time(row["duration"], "duration", rel, line, out)
        if value is None:
            continue
        if value <= 0:
            out.error(rel, line, f"duration {value} must be positive")
            continue
        key = f"{SPLIT_NAMES[split]}/{name}"
        if key in found:
            out.error(rel, line, f"duplicate row for {row['filename']!r} (first at line {found[key][1]})")
            continue
        found[key] = (value, line)
    return found


def _probe(path: Path) -> tuple[int, int, int] | AudioError:
    try:
        return audio_info(path)
    except AudioError as err:
        return err


def _probe_all(paths: list[Path]) -> list[tuple[int, int, int] | AudioError]:
    """Read audio headers in a thread pool (I/O-bound, libsndfile releases the GIL)."""
    if len(paths) < 8:
        return [_probe(p) for p in paths]
    workers = min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_probe, paths, chunksize=16))


def _check_audio(root: Path, clips: dict[str, ClipRecord], durations: dict[str, tuple[float, int]],
                 sample_rate: int | None, out: _Collector) -> None:
    records = list(clips.values())
    results = _probe_all([c.path for c in records])
    for clip, res in zip(records, results):
        if isinstance(res, AudioError):
            if not clip.path.exists():
                out.error(clip.meta_file, clip.line, f"audio file {_rel(clip.path, root)} not found")
            else:
                out.error(_rel(clip.path, root), None, res.reason)
            continue
        sr, frames, _ = res
        clip.sample_rate, clip.audio_ok = sr, True
        clip.duration = frames / sr
        if clip.clip_id in durations:
            listed, line = durations[clip.clip_id]
            if abs(listed - clip.duration) > TIME_TOLERANCE_S:
                message = f"duration {listed:.3f} s differs from the audio ({clip.duration:.3f} s); using {listed:.3f} s"
                out.warning("metadata/durations.tsv", line, message)
            clip.duration = listed
    rates = Counter(c.sample_rate for c in records if c.audio_ok)
    if not rates:
        return
    target = sample_rate or max(rates.items(), key=lambda kv: (kv[1], kv[0]))[0]
    for clip in records:
        if clip.audio_ok and clip.sample_rate != target:
            message = f"sample rate {clip.sample_rate} Hz differs from the dataset's; will be resampled to {target} Hz"
            out.warning(_rel(clip.path, root), None, message)


def _check_events(clips: dict[str, ClipRecord], classes: list[str] | None, out: _Collector) -> None:
    known = set(classes) if classes is not None else None
    for clip in clips.values():
        for ev in clip.strong:
            if ev.label is None:
                continue
            file, line = clip.meta_file, ev.line
            if ev.onset < 0:
                out.error(file, line, f"event starts before the clip (onset {ev.onset} < 0)")
                ev.valid = False
            if ev.onset >= ev.offset:
                out.error(file, line, f"onset {ev.onset} >= offset {ev.offset}")
                ev.valid = False
            if clip.duration is not None and ev.offset > clip.duration + TIME_TOLERANCE_S:
                message = f"event ends after the clip (offset {ev.offset} > duration {clip.duration:.3f} s)"
                out.error(file, line, message)
                ev.valid = False
            if known is not None and ev.label not in known:
                out.error(file, line, f"label {ev.label!r} is not in metadata/classes.txt")
                ev.valid = False
        if clip.weak is not None:
            unknown = [x for x in clip.weak if known is not None and x not in known]
            for label in unknown:
                out.error(clip.weak_file, clip.weak_line, f"label {label!r} is not in metadata/classes.txt")
            clip.weak = [x for x in clip.weak if x not in unknown]
            strong_labels = {ev.label for ev in clip.strong if ev.label is not None and ev.valid}
            if clip.in_strong and not unknown and strong_labels != set(clip.weak):
                message = f"weak labels {clip.weak} differ from the strong events {sorted(strong_labels)}; using their union"
                out.warning(clip.weak_file, clip.weak_line, message)


def clip_tags(clip: ClipRecord) -> list[str]:
    """Sorted unique labels: valid strong events united with weak labels."""
    labels = {ev.label for ev in clip.strong if ev.label is not None and ev.valid}
    return sorted(labels | set(clip.weak or []))


def _summarize(clips: dict[str, ClipRecord], classes: list[str]) -> Summary:
    usable = [c for c in clips.values() if c.audio_ok]
    per_split = {s: sum(c.split == s for c in usable) for s in SPLIT_ORDER if any(c.split == s for c in clips.values())}
    events: Counter[str] = Counter()
    for c in usable:
        if c.in_strong:
            events.update(ev.label for ev in c.strong if ev.label is not None and ev.valid)
        else:
            events.update(c.weak or [])
    hours = sum(c.duration or 0.0 for c in usable) / 3600
    return Summary(per_split, classes, {k: events.get(k, 0) for k in classes}, hours)


def scan_dataset(root: str | Path, sample_rate: int | None = None) -> Scan:
    """Parse metadata and audio headers once, recording every problem with file and line.

    A DCASE 2018 task 1 folder (meta.csv, evaluation_setup/) is scanned by `harmonia.data.scenes`.
    """
    from harmonia.data.scenes import is_scene_dataset, scan_scene_dataset

    root = Path(root)
    if root.is_dir() and is_scene_dataset(root):
        return scan_scene_dataset(root, sample_rate)
    out = _Collector()
    clips: dict[str, ClipRecord] = {}
    if not root.is_dir():
        out.error(str(root), None, "dataset root is not a directory")
        return Scan(root, [], False, clips, CheckReport(root, out.problems))
    declared = _read_classes(root, out)
    splits = _split_files(root, out)
    if not splits:
        out.error("metadata", None, "no metadata found (expected metadata/<split>.tsv or metadata/<split>_weak.tsv "
                                    "for split in train, valid|validation, test)")
    for split in SPLIT_ORDER:
        if split not in splits:
            continue
        disk_name, strong, weak = splits[split]
        audio_dir = _audio_dir(root, split, disk_name)
        if strong is not None:
            _parse_strong(root, split, strong, audio_dir, clips, out)
        if weak is not None:
            _parse_weak(root, split, weak, audio_dir, clips, out)
    durations = _read_durations(root, out)
    _check_audio(root, clips, durations, sample_rate, out)
    _check_events(clips, declared, out)
    classes = declared if declared is not None else sorted({t for c in clips.values() for t in clip_tags(c)})
    has_strong = any(s is not None for _, s, _ in splits.values())
    problems = sorted(out.problems, key=lambda p: (p.file, p.line or 0))
    report = CheckReport(root, problems, _summarize(clips, classes))
    return Scan(root, classes, has_strong, clips, report)


def check_dataset(root: str | Path, sample_rate: int | None = None) -> CheckReport:
    """Validate a DCASE task-4 style (or 2018 task 1 scene) dataset; `sample_rate` is the rate audio
    will be resampled to."""
    return scan_dataset(root, sample_rate).report
