"""Fast exact ensemble selection makes the same picks as the scikit-learn rescoring reference."""

from __future__ import annotations

import numpy as np
import pytest

from harmonia.ensembles.selection import Selection, ensemble_selection, reference_ensemble_selection
from harmonia.metrics import get_metric


def _library(seed: int, m: int = 8, n: int = 120, c: int = 4, kind: str = "continuous",
             ) -> tuple[np.ndarray, np.ndarray]:
    """Correlated noisy models of y; ``kind`` adds ties: quantized scores, duplicates, clones, tiny scale."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.15, 0.4, c)).astype(int)
    shared = rng.normal(0, 1, (n, c))
    logits = 1.5 * (2 * y - 1)[None] + shared[None] + rng.normal(0, rng.uniform(0.8, 2.5, (m, 1, 1)), (m, n, c))
    p = 1 / (1 + np.exp(-logits))
    if kind == "quantized":
        p = np.round(p, 1)
    elif kind == "duplicates":
        p[3], p[5] = p[0], p[1]
    elif kind == "clones":
        p[:] = p[2]
    elif kind == "tiny":
        p = p * 1e-6  # distinct float32 values closer than the fast scorer's integer keys resolve
    return p.astype(np.float32), y


def _same(fast: Selection, ref: Selection) -> None:
    assert fast.picks == ref.picks
    assert fast.best_step == ref.best_step
    np.testing.assert_allclose(fast.curve, ref.curve, atol=1e-9)
    np.testing.assert_allclose(fast.weights, ref.weights)


@pytest.mark.parametrize("small", [True, False], ids=["one-call small path", "keyed path"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["continuous", "quantized", "duplicates", "clones", "tiny"])
def test_fast_equals_reference(seed: int, kind: str, small: bool, monkeypatch) -> None:
    from harmonia.ensembles import selection

    monkeypatch.setattr(selection, "SMALL_ELEMENTS", 2**30 if small else 0)  # which scorer path the library takes
    p, y = _library(seed, kind=kind)
    for init in (1, 3):
        _same(ensemble_selection(p, y, size=10, init=init, keep_best_prefix=False),
              reference_ensemble_selection(p, y, size=10, init=init, keep_best_prefix=False))


@pytest.mark.parametrize("seed", range(2))
def test_fast_equals_reference_auto_init_and_threads(seed: int) -> None:
    p, y = _library(seed, m=10, kind="quantized")
    ref = reference_ensemble_selection(p, y, size=8, init="auto")
    _same(ensemble_selection(p, y, size=8, init="auto"), ref)
    _same(ensemble_selection(p, y, size=8, init="auto", n_threads=2), ref)


def test_tiny_scale_needs_the_exact_repair() -> None:
    """Without the float64 repair the fast scorer ranks colliding keys arbitrarily."""
    p, y = _library(1, m=8, n=200, kind="tiny")
    exact = ensemble_selection(p, y, size=6, keep_best_prefix=False)
    ref = reference_ensemble_selection(p, y, size=6, keep_best_prefix=False)
    rough = ensemble_selection(p, y, size=6, keep_best_prefix=False, exact=False)
    _same(exact, ref)
    assert np.max(np.abs(np.subtract(rough.curve, ref.curve))) > 1e-6


@pytest.mark.parametrize("metric", ["bce", "auc", "f1"])
def test_other_metrics_equal_reference(metric: str) -> None:
    p, y = _library(3)
    _same(ensemble_selection(p, y, size=6, metric=metric), reference_ensemble_selection(p, y, size=6, metric=metric))


def test_ties_go_to_members_then_lower_bce_then_index() -> None:
    p, y = _library(0, kind="clones")
    sel = ensemble_selection(p, y, size=5, keep_best_prefix=False)
    assert sel.picks == [0] * 6  # every clone ties: the member already in wins, else the lowest index
    q = p.copy()
    q[4] = np.clip(p[4] * 0.9 + 0.05, 0, 1)  # same ranking (same AP) but a different BCE
    better = 4 if get_metric("bce")(y, q[4]) < get_metric("bce")(y, q[0]) else 0
    assert ensemble_selection(q, y, size=0).picks == [better]


@pytest.mark.parametrize("seed", range(3))
def test_selection_beats_best_single_and_weights_are_pick_counts(seed: int) -> None:
    p, y = _library(seed, m=10)
    mAP = get_metric("mAP")
    sel = ensemble_selection(p, y, size=20)
    best_single = max(mAP(y, q) for q in p)
    assert sel.score >= best_single - 1e-12
    assert sel.curve[sel.best_step] == pytest.approx(max(sel.curve))
    assert len(sel.picks) == 1 + sel.best_step
    np.testing.assert_allclose(sel.weights, np.bincount(sel.picks, minlength=len(p)) / len(sel.picks))
    assert sel.weights.sum() == pytest.approx(1.0)
    assert sel.score == pytest.approx(mAP(y, np.tensordot(sel.weights, p.astype(np.float64), axes=1)))


def test_lower_is_better_metric_decreases() -> None:
    p, y = _library(2)
    sel = ensemble_selection(p, y, size=10, metric="bce")
    assert sel.curve[sel.best_step] == pytest.approx(min(sel.curve))
    assert sel.score <= min(get_metric("bce")(y, q) for q in p) + 1e-12


def test_bagging_and_pruning() -> None:
    p, y = _library(4, m=12)
    bagged = ensemble_selection(p, y, size=8, bagging=5, bag_fraction=0.5, rng=7)
    again = ensemble_selection(p, y, size=8, bagging=5, bag_fraction=0.5, rng=7)
    np.testing.assert_array_equal(bagged.weights, again.weights)
    assert bagged.weights.sum() == pytest.approx(1.0)
    assert (bagged.weights > 0).sum() >= 2
    mAP = get_metric("mAP")
    top = np.argsort([-mAP(y, q) for q in p], kind="stable")[:3]
    pruned = ensemble_selection(p, y, size=8, prune_top=3)
    assert set(np.flatnonzero(pruned.weights)) <= set(top.tolist())
    assert pruned.weights.sum() == pytest.approx(1.0)


def test_bad_inputs() -> None:
    p, y = _library(0)
    with pytest.raises(ValueError):
        ensemble_selection(p, y[:10])
    with pytest.raises(ValueError):
        ensemble_selection(p, y, init=0)
    with pytest.raises(KeyError, match="mAP"):
        ensemble_selection(p, y, metric="nope")


@pytest.mark.parametrize("kind", ["continuous", "quantized", "duplicates", "clones", "tiny"])
@pytest.mark.parametrize("metric", ["auc", "lwlrap", "f1"])
def test_vectorized_metrics_equal_reference_with_ties(metric: str, kind: str) -> None:
    """Quantized scores tie across clips and at F1's 0.5 threshold; clones tie every candidate."""
    for seed in range(2):
        p, y = _library(seed, kind=kind)
        for init in (1, "auto"):
            fast = ensemble_selection(p, y, size=8, metric=metric, init=init, keep_best_prefix=False)
            assert fast.path == ("bounded" if metric == "auc" else "vectorized")
            _same(fast, reference_ensemble_selection(p, y, size=8, metric=metric, init=init, keep_best_prefix=False))


