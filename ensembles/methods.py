"""Every ensemble method, by name: the registry (registry.py) filled by the method modules.

simple.py: best single, averages, votes, SLSQP weights; greedy.py: selection, bagged and per-class
selection; stacking.py: stacking shrunk toward the average; cross_validated.py: cv_selection on
out-of-fold predictions. Each is fitted only on the predictions passed in.
"""

from __future__ import annotations

import numpy as np

from harmonia.ensembles import cross_validated, greedy, simple, stacking  # noqa: F401  (they register their methods)
from harmonia.ensembles.registry import (METHOD_INFO, METHODS, FittedEnsemble, MethodInfo, member_weights,
                                         register_method, uses_oof)
from harmonia.metrics import Metric

__all__ = ["METHODS", "METHOD_INFO", "FittedEnsemble", "MethodInfo", "fit_method", "member_weights",
           "register_method", "uses_oof", "by_simplicity"]


def fit_method(name: str, preds_valid: np.ndarray, y_valid: np.ndarray, metric: str | Metric = "mAP",
               groups: np.ndarray | None = None, **kwargs) -> FittedEnsemble:
    """Fit the ensemble method ``name`` on the predictions given; KeyError lists the valid names.
    ``groups`` (which clips share a source) reaches the methods that choose by inner cross-validation."""
    if name not in METHODS:
        raise KeyError(f"unknown ensemble method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    p = np.asarray(preds_valid)
    y = np.asarray(y_valid)
    if p.ndim != 3 or p.shape[1:] != y.shape:
        raise ValueError(f"preds_valid must be [M, N, C] matching y_valid [N, C]; got {p.shape} and {y.shape}")
    if METHOD_INFO[name].grouped:
        kwargs["groups"] = groups
    return METHODS[name](p, y, metric=metric, **kwargs)


def by_simplicity(names: list[str]) -> list[str]:
    """Method names from simplest to most complex (the order the recommendation prefers)."""
    return sorted(names, key=lambda n: (METHOD_INFO[n].complexity, n))
