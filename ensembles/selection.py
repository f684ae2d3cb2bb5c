"""Greedy ensemble selection with replacement (Caruana et al. 2004), vectorized and exact.

The loop and its tie rules are in `harmonia.ensembles.selection_core` (dcase2018_workshop_proceedings.txt
L2790-2808, digest §4); this module scores candidates in this process. Registered metrics with a
vectorized scorer (`selection_metrics`: mAP, ROC AUC, micro F1, lwlrap) score every candidate of a
step at once ("counting" where the scores lie on a power-of-two grid, `selection_counting`); other
metrics make one metric call per candidate, and ``Selection.path`` says which.
Libraries larger than ``memory_limit`` are refused here and go to `harmonia.ensembles.sharded`
(``shards=``, ``address=``, or every selection inside `sharding`: `harmonia ensemble --shards`).
Everything is fitted on the data passed in (the caller's valid).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from harmonia.ensembles.selection_core import (AUTO_INIT_MAX, TIE_TOL, Selection, check_library,  # noqa: F401
                                               first_best, greedy_loop, pruned_scores, weighted_score)
from harmonia.ensembles.selection_metrics import CLASS_SCORERS, LwlrapScorer, class_major
from harmonia.ensembles.selection_reference import reference_ensemble_selection  # noqa: F401
from harmonia.metrics import METRICS, Metric, average_precision_per_class, bce, get_metric

SMALL_ELEMENTS = 2**13
"""Libraries of at most this many (class, candidate, clip) cells are scored in one exact call (`_small`)."""


MEMORY_ENV = "HARMONIA_SELECTION_MEMORY_MB"
"""Environment variable: MB the in-process path may use for its copy of the library (default half the RAM)."""


class LibraryTooLarge(MemoryError):
    """A library whose in-process copy would pass the memory limit: refused before copying."""


@dataclass(frozen=True)
class Sharding:
    """Where `ensemble_selection` sends libraries that do not fit in-process (see `sharding`)."""

    shards: int
    address: str | None = None


_SHARDING: ContextVar[Sharding | None] = ContextVar("harmonia_sharding", default=None)


@contextmanager
def sharding(shards: int, address: str | None = None) -> Iterator[Sharding]:
    """Inside, selections whose library would be refused in-process (`check_memory`) run sharded over
    ``shards`` Ray workers on the cluster at ``address`` (as `harmonia search --address`; None: a local
    Ray); smaller ones, such as most inner folds and bags, stay in-process. `harmonia ensemble --shards`."""
    token = _SHARDING.set(Sharding(int(shards), address))
    try:
        yield _SHARDING.get()
    finally:
        _SHARDING.reset(token)


def default_memory_limit() -> int:
    """Bytes the in-process path may use for its class-major copy of the library: ``$HARMONIA_SELECTION_MEMORY_MB``
    when set, else half the machine's RAM."""
    if (mb := os.environ.get(MEMORY_ENV)) is not None:
        try:
            return int(float(mb) * 2**20)
        except ValueError:
            raise ValueError(f"{MEMORY_ENV}={mb!r}: expected a number of megabytes") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 * 2**30


def _vectorizable(preds: np.ndarray, metric: Metric) -> str | None:
    """The vectorized scorer's kind for this metric and library ("class", "lwlrap"), or None."""
    if METRICS.get(metric.name) != metric or not bool(np.all(np.isfinite(preds))):
        return None
    if metric.name == "lwlrap":
        return "lwlrap"
    cls = CLASS_SCORERS.get(metric.name)
    if cls is None or (cls.needs_keys and float(preds.min()) < 0):
        return None
    return "class"


