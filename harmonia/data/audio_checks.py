"""Checks of each clip's audio: readable header, at least one feature frame, listed durations (the audio
is the truth), sample rates, and symlinks that leave the dataset root."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harmonia.data.audio import AudioError, audio_info
from harmonia.data.problems import Collector
from harmonia.data.records import ClipRecord
from harmonia.data.registry import ReadOptions
from harmonia.data.text import rel


def _probe(path: Path) -> tuple[int, int, int] | AudioError:
    try:
        return audio_info(path)
    except AudioError as err:
        return err


def probe_all(paths: list[Path]) -> list[tuple[int, int, int] | AudioError]:
    """Read audio headers in a thread pool (I/O-bound, libsndfile releases the GIL)."""
    if len(paths) < 8:
        return [_probe(p) for p in paths]
    workers = min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_probe, paths, chunksize=16))


def escapes_root(path: Path, root: Path) -> bool:
    """True when `path` (through symlinks) resolves outside the dataset root."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return True
    return False


def check_audio(root: Path, clips: dict[str, ClipRecord], options: ReadOptions, out: Collector) -> None:
    """Probe every clip's audio; a clip whose audio is unusable keeps `audio_ok` False."""
    records = [c for c in clips.values() if not _outside(root, c, out)]
    for clip, res in zip(records, probe_all([c.path for c in records])):
        if isinstance(res, AudioError):
            if not clip.path.exists():
                out.error(clip.meta_file, clip.line, f"audio file {rel(clip.path, root)} not found")
            else:
                out.error(rel(clip.path, root), None, res.reason)
            continue
        sr, frames, _ = res
        clip.sample_rate, clip.duration = sr, frames / sr
        clip.audio_ok = _long_enough(root, clip, frames, options, out)
        if clip.audio_ok:
            _check_listed_duration(clip, options, out)
    _check_rates(root, records, options, out)


def _outside(root: Path, clip: ClipRecord, out: Collector) -> bool:
    if clip.path.is_symlink() and escapes_root(clip.path, root):
        out.error(clip.meta_file, clip.line, f"audio file {rel(clip.path, root)} is a symlink that leaves the "
                                             f"dataset root (to {clip.path.resolve()})")
        return True
    return False


def _long_enough(root: Path, clip: ClipRecord, frames: int, options: ReadOptions, out: Collector) -> bool:
    if clip.duration is not None and clip.duration < options.frame_seconds:
        out.error(clip.meta_file, clip.line,
                  f"audio file {rel(clip.path, root)} has {frames} sample(s) ({clip.duration:.4f} s), shorter than "
                  f"one feature frame ({options.frame_seconds:.4f} s)")
        return False
    return True


def _check_listed_duration(clip: ClipRecord, options: ReadOptions, out: Collector) -> None:
    listed = clip.listed_duration
    if listed is None or clip.duration is None:
        return
    if abs(float(listed.value) - clip.duration) > options.frame_seconds:
        out.error(listed.file, listed.line,
                  f"duration {float(listed.value):.3f} s differs from the audio ({clip.duration:.3f} s) by more than "
                  f"one frame ({options.frame_seconds:.3f} s); the audio's is used")


def _check_rates(root: Path, records: list[ClipRecord], options: ReadOptions, out: Collector) -> None:
    rates = Counter(c.sample_rate for c in records if c.audio_ok)
    if not rates:
        return
    target = options.sample_rate or max(rates.items(), key=lambda kv: (kv[1], kv[0]))[0]
    for clip in records:
        if clip.audio_ok and clip.sample_rate != target:
            message = f"sample rate {clip.sample_rate} Hz differs from the dataset's; will be resampled to {target} Hz"
            out.warning(rel(clip.path, root), None, message)
