"""Every registered ensemble method on a synthetic library of noisy copies of y."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harmonia.ensembles.methods import METHODS, FittedEnsemble, fit_method, register_method
from harmonia.metrics import get_metric


def _split(seed: int = 0, m: int = 8, n: int = 300, c: int = 5,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Members are noisy versions of y with different noise levels; valid and test halves."""
    rng = np.random.default_rng(seed)
    y = (rng.random((2 * n, c)) < 0.3).astype(int)
    noise = rng.uniform(1.0, 3.0, (m, 1, 1))
    logits = 1.0 * (2 * y - 1)[None] + rng.normal(0, 1, (m, 2 * n, c)) * noise - 0.5
    p = (1 / (1 + np.exp(-logits))).astype(np.float32)
    return p[:, :n], y[:n], p[:, n:], y[n:]


LIB = _split()
mAP = get_metric("mAP")
FAST_KWARGS = {"selection": {"size": 15}, "bagged_selection": {"size": 10, "bags": 4},
               "per_class_selection": {"size": 10}, "stacking": {"lambdas": (100.0, 1.0)}}


@pytest.fixture(scope="module")
def fitted() -> dict[str, FittedEnsemble]:
    pv, yv, _, _ = LIB
    return {name: fit_method(name, pv, yv, metric="mAP", **FAST_KWARGS.get(name, {})) for name in METHODS}


