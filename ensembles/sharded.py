"""Greedy selection sharded over Ray: class blocks held by actors, the driver picks and broadcasts.

Macro metrics decompose over classes (`selection_metrics.CLASS_SCORERS`), so each actor holds one
class block of the library ``[Cb, M, N]`` (loaded or generated inside the actor: the driver never
holds the library), keeps its part of the running sum S, and each step returns the M candidates'
additive statistics; the driver sums them, applies the shared tie rules (`selection_core`) and
broadcasts the pick. Ranked metrics off a counting grid (mAP, ROC AUC) are bounded as in-process: the
workers return upper bounds first, then exact statistics of only the candidates that can win. The
cluster is the one `harmonia search` uses (`harmonia.search.cluster.connect`: None = a local Ray, or
`auto`, `HOST:PORT`, `ray://HOST:PORT`).
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import numpy as np
import ray

from harmonia.ensembles.selection_core import Selection, greedy_loop, pruned_scores, weighted_sum
from harmonia.ensembles.selection_metrics import CLASS_SCORERS, ClassBlockScorer, class_major
from harmonia.metrics import BCE_EPS, METRICS, Metric

BlockLoader = Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray | None]]
"""``load(c0, c1) -> (cols [c1 - c0, M, N], y [N, c1 - c0], palette)``: one class block, class-major;
with a palette, ``cols`` are integer codes of the scores ``palette[cols]`` (`palette_codes`)."""


class BlockWorker:
    """One class block of the library and its share of the running ensemble sum."""

    def __init__(self, load: BlockLoader, c0: int, c1: int, metric: str, exact: bool) -> None:
        cols, y, palette = load(c0, c1)
        self.y = np.asarray(y).astype(bool)
        self.scorer: ClassBlockScorer = CLASS_SCORERS[metric](cols, self.y, exact, 1, palette)
        self.cols = self.scorer.cols  # the scorer's storage (grid numerators when it counts)
        self.s = np.zeros(self.y.shape)

    def counting(self) -> bool:
        return self.scorer.grid is not None

    def bounded(self) -> bool:
        """Whether this block's scorer has upper bounds (ranked metrics off a counting grid)."""
        return self.scorer.bound_what is not None and self.scorer.grid is None

    def stats(self, n_members: int, candidates: list[int] | None = None) -> np.ndarray:
        return self.scorer.stats(self.s, n_members, None if candidates is None else np.asarray(candidates))

    def bound_stats(self, n_members: int) -> np.ndarray:
        return self.scorer.bound_stats(self.s, n_members)

    def losses(self, n_members: int, candidates: list[int]) -> np.ndarray:
        """Summed BCE of (S + p_m) / n over this block's cells, for each candidate."""
        out = np.empty(len(candidates))
        for i, m in enumerate(candidates):
            p = np.clip((self.s + self.scorer.values(self.cols[:, m, :]).T) / n_members, BCE_EPS, 1 - BCE_EPS)
            out[i] = -np.where(self.y, np.log(p), np.log1p(-p)).sum()
        return out

    def add(self, m: int) -> None:
        self.s += self.scorer.values(self.cols[:, m, :]).T

    def reset(self) -> None:
        self.s = np.zeros(self.y.shape)

    def current_stats(self, n_members: int) -> np.ndarray:
        return self.scorer.exact_stats(self.s / n_members)

    def weighted_stats(self, weights: np.ndarray) -> np.ndarray:
        avg = weighted_sum(weights, lambda m: self.scorer.values(self.cols[:, m, :]))
        return self.scorer.exact_stats(avg.T)

    def n_cells(self) -> int:
        return int(self.y.size)

    def peak_rss(self) -> int:
        """Peak resident memory of this worker process, bytes (Linux ru_maxrss is in KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ShardedLibrary:
    """The `selection_core.Library` of class-block actors: statistics summed, then finalized."""

    path = "sharded"

    def __init__(self, workers: list, n_models: int, n_cells: int, scorer: type[ClassBlockScorer],
                 bounded: bool = False) -> None:
        self.workers, self.n_models, self.n_cells, self.scorer = workers, n_models, n_cells, scorer
        self.bounded = bounded
        self.path = "sharded-bounded" if bounded else self.path

    def _sum(self, calls: list) -> np.ndarray:
        return np.sum(ray.get(calls), axis=0)

    def scores(self, n_members: int, winners_only: bool = False) -> np.ndarray:
        if winners_only and self.bounded:  # bounds summed over the blocks, then exact scores of the few that can win
            upper = self.scorer.finalize(self._sum([w.bound_stats.remote(n_members) for w in self.workers]))
            return pruned_scores(upper, lambda cands: self.scorer.finalize(
                self._sum([w.stats.remote(n_members, [int(m) for m in cands]) for w in self.workers])))
        return self.scorer.finalize(self._sum([w.stats.remote(n_members) for w in self.workers]))

    def losses(self, n_members: int, candidates: np.ndarray) -> np.ndarray:
        cands = [int(m) for m in candidates]
        return self._sum([w.losses.remote(n_members, cands) for w in self.workers]) / self.n_cells

    def add(self, m: int) -> None:
        for w in self.workers:  # an actor runs one caller's calls in order: no wait needed
            w.add.remote(int(m))

    def reset(self) -> None:
        for w in self.workers:
            w.reset.remote()

    def current(self, n_members: int) -> float:
        stats = self._sum([w.current_stats.remote(n_members) for w in self.workers])
        return float(self.scorer.finalize(stats[None, :])[0])

    def weighted(self, weights: np.ndarray) -> float:
        stats = self._sum([w.weighted_stats.remote(np.asarray(weights)) for w in self.workers])
        return float(self.scorer.finalize(stats[None, :])[0])


def class_blocks(n_classes: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous class ranges of near-equal size covering 0..n_classes."""
    if not 1 <= shards <= n_classes:
        raise ValueError(f"shards must be between 1 and the number of classes ({n_classes}), got {shards}")
    edges = np.linspace(0, n_classes, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def array_loader(preds: np.ndarray, y: np.ndarray) -> BlockLoader:
    """A loader over in-memory arrays: they go to Ray's object store once, each actor copies its block."""
    preds_ref, y_ref = ray.put(preds), ray.put(np.asarray(y))

    def load(c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        p, t = ray.get([preds_ref, y_ref])
        return class_major(p, c0, c1), t[:, c0:c1], None
    return load


def start_workers(load: BlockLoader, n_classes: int, shards: int, metric: Metric, exact: bool = True,
                  address: str | None = None) -> list:
    """Connect to the cluster and start one `BlockWorker` actor per class block (1 CPU each)."""
    if metric.name not in CLASS_SCORERS or METRICS.get(metric.name) != metric:
        raise ValueError(f"sharded selection needs a metric that decomposes over classes "
                         f"({', '.join(CLASS_SCORERS)}); got {metric.name!r}")
    from harmonia.search.cluster import connect

    connect(address, num_cpus=shards if address is None else None)
    actor = ray.remote(num_cpus=1)(BlockWorker)
    return [actor.remote(load, c0, c1, metric.name, exact) for c0, c1 in class_blocks(n_classes, shards)]


def sharded_library(workers: list, n_models: int, metric: Metric, bounds: bool = True,
                    library: type[ShardedLibrary] = ShardedLibrary) -> ShardedLibrary:
    """The `ShardedLibrary` of started `BlockWorker` actors: bounded steps (``bounds``, exact scores only)
    when every block has upper bounds, and the path that says how the blocks score."""
    n_cells = sum(ray.get([w.n_cells.remote() for w in workers]))
    bounded = bounds and all(ray.get([w.bounded.remote() for w in workers]))
    lib = library(workers, n_models, n_cells, CLASS_SCORERS[metric.name], bounded)
    if all(ray.get([w.counting.remote() for w in workers])):
        lib.path = "sharded-counting"
    return lib


def select_on(workers: list, n_models: int, size: int, metric: Metric, init: int | str = 1,
              keep_best_prefix: bool = True, bounds: bool = True) -> Selection:
    """Greedy selection on started `BlockWorker` actors (`start_workers`); they stay up afterwards."""
    return greedy_loop(sharded_library(workers, n_models, metric, bounds), size, metric, init, keep_best_prefix)


def sharded_selection(
    load: BlockLoader, n_classes: int, n_models: int, shards: int, size: int, metric: Metric,
    init: int | str = 1, keep_best_prefix: bool = True, exact: bool = True, address: str | None = None,
    bounds: bool = True,
) -> Selection:
    """Greedy selection over a library given by class blocks, scored on ``shards`` Ray actors."""
    workers = start_workers(load, n_classes, shards, metric, exact, address)
    try:
        return select_on(workers, n_models, size, metric, init, keep_best_prefix, bounds and exact)
    finally:
        for w in workers:
            ray.kill(w)
