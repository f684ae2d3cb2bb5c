"""Compiled passes of greedy selection (numba, ``nogil`` so class threads run in parallel).

AP and ROC AUC: `rank_keys` builds the integer keys of every candidate row in one pass, numpy sorts
them (its SIMD sort), and `scan_sorted` reads AP or AUC and the rows needing an exact repair from the
sorted keys in one pass over the positives (`selection_metrics.ClassBlockScorer.ranked`: the same
keys and the same repair rule as the numpy passes these replace). lwlrap: `lwlrap_rows`, C float64
comparisons per (clip, positive label) pair, no temporaries.
"""

from __future__ import annotations

import numba
import numpy as np

AP, AUC = 0, 1
"""Which statistic `scan_sorted` returns."""


def compiled_dtype(block: np.ndarray) -> np.ndarray:
    """``block`` contiguous in a dtype the kernels take (float32 / float64; float16 widened exactly)."""
    return np.ascontiguousarray(block, dtype=block.dtype if block.dtype in (np.float32, np.float64) else np.float32)


@numba.njit(cache=True, nogil=True)
def rank_keys(s: np.ndarray, block: np.ndarray, labels: np.ndarray, factor: float, key: np.ndarray) -> None:
    """``key[r, i] = 2 * int32((s[i] + block[r, i]) * factor) + labels[i]``: the keys
    `selection_metrics.ClassBlockScorer.ranked` sorts, in one pass (the same float64 operations)."""
    for r in range(block.shape[0]):
        for i in range(s.shape[0]):
            key[r, i] = (np.int32((s[i] + block[r, i]) * factor) << 1) | labels[i]


@numba.njit(cache=True, nogil=True)
def scan_sorted(key: np.ndarray, n_pos: int, what: int, out: np.ndarray, close: np.ndarray) -> None:
    """AP or ROC AUC of each row of sorted keys (odd = positive) into ``out``, and into ``close`` whether a
    positive's key is within 1 of a neighbour's value (the rows whose key order may differ from float64's)."""
    b, n = key.shape
    where = np.empty(n, np.int64)
    for r in range(b):
        found = 0
        for j in range(n):  # positions of the positives, ascending, without a branch
            where[found] = j
            found += key[r, j] & 1
        total, below, near = 0.0, 0, False
        for t in range(found):
            j = where[t]
            k = key[r, j]
            total += (n_pos - t) / (n - j)  # positives >= it / clips >= it
            below += j - t  # negatives ranked below it
            if (j > 0 and k - key[r, j - 1] <= 3) or (j + 1 < n and key[r, j + 1] - k <= 2):
                near = True
        out[r] = total / n_pos if what == AP else below / (n_pos * (n - n_pos))
        close[r] = near


@numba.njit(cache=True, nogil=True)
def _lwlrap_rows(s: np.ndarray, preds: np.ndarray, labels: np.ndarray, clips: np.ndarray, n_members: int,
                 out: np.ndarray) -> None:
    n_classes = s.shape[1]
    a = np.empty(n_classes)
    n_pairs = 0
    for n in clips:
        for c in range(n_classes):
            n_pairs += labels[n, c]
    for r in range(preds.shape[0]):
        total = 0.0
        for n in clips:
            for c in range(n_classes):
                a[c] = (s[n, c] + preds[r, n, c]) / n_members
            for c0 in range(n_classes):
                if labels[n, c0]:
                    rank, hits = 0, 0
                    for c in range(n_classes):
                        ge = a[c] >= a[c0]
                        rank += ge
                        hits += ge & labels[n, c]
                    total += hits / rank
        out[r] = total / n_pairs


def lwlrap_rows(s: np.ndarray, preds: np.ndarray, labels: np.ndarray, n_members: int) -> np.ndarray:
    """lwlrap of (s + preds[r]) / n_members for every model r of ``preds [M, N, C]`` (labels [N, C]),
    compared in float64 as `harmonia.metrics.lwlrap` compares: per (clip, positive label) pair, the
    labels and the positives scored >= it within the clip, from C comparisons."""
    y = np.ascontiguousarray(labels, dtype=np.int32)
    clips = np.flatnonzero(y.any(axis=1)).astype(np.int64)
    out = np.full(len(preds), np.nan)
    if len(clips):
        _lwlrap_rows(np.ascontiguousarray(s, dtype=np.float64), compiled_dtype(preds), y, clips,
                     int(n_members), out)
    return out


@numba.njit(cache=True, nogil=True)
def _threshold_counts(s: np.ndarray, block: np.ndarray, labels: np.ndarray, t_star: float, out: np.ndarray) -> None:
    for r in range(block.shape[0]):
        tp, predicted = 0, 0
        for i in range(s.shape[0]):
            hit = s[i] + block[r, i] >= t_star
            predicted += hit
            tp += hit & labels[i]
        out[r, 0], out[r, 1] = tp, predicted


