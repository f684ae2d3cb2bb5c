"""Stacking shrunk toward the plain average: per-class logistic regression on the members' logits with an
L2 penalty pulling every weight to 1/M and the intercept to 0 (the mean logit), strength chosen by inner
cross-validation.

Stacking with LR meta-classifiers is digest §4 (proceedings L3575-3606, L20006-20040). Unshrunk, it
overfits a small valid split (auto-sklearn dropped it for that reason); here the penalty
lam * (sum_m (w_m - 1/M)^2 + b^2) on the mean BCE makes the strongest setting the mean logit itself (so
fits on different folds stay on one scale),
and the inner folds (grouped when `groups` says which clips share a source) pick lam on held-out clips.
"""

from __future__ import annotations

import warnings

import numpy as np

from harmonia.ensembles.greedy import INNER_FOLDS
from harmonia.ensembles.honest import clip_folds
from harmonia.ensembles.registry import STACKING_EPS, FittedEnsemble, equal_weights, logit, ranked, register_method
from harmonia.metrics import Metric

LAMBDAS = (1000.0, 100.0, 10.0, 1.0, 0.1, 0.01)
"""Shrinkage strengths, strongest (simplest) first: ties go to the stronger one."""


def _objective(z: np.ndarray, t: np.ndarray, x: np.ndarray, lam: float, w0: float) -> np.ndarray:
    """Per-class mean BCE + lam * (sum (w - w0)^2 + b^2) at parameters x [C, M + 1] (weights, intercept)."""
    s = np.einsum("cnm,cm->cn", z, x[:, :-1]) + x[:, -1:]
    return (np.mean(np.logaddexp(0.0, s) - t * s, axis=1)
            + lam * (np.sum((x[:, :-1] - w0) ** 2, axis=1) + x[:, -1] ** 2))


def _fit_all(logits: np.ndarray, y: np.ndarray, lam: float, start: np.ndarray | None = None,
             iterations: int = 50, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """coef [C, M] and intercept [C] minimizing, for every class at once (the classes are independent),
    mean BCE + lam * (sum_m (w_cm - 1/M)^2 + b_c^2) on the member logits [M, N, C], by damped Newton steps
    (the problem is strictly convex for lam > 0); `start` warm-starts [C, M + 1]."""
    m, n, c = logits.shape
    z = np.ascontiguousarray(logits.transpose(2, 1, 0))  # [C, N, M]
    za = np.concatenate([z, np.ones((c, n, 1))], axis=2)  # with the intercept column
    t = y.T.astype(np.float64)  # [C, N]
    w0 = 1.0 / m
    ridge = np.eye(m + 1) * max(2 * lam, 1e-9)
    if start is None:
        start = np.concatenate([np.full((c, m), w0), np.zeros((c, 1))], 1)
    x = start.copy()
    value = _objective(z, t, x, lam, w0)
    for _ in range(iterations):
        s = np.einsum("cnk,ck->cn", za, x)
        p = 0.5 * (1.0 + np.tanh(0.5 * s))
        grad = np.einsum("cnk,cn->ck", za, p - t) / n
        grad[:, :m] += 2 * lam * (x[:, :m] - w0)
        grad[:, m] += 2 * lam * x[:, m]
        hess = np.einsum("cnk,cn,cnl->ckl", za, p * (1 - p), za) / n + ridge
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        scale = np.ones(c)
        for _ in range(30):  # halve each class's step until its objective does not increase
            trial = x - scale[:, None] * step
            new = _objective(z, t, trial, lam, w0)
            worse = new > value + 1e-12
            if not worse.any():
                break
            scale[worse] /= 2
        x, improvement = trial, value - new
        value = new
        if np.all(improvement < tol):
            break
    return x[:, :m], x[:, m]


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
        start, fold = None, np.zeros(len(lambdas))
        for i, lam in enumerate(lambdas):  # strongest first: each fit warm-starts the next
            coef, b = _fit_all(logits[:, rest], y[rest], lam, start)
            start = np.concatenate([coef, b[:, None]], 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fold[i] = metric.sign() * metric(y[held], _predict(coef, b, logits[:, held]))
        if np.isfinite(fold).any():  # a held-out fold the metric is undefined on (no positives) says nothing
            scores += np.where(np.isfinite(fold), fold, -np.inf)
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
