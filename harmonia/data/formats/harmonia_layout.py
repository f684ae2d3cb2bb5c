"""harmonia's own layout: `audio/<split>/`, `metadata/<split>.tsv` (strong) and/or `<split>_weak.tsv`,
`metadata/durations.tsv` keyed `<split>/<filename>`, optional `metadata/classes.txt`. Clip ids are
`<split>/<filename>`."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.problems import Collector
from harmonia.data.records import SPLIT_NAMES, SPLIT_ORDER
from harmonia.data.registry import Format, Read, ReadOptions, register
from harmonia.data.formats.task4 import (TsvSource, add_audio_dirs, attach_durations, read_all, read_classes,
                                         read_durations, with_overrides)
from harmonia.data.text import rel

NO_METADATA = ("no metadata found (expected metadata/<split>.tsv or metadata/<split>_weak.tsv for split in "
               "train, valid|validation, test, unlabeled)")


def split_files(root: Path, out: Collector | None = None) -> dict[str, tuple[str, list[Path]]]:
    """canonical split -> (name on disk, its metadata files: strong then weak)."""
    found: dict[str, tuple[str, list[Path]]] = {}
    for disk_name, split in SPLIT_NAMES.items():
        files = [p for p in (root / "metadata" / f"{disk_name}.tsv", root / "metadata" / f"{disk_name}_weak.tsv")
                 if p.is_file()]
        if not files:
            continue
        if split in found:
            if out is not None:
                out.warning(rel(files[0], root), None, f"both '{found[split][0]}' and '{disk_name}' metadata exist; "
                                                       f"using '{found[split][0]}'")
            continue
        found[split] = (disk_name, files)
    return found


def split_audio_dirs(root: Path) -> list[Path]:
    return [root / "audio" / name for name in SPLIT_NAMES if (root / "audio" / name).is_dir()]


def _audio_dir(root: Path, split: str, disk_name: str) -> Path:
    for name in (disk_name, split, *[k for k, v in SPLIT_NAMES.items() if v == split]):
        if (root / "audio" / name).is_dir():
            return root / "audio" / name
    return root / "audio" / disk_name


def detect(root: Path) -> list[str]:
    missing = [] if split_files(root) else [NO_METADATA]
    if not split_audio_dirs(root):
        missing.append("no audio/<split>/ folder")
    return missing


def _duration_id(name: str) -> str | None:
    split, _, clip = name.partition("/")
    return f"{SPLIT_NAMES[split]}/{clip}" if clip and split in SPLIT_NAMES else None


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    classes, class_lines = read_classes(root, out)
    found = split_files(root, out)
    if not found and not options.splits:
        out.error("metadata", None, NO_METADATA)
    sources = [TsvSource(split, path, _audio_dir(root, split, disk), f"{split}/")
               for split in SPLIT_ORDER if split in found for disk, paths in [found[split]] for path in paths]
    sources = with_overrides(root, sources, options, lambda split, _: f"{split}/")
    clips, has_strong, files = read_all(root, sources, out)
    expected = f"<split>/<clip> with split in {sorted(SPLIT_NAMES)}"
    attach_durations(clips, read_durations(root, root / "metadata" / "durations.tsv", _duration_id, expected, out))
    return Read(clips, classes, has_strong, add_audio_dirs(root, files, sources), class_lines=class_lines)


FORMAT = register(Format("harmonia", "metadata/<split>.tsv or <split>_weak.tsv with audio/<split>/", detect, read,
                         accepts_sources=True))
