"""The greedy selection loop (Caruana et al. 2004) over any library that scores all its candidates.

dcase2018_workshop_proceedings.txt L2790-2808 (digest §4): start from the best model, add with
replacement the model whose addition gives the best score of the running average, weight = picks /
total picks. A `Library` holds the running sum S of the members and scores every candidate
(S + p_m) / n at once; it may live in this process (`harmonia.ensembles.selection`) or be sharded
by class blocks over Ray workers (`harmonia.ensembles.sharded`). The loop and its tie rules are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from harmonia.metrics import Metric

TIE_TOL = 1e-12
"""Scores this close count as tied: implementations sum in different orders (about 1e-16 apart)."""

AUTO_INIT_MAX = 25
"""init="auto" tries sorted initializations with 1..AUTO_INIT_MAX best models."""

BOUNDED_BATCH = 2
"""Candidates scored exactly in the first batch of a bounded step (then all whose bound reaches the best so far)."""


@dataclass
class Selection:
    """Result of a selection: weights over the whole library, picks in order, and the score curve.

    ``curve[0]`` is the initial ensemble's score, ``curve[i]`` the score after greedy step i;
    ``best_step`` indexes the best point of the curve (0 = initialization only). ``path`` says how
    candidates were scored: "vectorized", "counting" (vectorized, dyadic scores counted without sorting),
"bounded" (vectorized, candidates pruned by upper bounds first), "per-candidate", "sharded",
"sharded-bounded" or "sharded-counting" (the same on Ray workers).
    """

    weights: np.ndarray
    picks: list[int]
    curve: list[float]
    best_step: int
    score: float = float("nan")
    path: str = "per-candidate"


class Library(Protocol):
    """Candidates and the running ensemble sum S; every score is of (S + p_m) / n_members."""

    n_models: int
    path: str

    def scores(self, n_members: int, winners_only: bool = False) -> np.ndarray:
        """Metric of (S + p_m) / n_members for every model m [M]; with ``winners_only`` a library may leave NaN
        for candidates it has shown cannot win the step (within the tie tolerance)."""

    def losses(self, n_members: int, candidates: np.ndarray) -> np.ndarray:
        """BCE of (S + p_m) / n_members for the given candidates (the tie-breaker)."""

    def add(self, m: int) -> None:
        """S += p_m."""

    def reset(self) -> None:
        """S = 0."""

    def current(self, n_members: int) -> float:
        """Metric of S / n_members."""

    def weighted(self, weights: np.ndarray) -> float:
        """Metric of the weighted average of the library."""


def check_library(preds: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``preds [M, N, C]`` (or [M, N]) and ``y [N, C]`` (or [N]) as 3-D / 2-D bool arrays, shapes checked."""
    p = np.asarray(preds)
    t = np.asarray(y)
    if p.ndim == 2:
        p = p[:, :, None]
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim != 3 or p.shape[1:] != t.shape:
        raise ValueError(f"preds must be [M, N, C] matching y [N, C]; got {p.shape} and {t.shape}")
    if p.shape[0] == 0:
        raise ValueError("empty model library")
    return p, t.astype(bool)


def weighted_sum(weights: np.ndarray, member: Callable[[int], np.ndarray]) -> np.ndarray:
    """Sum over the models with weight of ``weights[m] * member(m)`` in float64, member by member in
    index order: one member's copy at a time, and the same float64 sum on every path (in-process,
    sharded class blocks), whatever the layout."""
    used = np.flatnonzero(weights)
    if not len(used):
        raise ValueError("weights select no model")
    total = float(weights[used[0]]) * np.asarray(member(int(used[0])), dtype=np.float64)
    for m in used[1:]:
        total += float(weights[m]) * np.asarray(member(int(m)), dtype=np.float64)
    return total


def weighted_score(preds: np.ndarray, y: np.ndarray, weights: np.ndarray, metric: Metric) -> float:
    """Metric of the weighted average of ``preds`` (only the models with weight are read, one at a time)."""
    return metric(y, weighted_sum(weights, lambda m: preds[m]))


