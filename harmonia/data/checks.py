"""Checks across clips and splits, run on every format's records: event times and labels, leaks between
splits (same filename, same audio content), groups shared by valid and test, classes without a
positive, short clips; then the summary. `finish_scan` runs them all, once per scan."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

from harmonia.data.audio_checks import check_audio
from harmonia.data.problems import CheckReport, Collector, Summary
from harmonia.data.records import LABELED_SPLITS, SPLIT_ORDER, ClipRecord, Scan, clip_tags
from harmonia.data.registry import Read, ReadOptions
from harmonia.data.text import rel

TIME_TOLERANCE_S: float = 0.05


def check_events(clips: dict[str, ClipRecord], classes: list[str] | None, out: Collector) -> None:
    """Event times inside the clip and labels among the declared classes; weak vs strong agreement."""
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
                out.error(file, line, f"event ends after the clip (offset {ev.offset} > duration {clip.duration:.3f} s)")
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


def check_leaks(root: Path, clips: dict[str, ClipRecord], by_name: bool, out: Collector) -> None:
    """Errors for one clip in two splits: the same clip id, the same filename (when names identify clips),
    or the same audio bytes; reported at the later listing."""
    ordered = sorted(clips.values(), key=lambda c: (SPLIT_ORDER.index(c.split), c.meta_file, c.line))
    keys = [("clip id", lambda c: c.clip_id)]
    if by_name:
        keys.append(("filename", lambda c: Path(c.filename).name))
    for what, key in keys:
        first: dict[str, ClipRecord] = {}
        for clip in ordered:
            seen = first.setdefault(key(clip), clip)
            if seen.split != clip.split:
                out.error(clip.meta_file, clip.line, f"same {what} {key(clip)!r} in splits {seen.split} "
                                                     f"({seen.meta_file}:{seen.line}) and {clip.split}")
    _check_same_content(root, [c for c in ordered if c.audio_ok], out)


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_same_content(root: Path, clips: list[ClipRecord], out: Collector) -> None:
    """Hash only files whose size another split's file shares (cheap on large datasets)."""
    by_size: dict[int, list[ClipRecord]] = defaultdict(list)
    for clip in clips:
        by_size[clip.path.stat().st_size].append(clip)
    for same in by_size.values():
        if len({c.split for c in same}) < 2:
            continue
        first: dict[str, ClipRecord] = {}
        for clip in same:
            seen = first.setdefault(_digest(clip.path), clip)
            if seen.split != clip.split:
                out.error(clip.meta_file, clip.line, f"audio file {rel(clip.path, root)} ({clip.split}) has the same "
                                                     f"content as {rel(seen.path, root)} ({seen.split}, listed at "
                                                     f"{seen.meta_file}:{seen.line})")


def check_groups(clips: dict[str, ClipRecord], out: Collector) -> None:
    """Warn when valid and test share a source (group): their scores would not be independent."""
    valid = {c.group_name for c in clips.values() if c.split == "valid" and c.group is not None}
    shared: dict[str, ClipRecord] = {}
    for clip in sorted(clips.values(), key=lambda c: (c.meta_file, c.line)):
        if clip.split == "test" and clip.group is not None and clip.group_name in valid:
            shared.setdefault(clip.group_name, clip)
    if shared:
        names = sorted(shared)
        first = shared[names[0]]
        file, line = (first.group.file, first.group.line) if first.group.file else (first.meta_file, first.line)
        shown = ", ".join(repr(n) for n in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        out.warning(file, line, f"valid and test share {len(names)} group(s) (clips of one source): "
                                                 f"{shown}")


def check_coverage(clips: dict[str, ClipRecord], classes: list[str], class_lines: dict[str, tuple[str, int | None]],
                   out: Collector) -> None:
    """Warn for a class with no positive in train or in valid (its threshold cannot be fitted)."""
    for split in ("train", "valid"):
        members = [c for c in clips.values() if c.split == split and c.audio_ok]
        if not members:
            continue
        present = {t for c in members for t in clip_tags(c)}
        files = sorted({c.meta_file for c in members})
        for name in classes:
            if name not in present:
                file, line = class_lines.get(name, (files[0], None))
                out.warning(file, line, f"class {name!r} has no positive clip in {split} ({', '.join(files)}); "
                                        "its threshold cannot be fitted")


def check_short_clips(clips: dict[str, ClipRecord], options: ReadOptions, out: Collector) -> None:
    """Warn for clips shorter than half the clip length (configured, else the median over train)."""
    usable = [c for c in clips.values() if c.audio_ok and c.duration is not None]
    train = [c.duration for c in usable if c.split == "train"] or [c.duration for c in usable]
    if not train:
        return
    length = options.clip_seconds or median(train)
    for clip in usable:
        if clip.duration < 0.5 * length:
            out.warning(clip.meta_file, clip.line, f"clip {clip.clip_id!r} lasts {clip.duration:.3f} s, less than half "
                                                   f"the clip length ({length:.3f} s); it is padded with silence")


def summarize(clips: dict[str, ClipRecord], classes: list[str]) -> Summary:
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


def finish_scan(root: Path, name: str, how: str, read: Read, options: ReadOptions, out: Collector) -> Scan:
    """Run every shared check on a reader's records and assemble the Scan and its report."""
    clips = read.clips
    check_audio(root, clips, options, out)
    check_events(clips, read.classes, out)
    check_leaks(root, clips, read.names_identify_clips, out)
    check_groups(clips, out)
    labeled = {k: c for k, c in clips.items() if c.split in LABELED_SPLITS}
    classes = read.classes if read.classes is not None else sorted({t for c in labeled.values() for t in clip_tags(c)})
    check_coverage(labeled, classes, read.class_lines, out)
    check_short_clips(clips, options, out)
    problems = sorted(out.problems, key=lambda p: (p.file, p.line or 0))
    report = CheckReport(root, problems, summarize(clips, classes), name, how, read.sources)
    return Scan(root, classes, read.has_strong, clips, report)
