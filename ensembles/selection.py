"""Greedy ensemble selection with replacement (Caruana et al. 2004), fast and exact for mAP.

The method follows dcase2018_workshop_proceedings.txt L2790-2808 (digest §4): start from the best
model, add with replacement the model whose addition gives the best score of the running average,
weight = picks / total picks. Everything here is fitted on the data passed in (the caller's valid).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from harmonia.metrics import Metric, average_precision_per_class, bce, get_metric

TIE_TOL = 1e-12
"""Scores this close count as tied: implementations sum in different orders (about 1e-16 apart)."""

AUTO_INIT_MAX = 25
"""init="auto" tries sorted initializations with 1..AUTO_INIT_MAX best models."""

_KEY_MAX = float(2**30 - 2)
_BLOCK_ELEMENTS = 2**18
"""Candidates are scored in blocks of about this many (candidate, clip) cells, so buffers stay in cache."""
SMALL_ELEMENTS = 2**13
"""Libraries of at most this many (class, candidate, clip) cells are scored in one exact call (`_small`)."""

ScoreFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class Selection:
    """Result of a selection: weights over the whole library, picks in order, and the score curve.

    ``curve[0]`` is the initial ensemble's score, ``curve[i]`` the score after greedy step i;
    ``best_step`` indexes the best point of the curve (0 = initialization only).
    """

    weights: np.ndarray
    picks: list[int]
    curve: list[float]
    best_step: int
    score: float = float("nan")


def _check_library(preds: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _resolve_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _candidate_average(s: np.ndarray, pred: np.ndarray, n_members: int) -> np.ndarray:
    """The running average if ``pred`` joins an ensemble whose float64 sum is ``s``."""
    return (s + pred) / n_members


def _choose(signed: np.ndarray, in_ensemble: np.ndarray, bce_of: Callable[[int], float]) -> int:
    """Best candidate; ties (within TIE_TOL) go to a member already in, then lower BCE, then lower index."""
    signed = np.where(np.isnan(signed), -np.inf, signed)
    tied = np.flatnonzero(signed >= np.max(signed) - TIE_TOL)
    if len(tied) > 1 and in_ensemble[tied].any():
        tied = tied[in_ensemble[tied]]
    if len(tied) == 1:
        return int(tied[0])
    losses = np.array([bce_of(int(m)) for m in tied])
    return int(tied[np.flatnonzero(losses == losses.min())[0]])


def _first_best(signed: list[float] | np.ndarray) -> int:
    """First index whose value is within TIE_TOL of the maximum (the smallest best ensemble)."""
    arr = np.asarray(signed, dtype=np.float64)
    arr = np.where(np.isnan(arr), -np.inf, arr)
    return int(np.flatnonzero(arr >= arr.max() - TIE_TOL)[0])


class _FastScorer:
    """Scores every candidate of a step at once: metric of (S + p_m) / n for all m.

    mAP is vectorized: per class, sort integer keys of all candidates' averages with the label in
    the lowest bit, read the ranks of the positives, and recompute in float64 only the rows where a
    positive's key is within 1 of a neighbour's (so the result equals scikit-learn's AP, ties
    included). Scores must be finite and >= 0 (probabilities). Other metrics, and mAP on other
    scores, make one metric call per candidate.
    """

    def __init__(self, preds: np.ndarray, y: np.ndarray, metric: Metric, exact: bool, n_threads: int) -> None:
        self.preds, self.y, self.metric, self.exact = preds, y, metric, exact
        self.vectorized = metric.name == "mAP" and bool(np.all(np.isfinite(preds))) and float(preds.min()) >= 0
        self.n_threads = n_threads
        if self.vectorized:
            self.classes = np.flatnonzero(y.any(axis=0))
            self.cols = np.ascontiguousarray(preds[:, :, self.classes].transpose(2, 0, 1), dtype=np.float64)
            self.labels = [y[:, c].astype(np.int32) for c in self.classes]
            self.positives = [np.flatnonzero(y[:, c]) for c in self.classes]
            self.rank_weights = [(len(q) - np.arange(len(q))) / len(q) for q in self.positives]
            self.scale = _KEY_MAX / max(1.0, float(preds.max()))
            self._local = threading.local()

    def __call__(self, s: np.ndarray, n_members: int) -> np.ndarray:
        if not self.vectorized:
            return np.array([self.metric(self.y, _candidate_average(s, p, n_members)) for p in self.preds])
        if len(self.classes) == 0:
            return np.full(len(self.preds), np.nan)
        if self.exact and self.cols.size <= SMALL_ELEMENTS:
            return self._small(s, n_members)
        jobs = range(len(self.classes))
        if self.n_threads > 1 and len(self.classes) > 1:
            with ThreadPoolExecutor(self.n_threads) as pool:
                ap = list(pool.map(lambda i: self._class_ap(s, n_members, i), jobs))
        else:
            ap = [self._class_ap(s, n_members, i) for i in jobs]
        return np.mean(ap, axis=0)

    def _small(self, s: np.ndarray, n_members: int) -> np.ndarray:
        """Small libraries (the inner folds of honest scores): every candidate and class in one exact float64
        AP call over [N, M * C] columns; per-class Python overhead would dominate otherwise."""
        c, m, n = self.cols.shape
        totals = (self.cols + s[:, self.classes].T[:, None, :]) / n_members  # [C, M, N]
        ap = average_precision_per_class(self._tiled(c, m), totals.reshape(c * m, n).T)
        return ap.reshape(c, m).mean(axis=0)

    def _tiled(self, c: int, m: int) -> np.ndarray:
        tiled = getattr(self, "_tiled_y", None)
        if tiled is None:
            tiled = self._tiled_y = np.repeat(self.y[:, self.classes], m, axis=1)  # column c * M + m
        return tiled

    def _workspace(self, rows: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-thread [rows, N] buffers (float64 sums, int32 keys, int8 labels), reused across calls."""
        ws = getattr(self._local, "ws", None)
        if ws is None or ws[0].shape != (rows, n):
            ws = (np.empty((rows, n)), np.empty((rows, n), np.int32), np.empty((rows, n), np.int8))
            self._local.ws = ws
        return ws

    def _class_ap(self, s: np.ndarray, n_members: int, i: int) -> np.ndarray:
        """AP of class ``self.classes[i]`` for every candidate [M], in cache-sized blocks of candidates."""
        p_c = self.cols[i]
        m, n = p_c.shape
        s_c = np.ascontiguousarray(s[:, self.classes[i]])[None, :]
        block = max(1, min(m, _BLOCK_ELEMENTS // n))
        out = np.empty(m)
        for r0 in range(0, m, block):
            out[r0 : r0 + block] = self._block_ap(s_c, p_c[r0 : r0 + block], n_members, i, block)
        return out

    def _block_ap(self, s_c: np.ndarray, p_block: np.ndarray, n_members: int, i: int, block: int) -> np.ndarray:
        """AP of one class for a block of candidates.

        With t = S + p (the float64 numerator of the running average), keys are
        2 * floor(t * scale / n) + label: never decreasing in the exact average (S + p) / n, equal or
        adjacent (values differ by <= 1) where averages tie, 30 bits. One int32 sort per row ranks all
        clips and the odd keys mark the positives; rows where a positive is within 1 of a neighbour's
        value are recomputed exactly in float64.
        """
        b, n = p_block.shape
        total, key, bits = (buf[:b] for buf in self._workspace(block, n))
        np.add(s_c, p_block, out=total)
        np.multiply(total, self.scale / n_members, out=key, casting="unsafe")
        np.left_shift(key, 1, out=key)
        np.bitwise_or(key, self.labels[i][None, :], out=key)
        key.sort(axis=1)
        np.bitwise_and(key, 1, out=bits, casting="unsafe")
        flat = np.flatnonzero(bits.view(bool))
        weights = self.rank_weights[i]
        above = ((np.arange(1, b + 1) * n)[:, None] - flat.reshape(b, len(weights)))  # clips ranked >= each positive
        ap = (weights[None, :] / above).sum(axis=1)
        if self.exact:
            rows = _rows_with_close_positives(key, flat, above)
            if len(rows):
                ap[rows] = _ap_rows(total[rows] / n_members, self.positives[i])
        return ap


def _rows_with_close_positives(key: np.ndarray, flat: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Rows of the sorted keys (2 * value + 1 for positives) where a positive's value is within 1 of
    a neighbour's: the only places where the key order may differ from the exact float64 order.
    ``above`` [rows, P] counts the clips at or after each positive in its row (1 = last, N = first)."""
    gaps = np.diff(key.reshape(-1))
    left = (np.take(gaps, flat - 1, mode="wrap") <= 3).reshape(above.shape) & (above < key.shape[1])
    right = (np.take(gaps, flat, mode="clip") <= 2).reshape(above.shape) & (above > 1)
    return np.flatnonzero((left | right).any(axis=1))


def _ap_rows(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Exact AP (scikit-learn's tie handling) of each row of ``scores [R, N]`` whose positive
    columns are ``positives``: the mean over positives of TP(>= s) / N(>= s)."""
    n = scores.shape[1]
    n_pos = len(positives)
    everything = np.sort(scores, axis=1)
    pos_scores = np.sort(scores[:, positives], axis=1)
    out = np.empty(len(scores))
    for r in range(len(scores)):
        n_ge = n - np.searchsorted(everything[r], pos_scores[r], side="left")
        tp_ge = n_pos - np.searchsorted(pos_scores[r], pos_scores[r], side="left")
        out[r] = np.sum(tp_ge / n_ge) / n_pos
    return out


def _reference_metric(y: np.ndarray, metric: Metric) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric the reference calls: scikit-learn's macro AP (classes with positives) for mAP."""
    if metric.name == "mAP":
        from sklearn.metrics import average_precision_score

        keep = y.any(axis=0)

        def fn(t: np.ndarray, p: np.ndarray) -> float:
            return float(average_precision_score(t[:, keep], p[:, keep], average="macro"))
        return fn
    return metric


def _sorted_init(
    preds: np.ndarray, y: np.ndarray, single_signed: np.ndarray, n_init: int
) -> list[int]:
    """The ``n_init`` best single models in order, using the step tie rule (BCE, then index)."""
    order: list[int] = []
    signed = single_signed.astype(np.float64).copy()
    none_in = np.zeros(len(preds), dtype=bool)
    for _ in range(min(n_init, len(preds))):
        best = _choose(signed, none_in, lambda m: bce(y, preds[m]))
        order.append(best)
        signed[best] = -np.inf
    return order


def _greedy(
    preds: np.ndarray, y: np.ndarray, size: int, metric: Metric, init: int | str,
    keep_best_prefix: bool, scorer: ScoreFn,
) -> Selection:
    """The selection loop shared by the fast and the bagged/pruned paths."""
    m_models = len(preds)
    sign = 1.0 if metric.greater_is_better else -1.0
    zero = np.zeros(y.shape, dtype=np.float64)
    single = sign * scorer(zero, 1)
    if init == "auto":
        order = _sorted_init(preds, y, single, AUTO_INIT_MAX)
        sums = np.cumsum(preds[order].astype(np.float64), axis=0)
        init_scores = [sign * metric(y, sums[i] / (i + 1)) for i in range(len(order))]
        picks = order[: _first_best(init_scores) + 1]
    elif isinstance(init, int) and init >= 1:
        picks = _sorted_init(preds, y, single, init)
    else:
        raise ValueError(f"init must be a positive int or 'auto', got {init!r}")
    s = zero.copy()
    for p in picks:
        s += preds[p]
    curve = [float(single[picks[0]] * sign) if len(picks) == 1 else metric(y, s / len(picks))]
    counts = np.bincount(picks, minlength=m_models)
    n_init = len(picks)
    for _ in range(size):
        k = len(picks)
        signed = sign * scorer(s, k + 1)
        best = _choose(signed, counts > 0, lambda m: bce(y, _candidate_average(s, preds[m], k + 1)))
        picks.append(best)
        counts[best] += 1
        s += preds[best]
        curve.append(float(sign * signed[best]))
    best_step = _first_best([sign * v for v in curve])
    kept = picks[: n_init + best_step] if keep_best_prefix else picks
    weights = np.bincount(kept, minlength=m_models) / len(kept)
    return Selection(weights, list(kept), curve, best_step, _weighted_score(preds, y, weights, metric))


def _weighted_score(preds: np.ndarray, y: np.ndarray, weights: np.ndarray, metric: Metric) -> float:
    used = np.flatnonzero(weights)
    return metric(y, np.tensordot(weights[used], preds[used].astype(np.float64), axes=1))


def _top_models(single_signed: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best single models (ties to the lower index), in library order."""
    order = np.lexsort((np.arange(len(single_signed)), -single_signed))
    return np.sort(order[:k])


def _embed(sel: Selection, idx: np.ndarray, m_models: int) -> Selection:
    """Map a selection made on the sub-library ``idx`` back to library indices."""
    weights = np.zeros(m_models)
    weights[idx] = sel.weights
    return Selection(weights, [int(idx[p]) for p in sel.picks], sel.curve, sel.best_step, sel.score)


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
) -> Selection:
    """Greedy selection with replacement of ``size`` steps over ``preds [M, N, C]`` against ``y [N, C]``.

    ``init``: sorted initialization with the ``init`` best models, or "auto" (best N on this data).
    ``exact=False`` skips the float64 tie repair of the fast mAP scorer. ``bagging > 0`` runs that many
    selections on random ``bag_fraction`` subsets and averages their weights; ``prune_top`` keeps
    only the top models by single score first. ``n_threads > 1`` splits the mAP classes over threads.
    """
    p, t = _check_library(preds, y)
    met = get_metric(metric)
    threads = n_threads if n_threads is not None else 1
    m_models = len(p)
    idx = np.arange(m_models)
    if prune_top is not None and prune_top < m_models:
        single = (1.0 if met.greater_is_better else -1.0) * _FastScorer(p, t, met, exact, threads)(np.zeros(t.shape), 1)
        idx = _top_models(single, max(1, prune_top))
    if bagging > 0:
        return _bagged(p, t, idx, size, met, init, keep_best_prefix, exact, threads, _resolve_rng(rng),
                       bagging, bag_fraction)
    sub = p[idx]
    sel = _greedy(sub, t, size, met, init, keep_best_prefix, _FastScorer(sub, t, met, exact, threads))
    return _embed(sel, idx, m_models)


def _bagged(
    p: np.ndarray, t: np.ndarray, idx: np.ndarray, size: int, met: Metric, init: int | str,
    keep_best_prefix: bool, exact: bool, threads: int, rng: np.random.Generator, bags: int, fraction: float,
) -> Selection:
    """Bagged selection: selections on random library subsets, weights averaged (Caruana et al. 2004)."""
    m_models = len(p)
    n_bag = min(len(idx), max(1, int(round(fraction * len(idx)))))
    weights = np.zeros(m_models)
    picks: list[int] = []
    curves: list[list[float]] = []
    for _ in range(bags):
        bag = np.sort(rng.choice(idx, size=n_bag, replace=False))
        sub = p[bag]
        scorer = _FastScorer(sub, t, met, exact, threads)
        sel = _embed(_greedy(sub, t, size, met, init, keep_best_prefix, scorer), bag, m_models)
        weights += sel.weights / bags
        picks += sel.picks
        curves.append(sel.curve)
    curve = np.mean(curves, axis=0)
    sign = 1.0 if met.greater_is_better else -1.0
    score = _weighted_score(p, t, weights, met)
    return Selection(weights, picks, [float(v) for v in curve], _first_best(sign * curve), score)


def reference_ensemble_selection(
    preds: np.ndarray,
    y: np.ndarray,
    size: int = 50,
    metric: str | Metric = "mAP",
    init: int | str = 1,
    keep_best_prefix: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Selection:
    """Straightforward selection: every candidate of every step rescored with one metric call
    (scikit-learn's average_precision_score for mAP). The fast mode must make the same picks.
    ``on_step(step, score)`` is called after each greedy step (progress for long runs)."""
    p, t = _check_library(preds, y)
    met = get_metric(metric)
    sign = 1.0 if met.greater_is_better else -1.0
    fn = _reference_metric(t, met)
    m_models = len(p)
    single = [sign * fn(t, p[m].astype(np.float64)) for m in range(m_models)]
    ranked: list[int] = []
    for _ in range(min(m_models, AUTO_INIT_MAX if init == "auto" else int(init))):
        rest = [m for m in range(m_models) if m not in ranked]
        top = max(single[m] for m in rest)
        tied = [m for m in rest if single[m] >= top - TIE_TOL]
        ranked.append(min(tied, key=lambda m: (bce(t, p[m]), m)))
    if init == "auto":
        avg_scores, s = [], np.zeros(t.shape)
        for n, m in enumerate(ranked):
            s = s + p[m]
            avg_scores.append(sign * fn(t, s / (n + 1)))
        top = max(avg_scores)
        ranked = ranked[: next(n for n, v in enumerate(avg_scores) if v >= top - TIE_TOL) + 1]
    picks = list(ranked)
    s = np.zeros(t.shape)
    for m in picks:
        s = s + p[m]
    curve = [fn(t, s / len(picks))]
    for step in range(1, size + 1):
        k = len(picks)
        signed = [sign * fn(t, (s + p[m]) / (k + 1)) for m in range(m_models)]
        top = max(signed)
        tied = [m for m in range(m_models) if signed[m] >= top - TIE_TOL]
        if any(m in picks for m in tied):
            tied = [m for m in tied if m in picks]
        best = min(tied, key=lambda m: (bce(t, (s + p[m]) / (k + 1)), m))
        picks.append(best)
        s = s + p[best]
        curve.append(sign * signed[best])
        if on_step is not None:
            on_step(step, float(curve[-1]))
    signed_curve = [sign * v for v in curve]
    best_step = next(i for i, v in enumerate(signed_curve) if v >= max(signed_curve) - TIE_TOL)
    kept = picks[: len(ranked) + best_step] if keep_best_prefix else picks
    weights = np.bincount(kept, minlength=m_models) / len(kept)
    return Selection(weights, kept, [float(v) for v in curve], best_step, _weighted_score(p, t, weights, met))
