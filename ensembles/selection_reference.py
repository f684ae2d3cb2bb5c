"""The straightforward selection every fast path is checked against: one metric call per candidate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harmonia.ensembles.selection_core import AUTO_INIT_MAX, TIE_TOL, Selection, check_library, weighted_score
from harmonia.metrics import Metric, bce, get_metric


def reference_metric(y: np.ndarray, metric: Metric) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric the reference calls: scikit-learn's macro AP (classes with positives) for mAP."""
    if metric.name == "mAP":
        from sklearn.metrics import average_precision_score

        keep = y.any(axis=0)

        def fn(t: np.ndarray, p: np.ndarray) -> float:
            return float(average_precision_score(t[:, keep], p[:, keep], average="macro"))
        return fn
    return metric


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
    p, t = check_library(preds, y)
    met = get_metric(metric)
    sign = 1.0 if met.greater_is_better else -1.0
    fn = reference_metric(t, met)
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
    return Selection(weights, kept, [float(v) for v in curve], best_step, weighted_score(p, t, weights, met))
