"""Feature-cache entry files: a `.npy` followed by a checksum trailer, so that an entry whose values
were altered (still a valid .npy) is detected on load, rebuilt and reported.

An entry is the exact bytes `np.save` writes, then `TRAILER_MAGIC` and the CRC-32 of those bytes as
8 hex digits (24 bytes in all). numpy ignores bytes after the array: `np.load(entry)` (and
`mmap_mode="r"`) still read it. CRC-32 (zlib, about 2.5 GB/s here) detects accidental or stray
changes; it is not a defence against someone who rewrites the trailer too. An entry without the
trailer (written by harmonia before the checksum, or rewritten by `np.save` or another tool) cannot
be told from an altered one: it is rebuilt too, and reported as unchecked.
"""

from __future__ import annotations

import io
import os
import tempfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from harmonia.progress import console

TRAILER_MAGIC = b"#harmonia-crc32:"
TRAILER_SIZE = len(TRAILER_MAGIC) + 8
Problem = Literal["unreadable", "malformed", "unchecked", "altered"]
"""Why an entry was rejected: not a .npy, a .npy of the wrong shape/dtype, no checksum, a checksum mismatch."""

PROBLEM_TEXT: dict[Problem, str] = {
    "unreadable": "is not a readable .npy (half-written or damaged)",
    "malformed": "holds an array of the wrong shape or dtype",
    "unchecked": "has no checksum (written before harmonia checksummed its cache, or rewritten by another "
                 "tool): its values cannot be trusted",
    "altered": "failed its checksum: its bytes changed after harmonia wrote it",
}
REPORTED: frozenset[Problem] = frozenset({"unchecked", "altered"})
"""Problems worth a console line; unreadable/malformed entries are half-written ones, rebuilt quietly."""


def crc32_hex(data: bytes | memoryview) -> bytes:
    """The CRC-32 of `data` as 8 ASCII hex digits."""
    return b"%08x" % zlib.crc32(data)


def write_entry(path: Path, arr: np.ndarray) -> None:
    """Write `arr` as a .npy plus its checksum trailer, atomically (temporary file, then rename)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)  # C order: features are often transposed
    body = buf.getbuffer()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.write(TRAILER_MAGIC + crc32_hex(body))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _header(f) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of the .npy whose start `f` reads."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), fortran, dtype, f.tell()


def _well_formed(shape: tuple, dtype, n_features: int) -> bool:
    return len(shape) == 2 and shape[1] == n_features and dtype == np.float32


def read_entry(path: Path, n_features: int) -> tuple[np.ndarray | None, Problem | None]:
    """(array, None) for a complete entry whose checksum matches, else (None, why); never raises on content."""
    try:
        buf = bytearray(path.stat().st_size)
        with open(path, "rb") as f:
            n = f.readinto(buf)
        view = memoryview(buf)[:n]
        shape, fortran, dtype, offset = _header(io.BytesIO(view[:min(n, 4096)]))
    except (ValueError, OSError, EOFError, SyntaxError):
        return None, "unreadable"
    if not _well_formed(shape, dtype, n_features):
        return None, "malformed"
    end = offset + 4 * shape[0] * shape[1]
    if n == end:
        return None, "unchecked"
    if n != end + TRAILER_SIZE or view[end:end + len(TRAILER_MAGIC)] != TRAILER_MAGIC:
        return None, "unreadable"
    if crc32_hex(view[:end]) != view[end + len(TRAILER_MAGIC):]:
        return None, "altered"
    flat = np.frombuffer(buf, np.float32, shape[0] * shape[1], offset)
    return (flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)), None


def entry_shape(path: Path, n_features: int) -> tuple[tuple | None, Problem | None]:
    """(shape, None) of an entry whose header, size and trailer are right, from its header and last bytes
    only (the values are checked when the entry is read: `read_entry`); else (None, why)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            shape, _, dtype, offset = _header(f)
            end = offset + (4 * shape[0] * shape[1] if len(shape) == 2 else 0)
            f.seek(end)
            magic = f.read(len(TRAILER_MAGIC))
    except (ValueError, OSError, EOFError, SyntaxError):
        return None, "unreadable"
    if not _well_formed(shape, dtype, n_features):
        return None, "malformed"
    if size == end:
        return None, "unchecked"
    if size != end + TRAILER_SIZE or magic != TRAILER_MAGIC:
        return None, "unreadable"
    return shape, None


def report_rebuilt(rejected: list[tuple[Path, str | Path, Problem]], limit: int = 5) -> None:
    """One console line per rejected entry with a checksum problem (up to `limit`, then a count), naming
    the entry, its audio file and why; half-written (unreadable, malformed) entries are rebuilt quietly."""
    shown = [r for r in rejected if r[2] in REPORTED]
    for entry, source, problem in shown[:limit]:
        console.print(f"feature cache: {entry} (features of {source}) {PROBLEM_TEXT[problem]}; rebuilt",
                      soft_wrap=True, markup=False, highlight=False)
    if len(shown) > limit:
        counts = {p: sum(r[2] == p for r in shown[limit:]) for p in REPORTED}
        what = ", ".join(f"{n} {p}" for p, n in sorted(counts.items()) if n)
        console.print(f"feature cache: {len(shown) - limit} more entries rebuilt ({what})", soft_wrap=True,
                      markup=False, highlight=False)


def file_crc32(path: Path, chunk: int = 1 << 22) -> str:
    """CRC-32 of a whole file (8 hex digits), read in chunks into one buffer: checks a consolidated file
    larger than memory."""
    crc, buf = 0, bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return "%08x" % crc
