"""Vectorized scorers for greedy selection: every candidate's (S + p_m) / n scored in one pass per class.

Class-decomposable metrics (mAP, ROC AUC, micro F1 at the fixed 0.5 threshold) are scored per block
of classes and return additive statistics [M, k] (for mAP: sum of AP, number of classes), so class
blocks can live in different processes and be summed (`harmonia.ensembles.sharded`). lwlrap
decomposes by clip and is scored in-process. The library is held class-major ``[C, M, N]`` in its
own float dtype (float16/float32 stay as they are; never a float64 copy).

Exactness: the scores compared are the float64 values (S + p_m) / n the reference computes. mAP and
AUC rank integer keys 2 * floor(t * scale / n) + label (t = S + p, 30 bits); rows where a positive's
key is within 1 of a neighbour's are recomputed exactly in float64, so ties are scored as
scikit-learn / rankdata score them. Libraries on a power-of-two grid (8-bit ``codes / 256``) are
counted instead, with no sort and no repair (`selection_counting`). F1 and lwlrap compare the float64
values directly. The passes over clips are compiled (`selection_compiled`); the sort is numpy's.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from harmonia.ensembles.selection_compiled import (AP, AUC, bound_increments, bound_rows, compiled_dtype,
                                                   lwlrap_rows, rank_keys, scan_sorted, threshold_counts)
from harmonia.ensembles.selection_counting import (counted_ap, counted_auc, dyadic_grid, key_range,
                                                   numerator_codes, sum_keys)
from harmonia.metrics import average_precision_per_class, roc_auc_per_class

KEY_MAX = float(2**30 - 2)
BLOCK_ELEMENTS = 2**18
"""Candidates are scored in blocks of about this many (candidate, clip) cells, so buffers stay in cache."""
GRID_BITS = 40
"""Scores that are all multiples of 2**-GRID_BITS (float32 >= 2**-16, 8-bit codes) have exact int64 sums."""
GRID_TOTAL_MAX = 2.0**11
"""Sums up to this stay distinct after dividing by n (gap 2**-40 >> float64 rounding): keys order them exactly."""
BOUND_BUCKETS_PER_CLIP = 0.5
"""Upper bounds bucket the sums into the power of two >= this many buckets a clip (finer: tighter bounds,
fewer candidates scored exactly, a longer pass; 0.5 was fastest at N=5000)."""
F1_THRESHOLD = 0.5
"""The threshold of the registered "f1" (f1_micro's default)."""


def palette_codes(block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 codes, palette) when ``block`` has at most 256 distinct values (exact), else (block, None)."""
    palette, codes = np.unique(block, return_inverse=True)
    if len(palette) > 256:
        return block, None
    return codes.reshape(block.shape).astype(np.uint8), palette


def class_major(preds: np.ndarray, c0: int, c1: int) -> np.ndarray:
    """Classes c0:c1 of ``preds [M, N, C]`` as a contiguous ``[C1 - C0, M, N]`` copy in a compact float dtype
    (transposed model by model: about 4x faster than one strided copy, and one model read at a time)."""
    dtype = preds.dtype if preds.dtype in (np.float16, np.float32, np.float64) else np.float32
    out = np.empty((c1 - c0, preds.shape[0], preds.shape[1]), dtype=dtype)
    for m in range(preds.shape[0]):
        out[:, m, :] = preds[m, :, c0:c1].T
    return out


class ClassBlockScorer:
    """Additive statistics [M, k] of a class-decomposable metric over one block of classes.

    ``cols [Cb, M, N]`` are the block's predictions class-major, ``y [N, Cb]`` its labels; ``stats(s, n)``
    scores every candidate's (s + p_m) / n where ``s [N, Cb]`` is the float64 ensemble sum. With a
    ``palette``, ``cols`` are integer codes of the scores ``palette[cols]`` (exact: the same values).
    Ranked scorers on a power-of-two grid (``grid``) hold its numerators as ``cols`` and count them.
    """

    k = 2
    needs_keys = False
    bound_what: int | None = None
    """The `selection_compiled` statistic (AP, AUC) whose upper bound prunes candidates, or None."""

    def __init__(self, cols: np.ndarray, y: np.ndarray, exact: bool = True, n_threads: int = 1,
                 palette: np.ndarray | None = None) -> None:
        self.cols, self.y, self.exact, self.n_threads = cols, y.astype(bool), exact, n_threads
        self.palette = None if palette is None else np.asarray(palette, dtype=np.float64)
        self.classes = np.flatnonzero([self.keep(y[:, c]) for c in range(y.shape[1])])
        values = cols if palette is None else self.palette
        if self.needs_keys and values.size and not (np.all(np.isfinite(values)) and float(values.min()) >= 0):
            raise ValueError("vectorized ranking needs finite scores >= 0 (probabilities)")
        self.labels = [self.y[:, c].astype(np.int32) for c in range(y.shape[1])]
        self.positives = [np.flatnonzero(self.y[:, c]) for c in range(y.shape[1])]
        self.vmax = float(values.max()) if values.size else 1.0
        self.scale = KEY_MAX / max(1.0, self.vmax)
        self.on_grid = on_grid(values)
        self.grid = dyadic_grid(values) if self.needs_keys else None
        if self.grid is not None:  # held as the grid's numerators (codes == numerators) and counted
            self.cols, self.palette = numerator_codes(cols, self.palette, self.grid), self.grid.palette()
        bounded = self.bound_what is not None and self.grid is None
        self.increments = [bound_increments(self.y[:, c]) for c in range(y.shape[1])] if bounded else []
        self._local = threading.local()

    def values(self, block: np.ndarray) -> np.ndarray:
        """Scores of a slice of ``cols`` (decoded through the palette if there is one)."""
        return block if self.palette is None else np.take(self.palette, block)

    @staticmethod
    def keep(t: np.ndarray) -> bool:
        """Whether a class (its label column) counts in the macro average."""
        return bool(t.any())

    def stats(self, s: np.ndarray, n_members: int, candidates: np.ndarray | None = None) -> np.ndarray:
        """Statistics [M, k] of every candidate (or [len(candidates), k] of those), summed over the classes."""
        m = self.cols.shape[1] if candidates is None else len(candidates)
        return self._over_classes(lambda c: self.class_stats(c, s, n_members, candidates), (m, self.k))

    def bound_stats(self, s: np.ndarray, n_members: int) -> np.ndarray | None:
        """Upper bounds [M, k] of every candidate's statistics (`selection_compiled.bound_rows`), or None
        where this scorer has none (unranked metrics, libraries on a counting grid)."""
        if self.bound_what is None or self.grid is not None:
            return None
        m, n = self.cols.shape[1:]
        n_buckets = 1 << max(4, (int(BOUND_BUCKETS_PER_CLIP * n) - 1).bit_length())

        def bounds(c: int) -> np.ndarray:
            up = bound_rows(s[:, c], self.values(self.cols[c]), self.increments[c], self.positives[c], n_members,
                            self.bound_what, self.vmax, n_buckets)
            return np.column_stack([up, np.ones(m)])
        return self._over_classes(bounds, (m, self.k))

    def _over_classes(self, per_class, shape: tuple[int, int]) -> np.ndarray:
        """Sum of ``per_class(c)`` over the kept classes, split over ``n_threads`` threads."""
        jobs = list(self.classes)
        if self.n_threads > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(self.n_threads) as pool:
                parts = list(pool.map(per_class, jobs))
        else:
            parts = [per_class(c) for c in jobs]
        return np.sum(parts, axis=0) if parts else np.zeros(shape)

    def class_stats(self, c: int, s: np.ndarray, n_members: int, candidates: np.ndarray | None = None
                    ) -> np.ndarray:
        """Statistics [M, k] of class ``c`` of the block (value, 1) for a macro mean."""
        p_c = self.cols[c] if candidates is None else self.cols[c][candidates]
        m, n = p_c.shape
        s_c = np.ascontiguousarray(s[:, c])[None, :]
        block = max(1, min(m, BLOCK_ELEMENTS // max(1, n)))
        out = np.empty(m)
        for r0 in range(0, m, block):
            out[r0 : r0 + block] = self.rows(c, s_c, p_c[r0 : r0 + block], n_members, block)
        return np.column_stack([out, np.ones(m)])

    def rows(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int) -> np.ndarray:
        raise NotImplementedError

    def counted(self, c: int, s_c: np.ndarray, p_block: np.ndarray, score) -> np.ndarray | None:
        """``score`` (`counted_ap`, `counted_auc`) of the block's rows when the library is on a dyadic grid and
        class ``c``'s key range is narrow enough to count (`selection_counting`), else None."""
        if self.grid is None:
            return None
        s_int = sum_keys(s_c[0], self.grid)
        r = key_range(s_int, self.grid)
        return score(s_int, p_block, self.positives[c], r) if r else None

    def exact_stats(self, scores: np.ndarray) -> np.ndarray:
        """Statistics [k] of one score matrix ``[N, Cb]`` (the current or the weighted ensemble)."""
        raise NotImplementedError

    @staticmethod
    def finalize(stats: np.ndarray) -> np.ndarray:
        """Metric values [M] from summed statistics [M, k]."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(stats[:, 1] > 0, stats[:, 0] / stats[:, 1], np.nan)

    def _keys(self, rows: int, n: int) -> np.ndarray:
        """Per-thread int32 key buffer [rows, N], reused across calls."""
        key = getattr(self._local, "key", None)
        if key is None or key.shape != (rows, n):
            key = self._local.key = np.empty((rows, n), np.int32)
        return key

    def ranked(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int, what: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(AP or AUC of each candidate row, rows to recompute exactly) for one class and block of candidates.

        With t = S + p, keys 2 * floor(t * scale / n) + label never decrease in the exact average and
        are equal or adjacent where averages tie; one int32 sort per row ranks all clips, odd keys mark
        the positives (`selection_compiled`: keys and the scan compiled, the sort numpy's).
        """
        b, n = p_block.shape
        key = self._keys(block, n)[:b]
        values = p_block if self.palette is None else np.take(self.palette, p_block)
        rank_keys(s_c[0], compiled_dtype(values), self.labels[c], self.scale / n_members, key)
        key.sort(axis=1)
        out, close = np.empty(b), np.empty(b, dtype=bool)
        scan_sorted(key, len(self.positives[c]), what, out, close)
        return out, (np.flatnonzero(close) if self.exact else np.zeros(0, dtype=np.int64))

    def totals(self, s_c: np.ndarray, p_rows: np.ndarray) -> np.ndarray:
        """Float64 sums S + p of some candidate rows (for the exact repair)."""
        return s_c + self.values(p_rows)


class APScorer(ClassBlockScorer):
    """Average precision per class, scikit-learn's tie handling; macro over classes with positives."""

    needs_keys = True
    bound_what = AP

    def rows(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int) -> np.ndarray:
        if (counted := self.counted(c, s_c, p_block, counted_ap)) is not None:
            return counted
        ap, rows = self.ranked(c, s_c, p_block, n_members, block, AP)
        if len(rows) and self.on_grid and n_members * self.vmax <= GRID_TOTAL_MAX:
            ap[rows] = grid_ap_rows(self.totals(s_c, p_block[rows]), self.y[:, c])
        elif len(rows):
            ap[rows] = ap_rows(self.totals(s_c, p_block[rows]) / n_members, self.positives[c])
        return ap

    def exact_stats(self, scores: np.ndarray) -> np.ndarray:
        ap = average_precision_per_class(self.y[:, self.classes], scores[:, self.classes])
        return np.array([float(np.sum(ap)), float(len(self.classes))])


class AUCScorer(ClassBlockScorer):
    """ROC AUC per class from the ranks of the positives (Mann-Whitney); macro over classes with both labels."""

    needs_keys = True
    bound_what = AUC

    @staticmethod
    def keep(t: np.ndarray) -> bool:
        return bool(t.any() and not t.all())

    def rows(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int) -> np.ndarray:
        if (counted := self.counted(c, s_c, p_block, counted_auc)) is not None:
            return counted
        auc, rows = self.ranked(c, s_c, p_block, n_members, block, AUC)
        if len(rows):
            scores = self.totals(s_c, p_block[rows]) / n_members
            auc[rows] = roc_auc_per_class(np.repeat(self.y[:, c : c + 1], len(rows), axis=1), scores.T)
        return auc

    def exact_stats(self, scores: np.ndarray) -> np.ndarray:
        auc = roc_auc_per_class(self.y[:, self.classes], scores[:, self.classes])
        return np.array([float(np.sum(auc)), float(len(self.classes))])


class F1Scorer(ClassBlockScorer):
    """Micro F1 of (S + p_m) / n >= 0.5: statistics (true positives, predicted, true) summed over classes."""

    k = 3

    @staticmethod
    def keep(t: np.ndarray) -> bool:
        return True

    def class_stats(self, c: int, s: np.ndarray, n_members: int, candidates: np.ndarray | None = None
                    ) -> np.ndarray:
        cols = self.cols[c] if candidates is None else self.cols[c][candidates]
        counts = threshold_counts(s[:, c], self.values(cols), self.labels[c],
                                  sum_threshold(F1_THRESHOLD, n_members))
        n_true = np.full(len(counts), len(self.positives[c]))
        return np.column_stack([counts, n_true]).astype(np.float64)

    def exact_stats(self, scores: np.ndarray) -> np.ndarray:
        pred = scores >= F1_THRESHOLD
        return np.array([np.sum(pred & self.y), np.sum(pred), np.sum(self.y)], dtype=np.float64)

    @staticmethod
    def finalize(stats: np.ndarray) -> np.ndarray:
        denom = stats[:, 1] + stats[:, 2]
        return np.where(denom > 0, 2.0 * stats[:, 0] / np.maximum(denom, 1), 0.0)


CLASS_SCORERS: dict[str, type[ClassBlockScorer]] = {"mAP": APScorer, "auc": AUCScorer, "f1": F1Scorer}
"""Registered metrics that decompose over classes, by name: these can be scored in class blocks and sharded."""


class LwlrapScorer:
    """lwlrap of every candidate (`selection_compiled.lwlrap_rows`): for each (clip, positive label) pair,
    the counts of labels and of positives scored >= it within the clip, compared in float64 like
    `harmonia.metrics.lwlrap`."""

    def __init__(self, preds: np.ndarray, y: np.ndarray) -> None:
        self.preds, self.y = preds, y.astype(bool)

    def __call__(self, s: np.ndarray, n_members: int) -> np.ndarray:
        return lwlrap_rows(s, self.preds, self.y, n_members)


def sum_threshold(threshold: float, n_members: int) -> float:
    """The smallest float64 sum t with t / n >= threshold in float64: one compare replaces a division
    (correctly rounded division is monotone, so the set of such t starts at one value)."""
    t = float(threshold) * n_members
    while t / n_members >= threshold:
        t = float(np.nextafter(t, -np.inf))
    while t / n_members < threshold:
        t = float(np.nextafter(t, np.inf))
    return t


def on_grid(values: np.ndarray) -> bool:
    """Whether every value is a multiple of 2**-GRID_BITS, so float64 sums of them are exact (checked in
    chunks, stopping at the first value off the grid: float32 probabilities below 2**-16 fail at once)."""
    flat = np.asarray(values).reshape(-1)
    for i in range(0, len(flat), 2**20):
        scaled = flat[i : i + 2**20].astype(np.float64) * 2.0**GRID_BITS
        if not (np.all(np.isfinite(scaled)) and np.all(scaled == np.floor(scaled))):
            return False
    return True


def grid_ap_rows(totals: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exact AP with ties of each row of ``totals [R, N]`` (sums on the 2**-GRID_BITS grid), vectorized.

    Keys 2 * total * 2**GRID_BITS + label are exact integers; after one sort, the clips scored >= a
    positive are those from the start of its tie group on (scikit-learn: ties share one threshold).
    """
    r, n = totals.shape
    key = (totals * 2.0 ** (GRID_BITS + 1)).astype(np.int64) | labels.astype(np.int64)[None, :]
    key.sort(axis=1)
    bits = key & 1
    value = key >> 1
    new = np.ones((r, n), dtype=bool)
    new[:, 1:] = value[:, 1:] != value[:, :-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n)[None, :], 0), axis=1)
    before = np.cumsum(bits, axis=1) - bits  # positives strictly before each position
    q = int(labels.sum())
    flat = np.flatnonzero(bits)
    row = flat // n
    first = start.reshape(-1)[flat]
    tp_ge = q - before.reshape(-1)[row * n + first]
    return np.bincount(row, weights=tp_ge / (n - first), minlength=r) / q


def ap_rows(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
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
