"""Bounded greedy selection: cheap upper bounds prune candidates, the picks stay those of scoring all.

Also the compiled passes (`ensembles/selection_compiled.py`) against the metrics they replace.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from harmonia.ensembles import selection_metrics
from harmonia.ensembles.selection import ensemble_selection, reference_ensemble_selection
from harmonia.ensembles.selection_compiled import AP, AUC, bound_increments, bound_rows, lwlrap_rows, threshold_counts
from harmonia.metrics import lwlrap


def _tied_rows(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A running sum s [N], candidate rows [b, N] and labels, on a coarse grid so that averages tie."""
    n = int(rng.integers(8, 300))
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y[:2] = [True, False]
    q = float(rng.choice([2, 4, 10, 1000, 1e6]))
    k = int(rng.integers(2, 7))
    s = np.round(rng.random(n) * q) / q * (k - 1)
    rows = (np.round(rng.random((5, n)) * q) / q).astype(np.float32)
    return s, rows, y, k


@pytest.mark.parametrize("what,score", [(AP, average_precision_score), (AUC, roc_auc_score)], ids=["AP", "AUC"])
def test_bounds_are_upper_bounds_and_tight_with_fine_buckets(what: int, score) -> None:
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(150):
        s, rows, y, k = _tied_rows(rng)
        exact = np.array([score(y, (s + r) / k) for r in rows])
        for buckets in (4, 64, 1 << 20):
            up = bound_rows(s, rows, bound_increments(y), np.flatnonzero(y), k, what, float(rows.max()), buckets)
            assert np.all(up >= exact - 1e-12)
            if buckets == 4:
                gaps.append(float(np.max(up - exact)))
    assert max(gaps) > 0.05  # coarse buckets do loosen the bound: the check above can fail


@pytest.mark.parametrize("what,score", [(AP, average_precision_score), (AUC, roc_auc_score)], ids=["AP", "AUC"])
def test_bounds_count_in_int64_from_2_16_clips(what: int, score) -> None:
    """Below 2**16 clips the bucket counts pack into uint32, from there into int64: both give upper bounds."""
    rng = np.random.default_rng(3)
    for n in (2**16 - 1, 2**16 + 7):
        y = rng.random(n) < 0.3
        s = np.round(rng.random(n) * 50) / 50 * 2
        rows = (np.round(rng.random((3, n)) * 50) / 50).astype(np.float32)
        inc = bound_increments(y)
        assert inc.dtype == (np.uint32 if n < 2**16 else np.int64)
        exact = np.array([score(y, (s + r) / 3) for r in rows])
        up = bound_rows(s, rows, inc, np.flatnonzero(y), 3, what, 1.0, 1 << 15)
        assert np.all(up >= exact - 1e-12)
        assert np.all(up - exact < 0.01)  # and tight with fine buckets


def _counting_rows(monkeypatch) -> dict[str, int]:
    """Count the candidate rows scored exactly (class_stats calls, per class)."""
    counts = {"rows": 0}
    original = selection_metrics.ClassBlockScorer.class_stats

    def counted(self, c, s, n_members, candidates=None):
        out = original(self, c, s, n_members, candidates)
        counts["rows"] += len(out)
        return out
    for cls in (selection_metrics.APScorer, selection_metrics.AUCScorer):
        monkeypatch.setattr(cls, "class_stats", counted, raising=False)
    return counts


def _library(seed: int, kind: str, m: int = 24, n: int = 600, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < rng.uniform(0.1, 0.3, c)
    skill = rng.uniform(0.5, 2.0, (m, 1, 1))
    p = 1 / (1 + np.exp(-(skill * (2 * y - 1)[None] + rng.normal(0, 1.2, (m, n, c)))))
    if kind == "quantized":
        p = np.round(p, 1) + 0.001  # ties across clips, off the counting grid
    elif kind == "duplicates":
        p[5], p[9] = p[1], p[2]
    elif kind == "clones":
        p[1:] = p[0]
    elif kind == "tiny":
        p = p * 1e-6
    return p.astype(np.float32), y


@pytest.mark.parametrize("kind", ["continuous", "quantized", "duplicates", "clones", "tiny"])
@pytest.mark.parametrize("metric", ["mAP", "auc"])
def test_bounded_picks_equal_scoring_every_candidate(metric: str, kind: str, monkeypatch) -> None:
    p, y = _library(1, kind)
    steps = 12
    counts = _counting_rows(monkeypatch)
    bounded = ensemble_selection(p, y, size=steps, metric=metric, keep_best_prefix=False)
    scored_bounded = counts["rows"]
    counts["rows"] = 0
    full = ensemble_selection(p, y, size=steps, metric=metric, keep_best_prefix=False, bounds=False)
    assert (bounded.path, full.path) == ("bounded", "vectorized")
    assert bounded.picks == full.picks
    np.testing.assert_array_equal(bounded.curve, full.curve)
    assert bounded.score == full.score
    ref = reference_ensemble_selection(p, y, size=steps, metric=metric, keep_best_prefix=False)
    assert bounded.picks == ref.picks
    np.testing.assert_allclose(bounded.curve, ref.curve, atol=1e-9)
    if kind != "clones":  # clones tie everywhere: every candidate can win, none is pruned
        assert scored_bounded < 0.9 * counts["rows"], (scored_bounded, counts["rows"])  # the pruned path ran


def test_lwlrap_kernel_equals_the_metric_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.random((300, 9)) < 0.2
    preds = (np.round(rng.random((6, 300, 9)) * 4) / 4).astype(np.float32)
    s = np.round(rng.random((300, 9)) * 4) / 4 * 2
    got = lwlrap_rows(s, preds, y, 3)
    np.testing.assert_allclose(got, [lwlrap(y, (s + q) / 3) for q in preds], rtol=0, atol=1e-14)


def test_threshold_counts_compare_in_float64() -> None:
    rng = np.random.default_rng(4)
    s = np.round(rng.random(500) * 8) / 8
    rows = (np.round(rng.random((4, 500)) * 8) / 8).astype(np.float16)  # float16 is widened exactly
    labels = rng.random(500) < 0.3
    got = threshold_counts(s, rows, labels, 1.0)
    hit = (s[None] + rows.astype(np.float64)) >= 1.0
    np.testing.assert_array_equal(got, np.column_stack([(hit & labels).sum(axis=1), hit.sum(axis=1)]))