def threshold_counts(s: np.ndarray, block: np.ndarray, labels: np.ndarray, t_star: float) -> np.ndarray:
    """[b, 2] (true positives, predicted) of s + block[r] >= t_star for every row r, compared in float64."""
    out = np.empty((len(block), 2), np.int64)
    _threshold_counts(np.ascontiguousarray(s, dtype=np.float64), compiled_dtype(block),
                      np.ascontiguousarray(labels, dtype=np.int32), float(t_star), out)
    return out


@numba.njit(cache=True, nogil=True)
def _bound_of(key: np.ndarray, acc: np.ndarray, lo: int, hi: int, pos: np.ndarray, shift: int, n_neg: int,
              what: int) -> float:
    """One row's bound from its clips' buckets ``key`` and packed bucket counts ``acc`` (emptied after)."""
    q = pos.shape[0]
    low = (1 << shift) - 1
    first = hi  # the lowest bucket holding a positive: the suffix sums are needed from it up
    for j in range(q):
        first = min(first, key[pos[j]])
    run = acc[acc.shape[0] - 1]  # 0 (no key reaches it), in the counts' type
    for g in range(hi, first - 1, -1):  # in place: acc[g] = the clips of bucket g and above
        run += acc[g]
        acc[g] = run
    total = 0.0
    for j in range(q):
        g = key[pos[j]]
        above = acc[g + 1] >> shift  # negatives of higher buckets
        if what == AP:  # at least those above it, at most the positives of its bucket and above
            tp = acc[g] & low
            total += tp / (tp + above)
        else:  # at most the negatives of its bucket and below, below it (ties counted whole)
            total += n_neg - above
    acc[lo : hi + 1] = 0
    return total / q if what == AP else total / (q * n_neg)


@numba.njit(cache=True, nogil=True)
def _bound_rows(s: np.ndarray, block: np.ndarray, inc: np.ndarray, shift: int, pos: np.ndarray, n_members: int,
                to_bucket: float, n_buckets: int, what: int, out: np.ndarray) -> None:
    n, b = s.shape[0], block.shape[0]
    n_neg = n - pos.shape[0]
    key0, key1 = np.empty(n, np.int32), np.empty(n, np.int32)  # each clip's bucket, two rows at a time
    acc0, acc1 = np.zeros(n_buckets + 1, inc.dtype), np.zeros(n_buckets + 1, inc.dtype)  # packed counts
    top = np.int32(n_buckets - 1)
    for r0 in range(0, b, 2):  # two independent rows interleaved: one read of s, twice the work in flight
        r1 = min(r0 + 1, b - 1)
        lo0, hi0, lo1, hi1 = top, np.int32(0), top, np.int32(0)
        for i in range(n):  # buckets of the averages themselves: equal averages share a bucket
            k0 = min(np.int32((s[i] + block[r0, i]) / n_members * to_bucket), top)
            k1 = min(np.int32((s[i] + block[r1, i]) / n_members * to_bucket), top)
            key0[i], key1[i] = k0, k1
            lo0, hi0, lo1, hi1 = min(lo0, k0), max(hi0, k0), min(lo1, k1), max(hi1, k1)
        for i in range(n):
            acc0[key0[i]] += inc[i]
            acc1[key1[i]] += inc[i]
        out[r0] = _bound_of(key0, acc0, lo0, hi0, pos, shift, n_neg, what)
        out[r1] = _bound_of(key1, acc1, lo1, hi1, pos, shift, n_neg, what)


def bound_increments(labels: np.ndarray) -> np.ndarray:
    """Each clip's increment of its bucket's packed count in `bound_rows`: 1 a positive, 1 << 16 a negative
    (uint32) below 2**16 clips, else 1 << 32 (int64)."""
    labels = np.asarray(labels, dtype=bool)
    if len(labels) < 1 << 16:
        return np.where(labels, 1, 1 << 16).astype(np.uint32)
    return np.where(labels, 1, 1 << 32).astype(np.int64)


def bound_rows(s: np.ndarray, block: np.ndarray, inc: np.ndarray, positives: np.ndarray, n_members: int,
               what: int, vmax: float, n_buckets: int) -> np.ndarray:
    """Upper bounds of AP (``what=AP``) or ROC AUC of (s + block[r]) / n_members for every row r
    (``inc``: `bound_increments` of the labels).

    The averages themselves, computed as the exact metric computes them, are bucketed into
    ``n_buckets`` equal parts of [0, (max s + vmax) / n_members]: monotone, and equal averages share a
    bucket. For AP each positive is credited with only the negatives of higher buckets and every positive
    of its bucket and above; for AUC it ranks above every negative of its bucket and below: the most the
    exact order can give it. O(N + buckets) a row (one count per bucket packed as negatives << 16 or 32 |
    positives), about half an exact row's cost."""
    out = np.empty(len(block))
    span = (float(np.max(s)) + float(vmax)) / n_members
    to_bucket = (n_buckets - 1) / span if span > 0 else 0.0
    shift = 16 if inc.dtype == np.uint32 else 32  # `bound_increments`' packing
    _bound_rows(np.ascontiguousarray(s, dtype=np.float64), compiled_dtype(block), inc, shift,
                np.ascontiguousarray(positives, dtype=np.int64), int(n_members), to_bucket, int(n_buckets), what, out)
    return out
