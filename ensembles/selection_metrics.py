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
values directly.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

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
F1_THRESHOLD = 0.5
"""The threshold of the registered "f1" (f1_micro's default)."""


def palette_codes(block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 codes, palette) when ``block`` has at most 256 distinct values (exact), else (block, None)."""
    palette, codes = np.unique(block, return_inverse=True)
    if len(palette) > 256:
        return block, None
    return codes.reshape(block.shape).astype(np.uint8), palette


def class_major(preds: np.ndarray, c0: int, c1: int) -> np.ndarray:
    """Classes c0:c1 of ``preds [M, N, C]`` as a contiguous ``[C1 - C0, M, N]`` copy in a compact float dtype."""
    dtype = preds.dtype if preds.dtype in (np.float16, np.float32, np.float64) else np.float32
    return np.ascontiguousarray(preds[:, :, c0:c1].transpose(2, 0, 1), dtype=dtype)


class ClassBlockScorer:
    """Additive statistics [M, k] of a class-decomposable metric over one block of classes.

    ``cols [Cb, M, N]`` are the block's predictions class-major, ``y [N, Cb]`` its labels; ``stats(s, n)``
    scores every candidate's (s + p_m) / n where ``s [N, Cb]`` is the float64 ensemble sum. With a
    ``palette``, ``cols`` are integer codes of the scores ``palette[cols]`` (exact: the same values).
    Ranked scorers on a power-of-two grid (``grid``) hold its numerators as ``cols`` and count them.
    """

    k = 2
    needs_keys = False

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
        self._local = threading.local()

    def values(self, block: np.ndarray) -> np.ndarray:
        """Scores of a slice of ``cols`` (decoded through the palette if there is one)."""
        return block if self.palette is None else np.take(self.palette, block)

    @staticmethod
    def keep(t: np.ndarray) -> bool:
        """Whether a class (its label column) counts in the macro average."""
        return bool(t.any())

    def stats(self, s: np.ndarray, n_members: int) -> np.ndarray:
        m = self.cols.shape[1]
        jobs = list(self.classes)
        if self.n_threads > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(self.n_threads) as pool:
                parts = list(pool.map(lambda c: self.class_stats(c, s, n_members), jobs))
        else:
            parts = [self.class_stats(c, s, n_members) for c in jobs]
        return np.sum(parts, axis=0) if parts else np.zeros((m, self.k))

    def class_stats(self, c: int, s: np.ndarray, n_members: int) -> np.ndarray:
        """Statistics [M, k] of class ``c`` of the block (value, 1) for a macro mean."""
        p_c = self.cols[c]
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

    def _workspace(self, rows: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-thread [rows, N] buffers (float64 sums, int32 keys, int8 labels), reused across calls."""
        ws = getattr(self._local, "ws", None)
        if ws is None or ws[0].shape != (rows, n):
            ws = (np.empty((rows, n)), np.empty((rows, n), np.int32), np.empty((rows, n), np.int8))
            self._local.ws = ws
        return ws

    def ranked(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(total [b, N], above [b, P], rows to recompute exactly) for one class and block of candidates.

        With t = S + p, keys 2 * floor(t * scale / n) + label never decrease in the exact average and
        are equal or adjacent where averages tie; one int32 sort per row ranks all clips, odd keys mark
        the positives. ``above`` counts the clips ranked at or after each positive (1 = last).
        """
        b, n = p_block.shape
        total, key, bits = (buf[:b] for buf in self._workspace(block, n))
        if self.palette is None:
            np.add(s_c, p_block, out=total)
        else:
            np.take(self.palette, p_block, out=total)
            np.add(total, s_c, out=total)
        np.multiply(total, self.scale / n_members, out=key, casting="unsafe")
        np.left_shift(key, 1, out=key)
        np.bitwise_or(key, self.labels[c][None, :], out=key)
        key.sort(axis=1)
        np.bitwise_and(key, 1, out=bits, casting="unsafe")
        flat = np.flatnonzero(bits.view(bool))
        above = (np.arange(1, b + 1) * n)[:, None] - flat.reshape(b, len(self.positives[c]))
        rows = rows_with_close_positives(key, flat, above) if self.exact else np.zeros(0, dtype=np.int64)
        return total, above, rows


class APScorer(ClassBlockScorer):
    """Average precision per class, scikit-learn's tie handling; macro over classes with positives."""

    needs_keys = True

    def rows(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int) -> np.ndarray:
        if (counted := self.counted(c, s_c, p_block, counted_ap)) is not None:
            return counted
        total, above, rows = self.ranked(c, s_c, p_block, n_members, block)
        q = len(self.positives[c])
        ap = (((q - np.arange(q)) / q)[None, :] / above).sum(axis=1)
        if len(rows) and self.on_grid and n_members * self.vmax <= GRID_TOTAL_MAX:
            ap[rows] = grid_ap_rows(total[rows], self.y[:, c])
        elif len(rows):
            ap[rows] = ap_rows(total[rows] / n_members, self.positives[c])
        return ap

    def exact_stats(self, scores: np.ndarray) -> np.ndarray:
        ap = average_precision_per_class(self.y[:, self.classes], scores[:, self.classes])
        return np.array([float(np.sum(ap)), float(len(self.classes))])


class AUCScorer(ClassBlockScorer):
    """ROC AUC per class from the ranks of the positives (Mann-Whitney); macro over classes with both labels."""

    needs_keys = True

    @staticmethod
    def keep(t: np.ndarray) -> bool:
        return bool(t.any() and not t.all())

    def rows(self, c: int, s_c: np.ndarray, p_block: np.ndarray, n_members: int, block: int) -> np.ndarray:
        if (counted := self.counted(c, s_c, p_block, counted_auc)) is not None:
            return counted
        total, above, rows = self.ranked(c, s_c, p_block, n_members, block)
        n = p_block.shape[1]
        q = len(self.positives[c])
        below = (n - above - np.arange(q)[None, :]).sum(axis=1)  # negatives ranked below each positive
        auc = below / (q * (n - q))
        if len(rows):
            scores = total[rows] / n_members
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

    def class_stats(self, c: int, s: np.ndarray, n_members: int) -> np.ndarray:
        t_star = sum_threshold(F1_THRESHOLD, n_members)
        pred = s[None, :, c] + self.values(self.cols[c]) >= t_star
        tp = row_counts(pred[:, self.positives[c]])
        n_true = np.full(len(tp), len(self.positives[c]))
        return np.column_stack([tp, row_counts(pred), n_true]).astype(np.float64)

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
    """lwlrap of every candidate: for each (clip, positive label) pair, the counts of labels and of
    positives scored >= it within the clip, compared in float64 like `harmonia.metrics.lwlrap`."""

    def __init__(self, preds: np.ndarray, y: np.ndarray) -> None:
        self.preds, self.y = preds, y.astype(bool)
        self.clip, self.label = np.nonzero(self.y)
        self.pos_rows = self.y[self.clip]  # [P, C] the positives of each pair's clip

    def __call__(self, s: np.ndarray, n_members: int) -> np.ndarray:
        m, _, c = self.preds.shape
        n_pairs = len(self.clip)
        if n_pairs == 0:
            return np.full(m, np.nan)
        s_rows = s[self.clip]
        pair = np.arange(n_pairs)
        block = max(1, BLOCK_ELEMENTS * 4 // max(1, n_pairs * c))
        out = np.empty(m)
        for r0 in range(0, m, block):
            avg = (s_rows[None] + self.preds[r0 : r0 + block][:, self.clip, :]) / n_members  # [b, P, C]
            ge = avg >= avg[:, pair, self.label][:, :, None]
            rank = np.count_nonzero(ge, axis=2)
            pos_above = np.count_nonzero(ge & self.pos_rows[None], axis=2)
            out[r0 : r0 + block] = (pos_above / np.maximum(rank, 1)).sum(axis=1) / n_pairs
        return out


def sum_threshold(threshold: float, n_members: int) -> float:
    """The smallest float64 sum t with t / n >= threshold in float64: one compare replaces a division
    (correctly rounded division is monotone, so the set of such t starts at one value)."""
    t = float(threshold) * n_members
    while t / n_members >= threshold:
        t = float(np.nextafter(t, -np.inf))
    while t / n_members < threshold:
        t = float(np.nextafter(t, np.inf))
    return t


def row_counts(mask: np.ndarray) -> np.ndarray:
    """True cells per row of a 2-D bool array (a flat count per row is several times faster than axis=1)."""
    return np.array([np.count_nonzero(r) for r in mask], dtype=np.int64)


def rows_with_close_positives(key: np.ndarray, flat: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Rows of the sorted keys (2 * value + 1 for positives) where a positive's value is within 1 of
    a neighbour's: the only places where the key order may differ from the exact float64 order.
    ``above`` [rows, P] counts the clips at or after each positive in its row (1 = last, N = first)."""
    keys = key.reshape(-1)
    at = keys[flat]
    left = (at - np.take(keys, flat - 1, mode="wrap") <= 3).reshape(above.shape) & (above < key.shape[1])
    right = (np.take(keys, flat + 1, mode="clip") - at <= 2).reshape(above.shape) & (above > 1)
    return np.flatnonzero((left | right).any(axis=1))


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