class _InProcess:
    """The library in this process: running float64 sum ``s`` [N, C] and a vectorized scorer if one fits."""

    def __init__(self, preds: np.ndarray, y: np.ndarray, metric: Metric, exact: bool, n_threads: int,
                 memory_limit: int | None = None, bounds: bool = True) -> None:
        self.preds, self.y, self.metric, self.exact = preds, y, metric, exact
        self.n_models = len(preds)
        self.s = np.zeros(y.shape)
        self.kind = _vectorizable(preds, metric)
        self.path = "per-candidate" if self.kind is None else "vectorized"
        self.pos_classes = np.flatnonzero(y.any(axis=0))
        m, n, _ = preds.shape
        self.small = (self.kind == "class" and metric.name == "mAP" and exact
                      and len(self.pos_classes) * m * n <= SMALL_ELEMENTS)
        if self.kind == "class":
            check_memory(preds, memory_limit)
        if self.kind == "class" and not self.small:
            self.block = CLASS_SCORERS[metric.name](class_major(preds, 0, preds.shape[2]), y, exact, n_threads)
            self.path = "counting" if self.block.grid is not None else self.path
            self.bounded = bounds and exact and self.block.bound_what is not None and self.block.grid is None
            self.path = "bounded" if self.bounded else self.path
        elif self.kind == "lwlrap":
            self.lwlrap = LwlrapScorer(preds, y)

    def scores(self, n_members: int, winners_only: bool = False) -> np.ndarray:
        if self.kind is None:
            return np.array([self.metric(self.y, (self.s + p) / n_members) for p in self.preds])
        if self.kind == "lwlrap":
            return self.lwlrap(self.s, n_members)
        if self.small:
            return self._small(n_members)
        if winners_only and self.bounded:
            return self._bounded(n_members)
        return self.block.finalize(self.block.stats(self.s, n_members))

    def _bounded(self, n_members: int) -> np.ndarray:
        """Exact scores of the candidates that can win the step, NaN for the others (`pruned_scores` over the
        cheap upper bounds of `ClassBlockScorer.bound_stats`)."""
        upper = self.block.finalize(self.block.bound_stats(self.s, n_members))
        return pruned_scores(upper, lambda cands: self.block.finalize(self.block.stats(self.s, n_members, cands)))

    def _small(self, n_members: int) -> np.ndarray:
        """Small libraries (the inner folds of honest scores): every candidate and class in one exact float64
        AP call over [N, M * C] columns; per-class Python overhead would dominate otherwise."""
        if len(self.pos_classes) == 0:
            return np.full(self.n_models, np.nan)
        cols = self.preds[:, :, self.pos_classes].transpose(2, 0, 1)
        c, m, n = cols.shape
        totals = (cols + self.s[:, self.pos_classes].T[:, None, :]) / n_members  # [C, M, N]
        tiled = np.repeat(self.y[:, self.pos_classes], m, axis=1)  # column c * M + m
        return average_precision_per_class(tiled, totals.reshape(c * m, n).T).reshape(c, m).mean(axis=0)

    def losses(self, n_members: int, candidates: np.ndarray) -> np.ndarray:
        return np.array([bce(self.y, (self.s + self.preds[m]) / n_members) for m in candidates])

    def add(self, m: int) -> None:
        self.s += self.preds[m]

    def reset(self) -> None:
        self.s = np.zeros(self.y.shape)

    def current(self, n_members: int) -> float:
        return self.metric(self.y, self.s / n_members)

    def weighted(self, weights: np.ndarray) -> float:
        return weighted_score(self.preds, self.y, weights, self.metric)


def _memory_need(preds: np.ndarray, memory_limit: int | None) -> tuple[int, int]:
    """(bytes of the in-process path's class-major copy of ``preds``, the limit they are held to)."""
    need = preds.shape[0] * preds.shape[1] * preds.shape[2] * max(4, preds.dtype.itemsize)
    return need, default_memory_limit() if memory_limit is None else int(memory_limit)


def check_memory(preds: np.ndarray, memory_limit: int | None) -> None:
    """Refuse (before copying) a library whose class-major copy would pass ``memory_limit`` bytes."""
    need, limit = _memory_need(preds, memory_limit)
    if need > limit:
        m, n, c = preds.shape
        raise LibraryTooLarge(
            f"library [M={m}, N={n}, C={c}] needs {need / 2**30:.2f} GiB for in-process selection, over the "
            f"limit of {limit / 2**30:.2f} GiB (memory_limit, ${MEMORY_ENV}): shard it over Ray workers by "
            f"class block with `harmonia ensemble --shards W [--address HOST:PORT]`, or "
            f"ensemble_selection(..., shards=W, address=...) or harmonia.ensembles.sharded.sharded_selection")


