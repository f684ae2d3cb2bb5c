"""The ensemble-method registry and the fitted-ensemble data type every method returns.

A fitted ensemble is plain data (weights + JSON-able params) so a bundle can store it without
pickles; ``FittedEnsemble.predict`` recomputes every combination from that data alone. Method
modules (simple.py, greedy.py, stacking.py, cross_validated.py) register themselves here;
methods.py imports them all and is what the stage uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from harmonia.metrics import Metric, get_metric

STACKING_EPS = 1e-6


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def logit(p: np.ndarray, eps: float) -> np.ndarray:
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
        if combine not in COMBINERS:
            raise KeyError(f"unknown combine {combine!r}; valid: {', '.join(sorted(COMBINERS))}")
        return COMBINERS[combine](w, p, self.params)

    def to_dict(self) -> dict:
        """JSON-able form (lists and plain numbers only)."""
        return {
            "method": self.method,
            "weights": np.asarray(self.weights, dtype=np.float64).tolist(),
            "params": plain(self.params),
            "curve": None if self.curve is None else [float(v) for v in self.curve],
        }

    @classmethod
    def from_dict(cls, d: dict) -> FittedEnsemble:
        curve = d.get("curve")
        return cls(d["method"], np.asarray(d["weights"], dtype=np.float64), dict(d.get("params") or {}),
                   None if curve is None else [float(v) for v in curve])


def plain(x: object) -> object:
    """numpy scalars / arrays inside ``x`` as plain Python values, so json.dumps accepts it."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
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
    z = np.einsum("cm,mnc->nc", coef[:, used], logit(p[used], float(params.get("eps", STACKING_EPS))))
    return sigmoid(z + intercept[None, :])


COMBINERS: dict[str, Callable[[np.ndarray, np.ndarray, dict], np.ndarray]] = {
    "linear": _linear, "per_class": _per_class, "vote": _vote, "stacking": _stacking,
}

METHODS: dict[str, Callable[..., FittedEnsemble]] = {}


@dataclass(frozen=True)
class MethodInfo:
    """How the stage calls a method: fitted on `valid` or on the out-of-fold predictions of train ∪ valid
    (`oof`); whether it takes the ensemble `size` (K greedy steps); whether it takes `groups` (it
    chooses something by an inner grouped cross-validation); and its `complexity`, the order of
    simplicity the recommendation prefers (best single 0 < average 1 < selection 3 < per-class 5 < stacking 6)."""

    fit_on: Literal["valid", "oof"] = "valid"
    sized: bool = False
    grouped: bool = False
    complexity: int = 3


METHOD_INFO: dict[str, MethodInfo] = {}


def register_method(name: str, *, fit_on: Literal["valid", "oof"] = "valid", sized: bool = False,
                    grouped: bool = False,
                    complexity: int = 3) -> Callable[[Callable[..., FittedEnsemble]], Callable[..., FittedEnsemble]]:
    """Decorator adding ``fn(preds [M, N, C], y [N, C], metric=..., **params) -> FittedEnsemble`` to
    METHODS (and its `MethodInfo`); the registered function accepts a metric name or a Metric."""

    def deco(fn: Callable[..., FittedEnsemble]) -> Callable[..., FittedEnsemble]:
        @functools.wraps(fn)
        def method(preds: np.ndarray, y: np.ndarray, metric: str | Metric = "mAP", **kwargs) -> FittedEnsemble:
            return fn(np.asarray(preds), np.asarray(y), metric=get_metric(metric), **kwargs)

        METHODS[name] = method
        METHOD_INFO[name] = MethodInfo(fit_on, sized, grouped, complexity)
        return method

    return deco


def uses_oof(method: str) -> bool:
    """Whether `method` is fitted on out-of-fold predictions instead of valid."""
    return METHOD_INFO[method].fit_on == "oof"


def ranked(preds: np.ndarray, y: np.ndarray, metric: Metric) -> np.ndarray:
    """Library indices from best to worst single-model score (ties to the lower index)."""
    scores = np.array([metric.sign() * metric(y, p) for p in preds])
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((np.arange(len(preds)), -scores))


def equal_weights(m: int, members: np.ndarray) -> np.ndarray:
    w = np.zeros(m)
    w[members] = 1.0 / len(members)
    return w


def member_weights(fitted: FittedEnsemble) -> np.ndarray:
    """Per-member weight magnitude (per-class weights are averaged over classes)."""
    w = np.abs(np.asarray(fitted.weights, np.float64))
    return w.mean(axis=1) if w.ndim == 2 else w
