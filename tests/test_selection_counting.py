"""Dyadic libraries (scores = integers * 2**-b) are counted with no sort: the same picks as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from harmonia.ensembles import selection_counting
from harmonia.ensembles.selection import Selection, ensemble_selection, reference_ensemble_selection
from harmonia.ensembles.selection_counting import Grid, counted_ap, counted_auc, dyadic_grid, key_range, sum_keys
from harmonia.metrics import average_precision_per_class, get_metric, roc_auc_per_class


def dyadic_library(seed: int, steps: int, m: int = 8, n: int = 300, c: int = 4, kind: str = "plain"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Correlated noisy models quantized to multiples of 1 / ``steps`` (ties everywhere); ``kind`` adds
    duplicated models or clones of one model."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < rng.uniform(0.15, 0.4, c)
    logits = 1.5 * (2 * y - 1)[None] + rng.normal(0, 1, (n, c))[None] + rng.normal(0, rng.uniform(0.8, 2.5, (m, 1, 1)),
                                                                                   (m, n, c))
    p = np.minimum(np.rint(steps / (1 + np.exp(-logits))), steps - 1) / steps
    if kind == "duplicates":
        p[3], p[5] = p[0], p[1]
    elif kind == "clones":
        p[:] = p[2]
    return p.astype(np.float32), y.astype(int)


def _same(fast: Selection, ref: Selection) -> None:
    assert fast.picks == ref.picks
    assert fast.best_step == ref.best_step
    np.testing.assert_allclose(fast.curve, ref.curve, atol=1e-9)
    np.testing.assert_allclose(fast.weights, ref.weights)


def test_grid_detection() -> None:
    assert dyadic_grid(np.arange(256) / 256) == Grid(8, 255)
    assert dyadic_grid((np.arange(16) / 16).astype(np.float32)) == Grid(4, 15)
    assert dyadic_grid(np.array([0.0, 0.5, 1.0])) == Grid(1, 2)
    assert dyadic_grid(np.array([0.0, 4.0, 8.0])) == Grid(-2, 2)
    assert dyadic_grid(np.arange(256) / 255) is None  # 1/255 is no power of two
    assert dyadic_grid(np.array([0.25, -0.5])) is None  # negative scores have no keys
    assert dyadic_grid(np.random.default_rng(0).random((3, 50)).astype(np.float32)) is None
    assert dyadic_grid(np.array([2.0**-17, 0.5])) is None  # finer than COUNT_BITS


@pytest.mark.parametrize("steps", [2, 16, 256])
def test_counts_equal_exact_ap_and_auc(steps: int) -> None:
    """Counted AP / AUC of random dyadic rows equal scikit-learn-style AP and rankdata AUC with ties."""
    rng = np.random.default_rng(steps)
    n, b, n_members = 400, 7, 5
    grid = Grid(int(np.log2(steps)), steps - 1)
    s = rng.integers(0, steps, (n_members - 1, n)).sum(axis=0) / steps  # float64 sum of 4 members
    codes = rng.integers(0, steps, (b, n)).astype(np.uint8 if steps <= 256 else np.uint16)
    y = rng.random(n) < 0.2
    positives = np.flatnonzero(y)
    s_int = sum_keys(s, grid)
    r = key_range(s_int, grid)
    avg = (s[None, :] + codes / steps) / n_members  # [b, N], the float64 averages the reference scores
    labels = np.repeat(y[:, None], b, axis=1)
    np.testing.assert_allclose(counted_ap(s_int, codes, positives, r), average_precision_per_class(labels, avg.T),
                               rtol=0, atol=1e-14)
    np.testing.assert_allclose(counted_auc(s_int, codes, positives, r), roc_auc_per_class(labels, avg.T),
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("steps", [16, 256])
@pytest.mark.parametrize("metric", ["mAP", "auc"])
@pytest.mark.parametrize("kind", ["plain", "duplicates", "clones"])
def test_counting_equals_reference(steps: int, metric: str, kind: str) -> None:
    for seed in range(2):
        p, y = dyadic_library(seed, steps, kind=kind)
        for init in (1, "auto"):
            fast = ensemble_selection(p, y, size=10, metric=metric, init=init, keep_best_prefix=False)
            assert fast.path == "counting"
            _same(fast, reference_ensemble_selection(p, y, size=10, metric=metric, init=init, keep_best_prefix=False))


def test_wide_key_ranges_fall_back_to_sorting(monkeypatch) -> None:
    """Classes whose key range passes the limit are sorted and repaired instead: still the same picks."""
    monkeypatch.setattr(selection_counting, "COUNT_RANGE_MIN", 200)
    monkeypatch.setattr(selection_counting, "COUNT_RANGE_PER_CLIP", 0)
    calls = {"counted": 0}
    real = selection_counting.positive_counts

    def spy(*args):
        calls["counted"] += 1
        return real(*args)
    monkeypatch.setattr(selection_counting, "positive_counts", spy)
    p, y = dyadic_library(4, 16)  # range 15 * n_members + 1 > 200 from about 13 members on
    for metric in ("mAP", "auc"):
        fast = ensemble_selection(p, y, size=16, metric=metric, keep_best_prefix=False)
        _same(fast, reference_ensemble_selection(p, y, size=16, metric=metric, keep_best_prefix=False))
    assert calls["counted"] > 0


def test_non_dyadic_libraries_keep_the_sorted_path() -> None:
    p, y = dyadic_library(0, 16)
    assert ensemble_selection(p * np.float32(0.9), y, size=2).path == "bounded"  # 0.9 / 16 is off the grid
    assert ensemble_selection(p, y, size=2, metric="f1").path == "vectorized"  # F1 compares against 0.5
    assert ensemble_selection(p, y, size=2, metric="lwlrap").path == "vectorized"


@pytest.mark.parametrize("metric", ["mAP", pytest.param("auc", marks=pytest.mark.slow)])
def test_sharded_counting_equals_in_process_and_reference(ray_local, metric: str) -> None:
    """Workers hold uint8 codes of palette arange(256) / 256 (the codes are the numerators) or of the
    sorted distinct values (re-coded to numerators): the same picks as in-process and the reference."""
    from harmonia.ensembles.selection_metrics import class_major, palette_codes
    from harmonia.ensembles.sharded import sharded_selection

    p, y = dyadic_library(6, 256, m=9, n=200, c=6, kind="duplicates")
    palette = np.arange(256) / 256

    def identity(c0: int, c1: int):
        return np.rint(class_major(p, c0, c1) * 256).astype(np.uint8), y[:, c0:c1], palette

    def distinct(c0: int, c1: int):
        codes, values = palette_codes(class_major(p, c0, c1))
        return codes, y[:, c0:c1], values

    local = ensemble_selection(p, y, size=10, metric=metric, init=2, keep_best_prefix=False)
    assert local.path == "counting"
    _same(local, reference_ensemble_selection(p, y, size=10, metric=metric, init=2, keep_best_prefix=False))
    for load in (identity, distinct):
        sharded = sharded_selection(load, 6, 9, 2, 10, get_metric(metric), init=2, keep_best_prefix=False)
        assert sharded.path == "sharded-counting"
        _same(sharded, local)
        assert sharded.score == pytest.approx(local.score, abs=1e-12)
