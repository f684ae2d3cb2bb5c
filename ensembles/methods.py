"""Ensemble methods chosen by name, each fitted only on the (valid) predictions passed in.

A fitted ensemble is plain data (weights + JSON-able params) so a bundle can store it without
pickles; ``FittedEnsemble.predict`` recomputes every combination from that data alone.
Methods follow dcase2018_digest.md §4 (proceedings L2785-2841 for selection, SLSQP weighting and voting).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Literal
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from harmonia.ensembles.selection import Selection, ensemble_selection
from harmonia.metrics import BCE_EPS, Metric, get_metric

STACKING_EPS = 1e-6


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(q) - np.log1p(-q)


@dataclass
class FittedEnsemble:
    """Weights over the library ([M], or [M, C] per class; zeros for unused members) plus JSON-able
    ``params``; ``params["combine"]`` names how ``predict`` combines the members."""

    method: str
    weights: np.ndarray
    params: dict = field(default_factory=dict)
    curve: list[float] | None = None

    def predict(self, preds: np.ndarray) -> np.ndarray:
        """Member predictions [M, N, C] to ensemble scores [N, C] in [0, 1]."""
        p = np.asarray(preds)
        w = np.asarray(self.weights, dtype=np.float64)
        if p.ndim != 3 or p.shape[0] != w.shape[0]:
            raise ValueError(f"preds must be [M={w.shape[0]}, N, C], got {p.shape}")
        combine = self.params.get("combine", "linear")
        if combine not in _COMBINERS:
            raise KeyError(f"unknown combine {combine!r}; valid: {', '.join(sorted(_COMBINERS))}")
        return _COMBINERS[combine](w, p, self.params)

    def to_dict(self) -> dict:
        """JSON-able form (lists and plain numbers only)."""
        return {
            "method": self.method,
            "weights": np.asarray(self.weights, dtype=np.float64).tolist(),
            "params": _plain(self.params),
            "curve": None if self.curve is None else [float(v) for v in self.curve],
        }

    @classmethod
    def from_dict(cls, d: dict) -> FittedEnsemble:
        curve = d.get("curve")
        return cls(d["method"], np.asarray(d["weights"], dtype=np.float64), dict(d.get("params") or {}),
                   None if curve is None else [float(v) for v in curve])


def _plain(x: object) -> object:
    """numpy scalars / arrays inside ``x`` as plain Python values, so json.dumps accepts it."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _linear(w: np.ndarray, p: np.ndarray, params: dict) -> np.ndarray:
    used = np.flatnonzero(w)
    return np.tensordot(w[used], p[used].astype(np.float64), axes=1)


def _per_class(w: np.ndarray, p: np.ndarray, params: dict) -> np.ndarray:
    used = np.flatnonzero(np.any(w != 0, axis=1))
    return np.einsum("mc,mnc->nc", w[used], p[used].astype(np.float64))


def _vote(w: np.ndarray, p: np.ndarray, params: dict) -> np.ndarray:
    used = np.flatnonzero(w)
    votes = (p[used] >= float(params.get("threshold", 0.5))).astype(np.float64)
    return np.tensordot(w[used], votes, axes=1)


def _stacking(w: np.ndarray, p: np.ndarray, params: dict) -> np.ndarray:
    coef = np.asarray(params["coef"], dtype=np.float64)  # [C, M]
    intercept = np.asarray(params["intercept"], dtype=np.float64)  # [C]
    used = np.flatnonzero(np.any(coef != 0, axis=0))
    z = np.einsum("cm,mnc->nc", coef[:, used], _logit(p[used], float(params.get("eps", STACKING_EPS))))
    return _sigmoid(z + intercept[None, :])


_COMBINERS: dict[str, Callable[[np.ndarray, np.ndarray, dict], np.ndarray]] = {
    "linear": _linear, "per_class": _per_class, "vote": _vote, "stacking": _stacking,
}

METHODS: dict[str, Callable[..., FittedEnsemble]] = {}


@dataclass(frozen=True)
class MethodInfo:
    """How the stage calls a method: fitted on `valid` or on the out-of-fold predictions of train ∪ valid
    (`oof`), and whether it takes the ensemble `size` (K greedy steps)."""

    fit_on: Literal["valid", "oof"] = "valid"
    sized: bool = False


METHOD_INFO: dict[str, MethodInfo] = {}


def register_method(name: str, *, fit_on: Literal["valid", "oof"] = "valid",
                    sized: bool = False) -> Callable[[Callable[..., FittedEnsemble]], Callable[..., FittedEnsemble]]:
    """Decorator adding ``fn(preds [M, N, C], y [N, C], metric=..., **params) -> FittedEnsemble`` to
    METHODS (and its `MethodInfo`); the registered function accepts a metric name or a Metric."""

    def deco(fn: Callable[..., FittedEnsemble]) -> Callable[..., FittedEnsemble]:
        @functools.wraps(fn)
        def method(preds: np.ndarray, y: np.ndarray, metric: str | Metric = "mAP", **kwargs) -> FittedEnsemble:
            return fn(np.asarray(preds), np.asarray(y), metric=get_metric(metric), **kwargs)

        METHODS[name] = method
        METHOD_INFO[name] = MethodInfo(fit_on, sized)
        return method

    return deco


