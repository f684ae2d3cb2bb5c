"""The simple ensemble methods: the best single model, plain and voted averages, SLSQP weights.

Methods follow dcase2018_digest.md §4 (proceedings L2785-2841: averaging, SLSQP weighting, voting).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from harmonia.ensembles.registry import FittedEnsemble, equal_weights, ranked, register_method
from harmonia.metrics import BCE_EPS, Metric


@register_method("best_single", complexity=0)
def fit_best_single(preds: np.ndarray, y: np.ndarray, metric: Metric) -> FittedEnsemble:
    """The best single model on the clips given: choosing it is itself a choice fitted on those clips."""
    w = np.zeros(len(preds))
    w[int(ranked(preds, y, metric)[0])] = 1.0
    return FittedEnsemble("best_single", w, {"combine": "linear", "metric": metric.name})


def _prefix_members(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str | None, combine: str,
                    threshold: float = 0.5) -> np.ndarray:
    """The k best models; k="auto" picks the prefix of the valid ranking that scores best on valid
    (ties to the smaller k), so the best single model (k=1) is always a candidate; None means all."""
    order = ranked(preds, y, metric)
    if k is None:
        return np.arange(len(preds))
    if k != "auto":
        return order[: max(1, int(k))]
    total = np.zeros(preds.shape[1:], np.float64)
    best_k, best = 1, -np.inf
    for i, m in enumerate(order, start=1):
        total += (preds[m] >= threshold) if combine == "vote" else preds[m]
        score = metric.sign() * metric(y, total / i)
        if score > best + 1e-12:
            best_k, best = i, score
    return order[:best_k]


@register_method("average", complexity=1)
def fit_average(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str = "auto") -> FittedEnsemble:
    """Plain average of the ``k`` best models by valid metric (AE, proceedings L2786-2789); k chosen on valid by default."""
    members = _prefix_members(preds, y, metric, k, "linear")
    return FittedEnsemble("average", equal_weights(len(preds), members),
                          {"combine": "linear", "metric": metric.name, "k": int(len(members))})


@register_method("weighted", complexity=4)
def fit_weighted(preds: np.ndarray, y: np.ndarray, metric: Metric, top_k: int | None = None,
                 maxiter: int = 200, eps: float = BCE_EPS) -> FittedEnsemble:
    """Weights >= 0 summing to 1 that minimize the BCE of the weighted average, by SLSQP
    (WE, proceedings L2790-2805); ``top_k`` restricts it to the best models by valid metric."""
    m_models = len(preds)
    members = np.sort(ranked(preds, y, metric)[:top_k]) if top_k else np.arange(m_models)
    x = preds[members].reshape(len(members), -1).astype(np.float64)
    t = y.reshape(-1).astype(bool)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        q = w @ x
        qc = np.clip(q, eps, 1 - eps)
        value = -np.mean(np.where(t, np.log(qc), np.log1p(-qc)))
        dq = np.where(t, -1.0 / qc, 1.0 / (1.0 - qc)) / len(t)
        dq[(q < eps) | (q > 1 - eps)] = 0.0
        return float(value), x @ dq

    k = len(members)
    with threadpool_limits(1, user_api="blas"):
        res = minimize(loss, np.full(k, 1.0 / k), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * k,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                       options={"maxiter": maxiter, "ftol": 1e-12})
    w_sub = np.clip(res.x, 0.0, None)
    w_sub[w_sub < 1e-8] = 0.0
    weights = np.zeros(m_models)
    weights[members] = w_sub / w_sub.sum()
    params = {"combine": "linear", "metric": metric.name, "bce": float(loss(weights[members])[0]),
              "success": bool(res.success), "iterations": int(res.nit), "top_k": top_k}
    return FittedEnsemble("weighted", weights, params)


@register_method("majority_vote", complexity=2)
def fit_majority_vote(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str | None = "auto",
                      threshold: float = 0.5) -> FittedEnsemble:
    """Fraction of the members (the ``k`` best, default all) whose score is >= ``threshold``
    (MV, proceedings L2835-2841); >= 0.5 is the majority decision, and the fraction still ranks."""
    members = _prefix_members(preds, y, metric, k, "vote", threshold)
    return FittedEnsemble("majority_vote", equal_weights(len(preds), members),
                          {"combine": "vote", "metric": metric.name, "threshold": float(threshold), "k": int(len(members))})


@register_method("average_vote", complexity=1)
def fit_average_vote(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str | None = "auto") -> FittedEnsemble:
    """Soft vote: mean probability of the members (the ``k`` best, default all); AV of
    proceedings L2838-2841, whose decision is the argmax / threshold of this mean."""
    members = _prefix_members(preds, y, metric, k, "linear")
    return FittedEnsemble("average_vote", equal_weights(len(preds), members),
                          {"combine": "linear", "metric": metric.name, "k": int(len(members))})
