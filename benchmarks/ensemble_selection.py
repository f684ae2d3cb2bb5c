"""Fast exact ensemble selection against the scikit-learn rescoring reference, in one run.

Synthetic library of correlated models (families sharing errors), mAP objective. Both runs keep every
step (no best-prefix cut) so the full pick sequences can be compared. The fast mode is timed with 1
and with 2 threads (classes split over threads); the reference is single-threaded. When the reference
would take longer than --ref-budget seconds, it runs a prefix of the steps and its per-step time is
extrapolated. The fast mode runs --repeats times and its median is reported (a 2 s run is exposed
to the machine's speed changing; the reference's minute of steps averages them). Then each vectorized
metric (--metrics: auc, lwlrap, f1) is timed against the same selection making one metric call per
candidate. The AudioSet size (M=1000, N=20000, C=527, sharded
over Ray workers) is benchmarks/ensemble_selection_audioset.py.

    python benchmarks/ensemble_selection.py            # M=200, N=5000, C=20, K=50
    python benchmarks/ensemble_selection.py --quick
    python benchmarks/ensemble_selection.py --shards 2 --ref-budget 10 --metrics   # sharded: bounded vs not
    python benchmarks/ensemble_selection.py --dyadic 8  # 8-bit scores code / 256: the counting path
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harmonia.ensembles import selection_metrics
from harmonia.ensembles.selection import ensemble_selection, reference_ensemble_selection

SCORED = {"rows": 0}
"""Candidate rows scored exactly (per class), counted by wrapping the class scorers (this script only)."""
_class_stats = selection_metrics.ClassBlockScorer.class_stats


def _counted_class_stats(self, c, s, n_members, candidates=None):
    out = _class_stats(self, c, s, n_members, candidates)
    SCORED["rows"] += len(out)
    return out


selection_metrics.ClassBlockScorer.class_stats = _counted_class_stats


def synthetic_library(m: int, n: int, c: int, seed: int = 0, families: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Predictions [M, N, C] float32 of M models that share clip difficulty and family errors."""
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.03, 0.2, c)
    y = rng.random((n, c)) < prevalence
    clip = np.where(y, 1.0, -1.0) * 1.2 + rng.normal(0, 1.0, (n, c))
    family_noise = rng.normal(0, 1.0, (families, n, c))
    family = rng.integers(0, families, m)
    skill = rng.uniform(0.4, 1.6, (m, 1, 1))
    logits = skill * clip[None] + 0.8 * family_noise[family] + rng.normal(0, 1.0, (m, n, c)) - 1.5
    return (1 / (1 + np.exp(-logits))).astype(np.float32), y.astype(np.int8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="M=40, N=1000, C=10, K=15")
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--clips", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--ref-budget", type=float, default=600.0, help="seconds the reference may run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=0, help="also time the selection on this many local Ray workers")
    ap.add_argument("--repeats", type=int, default=3,
                    help="times the fast mode runs (median reported: this machine's speed varies between runs)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="fast-mode thread counts to time")
    ap.add_argument("--metrics", nargs="*", default=["auc", "lwlrap", "f1"],
                    help="vectorized metrics to time against their per-candidate calls")
    ap.add_argument("--dyadic", type=int, default=None, metavar="BITS",
                    help="quantize the scores to multiples of 2**-BITS (rounded into 0..2**BITS - 1): counted")
    args = ap.parse_args()
    if args.quick:
        args.models, args.clips, args.classes, args.steps = 40, 1000, 10, 15
    m, n, c, k = args.models, args.clips, args.classes, args.steps
    preds, y = synthetic_library(m, n, c, args.seed)
    if args.dyadic is not None:
        levels = 2**args.dyadic
        preds = (np.minimum(np.rint(preds * levels), levels - 1) / levels).astype(np.float32)
    grid = "" if args.dyadic is None else f", scores on the grid 2**-{args.dyadic}"
    print(f"library: M={m} models, N={n} clips, C={c} classes, K={k} steps, metric mAP, init=1{grid}")

    for metric in ["mAP", *args.metrics]:  # load (or compile) the numba kernels before anything is timed
        ensemble_selection(preds[:4, :400], y[:400], size=2, metric=metric)
    fast_times, fast_cpu, fast_picks = {}, {}, {}
    for threads in args.threads:
        walls, cpus = [], []
        for _ in range(args.repeats):
            SCORED["rows"] = 0
            t0, c0 = time.perf_counter(), time.process_time()
            fast = ensemble_selection(preds, y, size=k, metric="mAP", keep_best_prefix=False, n_threads=threads)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        fast_times[threads], fast_cpu[threads] = float(np.median(walls)), float(np.median(cpus))
        fast_picks[threads] = fast.picks
        spread = f" (median of {len(walls)} runs, {min(walls):.2f}-{max(walls):.2f} s)" if len(walls) > 1 else ""
        print(f"fast exact ({fast.path}), {threads} thread(s): {fast_times[threads]:8.2f} s wall{spread}, "
              f"{fast_cpu[threads]:.2f} s CPU ({fast_times[threads] / (k + 1) * 1e3:.1f} ms per step incl. init), "
              f"final mAP {fast.curve[-1]:.6f}, best step {fast.best_step}; {SCORED['rows']} (candidate, class) rows "
              f"scored exactly of {m * c * (k + 1)}", flush=True)

    unbounded(preds, y, k, "mAP", fast_cpu[args.threads[0]] if args.threads[0] == 1 else None, fast_picks[args.threads[0]])
    if args.shards:
        sharded(preds, y, k, args.shards, fast_picks[args.threads[0]])
    ref, t_ref, cpu_ref = timed_reference(preds, y, k, "mAP", args.ref_budget, "reference")
    same = all(p[: len(ref.picks)] == ref.picks for p in fast_picks.values())
    diff = float(np.max(np.abs(np.subtract(fast.curve[: len(ref.curve)], ref.curve))))
    for threads, t_fast in fast_times.items():
        cpu = f", CPU time {cpu_ref / fast_cpu[threads]:.1f}x" if threads == 1 else ""
        print(f"speed-up, fast with {threads} thread(s): wall {t_ref / t_fast:.1f}x{cpu}")
    print(f"picks identical to the reference over {len(ref.picks)} picks (every thread count): {same}; "
          f"max |curve difference| {diff:.2e}")
    if not same:
        first = next(i for i, (a, b) in enumerate(zip(fast.picks, ref.picks)) if a != b)
        print(f"first difference at pick {first}: fast {fast.picks[first]} vs reference {ref.picks[first]}")
    for metric in args.metrics:
        compare_metric(preds, y, k, metric, args.ref_budget)


def unbounded(preds: np.ndarray, y: np.ndarray, k: int, metric: str, bounded_cpu: float | None, picks: list[int]) -> None:
    """The same fast selection scoring every candidate at every step (``bounds=False``): what the bounds save."""
    c0 = time.process_time()
    full = ensemble_selection(preds, y, size=k, metric=metric, keep_best_prefix=False, bounds=False)
    cpu = time.process_time() - c0
    ratio = f", bounded path {cpu / bounded_cpu:.2f}x faster" if bounded_cpu else ""
    print(f"{metric}: every candidate scored ({full.path}, 1 thread): {cpu:.2f} s CPU{ratio}; "
          f"picks identical to the bounded path: {full.picks == picks}", flush=True)


def sharded(preds: np.ndarray, y: np.ndarray, k: int, shards: int, picks: list[int]) -> None:
    """The same selection on ``shards`` local Ray workers (class blocks), bounded and scoring every candidate;
    each timed from the actors' start (the library shipped to them included)."""
    import ray

    from harmonia.search.cluster import connect

    connect(None, num_cpus=shards)
    times = {}
    for bounds in (True, False):
        t0 = time.perf_counter()
        sel = ensemble_selection(preds, y, size=k, metric="mAP", keep_best_prefix=False, shards=shards, bounds=bounds)
        times[bounds] = time.perf_counter() - t0
        print(f"mAP sharded over {shards} local Ray worker(s), {sel.path}: {times[bounds]:.2f} s wall; "
              f"picks identical to in-process: {sel.picks == picks}", flush=True)
    print(f"sharded: bounded steps {times[False] / times[True]:.2f}x faster than scoring every candidate")
    ray.shutdown()


def timed_reference(preds: np.ndarray, y: np.ndarray, k: int, metric: str, budget: float, label: str):
    """The per-candidate reference, timed; a prefix of the steps (per-step time extrapolated) past ``budget`` s."""
    t0 = time.perf_counter()
    reference_ensemble_selection(preds, y, size=1, metric=metric, keep_best_prefix=False)
    per_step = (time.perf_counter() - t0) / 2
    ref_steps = k if per_step * (k + 1) <= budget else max(1, int(budget / per_step) - 1)
    print(f"{label}: ~{per_step:.2f} s per step (probe), running {ref_steps} of {k} steps")

    def progress(step: int, score: float) -> None:
        if step % 5 == 0 or step == ref_steps:
            print(f"  {label} step {step}/{ref_steps}: {metric} {score:.6f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    ref = reference_ensemble_selection(preds, y, size=ref_steps, metric=metric, keep_best_prefix=False,
                                       on_step=progress)
    t_run, cpu_run = time.perf_counter() - t0, time.process_time() - c0
    factor = (k + 1) / (ref_steps + 1)
    how = "measured" if ref_steps == k else f"extrapolated per step from {ref_steps} steps + init"
    print(f"{label} (1 thread): {t_run * factor:8.2f} s wall, {cpu_run * factor:.2f} s CPU ({how}; ran {t_run:.2f} s)")
    return ref, t_run * factor, cpu_run * factor


def compare_metric(preds: np.ndarray, y: np.ndarray, k: int, metric: str, budget: float) -> None:
    """Vectorized selection against the per-candidate metric calls, same metric, one thread each."""
    SCORED["rows"] = 0
    t0, c0 = time.perf_counter(), time.process_time()
    fast = ensemble_selection(preds, y, size=k, metric=metric, keep_best_prefix=False)
    t_fast, cpu_fast = time.perf_counter() - t0, time.process_time() - c0
    rows = f"; {SCORED['rows']} rows scored exactly" if fast.path == "bounded" else ""
    print(f"{metric}: {fast.path}, 1 thread: {t_fast:8.2f} s wall, {cpu_fast:.2f} s CPU, final {fast.curve[-1]:.6f}{rows}")
    if fast.path == "bounded":
        unbounded(preds, y, k, metric, cpu_fast, fast.picks)
    ref, t_ref, cpu_ref = timed_reference(preds, y, k, metric, budget, f"{metric} per-candidate")
    same = fast.picks[: len(ref.picks)] == ref.picks
    print(f"{metric} speed-up over per-candidate calls: wall {t_ref / t_fast:.1f}x, CPU {cpu_ref / cpu_fast:.1f}x; "
          f"picks identical over {len(ref.picks)} picks: {same}")

if __name__ == "__main__":
    main()