def uses_oof(method: str) -> bool:
    """Whether `method` is fitted on out-of-fold predictions instead of valid."""
    return METHOD_INFO[method].fit_on == "oof"


def fit_method(
    name: str, preds_valid: np.ndarray, y_valid: np.ndarray, metric: str | Metric = "mAP",
    fallback: bool = True, **kwargs
) -> FittedEnsemble:
    """Fit the ensemble method ``name`` on valid predictions; KeyError lists the valid names. With
    ``fallback`` the result is never worse than the best single model on valid."""
    if name not in METHODS:
        raise KeyError(f"unknown ensemble method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    p = np.asarray(preds_valid)
    y = np.asarray(y_valid)
    if p.ndim != 3 or p.shape[1:] != y.shape:
        raise ValueError(f"preds_valid must be [M, N, C] matching y_valid [N, C]; got {p.shape} and {y.shape}")
    fitted = METHODS[name](p, y, metric=metric, **kwargs)
    return _no_worse_than_best_single(fitted, p, y, get_metric(metric)) if fallback else fitted


def _no_worse_than_best_single(fitted: FittedEnsemble, preds: np.ndarray, y: np.ndarray, metric: Metric) -> FittedEnsemble:
    """Model selection on valid: a method that scores below the best single model on valid (e.g. SLSQP
    fits BCE, not the metric) is replaced by that model, and says so in ``params["fallback"]``."""
    best = int(_ranked(preds, y, metric)[0])
    single = metric.sign() * metric(y, preds[best])
    if metric.sign() * metric(y, fitted.predict(preds)) >= single - 1e-12:
        return fitted
    w = np.zeros(len(preds))
    w[best] = 1.0
    return FittedEnsemble(fitted.method, w, {"combine": "linear", "metric": metric.name, "fallback": "best single",
                                              "replaced": fitted.to_dict()["params"]}, fitted.curve)


def _ranked(preds: np.ndarray, y: np.ndarray, metric: Metric) -> np.ndarray:
    """Library indices from best to worst single-model score (ties to the lower index)."""
    scores = np.array([metric.sign() * metric(y, p) for p in preds])
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((np.arange(len(preds)), -scores))


def _prefix_members(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str | None, combine: str,
                    threshold: float = 0.5) -> np.ndarray:
    """The k best models; k="auto" picks the prefix of the valid ranking that scores best on valid
    (ties to the smaller k), so the best single model (k=1) is always a candidate; None means all."""
    order = _ranked(preds, y, metric)
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


def _equal_weights(m: int, members: np.ndarray) -> np.ndarray:
    w = np.zeros(m)
    w[members] = 1.0 / len(members)
    return w


def _from_selection(method: str, sel: Selection, metric: Metric, extra: dict) -> FittedEnsemble:
    params = {"combine": "linear", "metric": metric.name, "picks": list(sel.picks), "best_step": sel.best_step,
              "valid_score": float(sel.score), **extra}
    return FittedEnsemble(method, sel.weights, params, list(sel.curve))


@register_method("selection", sized=True)
def fit_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 50, **kwargs) -> FittedEnsemble:
    """Greedy selection with replacement from the best model (proceedings L2800-2808); see selection.py."""
    sel = ensemble_selection(preds, y, size=size, metric=metric, **kwargs)
    return _from_selection("selection", sel, metric, {"size": size})


@register_method("bagged_selection", sized=True)
def fit_bagged_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 50, bags: int = 20,
                         bag_fraction: float = 0.5, seed: int = 0, **kwargs) -> FittedEnsemble:
    """Selections on ``bags`` random halves of the library, weights averaged (Caruana et al. 2004)."""
    sel = ensemble_selection(preds, y, size=size, metric=metric, bagging=bags, bag_fraction=bag_fraction,
                             rng=seed, **kwargs)
    return _from_selection("bagged_selection", sel, metric,
                           {"size": size, "bags": bags, "bag_fraction": bag_fraction, "seed": seed})


@register_method("average")
def fit_average(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str = "auto") -> FittedEnsemble:
    """Plain average of the ``k`` best models by valid metric (AE, proceedings L2786-2789); k chosen on valid by default."""
    members = _prefix_members(preds, y, metric, k, "linear")
    return FittedEnsemble("average", _equal_weights(len(preds), members),
                          {"combine": "linear", "metric": metric.name, "k": int(len(members))})


@register_method("weighted")
def fit_weighted(preds: np.ndarray, y: np.ndarray, metric: Metric, top_k: int | None = None,
                 maxiter: int = 200, eps: float = BCE_EPS) -> FittedEnsemble:
    """Weights >= 0 summing to 1 that minimize the BCE of the weighted average, by SLSQP
    (WE, proceedings L2790-2805); ``top_k`` restricts it to the best models by valid metric."""
    m_models = len(preds)
    members = np.sort(_ranked(preds, y, metric)[:top_k]) if top_k else np.arange(m_models)
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