def test_auc_tie_repair_matters() -> None:
    """Tiny scores collide in the integer keys: without the float64 repair AUC differs from rankdata's."""
    p, y = _library(1, m=8, n=200, kind="tiny")
    ref = reference_ensemble_selection(p, y, size=6, metric="auc", keep_best_prefix=False)
    _same(ensemble_selection(p, y, size=6, metric="auc", keep_best_prefix=False), ref)
    rough = ensemble_selection(p, y, size=6, metric="auc", keep_best_prefix=False, exact=False)
    assert np.max(np.abs(np.subtract(rough.curve, ref.curve))) > 1e-6


def test_path_is_reported() -> None:
    p, y = _library(0)
    assert ensemble_selection(p, y, size=2, metric="eer").path == "per-candidate"
    assert ensemble_selection(p, y, size=2, metric="mAP").path == "vectorized"  # small: one exact call a step
    big, y_big = _library(0, n=400)
    assert ensemble_selection(big, y_big, size=2, metric="mAP").path == "bounded"
    assert ensemble_selection(big, y_big, size=2, metric="mAP", bounds=False).path == "vectorized"
    assert ensemble_selection(p - 0.5, y, size=2, metric="auc").path == "per-candidate"  # negative scores: no keys


def test_too_large_library_is_refused_naming_the_sharded_option() -> None:
    p, y = _library(0)
    with pytest.raises(MemoryError, match=r"shards=W, address="):
        ensemble_selection(p, y, size=2, memory_limit=p.size * 4 - 1)
    assert ensemble_selection(p, y, size=2, memory_limit=p.size * 4).path == "vectorized"


@pytest.mark.parametrize("metric", ["mAP", pytest.param("auc", marks=pytest.mark.slow),
                                    pytest.param("f1", marks=pytest.mark.slow)])
def test_sharded_on_two_ray_workers_equals_in_process(ray_local, metric: str) -> None:
    p, y = _library(5, m=10, n=150, c=5, kind="quantized")
    local = ensemble_selection(p, y, size=8, metric=metric, init="auto", keep_best_prefix=False)
    sharded = ensemble_selection(p, y, size=8, metric=metric, init="auto", keep_best_prefix=False, shards=2)
    assert sharded.path == ("sharded" if metric == "f1" else "sharded-bounded")  # ranked metrics prune first
    _same(sharded, local)
    assert sharded.score == pytest.approx(local.score, abs=1e-12)
    if metric != "f1":  # and scoring every candidate on the workers picks the same
        full = ensemble_selection(p, y, size=8, metric=metric, init="auto", keep_best_prefix=False, shards=2,
                                  bounds=False)
        assert full.path == "sharded"
        _same(full, local)


def test_sharded_refuses_metrics_that_do_not_decompose_over_classes(ray_local) -> None:
    p, y = _library(0)
    with pytest.raises(ValueError, match="decomposes over classes"):
        ensemble_selection(p, y, size=2, metric="lwlrap", shards=2)


@pytest.mark.slow  # starts two pairs of Ray actors: about 10 s idle, over a minute on a loaded machine
def test_sharded_palette_storage_equals_in_process(ray_local) -> None:
    """8-bit scores held as uint8 codes and a palette in the workers: the same values, the same picks."""
    from harmonia.ensembles.selection_metrics import class_major, palette_codes
    from harmonia.ensembles.sharded import sharded_selection

    rng = np.random.default_rng(3)
    p, y = _library(6, m=9, n=160, c=6)
    p = (np.round(p * 255) / 255).astype(np.float32)  # 8-bit exported scores: many ties
    p[rng.integers(0, 9, 3)] = p[0]

    def load(c0: int, c1: int):
        codes, palette = palette_codes(class_major(p, c0, c1))
        assert palette is not None and codes.dtype == np.uint8
        return codes, y[:, c0:c1], palette

    for metric in ("mAP", "auc"):
        local = ensemble_selection(p, y, size=10, metric=metric, init=2, keep_best_prefix=False)
        sharded = sharded_selection(load, 6, 9, 2, 10, get_metric(metric), init=2, keep_best_prefix=False)
        _same(sharded, local)
        _same(sharded, reference_ensemble_selection(p, y, size=10, metric=metric, init=2, keep_best_prefix=False))
