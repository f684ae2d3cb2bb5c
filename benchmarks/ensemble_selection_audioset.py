"""AudioSet-size greedy selection (M=1000, N=20000, C=527, K=50, mAP) sharded over local Ray workers.

The library is generated inside the workers class by class (the driver never holds it), as 8-bit
scores with a dyadic step: uint8 codes 0..255 of the palette ``codes / 256`` (1 byte a cell, the same
values: exact). Every score is an integer multiple of 2**-8, so the workers count instead of sorting
(`harmonia.ensembles.selection_counting`, path "sharded-counting"). It is timed with
1 and with 2 local workers (one class block each); the per-step time, the 2-vs-1 ratio and the peak
memory (driver + workers) are printed. On a shared machine, run a reduced number of steps
(``--run-steps``) and/or models (``--models``): the per-step time and the library memory grow linearly
in M, and both are extrapolated to the full size and to W workers (time / W), saying so.

    python benchmarks/ensemble_selection_audioset.py --models 50 --run-steps 2
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import numpy as np
import ray

from harmonia.ensembles.sharded import ShardedLibrary, sharded_library, start_workers
from harmonia.ensembles.selection_core import greedy_loop
from harmonia.metrics import get_metric

PALETTE = (np.arange(256) / 256).astype(np.float32)
"""8-bit scores on a dyadic step: code / 256, exact in float32 and float64."""


def class_library(c: int, m: int, n: int, seed: int, families: int = 10, chunk: int = 64
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Class ``c`` of the synthetic library: uint8 codes [M, N] (256 * sigmoid rounded into 0..255), labels [N].
    Made ``chunk`` models at a time (the same draws, in the same order), so the float32 temporaries stay small."""
    rng = np.random.default_rng([seed, c])
    y = rng.random(n) < rng.uniform(0.01, 0.1)
    clip = np.where(y, 1.2, -1.2).astype(np.float32) + rng.standard_normal(n, dtype=np.float32)
    family = rng.standard_normal((families, n), dtype=np.float32)
    skill = np.random.default_rng([seed, 10**6]).uniform(0.4, 1.6, (m, 1)).astype(np.float32)
    fam = np.random.default_rng([seed, 10**6 + 1]).integers(0, families, m)
    codes = np.empty((m, n), dtype=np.uint8)
    for m0 in range(0, m, chunk):
        part = slice(m0, m0 + chunk)
        logits = (skill[part] * clip[None] + 0.8 * family[fam[part]]
                  + rng.standard_normal((len(codes[part]), n), dtype=np.float32) - 2.0)
        codes[part] = np.minimum(np.rint(256 / (1 + np.exp(-logits))), 255)
    return codes, y


def generator(m: int, n: int, seed: int):
    """A `sharded.BlockLoader` that generates classes c0:c1 one by one inside the worker."""

    def load(c0: int, c1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cols = np.empty((c1 - c0, m, n), dtype=np.uint8)
        y = np.empty((n, c1 - c0), dtype=bool)
        for i, c in enumerate(range(c0, c1)):
            cols[i], y[:, i] = class_library(c, m, n, seed)
        return cols, y, PALETTE
    return load


class TimedLibrary(ShardedLibrary):
    """Records the wall time of every scoring call (init = the first, then one per greedy step)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.times: list[float] = []

    def scores(self, n_members: int, winners_only: bool = False) -> np.ndarray:
        t0 = time.perf_counter()
        out = super().scores(n_members, winners_only)
        self.times.append(time.perf_counter() - t0)
        return out


class MemorySampler(threading.Thread):
    """Machine-wide memory in use (MemTotal - MemAvailable, /proc/meminfo) sampled every 0.5 s: its peak
    above the level at start, beside the workers' own ru_maxrss (which reads about twice their block, unexplained)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.base = self.used()
        self.peak = self.base
        self.stop = threading.Event()

    @staticmethod
    def used() -> int:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, self.used())