def pruned_scores(upper: np.ndarray, exact: Callable[[np.ndarray], np.ndarray], first: int = BOUNDED_BATCH
                  ) -> np.ndarray:
    """Exact scores (``exact(candidates)``) of the candidates that can win a step, NaN for the others, given
    upper bounds of every candidate's score (higher is better): candidates are scored in decreasing order of
    their bound, ``first`` of them, then every one whose bound reaches the best exact score so far, until the
    next bound is below that score by more than the tie tolerance. Every candidate the tie rules of
    `choose` could pick is scored exactly, so the picks are those of scoring all."""
    order = np.argsort(-np.nan_to_num(upper, nan=-np.inf), kind="stable")
    out = np.full(len(upper), np.nan)
    best, done = -np.inf, 0
    while done < len(order) and not upper[order[done]] < best - 2 * TIE_TOL:
        reach = np.flatnonzero(~(upper[order[done:]] < best - 2 * TIE_TOL))
        cands = order[done : done + (first if done == 0 else int(reach[-1]) + 1)]
        out[cands] = exact(cands)
        best = max(best, float(np.nanmax(out[cands], initial=-np.inf)))
        done += len(cands)
    return out


def choose(signed: np.ndarray, in_ensemble: np.ndarray, lib: Library, n_members: int) -> int:
    """Best candidate; ties (within TIE_TOL) go to a member already in, then lower BCE, then lower index."""
    signed = np.where(np.isnan(signed), -np.inf, signed)
    tied = np.flatnonzero(signed >= np.max(signed) - TIE_TOL)
    if len(tied) > 1 and in_ensemble[tied].any():
        tied = tied[in_ensemble[tied]]
    if len(tied) == 1:
        return int(tied[0])
    losses = np.asarray(lib.losses(n_members, tied))
    return int(tied[np.flatnonzero(losses == losses.min())[0]])


def first_best(signed: list[float] | np.ndarray) -> int:
    """First index whose value is within TIE_TOL of the maximum (the smallest best ensemble)."""
    arr = np.asarray(signed, dtype=np.float64)
    arr = np.where(np.isnan(arr), -np.inf, arr)
    return int(np.flatnonzero(arr >= arr.max() - TIE_TOL)[0])


def sorted_init(lib: Library, single_signed: np.ndarray, n_init: int) -> list[int]:
    """The ``n_init`` best single models in order (S = 0), using the step tie rule (BCE, then index)."""
    order: list[int] = []
    signed = single_signed.astype(np.float64).copy()
    none_in = np.zeros(lib.n_models, dtype=bool)
    for _ in range(min(n_init, lib.n_models)):
        best = choose(signed, none_in, lib, 1)
        order.append(best)
        signed[best] = -np.inf
    return order


def _initial_picks(lib: Library, single: np.ndarray, sign: float, init: int | str) -> list[int]:
    if init == "auto":
        order = sorted_init(lib, single, AUTO_INIT_MAX)
        init_scores = []
        for i, m in enumerate(order):
            lib.add(m)
            init_scores.append(sign * lib.current(i + 1))
        lib.reset()
        return order[: first_best(init_scores) + 1]
    if isinstance(init, (int, np.integer)) and not isinstance(init, bool) and init >= 1:
        return sorted_init(lib, single, int(init))
    raise ValueError(f"init must be a positive int or 'auto', got {init!r}")


def greedy_loop(lib: Library, size: int, metric: Metric, init: int | str, keep_best_prefix: bool) -> Selection:
    """``size`` greedy steps with replacement after a sorted initialization; the curve and weights."""
    sign = metric.sign()
    lib.reset()
    single = sign * lib.scores(1, winners_only=init == 1)  # a sorted init of one needs only the best
    picks = _initial_picks(lib, single, sign, init)
    for p in picks:
        lib.add(p)
    curve = [float(single[picks[0]] * sign) if len(picks) == 1 else lib.current(len(picks))]
    counts = np.bincount(picks, minlength=lib.n_models)
    n_init = len(picks)
    for _ in range(size):
        k = len(picks)
        signed = sign * lib.scores(k + 1, winners_only=True)
        best = choose(signed, counts > 0, lib, k + 1)
        picks.append(best)
        counts[best] += 1
        lib.add(best)
        curve.append(float(sign * signed[best]))
    best_step = first_best([sign * v for v in curve])
    kept = picks[: n_init + best_step] if keep_best_prefix else picks
    weights = np.bincount(kept, minlength=lib.n_models) / len(kept)
    return Selection(weights, list(kept), curve, best_step, lib.weighted(weights), lib.path)
