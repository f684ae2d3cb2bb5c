"""Every metric against its reference: scikit-learn, sed_eval, or the direct definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as skm

from harmonia import metrics as hm


def _data(seed: int, ties: bool, n: int = 240, c: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label targets (one class without positives) and scores, rounded to force ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.1, 0.5, c)).astype(int)
    y[:, -1] = 0
    s = np.clip(0.3 * y + rng.random((n, c)) * 0.8, 0, 1)
    return y, (np.round(s, 1) if ties else s)


CASES = [(seed, ties) for seed in range(3) for ties in (False, True)]


@pytest.mark.parametrize("seed,ties", CASES)
def test_map_equals_sklearn_per_class_mean(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    keep = y.sum(axis=0) > 0
    expected = np.mean([skm.average_precision_score(y[:, c], s[:, c]) for c in np.flatnonzero(keep)])
    assert hm.mean_average_precision(y, s) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed,ties", CASES)
def test_auc_equals_sklearn_macro(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    keep = (y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))
    assert hm.roc_auc_macro(y, s) == pytest.approx(skm.roc_auc_score(y[:, keep], s[:, keep], average="macro"), abs=1e-6)


@pytest.mark.parametrize("seed,ties", CASES)
def test_lwlrap_equals_weighted_lrap(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    expected = skm.label_ranking_average_precision_score(y, s, sample_weight=y.sum(axis=1))
    assert hm.lwlrap(y, s) == pytest.approx(expected, abs=1e-6)
    assert hm.lwlrap(y, s, chunk_elements=7) == pytest.approx(expected, abs=1e-6)


def _eer_reference(t: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = skm.roc_curve(t, s)
    return float(brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-12))


@pytest.mark.parametrize("seed,ties", CASES)
def test_eer_equals_roc_crossing(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    cols = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    expected = np.mean([_eer_reference(y[:, c], s[:, c]) for c in cols])
    assert hm.eer(y, s) == pytest.approx(expected, abs=1e-6)


def test_eer_extremes() -> None:
    y = np.array([[1], [1], [0], [0]])
    assert hm.eer(y, np.array([[0.9], [0.8], [0.2], [0.1]])) == pytest.approx(0.0)
    assert hm.eer(y, np.array([[0.1], [0.2], [0.8], [0.9]])) == pytest.approx(1.0)


def _single_label(seed: int, n: int = 200, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.eye(c, dtype=int)[truth], probs


@pytest.mark.parametrize("seed", range(3))
def test_map_at_3_direct_definition(seed: int) -> None:
    y, p = _single_label(seed)
    p = np.round(p, 1)
    expected = []
    for row, truth in zip(p, y.argmax(axis=1)):
        ranked = sorted(range(len(row)), key=lambda k: (-row[k], k))[:3]
        expected.append(1.0 / (ranked.index(truth) + 1) if truth in ranked else 0.0)
    assert hm.map_at_3(y, p) == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_and_log_loss_equal_sklearn(seed: int) -> None:
    y, p = _single_label(seed)
    assert hm.accuracy(y, p) == pytest.approx(skm.accuracy_score(y.argmax(1), p.argmax(1)))
    assert hm.log_loss(y, p) == pytest.approx(skm.log_loss(y.argmax(1), p, labels=range(y.shape[1])), abs=1e-9)


@pytest.mark.parametrize("seed,ties", CASES)
def test_bce_equals_sklearn_log_loss_over_cells(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    clipped = np.clip(s, hm.BCE_EPS, 1 - hm.BCE_EPS).ravel()
    assert hm.bce(y, s) == pytest.approx(skm.log_loss(y.ravel(), clipped, labels=[0, 1]), abs=1e-9)


@pytest.mark.parametrize("seed,ties", CASES)
def test_f1_micro_and_macro_equal_sklearn(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    assert hm.f1_micro(y, s, 0.5) == pytest.approx(skm.f1_score(y, s >= 0.5, average="micro"), abs=1e-12)
    thr = np.linspace(0.3, 0.7, y.shape[1])
    expected = skm.f1_score(y, s >= thr, average="macro", zero_division=0)
    assert hm.f1_macro_thresholds(y, s, thr) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed,ties", CASES)
def test_fit_thresholds_maximize_f1(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties)
    thr = hm.fit_thresholds(y, s)
    for c in range(y.shape[1]):
        got = skm.f1_score(y[:, c], s[:, c] >= thr[c], zero_division=0)
        pred = s[:, c][None, :] >= np.unique(s[:, c])[:, None]
        best = np.max(2 * (pred & (y[:, c] == 1)).sum(1) / (pred.sum(1) + y[:, c].sum()))
        assert got == pytest.approx(best, abs=1e-12)
    assert not (s[:, -1] >= thr[-1]).any()  # no positives: predict nothing


def test_decode_events_hand_built() -> None:
    probs = np.zeros((12, 2))
    probs[2:7, 0] = 0.9       # dog, frames 2-6
    probs[4, 0] = 0.1         # one-frame gap the median filter fills
    probs[9, 0] = 0.95        # one-frame blip the median filter removes
    probs[7:12, 1] = 0.6      # cat runs to the last frame
    events = hm.decode_events(probs, 0.5, ["dog", "cat"], thresholds=[0.5, 0.5], median_lengths=[3, 1])
    assert events == [(1.0, 3.5, "dog"), (3.5, 6.0, "cat")]
    raw = hm.decode_events(probs, 0.5, ["dog", "cat"], thresholds=0.5, median_lengths=1)
    assert raw == [(1.0, 2.0, "dog"), (2.5, 3.5, "dog"), (3.5, 6.0, "cat"), (4.5, 5.0, "dog")]
    high = hm.decode_events(probs, 0.5, ["dog", "cat"], thresholds=[0.95, 0.95], median_lengths=1)
    assert high == [(4.5, 5.0, "dog")]


def test_event_metrics_dcase_collars() -> None:
    ref = {"a": [(1.0, 5.0, "dog")], "b": [(0.0, 1.0, "cat")], "c": []}
    # offset 0.6 s late: inside max(0.2, 20% of 4 s) = 0.8 s; onset 0.1 s late: inside 0.2 s
    est = {"a": [(1.1, 5.6, "dog")], "b": [(0.3, 1.0, "cat")], "c": [(2.0, 3.0, "cat")]}
    r = hm.event_metrics(ref, est, ["a", "b", "c", "d"])
    assert set(r) >= {"f_measure", "precision", "recall", "error_rate"}
    assert all(type(v) is float for v in r.values())
    # 1 hit; 'b' onset 0.3 s off is a deletion + insertion; 'c' is an insertion
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["f_measure"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert r["error_rate"] == pytest.approx((1 + 2) / 2)
    assert hm.event_metrics(ref, ref, ["a", "b", "c"])["f_measure"] == pytest.approx(1.0)


def test_segment_metrics_one_second_segments() -> None:
    ref = {"a": [(0.0, 2.0, "dog")]}
    est = {"a": [(1.0, 3.0, "dog")]}
    r = hm.segment_metrics(ref, est, ["a"])
    # segments [0,1) [1,2) in ref, [1,2) [2,3) in est: 1 TP, 1 FP, 1 FN
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5)
    assert r["f_measure"] == pytest.approx(0.5)


def test_registry_and_unknown_name() -> None:
    assert {"mAP", "auc", "lwlrap", "f1", "bce", "eer"} <= set(hm.METRICS)
    assert hm.get_metric("bce").greater_is_better is False
    assert hm.get_metric("mAP").greater_is_better is True
    y, s = _data(0, False)
    assert hm.get_metric("mAP")(y, s) == hm.mean_average_precision(y, s)
    with pytest.raises(KeyError) as err:
        hm.get_metric("accuracy@5")
    assert "mAP" in str(err.value) and "lwlrap" in str(err.value)
