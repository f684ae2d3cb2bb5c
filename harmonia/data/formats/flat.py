"""The flat task-4 variant: every clip in one `audio/` folder, `metadata/<split>.tsv` and/or
`<split>_weak.tsv`, `metadata/durations.tsv` with bare filenames. Clip ids are the filenames; the
splits are the metadata files as they are (nothing is reshuffled)."""

from __future__ import annotations

from pathlib import Path

from harmonia.data.formats.harmonia_layout import NO_METADATA, split_audio_dirs, split_files
from harmonia.data.formats.task4 import (TsvSource, add_audio_dirs, attach_durations, read_all, read_classes,
                                         read_durations, with_overrides)
from harmonia.data.problems import Collector
from harmonia.data.records import SPLIT_ORDER
from harmonia.data.registry import Format, Read, ReadOptions, register

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def has_flat_audio(folder: Path) -> bool:
    """True when `folder` holds audio files directly."""
    return folder.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in folder.iterdir() if p.is_file())


def detect(root: Path) -> list[str]:
    missing = [] if split_files(root) else [NO_METADATA]
    if not has_flat_audio(root / "audio"):
        missing.append("no audio files directly in audio/")
    if split_audio_dirs(root):
        missing.append("audio/<split>/ folders exist (that is harmonia's own layout)")
    return missing


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    classes, class_lines = read_classes(root, out)
    found = split_files(root, out)
    if not found and not options.splits:
        out.error("metadata", None, NO_METADATA)
    sources = [TsvSource(split, path, root / "audio") for split in SPLIT_ORDER if split in found
               for path in found[split][1]]
    sources = with_overrides(root, sources, options, lambda split, _: "")
    clips, has_strong, files = read_all(root, sources, out)
    attach_durations(clips, read_durations(root, root / "metadata" / "durations.tsv", lambda n: n or None,
                                           "a bare filename", out))
    return Read(clips, classes, has_strong, add_audio_dirs(root, files, sources), class_lines=class_lines)


FORMAT = register(Format("flat", "metadata/<split>.tsv or <split>_weak.tsv with every clip directly in audio/",
                         detect, read, accepts_sources=True))
