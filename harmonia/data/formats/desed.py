"""DESED as distributed for DCASE task 4 (2019–2024): `metadata/<part>/<subset>.tsv` with audio in
`audio/<part>/<subset>/` (or `<subset>_16k/`), parts train, validation, eval. Which subsets make
which split is configurable (`data.subsets`: glob pattern -> split or `none`); by default DCASE's
usual mapping: train/unlabel_in_domain -> unlabeled, the other train subsets (weak, synthetic…) ->
train, validation/* -> valid, eval/* (public) -> test. Clip ids are `<subset>/<filename>`; a
YouTube-named clip's group is its YouTube id."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

from harmonia.data.formats.task4 import (TsvSource, add_audio_dirs, attach_durations, read_all, read_durations,
                                         with_overrides)
from harmonia.data.problems import Collector
from harmonia.data.records import SPLIT_ORDER
from harmonia.data.registry import Format, Read, ReadOptions, Source, register
from harmonia.data.text import rel

PARTS: tuple[str, ...] = ("train", "validation", "eval")
DEFAULT_SUBSETS: dict[str, str] = {"train/unlabel*": "unlabeled", "train/*": "train", "validation/*": "valid",
                                   "eval/*": "test"}
SKIP = "none"
_YOUTUBE = re.compile(r"^Y(.{11})_-?\d+(?:\.\d+)?_-?\d+(?:\.\d+)?\.\w+$")


def youtube_id(filename: str) -> str | None:
    """The YouTube id of a DESED/AudioSet clip name `Y<id>_<start>_<end>.wav`, else None."""
    m = _YOUTUBE.match(Path(filename).name)
    return m.group(1) if m else None


def subset_files(root: Path) -> dict[str, Path]:
    """subset name (path under metadata/ without .tsv) -> metadata file, durations files left out."""
    meta = root / "metadata"
    found = {}
    for part in PARTS:
        for path in sorted((meta / part).rglob("*.tsv")) if (meta / part).is_dir() else []:
            if "durations" not in path.stem:
                found[path.relative_to(meta).with_suffix("").as_posix()] = path
    return found


def split_of(subset: str, mapping: dict[str, str]) -> str:
    """The split a subset goes to: the first matching pattern of the config's mapping, then the default."""
    for pattern, split in (*mapping.items(), *DEFAULT_SUBSETS.items()):
        if fnmatchcase(subset, pattern):
            return split
    return SKIP


def audio_folder(root: Path, subset: str) -> Path:
    """audio/<subset>/, audio/<subset>_16k/, or the part folder (2019: audio/validation/)."""
    candidates = [root / "audio" / subset, root / "audio" / f"{subset}_16k", root / "audio" / Path(subset).parent]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def durations_file(root: Path, subset: str) -> Path | None:
    meta = root / "metadata"
    for path in (meta / f"{subset}_durations.tsv", meta / Path(subset).parent / "durations.tsv"):
        if path.is_file():
            return path
    return None


def detect(root: Path) -> list[str]:
    missing = [] if subset_files(root) else ["no metadata/{train,validation,eval}/*.tsv"]
    if not (root / "audio").is_dir():
        missing.append("no audio/ folder")
    return missing


def _prefix(split: str, source: Source) -> str:
    name = source.metadata.removeprefix("metadata/").removesuffix(".tsv")
    return f"{name}/"


def read(root: Path, options: ReadOptions, out: Collector) -> Read:
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    sources = []
    for subset, path in subset_files(root).items():
        split = split_of(subset, options.subsets)
        if split != SKIP:
            sources.append(TsvSource(split, path, audio_folder(root, subset), f"{subset}/",
                                     durations_file(root, subset), youtube_id))
    sources = sorted(with_overrides(root, sources, options, _prefix, youtube_id), key=lambda s: order[s.split])
    if not sources:
        out.error("metadata", None, "no subset is mapped to a split (see data.subsets)")
    clips, has_strong, files = read_all(root, sources, out)
    for src in sources:
        if src.durations is not None:
            prefix = src.prefix
            attach_durations({k: c for k, c in clips.items() if c.clip_id.startswith(prefix)},
                             read_durations(root, src.durations, lambda n, p=prefix: f"{p}{n}" if n else None,
                                            "a bare filename", out))
            files.setdefault(src.split, []).append(rel(src.durations, root))
    return Read(clips, None, has_strong, add_audio_dirs(root, files, sources), names_identify_clips=False)


FORMAT = register(Format("desed", "metadata/{train,validation,eval}/<subset>.tsv with audio/<part>/<subset>/",
                         detect, read, accepts_sources=True))
