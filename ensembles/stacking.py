"""Stacking shrunk toward the plain average: per-class logistic regression on the members' logits with an
L2 penalty pulling every weight to 1/M (the mean logit), strength chosen by inner cross-validation.

Stacking with LR meta-classifiers is digest §4 (proceedings L3575-3606, L20006-20040). Unshrunk, it
overfits a small valid split (auto-sklearn dropped it for that reason); here the penalty
lam * N * sum_m (w_m - 1/M)^2 makes the strongest setting the mean logit plus a per-class calibration,
and the inner folds (grouped when `groups` says which clips share a source) pick lam on held-out clips.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize

from harmonia.ensembles.greedy import INNER_FOLDS
from harmonia.ensembles.honest import clip_folds
from harmonia.ensembles.registry import STACKING_EPS, FittedEnsemble, equal_weights, logit, ranked, register_method
from harmonia.metrics import Metric

LAMBDAS = (1000.0, 100.0, 10.0, 1.0, 0.1, 0.01)
"""Shrinkage strengths, strongest (simplest) first: ties go to the stronger one."""


def _fit_class(z: np.ndarray, t: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Weights [M] and intercept minimizing mean BCE + lam * sum (w - 1/M)^2 on logits z [N, M]."""
    n, m = z.shape
    w0 = np.full(m, 1.0 / m)

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = x[:m], x[m]
        s = z @ w + b
        # mean BCE of sigmoid(s): log(1 + e^s) - t s, computed stably
        value = np.mean(np.logaddexp(0.0, s) - t * s) + lam * np.sum((w - w0) ** 2)
        r = (0.5 * (1.0 + np.tanh(0.5 * s)) - t) / n
        return float(value), np.r_[z.T @ r + 2 * lam * (w - w0), r.sum()]

    prior = float(np.clip(t.mean(), 1e-3, 1 - 1e-3))
    x0 = np.r_[w0, np.log(prior) - np.log1p(-prior) - float(np.mean(z @ w0))]
    res = minimize(loss, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:m], float(res.x[m])


def _fit_all(logits: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """coef [C, M] and intercept [C] for every class."""
    m_models, _, n_classes = logits.shape
    coef, intercept = np.zeros((n_classes, m_models)), np.zeros(n_classes)
    for c in range(n_classes):
        coef[c], intercept[c] = _fit_class(logits[:, :, c].T, y[:, c].astype(np.float64), lam)
    return coef, intercept


def _predict(coef: np.ndarray, intercept: np.ndarray, logits: np.ndarray) -> np.ndarray:
    z = np.einsum("cm,mnc->nc", coef, logits) + intercept[None, :]
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _choose_lambda(logits: np.ndarray, y: np.ndarray, metric: Metric, lambdas: tuple[float, ...],
                   groups: np.ndarray | None, seed: int) -> tuple[float, list[float]]:
    """The shrinkage with the best mean held-out metric over inner folds (ties to the stronger)."""
    try:
        folds = clip_folds(y, groups, INNER_FOLDS, seed)
    except ValueError:
        return lambdas[0], []
    scores = np.zeros(len(lambdas))
    for f in np.unique(folds):
        rest, held = folds != f, folds == f
        for i, lam in enumerate(lambdas):
            coef, b = _fit_all(logits[:, rest], y[rest], lam)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                scores[i] += metric.sign() * metric(y[held], _predict(coef, b, logits[:, held]))
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    return float(lambdas[int(np.flatnonzero(scores >= scores.max() - 1e-12)[0])]), [float(v) for v in scores]


@register_method("stacking", grouped=True, complexity=6)
def fit_stacking(preds: np.ndarray, y: np.ndarray, metric: Metric, top_k: int | None = None,
                 shrinkage: float | str = "auto", lambdas: tuple[float, ...] = LAMBDAS, seed: int = 0,
                 eps: float = STACKING_EPS, groups: np.ndarray | None = None) -> FittedEnsemble:
    """Per-class LR on member logits shrunk toward the mean logit; `shrinkage` (lam) chosen by inner
    cross-validation unless given (0 is unregularized stacking). ``params`` holds coef [C, M] and
    intercept [C]; ``predict`` recomputes sigmoid(coef . logit + b)."""
    m_models = len(preds)
    members = np.sort(ranked(preds, y, metric)[:top_k]) if top_k else np.arange(m_models)
    logits = logit(preds[members], eps)
    inner: list[float] = []
    lam = shrinkage
    if shrinkage == "auto":
        lam, inner = _choose_lambda(logits, y, metric, tuple(lambdas), groups, seed)
    coef_sub, intercept = _fit_all(logits, y, float(lam))
    coef = np.zeros((y.shape[1], m_models))
    coef[:, members] = coef_sub
    importance = np.abs(coef).mean(axis=0)
    weights = importance / importance.sum() if importance.sum() > 0 else equal_weights(m_models, members)
    params = {"combine": "stacking", "metric": metric.name, "coef": coef.tolist(), "intercept": intercept.tolist(),
              "eps": eps, "shrinkage": float(lam), "shrinkage_chosen_by": "inner cross-validation" if inner else "given",
              "inner_scores": inner, "lambdas": list(lambdas), "top_k": top_k}
    return FittedEnsemble("stacking", weights, params)
