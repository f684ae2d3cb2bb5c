"""Reading metadata text files (TSV, CSV) row by row, reporting each malformed row with file and line."""

from __future__ import annotations

import csv
import math
from pathlib import Path, PurePosixPath
from typing import Iterator

from harmonia.data.problems import Collector

EMPTY_VALUES: frozenset[str] = frozenset({"", "nan", "n/a", "none", "null"})

Rows = Iterator[tuple[int, dict[str, str]]]


def rel(path: Path, root: Path) -> str:
    """`path` relative to the dataset root (POSIX), or as is when outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def read_lines(path: Path, rel_name: str, out: Collector) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        out.error(rel_name, None, f"not UTF-8 text ({err.reason} at byte {err.start})")
        return None
    except OSError as err:
        out.error(rel_name, None, f"cannot read: {err.strerror}")
        return None
    return text.splitlines()


def read_tsv(path: Path, rel_name: str, columns: tuple[str, ...], out: Collector) -> Rows:
    """Yield (1-based line, {column: stripped value}) for well-formed rows; report the others."""
    lines = read_lines(path, rel_name, out)
    if lines is None:
        return
    if not lines or not lines[0].strip():
        out.error(rel_name, 1, f"missing header (expected {'<TAB>'.join(columns)})")
        return
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        out.error(rel_name, 1, f"header {header} lacks column(s) {missing} (expected {'<TAB>'.join(columns)})")
        return
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if len(fields) != len(header):
            cols = ", ".join(header)
            out.error(rel_name, number, f"malformed row: expected {len(header)} tab-separated columns ({cols}), "
                                        f"got {len(fields)}")
            continue
        yield number, {h: v.strip() for h, v in zip(header, fields)}


def tsv_header(path: Path) -> list[str]:
    """The column names of a TSV's first line (empty when unreadable)."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return [h.strip() for h in fh.readline().rstrip("\r\n").split("\t") if h.strip()]
    except (OSError, UnicodeDecodeError):
        return []


def read_csv(path: Path, rel_name: str, columns: tuple[str, ...], out: Collector, header: bool = True) -> Rows:
    """Comma-separated rows with quoting (FSD, ESC-50, UrbanSound8K); `header=False` names them `columns`."""
    lines = read_lines(path, rel_name, out)
    if lines is None:
        return
    rows = csv.reader(lines)
    names = list(columns)
    if header:
        first = next(rows, None)
        names = [h.strip() for h in first] if first else []
        missing = [c for c in columns if c not in names]
        if missing:
            out.error(rel_name, 1, f"header {names} lacks column(s) {missing} (expected {','.join(columns)})")
            return
    for number, fields in enumerate(rows, start=2 if header else 1):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(names):
            out.error(rel_name, number, f"malformed row: expected {len(names)} comma-separated columns "
                                        f"({', '.join(names)}), got {len(fields)}")
            continue
        yield number, {h: v.strip() for h, v in zip(names, fields)}


def parse_time(value: str, name: str, rel_name: str, line: int, out: Collector) -> float | None:
    try:
        t = float(value)
    except ValueError:
        out.error(rel_name, line, f"malformed row: {name} {value!r} is not a number")
        return None
    if not math.isfinite(t):
        out.error(rel_name, line, f"malformed row: {name} {value!r} is not a finite number")
        return None
    return t


def parse_int(value: str, name: str, rel_name: str, line: int, out: Collector) -> int | None:
    try:
        return int(value)
    except ValueError:
        out.error(rel_name, line, f"malformed row: {name} {value!r} is not an integer")
        return None


def safe_filename(name: str) -> bool:
    """True when `name` stays inside its audio folder (relative, no `..` part)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    drive = len(name) > 1 and name[1] == ":"
    return bool(name) and not posix.is_absolute() and not drive and ".." not in posix.parts


def filename_ok(name: str, rel_name: str, line: int, where: str, out: Collector) -> bool:
    """Report an empty filename or one that escapes `where`."""
    if not name:
        out.error(rel_name, line, "malformed row: empty filename")
        return False
    if not safe_filename(name):
        out.error(rel_name, line, f"filename {name!r} escapes the dataset root (must stay under {where}/)")
        return False
    return True
