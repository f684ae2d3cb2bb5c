"""Counting scorers for dyadic libraries: AP and ROC AUC of every candidate with no sort and no tie repair.

When every score is an integer multiple a * q of one power-of-two step q = 2**-b (8-bit exports such
as ``codes / 256``, scores quantized to /16), the library is held as the numerators a (uint8/uint16)
and every ensemble's total S + p_m is an integer multiple K * q. Exactness, against the float64
average (S + p_m) / n the reference scores:

- float64 sums of such values are exact while n * A < 2**53 (A the largest numerator; we require
  n * A < 2**31), so the running sum is exactly K_S * q and S + p_m exactly (K_S + a_m) * q;
- correctly rounded division is monotone, so K < K' gives fl(K q / n) <= fl(K' q / n), and equality
  is impossible: the relative gap (K' - K) / K' >= 1 / (n A) > 2**-31 is far above the 2**-52
  relative spacing of float64. The averages therefore order and tie exactly as the integer keys K.

AP (scikit-learn: tied scores share one threshold) and AUC (rankdata's average ranks) depend only on
that order and those ties, so they are computed from per-key counts: one ``np.bincount`` of
``row * R + K`` over all clips and one over the positives, a flat cumulative sum, and for each
positive the clips (and positives) at or above its key: O(N + R) per candidate instead of a sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COUNT_BITS = 16
"""Dyadic steps down to 2**-COUNT_BITS are detected (8-bit exports, float16-like grids)."""
COUNT_TOP_MAX = 2**16 - 1
"""Largest numerator held (uint16)."""
COUNT_RANGE_MIN = 2**16
"""A class is counted when its key range R <= max(COUNT_RANGE_MIN, COUNT_RANGE_PER_CLIP * N), else sorted."""
COUNT_RANGE_PER_CLIP = 16
COUNT_BINS = 2**20
"""Candidates are counted in sub-blocks of about this many (candidate, key) bins."""


@dataclass(frozen=True)
class Grid:
    """Scores are ``numerator * 2**-bits`` with numerators in 0..top."""

    bits: int
    top: int

    def palette(self) -> np.ndarray:
        """Scores of the numerators 0..top, float64 (exact)."""
        return np.arange(self.top + 1) * 2.0**-self.bits

    def dtype(self) -> type:
        return np.uint8 if self.top <= 255 else np.uint16


def dyadic_grid(values: np.ndarray, max_bits: int = COUNT_BITS) -> Grid | None:
    """The coarsest power-of-two grid every value of ``values [..., N]`` lies on (values >= 0,
    step >= 2**-max_bits, numerators <= COUNT_TOP_MAX), or None. Checked row block by row block."""
    flat = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values.reshape(1, -1)
    bits_or, top = 0, 0
    step = max(1, 2**22 // max(1, flat.shape[1]))
    for r0 in range(0, len(flat), step):
        scaled = flat[r0 : r0 + step].astype(np.float64) * 2.0**max_bits
        if not (np.all(scaled >= 0) and np.all(scaled <= COUNT_TOP_MAX * 2.0**max_bits)
                and np.all(scaled == np.floor(scaled))):
            return None
        nums = scaled.astype(np.int64)
        bits_or |= int(np.bitwise_or.reduce(nums, axis=None))
        top = max(top, int(nums.max()))
    shift = (bits_or & -bits_or).bit_length() - 1 if bits_or else max_bits
    grid = Grid(max_bits - shift, top >> shift)
    return grid if grid.top <= COUNT_TOP_MAX else None


def numerator_codes(cols: np.ndarray, palette: np.ndarray | None, grid: Grid) -> np.ndarray:
    """``cols`` (scores, or codes of ``palette``) as the grid's numerators [Cb, M, N], class by class."""
    scale = 2.0**grid.bits
    lut = None if palette is None else np.rint(np.asarray(palette, np.float64) * scale).astype(grid.dtype())
    if lut is not None and cols.dtype == lut.dtype and np.array_equal(lut, np.arange(len(lut))):
        return cols  # the codes are the numerators already (palette = arange * 2**-bits): no copy
    out = np.empty(cols.shape, dtype=grid.dtype())
    for c in range(len(cols)):
        out[c] = np.take(lut, cols[c]) if lut is not None else np.rint(cols[c].astype(np.float64) * scale)
    return out


def sum_keys(s_c: np.ndarray, grid: Grid) -> np.ndarray:
    """The exact integer numerators of the float64 ensemble sums ``s_c [N]``."""
    return np.rint(np.asarray(s_c, np.float64) * 2.0**grid.bits).astype(np.int64)


def key_range(s_int: np.ndarray, grid: Grid) -> int:
    """Number of distinct keys s + a a class's candidates can take (R), or 0 when it is too wide to count."""
    n = len(s_int)
    r = int(s_int.max() - s_int.min()) + grid.top + 1 if n else 1
    if int(s_int.max(initial=0)) + grid.top >= 2**31 or r > max(COUNT_RANGE_MIN, COUNT_RANGE_PER_CLIP * n):
        return 0
    return r


def positive_counts(s_int: np.ndarray, codes: np.ndarray, positives: np.ndarray, r: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate row of ``codes [b, N]`` and each positive i (keys s_int + codes):
    (clips with key < key_i, clips with key == key_i, positives with key <, positives with key ==), [b, P]."""
    b, n = codes.shape
    rows_per = max(1, COUNT_BINS // r)
    lo = int(s_int.min()) if n else 0
    base = s_int - lo
    outs = [np.empty((b, len(positives)), np.int64) for _ in range(4)]
    for r0 in range(0, b, rows_per):
        block = codes[r0 : r0 + rows_per]
        bb = len(block)
        offset = np.arange(bb, dtype=np.int64)[:, None] * r
        keys = np.add(base[None, :] + offset, block, dtype=np.int64)
        pos_keys = keys[:, positives]
        for k, (flat, total) in enumerate(((keys, n), (pos_keys, len(positives)))):
            hist = np.bincount(flat.reshape(-1), minlength=bb * r)
            cum = np.cumsum(hist)  # flat: row j's counts start after j * total earlier ones
            eq = hist[pos_keys]
            outs[2 * k][r0 : r0 + bb] = cum[pos_keys] - eq - np.arange(bb)[:, None] * total
            outs[2 * k + 1][r0 : r0 + bb] = eq
    return outs[0], outs[1], outs[2], outs[3]


def counted_ap(s_int: np.ndarray, codes: np.ndarray, positives: np.ndarray, r: int) -> np.ndarray:
    """AP of each candidate row: mean over positives of TP(>= s_i) / N(>= s_i) (ties share a threshold)."""
    n, q = codes.shape[1], len(positives)
    lt, _, pos_lt, _ = positive_counts(s_int, codes, positives, r)
    return ((q - pos_lt) / (n - lt)).sum(axis=1) / q


def counted_auc(s_int: np.ndarray, codes: np.ndarray, positives: np.ndarray, r: int) -> np.ndarray:
    """ROC AUC of each candidate row: negatives below each positive plus half the tied ones (average ranks)."""
    n, q = codes.shape[1], len(positives)
    lt, eq, pos_lt, pos_eq = positive_counts(s_int, codes, positives, r)
    return ((lt - pos_lt) + 0.5 * (eq - pos_eq)).sum(axis=1) / (q * (n - q))