@register_method("majority_vote")
def fit_majority_vote(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str | None = "auto",
                      threshold: float = 0.5) -> FittedEnsemble:
    """Fraction of the members (the ``k`` best, default all) whose score is >= ``threshold``
    (MV, proceedings L2835-2841); >= 0.5 is the majority decision, and the fraction still ranks."""
    members = _prefix_members(preds, y, metric, k, "vote", threshold)
    return FittedEnsemble("majority_vote", _equal_weights(len(preds), members),
                          {"combine": "vote", "metric": metric.name, "threshold": float(threshold), "k": int(len(members))})


@register_method("average_vote")
def fit_average_vote(preds: np.ndarray, y: np.ndarray, metric: Metric, k: int | str | None = "auto") -> FittedEnsemble:
    """Soft vote: mean probability of the members (the ``k`` best, default all); AV of
    proceedings L2838-2841, whose decision is the argmax / threshold of this mean."""
    members = _prefix_members(preds, y, metric, k, "linear")
    return FittedEnsemble("average_vote", _equal_weights(len(preds), members),
                          {"combine": "linear", "metric": metric.name, "k": int(len(members))})


def _fit_class_lr(z: np.ndarray, t: np.ndarray, folds: int, cs: int, seed: int) -> tuple[np.ndarray, float, float]:
    """Logistic regression of one class on member logits, C chosen by stratified CV on this data.
    BLAS is held to one thread: tiny problems, and threaded BLAS on a busy machine is far slower.

    Returns (coef [M], intercept, C); with fewer than 2 positives or negatives, the mean logit.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    n_pos = int(t.sum())
    n_folds = min(folds, n_pos, len(t) - n_pos)
    if n_folds < 2:
        return np.full(z.shape[1], 1.0 / z.shape[1]), 0.0, float("nan")
    lr = LogisticRegressionCV(Cs=cs, cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed),
                              scoring="neg_log_loss", l1_ratios=(0.0,), use_legacy_attributes=False,
                              max_iter=1000, random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr.fit(z, t)
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), float(lr.C_)


@register_method("stacking")
def fit_stacking(preds: np.ndarray, y: np.ndarray, metric: Metric, top_k: int | None = None, folds: int = 5,
                 cs: int = 10, seed: int = 0, eps: float = STACKING_EPS) -> FittedEnsemble:
    """Per-class logistic regression on the members' logits, regularization chosen by CV on valid
    (digest §4 stacking: LR meta-classifiers, proceedings L3575-3606, L20006-20040).

    ``params`` holds coef [C, M] and intercept [C]; ``predict`` recomputes sigmoid(coef . logit + b).
    """
    m_models, _, n_classes = preds.shape
    members = np.sort(_ranked(preds, y, metric)[:top_k]) if top_k else np.arange(m_models)
    logits = _logit(preds[members], eps)
    coef = np.zeros((n_classes, m_models))
    intercept = np.zeros(n_classes)
    chosen_c = []
    for c in range(n_classes):
        coef[c, members], intercept[c], c_value = _fit_class_lr(logits[:, :, c].T, y[:, c].astype(int), folds, cs, seed)
        chosen_c.append(c_value)
    importance = np.abs(coef).mean(axis=0)
    weights = importance / importance.sum() if importance.sum() > 0 else _equal_weights(m_models, members)
    params = {"combine": "stacking", "metric": metric.name, "coef": coef.tolist(), "intercept": intercept.tolist(),
              "eps": eps, "C": [None if np.isnan(v) else v for v in chosen_c], "top_k": top_k, "folds": folds}
    return FittedEnsemble("stacking", weights, params)


@register_method("per_class_selection", sized=True)
def fit_per_class_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 50,
                            shrink: float = 0.5, **kwargs) -> FittedEnsemble:
    """A selection per class (the metric on that class alone), shrunk towards the global selection:
    w_c = (1 - shrink) * w_class + shrink * w_global (digest §4 per-class model selection, L16385-16391).
    Classes without positives use the global weights."""
    glob = ensemble_selection(preds, y, size=size, metric=metric, **kwargs)
    weights = np.repeat(glob.weights[:, None], preds.shape[2], axis=1)
    for c in np.flatnonzero(y.any(axis=0)):
        sel = ensemble_selection(preds[:, :, c : c + 1], y[:, c : c + 1], size=size, metric=metric, **kwargs)
        weights[:, c] = (1 - shrink) * sel.weights + shrink * glob.weights
    params = {"combine": "per_class", "metric": metric.name, "size": size, "shrink": float(shrink),
              "global_picks": list(glob.picks), "valid_score": float(glob.score)}
    return FittedEnsemble("per_class_selection", weights, params, list(glob.curve))


from harmonia.ensembles import cross_validated as _cross_validated  # noqa: E402,F401  (registers cv_selection)
