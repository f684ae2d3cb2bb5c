"""The Dataset contract tables (clips, events) built from a scan's usable clip records."""

from __future__ import annotations

import pandas as pd

from harmonia.data.records import SPLIT_ORDER, ClipRecord, Scan, clip_tags

CLIP_COLUMNS: tuple[str, ...] = ("clip_id", "path", "split", "duration", "tags", "sequence", "group")
EVENT_COLUMNS: tuple[str, ...] = ("clip_id", "onset", "offset", "event_label")
FOLD_COLUMN = "fold"


def _sequence(clip: ClipRecord) -> list[str]:
    events = sorted((ev.onset, ev.offset, ev.label) for ev in clip.strong if ev.label is not None and ev.valid)
    return [label for _, _, label in events]


def usable_clips(scan: Scan) -> list[ClipRecord]:
    """Clips whose audio is usable, in split order then by id; a clip id already taken is dropped."""
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    ordered = sorted((c for c in scan.clips.values() if c.audio_ok), key=lambda c: (order[c.split], c.clip_id))
    seen: set[str] = set()
    kept = []
    for clip in ordered:
        if clip.clip_id not in seen:
            seen.add(clip.clip_id)
            kept.append(clip)
    return kept


def clip_table(scan: Scan, usable: list[ClipRecord]) -> pd.DataFrame:
    """clip_id, path, split, duration, tags, sequence, group; `fold` when the format has folds, then the
    format's own columns (a scene's `identifier`)."""
    known = set(scan.classes)
    columns = {
        "clip_id": pd.Series([c.clip_id for c in usable], dtype="str"),
        "path": pd.Series([str(c.path.absolute()) for c in usable], dtype="str"),
        "split": pd.Series([c.split for c in usable], dtype="str"),
        "duration": pd.Series([float(c.duration) for c in usable], dtype="float64"),
        "tags": pd.Series([[t for t in clip_tags(c) if t in known] for c in usable], dtype=object),
        "sequence": pd.Series([[t for t in _sequence(c) if t in known] for c in usable], dtype=object),
        "group": pd.Series([c.group_name for c in usable], dtype="str"),
    }
    if any(c.fold is not None for c in usable):
        columns[FOLD_COLUMN] = pd.Series([-1 if c.fold is None else c.fold for c in usable], dtype="int64")
    for name in dict.fromkeys(k for c in usable for k in c.extra):
        columns[name] = pd.Series([c.extra.get(name, "") for c in usable], dtype="str")
    return pd.DataFrame(columns, columns=list(columns))


def event_table(scan: Scan, usable: list[ClipRecord]) -> pd.DataFrame:
    known = set(scan.classes)
    rows = [
        (c.clip_id, ev.onset, ev.offset, ev.label)
        for c in usable
        for ev in sorted(c.strong, key=lambda e: (e.onset or 0.0, e.offset or 0.0, e.label or ""))
        if ev.label is not None and ev.valid and ev.label in known
    ]
    return pd.DataFrame(
        {
            "clip_id": pd.Series([r[0] for r in rows], dtype="str"),
            "onset": pd.Series([r[1] for r in rows], dtype="float64"),
            "offset": pd.Series([r[2] for r in rows], dtype="float64"),
            "event_label": pd.Series([r[3] for r in rows], dtype="str"),
        },
        columns=list(EVENT_COLUMNS),
    )


def tables(scan: Scan) -> tuple[pd.DataFrame, pd.DataFrame]:
    usable = usable_clips(scan)
    return clip_table(scan, usable), event_table(scan, usable)