def run(workers_n: int, m: int, n: int, c: int, steps: int, seed: int) -> dict:
    metric = get_metric("mAP")
    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    workers = start_workers(generator(m, n, seed), c, workers_n, metric)
    lib = sharded_library(workers, m, metric, library=TimedLibrary)
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    sel = greedy_loop(lib, steps, metric, 1, False)
    t_sel = time.perf_counter() - t1
    peaks = ray.get([w.peak_rss.remote() for w in workers])
    for w in workers:
        ray.kill(w)
    sampler.stop.set()
    held = sampler.peak - sampler.base
    time.sleep(5)  # ray.kill returns before the actors' memory is freed: let it go before the next run
    per_step = float(np.mean(lib.times[1:])) if len(lib.times) > 1 else lib.times[0]
    print(f"{workers_n} worker(s): library generated in {t_gen:.1f} s; init {lib.times[0]:.2f} s; "
          f"{per_step:.2f} s per greedy step (mean of {len(lib.times) - 1}, path {lib.path}); worker peak RSS "
          f"{', '.join(f'{p / 2**30:.2f}' for p in peaks)} GiB; machine-wide memory peak {held / 2**30:.2f} GiB above "
          f"the start; whole selection {t_sel:.1f} s (measured, "
          f"{steps} steps + init); picks {sel.picks}", flush=True)
    return {"per_step": per_step, "init": lib.times[0], "peaks": peaks, "picks": sel.picks, "total": t_sel, "held": held,
            "generate": t_gen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--clips", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=527)
    ap.add_argument("--steps", type=int, default=50, help="steps of the full selection (extrapolated to)")
    ap.add_argument("--run-steps", type=int, default=50, help="steps actually run")
    ap.add_argument("--full-models", type=int, default=1000, help="M the time and memory are extrapolated to")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    m, n, c = args.models, args.clips, args.classes
    print(f"library: M={m} models (of {args.full_models}), N={n} clips, C={c} classes, uint8 codes + palette "
          f"({m * n * c / 2**30:.2f} GiB); running {args.run_steps} of K={args.steps} steps, mAP, init=1")
    ray.init(num_cpus=max(args.workers), include_dashboard=False, configure_logging=False, log_to_driver=False)
    results = {w: run(w, m, n, c, args.run_steps, args.seed) for w in args.workers}
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ray.shutdown()
    scale = args.full_models / m
    base = min(results)
    print(f"\npicks identical across worker counts: {len({tuple(r['picks']) for r in results.values()}) == 1}")
    print(f"driver peak RSS {driver / 2**30:.2f} GiB")
    for w, r in results.items():
        print(f"{w} worker(s): machine-wide memory peak {r['held'] / 2**30:.2f} GiB above the level at the start "
              f"(measured; library {m * n * c / 2**30:.2f} GiB)")
    print("| workers | per step (measured) | peak memory, driver + workers (measured) | "
          f"per step at M={args.full_models} (extrapolated) | K={args.steps} + init at M={args.full_models} "
          "(extrapolated) | peak memory at full M (extrapolated) |")
    print("|---|---|---|---|---|---|")
    for w, r in results.items():
        peak = driver + sum(r["peaks"])
        full_peak = peak + (args.full_models - m) * n * c  # one byte a cell more per extra model
        step_full = r["per_step"] * scale
        print(f"| {w} | {r['per_step']:.2f} s | {peak / 2**30:.2f} GiB | {step_full:.1f} s | "
              f"{step_full * (args.steps + 1) / 60:.1f} min | {full_peak / 2**30:.2f} GiB |")
    for w, r in results.items():
        print(f"{w} worker(s), M={m}: library generated in {r['generate'] / 60:.1f} min, selection of "
              f"{args.run_steps} steps + init in {r['total'] / 60:.1f} min (measured)")
        if w != base:
            print(f"speed-up, {w} workers vs {base}: {results[base]['per_step'] / r['per_step']:.2f}x per step, "
                  f"{results[base]['total'] / r['total']:.2f}x whole selection (measured)")
    one = results[base]["per_step"] * base * scale
    print("extrapolated for a cluster of W workers (per-step time of one worker / W, one class block each):")
    for w in (1, 2, 4, 8, 16, 32, 64):
        print(f"  W={w:3d}: {one / w:7.1f} s per step, {one / w * (args.steps + 1) / 60:7.1f} min for K={args.steps}")


if __name__ == "__main__":
    main()
