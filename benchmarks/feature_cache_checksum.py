"""Cost of the feature-cache checksum (harmonia/cache_entry.py), against the loaders without it, same run.

Writes `--entries` cache entries of `--frames` × `--mels` float32 (default: 10 s clips at hop 512,
64 mels, 80 KB each) with `write_entry`, then alternates `--repeats` rounds of:
- load, verified: `read_entry` (read the file, CRC-32 over it, array from the buffer);
- load, plain: `np.load(entry)` of the same files (the loader before the checksum);
- scan, checked: `entry_shape` (header, size and trailer), against the plain header read before;
- store: `write_entry` against the plain atomic `np.save` it replaced.
And for the memory-mapped consolidated files: `file_crc32` of one `--set-mb` MB .npy, against
`np.load` of the same file (reading it whole). The files are in the page cache (just written): this
measures the CPU cost of the check, not disk speed; the fastest round counts.
    python benchmarks/feature_cache_checksum.py [--entries 400] [--repeats 5] [--set-mb 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from harmonia.cache_entry import entry_shape, file_crc32, read_entry, write_entry


def plain_store(path: Path, arr: np.ndarray) -> None:
    """The store before the checksum: np.save to a temporary file, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def plain_header(path: Path) -> tuple:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
    return shape, path.stat().st_size


def timed(fn, items) -> float:
    t = time.perf_counter()
    for x in items:
        fn(x)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=400)
    ap.add_argument("--frames", type=int, default=313)
    ap.add_argument("--mels", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set-mb", type=int, default=256)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((a.frames, a.mels), dtype=np.float32) for _ in range(a.entries)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        entries = [d / f"{i:05d}.npy" for i in range(a.entries)]
        plain = [d / f"{i:05d}.plain.npy" for i in range(a.entries)]
        best: dict[str, float] = {}
        for _ in range(a.repeats):
            runs = {
                "store, checksummed": lambda: timed(lambda i: write_entry(entries[i], arrays[i]), range(a.entries)),
                "store, plain": lambda: timed(lambda i: plain_store(plain[i], arrays[i]), range(a.entries)),
                "load, verified": lambda: timed(lambda e: read_entry(e, a.mels), entries),
                "load, plain np.load": lambda: timed(np.load, plain),
                "scan, checked": lambda: timed(lambda e: entry_shape(e, a.mels), entries),
                "scan, plain header": lambda: timed(plain_header, plain),
            }
            for name, run in runs.items():
                best[name] = min(best.get(name, float("inf")), run())
        assert all(np.array_equal(read_entry(e, a.mels)[0], x) for e, x in zip(entries, arrays))
        big = d / "set.x.npy"
        n = a.set_mb * 2**20 // (4 * a.frames * a.mels)
        mm = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(n, a.frames, a.mels))
        mm[:] = 1.0
        mm.flush()
        del mm
        for _ in range(a.repeats):
            best["set: file_crc32"] = min(best.get("set: file_crc32", float("inf")), timed(file_crc32, [big]))
            best["set: np.load whole"] = min(best.get("set: np.load whole", float("inf")), timed(np.load, [big]))
    per = {k: v / a.entries * 1e6 for k, v in best.items() if not k.startswith("set")}
    print(f"{a.entries} entries of {a.frames}x{a.mels} float32 ({4 * a.frames * a.mels / 1e3:.0f} KB), "
          f"fastest of {a.repeats} rounds, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for k, v in per.items():
        print(f"  {k:<22} {v:8.1f} µs/entry")
    print(f"  load ratio verified / plain : {per['load, verified'] / per['load, plain np.load']:.2f}")
    print(f"  scan ratio checked / plain  : {per['scan, checked'] / per['scan, plain header']:.2f}")
    print(f"  store ratio checksummed / plain: {per['store, checksummed'] / per['store, plain']:.2f}")
    gbps = a.set_mb / 1024 / best["set: file_crc32"]
    print(f"  consolidated {a.set_mb} MB: file_crc32 {best['set: file_crc32']:.3f} s ({gbps:.2f} GB/s), "
          f"np.load whole {best['set: np.load whole']:.3f} s, ratio "
          f"{best['set: file_crc32'] / best['set: np.load whole']:.2f}")


if __name__ == "__main__":
    main()
