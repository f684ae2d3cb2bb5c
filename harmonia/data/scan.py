"""One scan of a dataset folder: pick the format (configured or detected), read it, run the shared
checks. `harmonia data check` prints the scan's report; `load_dataset` builds its tables from it."""

from __future__ import annotations

from pathlib import Path

import harmonia.data.formats  # noqa: F401  (registers every format)
from harmonia.data.checks import finish_scan
from harmonia.data.problems import CheckReport, Collector
from harmonia.data.records import Scan
from harmonia.data.registry import ReadOptions, resolve_format


def _empty(root: Path, out: Collector, fmt: str | None = None, how: str = "") -> Scan:
    problems = sorted(out.problems, key=lambda p: (p.file, p.line or 0))
    return Scan(root, [], False, {}, CheckReport(root, problems, format=fmt, how=how))


def scan_dataset(root: str | Path, options: ReadOptions | None = None) -> Scan:
    """Parse metadata and audio headers once, recording every problem with its file and line."""
    root, options, out = Path(root), options or ReadOptions(), Collector()
    if not root.is_dir():
        out.error(str(root), None, "dataset root is not a directory")
        return _empty(root, out)
    resolution = resolve_format(root, options.format)
    fmt = resolution.format
    if fmt is None:
        for name, message in resolution.misses.items():
            out.error(name, None, message)
        return _empty(root, out)
    if options.splits and not fmt.accepts_sources:
        out.error("data.splits", None, f"format {fmt.name!r} reads its splits from its own metadata; per-split "
                                       "overrides apply to the harmonia, flat and desed formats")
        return _empty(root, out, fmt.name, resolution.how)
    read = fmt.read(root, options, out)
    return finish_scan(root, fmt.name, resolution.how, read, options, out)