def test_all_required_methods_registered() -> None:
    assert {"selection", "bagged_selection", "average", "weighted", "majority_vote", "average_vote",
            "stacking", "per_class_selection"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_outputs_are_scores_and_json_round_trip(name: str, fitted: dict[str, FittedEnsemble]) -> None:
    pv, yv, pt, yt = LIB
    f = fitted[name]
    for p in (pv, pt):
        out = f.predict(p)
        assert out.shape == p.shape[1:]
        assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    w = np.asarray(f.weights)
    assert w.shape[0] == len(pv) and np.all(w >= 0)
    again = FittedEnsemble.from_dict(json.loads(json.dumps(f.to_dict())))
    np.testing.assert_array_equal(again.predict(pt), f.predict(pt))
    assert again.method == f.method and again.curve == f.curve


@pytest.mark.parametrize("name", sorted(METHODS))
def test_sensible_valid_score(name: str, fitted: dict[str, FittedEnsemble]) -> None:
    pv, yv, _, _ = LIB
    singles = [mAP(yv, p) for p in pv]
    assert mAP(yv, fitted[name].predict(pv)) > np.median(singles)


def test_selection_beats_best_single_on_valid(fitted: dict[str, FittedEnsemble]) -> None:
    pv, yv, _, _ = LIB
    best = max(mAP(yv, p) for p in pv)
    assert mAP(yv, fitted["selection"].predict(pv)) >= best - 1e-12
    f = fitted["selection"]
    assert f.weights.sum() == pytest.approx(1.0)
    assert f.curve is not None and f.params["valid_score"] == pytest.approx(max(f.curve))


def test_weighted_minimizes_bce(fitted: dict[str, FittedEnsemble]) -> None:
    pv, yv, _, _ = LIB
    bce = get_metric("bce")
    f = fitted["weighted"]
    assert f.weights.sum() == pytest.approx(1.0)
    got = bce(yv, f.predict(pv))
    assert got <= bce(yv, pv.astype(np.float64).mean(axis=0)) + 1e-9
    assert got <= min(bce(yv, p) for p in pv) + 1e-9


def test_average_and_votes() -> None:
    pv, yv, _, _ = LIB
    fitted = {n: fit_method(n, pv, yv, k=k) for n, k in
              (("average", 5), ("majority_vote", None), ("average_vote", None))}
    avg = fitted["average"]
    assert (avg.weights > 0).sum() == 5
    order = np.argsort([-mAP(yv, p) for p in pv], kind="stable")[:5]
    np.testing.assert_allclose(avg.predict(pv), pv[order].astype(np.float64).mean(axis=0))
    vote = fitted["majority_vote"].predict(pv)
    np.testing.assert_allclose(vote * len(pv), np.round(vote * len(pv)))
    np.testing.assert_allclose(vote, (pv >= 0.5).mean(axis=0))
    np.testing.assert_allclose(fitted["average_vote"].predict(pv), pv.astype(np.float64).mean(axis=0))


def test_stacking_forward_matches_sklearn(fitted: dict[str, FittedEnsemble]) -> None:
    from sklearn.linear_model import LogisticRegression

    _, _, pt, _ = LIB
    f = fitted["stacking"]
    coef, intercept = np.asarray(f.params["coef"]), np.asarray(f.params["intercept"])
    eps = f.params["eps"]
    z = np.log(np.clip(pt.astype(np.float64), eps, 1 - eps)) - np.log1p(-np.clip(pt.astype(np.float64), eps, 1 - eps))
    out = f.predict(pt)
    for c in range(pt.shape[2]):
        lr = LogisticRegression()
        lr.classes_, lr.coef_, lr.intercept_ = np.array([0, 1]), coef[c][None, :], intercept[c : c + 1]
        np.testing.assert_allclose(out[:, c], lr.predict_proba(z[:, :, c].T)[:, 1], rtol=1e-10, atol=1e-12)


def test_per_class_weights(fitted: dict[str, FittedEnsemble]) -> None:
    pv, yv, _, _ = LIB
    w = fitted["per_class_selection"].weights
    assert w.shape == (len(pv), yv.shape[1])
    np.testing.assert_allclose(w.sum(axis=0), 1.0)


def test_fits_are_deterministic() -> None:
    pv, yv, _, _ = LIB
    for name in ("selection", "bagged_selection", "stacking", "weighted"):
        a = fit_method(name, pv, yv, **FAST_KWARGS.get(name, {}))
        b = fit_method(name, pv, yv, **FAST_KWARGS.get(name, {}))
        np.testing.assert_array_equal(a.weights, b.weights)
        assert a.params == b.params


def test_unknown_names_list_the_valid_ones() -> None:
    pv, yv, _, _ = LIB
    with pytest.raises(KeyError) as err:
        fit_method("boosting", pv, yv)
    assert "selection" in str(err.value) and "stacking" in str(err.value)
    with pytest.raises(KeyError) as err:
        fit_method("average", pv, yv, metric="accuracy@5")
    assert "mAP" in str(err.value)


def test_register_method() -> None:
    @register_method("_first_member")
    def first(preds: np.ndarray, y: np.ndarray, metric: object) -> FittedEnsemble:
        w = np.zeros(len(preds))
        w[0] = 1.0
        return FittedEnsemble("_first_member", w, {"combine": "linear"})

    try:
        pv, yv, _, _ = LIB
        np.testing.assert_allclose(fit_method("_first_member", pv, yv).predict(pv), pv[0])
    finally:
        METHODS.pop("_first_member")


def test_auto_k_picks_the_best_prefix_on_valid() -> None:
    pv, yv, _, _ = LIB
    order = np.argsort([-mAP(yv, p) for p in pv], kind="stable")
    scores = [mAP(yv, pv[order[:k]].astype(np.float64).mean(0)) for k in range(1, len(pv) + 1)]
    f = fit_method("average", pv, yv)
    assert (f.weights > 0).sum() == int(np.argmax(scores)) + 1


def test_no_method_is_replaced_by_the_best_single_model() -> None:
    """Each method returns its own fit (no in-sample fallback); only selection, which starts from the best
    model and keeps its best prefix, is at least the best single model in-sample by construction."""
    pv, yv, _, _ = LIB
    best = max(mAP(yv, p) for p in pv)
    for name in METHODS:
        if name == "cv_selection":
            continue
        f = fit_method(name, pv, yv, metric="mAP", **FAST_KWARGS.get(name, {}))
        assert "fallback" not in f.params, name
        if name in ("best_single", "selection"):
            assert mAP(yv, f.predict(pv)) >= best - 1e-9, name


@pytest.mark.parametrize("name", ["per_class_selection", "stacking"])
def test_inner_folds_without_positives_are_skipped_not_fatal(name: str) -> None:
    """Grouped inner folds where the held-out fold has no positive (the metric is undefined there) say nothing
    about the choice: the fit skips them and still chooses on the folds that could be scored."""
    rng = np.random.default_rng(0)
    y = np.zeros((40, 2), np.float32)
    y[:2, 0], y[2:4, 1] = 1, 1  # every positive in the first two of twenty recordings
    groups = np.array([f"rec{i // 2}" for i in range(40)])
    preds = np.clip(y[None] * 0.6 + rng.random((5, 40, 2)) * 0.5, 0, 1).astype(np.float32)
    fitted = fit_method(name, preds, y, "mAP", groups=groups)
    assert np.isfinite(fitted.predict(preds)).all()
    key = "shrink_chosen_by" if name == "per_class_selection" else "shrinkage_chosen_by"
    assert fitted.params[key] == "inner cross-validation"