def _top_models(single_signed: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best single models (ties to the lower index), in library order."""
    order = np.lexsort((np.arange(len(single_signed)), -single_signed))
    return np.sort(order[:k])


def _embed(sel: Selection, idx: np.ndarray, m_models: int) -> Selection:
    """Map a selection made on the sub-library ``idx`` back to library indices."""
    weights = np.zeros(m_models)
    weights[idx] = sel.weights
    return Selection(weights, [int(idx[p]) for p in sel.picks], sel.curve, sel.best_step, sel.score, sel.path)


def ensemble_selection(
    preds: np.ndarray,
    y: np.ndarray,
    size: int = 50,
    metric: str | Metric = "mAP",
    init: int | str = 1,
    keep_best_prefix: bool = True,
    exact: bool = True,
    rng: np.random.Generator | int | None = None,
    bagging: int = 0,
    bag_fraction: float = 0.5,
    prune_top: int | None = None,
    n_threads: int | None = None,
    memory_limit: int | None = None,
    shards: int | None = None,
    address: str | None = None,
    bounds: bool = True,
) -> Selection:
    """Greedy selection with replacement of ``size`` steps over ``preds [M, N, C]`` against ``y [N, C]``.

    ``init``: sorted initialization with the ``init`` best models, or "auto" (best N on this data).
    ``exact=False`` skips the float64 tie repair of the ranked scorers. ``bagging > 0`` runs that many
    selections on random ``bag_fraction`` subsets and averages their weights; ``prune_top`` keeps
    only the top models by single score first. ``n_threads > 1`` splits the classes over threads.
    ``shards=W`` scores W class blocks in Ray workers on the cluster at ``address`` (None: local Ray).
    ``bounds=False`` scores every candidate exactly at every step (the same picks, path "vectorized"
    instead of "bounded").
    """
    p, t = check_library(preds, y)
    met = get_metric(metric)
    ctx = _SHARDING.get()
    need, limit = _memory_need(p, memory_limit)
    if (shards is None and ctx is not None and not bagging and prune_top is None and met.name in CLASS_SCORERS
            and need > limit):
        shards, address = min(ctx.shards, p.shape[2]), ctx.address  # too large here: to the workers
    if shards is not None:
        if bagging or prune_top is not None:
            raise ValueError("shards: bagging and prune_top run in-process only")
        from harmonia.ensembles.sharded import array_loader, sharded_selection

        return sharded_selection(array_loader(p, t), p.shape[2], len(p), shards, size, met, init,
                                 keep_best_prefix, exact, address, bounds)
    threads = n_threads if n_threads is not None else 1
    m_models = len(p)
    idx = np.arange(m_models)
    if prune_top is not None and prune_top < m_models:
        single = met.sign() * _InProcess(p, t, met, exact, threads, memory_limit).scores(1)
        idx = _top_models(single, max(1, prune_top))
    if bagging > 0:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return _bagged(p, t, idx, size, met, init, keep_best_prefix, exact, threads, rng, bagging, bag_fraction,
                       memory_limit, bounds)
    sub = p[idx] if len(idx) < m_models else p
    sel = greedy_loop(_InProcess(sub, t, met, exact, threads, memory_limit, bounds), size, met, init,
                      keep_best_prefix)
    return _embed(sel, idx, m_models)


def _bagged(
    p: np.ndarray, t: np.ndarray, idx: np.ndarray, size: int, met: Metric, init: int | str,
    keep_best_prefix: bool, exact: bool, threads: int, rng: np.random.Generator, bags: int, fraction: float,
    memory_limit: int | None, bounds: bool = True,
) -> Selection:
    """Bagged selection: selections on random library subsets, weights averaged (Caruana et al. 2004)."""
    m_models = len(p)
    n_bag = min(len(idx), max(1, int(round(fraction * len(idx)))))
    weights = np.zeros(m_models)
    picks: list[int] = []
    curves: list[list[float]] = []
    path = "per-candidate"
    for _ in range(bags):
        bag = np.sort(rng.choice(idx, size=n_bag, replace=False))
        lib = _InProcess(p[bag], t, met, exact, threads, memory_limit, bounds)
        sel = _embed(greedy_loop(lib, size, met, init, keep_best_prefix), bag, m_models)
        weights += sel.weights / bags
        picks += sel.picks
        curves.append(sel.curve)
        path = sel.path
    curve = np.mean(curves, axis=0)
    score = weighted_score(p, t, weights, met)
    return Selection(weights, picks, [float(v) for v in curve], first_best(met.sign() * curve), score, path)
