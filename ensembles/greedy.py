"""Greedy ensemble selection methods: plain, bagged with sorted initialization, and per class.

Selection with replacement follows dcase2018_workshop_proceedings.txt L2790-2808 (digest §4); bagging
and sorted initialization are Caruana et al. (2004)'s fixes for overfitting small hillclimb sets.
What these methods choose (the number of greedy steps, the per-class shrinkage) is chosen by an inner
cross-validation over the clips they are given (grouped when `groups` says which share a source),
never by the in-sample curve, and the result is refitted on all those clips.
"""

from __future__ import annotations

import numpy as np

from harmonia.ensembles.honest import clip_folds
from harmonia.ensembles.registry import FittedEnsemble, register_method
from harmonia.ensembles.selection import Selection, ensemble_selection
from harmonia.metrics import Metric

INNER_FOLDS = 3
SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def from_selection(method: str, sel: Selection, metric: Metric, extra: dict) -> FittedEnsemble:
    params = {"combine": "linear", "metric": metric.name, "picks": list(sel.picks), "best_step": sel.best_step,
              "valid_score": float(sel.score), **extra}
    return FittedEnsemble(method, sel.weights, params, list(sel.curve))


def _inner_folds(y: np.ndarray, groups: np.ndarray | None, seed: int) -> np.ndarray | None:
    """Folds for a choice made inside a fit; None when the clips are too few to hold any out."""
    try:
        folds = clip_folds(y, groups, INNER_FOLDS, seed)
    except ValueError:
        return None
    return folds if len(np.unique(folds)) >= 2 else None


def _prefix_weights(runs: list[tuple[list[int], int]], m_models: int, step: int) -> np.ndarray:
    """Mean over runs of the weights after `step` greedy steps (init picks + `step` picks)."""
    w = np.zeros(m_models)
    for picks, n_init in runs:
        kept = picks[: n_init + step]
        w += np.bincount(kept, minlength=m_models) / len(kept)
    return w / len(runs)


def _runs(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int, init: int | str, bags: int,
          bag_fraction: float, rng: np.random.Generator) -> list[tuple[list[int], int]]:
    """Full-length selections (no prefix kept): one on the whole library, or one per random library bag."""
    m_models = len(preds)
    if bags <= 0:
        sel = ensemble_selection(preds, y, size=size, metric=metric, init=init, keep_best_prefix=False)
        return [(list(sel.picks), len(sel.picks) - size)]
    n_bag = min(m_models, max(1, int(round(bag_fraction * m_models))))
    runs = []
    for _ in range(bags):
        bag = np.sort(rng.choice(m_models, size=n_bag, replace=False))
        sel = ensemble_selection(preds[bag], y, size=size, metric=metric, init=init, keep_best_prefix=False)
        runs.append(([int(bag[p]) for p in sel.picks], len(sel.picks) - size))
    return runs


def _held_out_curve(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int, init: int | str, bags: int,
                    bag_fraction: float, seed: int, folds: np.ndarray) -> np.ndarray:
    """Mean held-out score after 0..size steps over the inner folds (signed: higher is better)."""
    curves = []
    for f in np.unique(folds):
        rest, held = folds != f, folds == f
        runs = _runs(preds[:, rest], y[rest], metric, size, init, bags, bag_fraction, np.random.default_rng(seed + f))
        curves.append([metric.sign() * metric(y[held], np.tensordot(_prefix_weights(runs, len(preds), s),
                                                                     preds[:, held].astype(np.float64), axes=1))
                       for s in range(size + 1)])
    return np.nanmean(np.asarray(curves, np.float64), axis=0)


def _select(method: str, preds: np.ndarray, y: np.ndarray, metric: Metric, size: int, steps: int | str,
            init: int | str, bags: int, bag_fraction: float, seed: int, groups: np.ndarray | None) -> FittedEnsemble:
    """Selection whose number of greedy steps is `steps`, or chosen by inner CV when "auto" (ties to fewer)."""
    curve = None
    if steps == "auto":
        folds = _inner_folds(y, groups, seed)
        if folds is None:
            steps = size
        else:
            curve = _held_out_curve(preds, y, metric, size, init, bags, bag_fraction, seed, folds)
            steps = int(np.flatnonzero(curve >= np.nanmax(curve) - 1e-12)[0])
    runs = _runs(preds, y, metric, size, init, bags, bag_fraction, np.random.default_rng(seed))
    weights = _prefix_weights(runs, len(preds), int(steps))
    params = {"combine": "linear", "metric": metric.name, "size": size, "steps": int(steps), "init": init,
              "bags": bags, "bag_fraction": bag_fraction, "seed": seed,
              "steps_chosen_by": "inner cross-validation" if curve is not None else "given",
              "picks": [p for picks, n_init in runs for p in picks[: n_init + int(steps)]]}
    return FittedEnsemble(method, weights, params,
                          None if curve is None else [float(metric.sign() * v) for v in curve])


def greedy_ensemble_score(preds: np.ndarray, y: np.ndarray, size: int, metric: str, folds: int = 5) -> float:
    """Honest score of greedy selection with replacement, the search's ensemble objective: selected on K-1
    folds of the clips, the metric of the pooled held-out predictions (never scored where it was fitted)."""
    from harmonia.metrics import get_metric

    fold = clip_folds(y, None, k=folds, seed=0)
    pooled = np.zeros(y.shape, np.float64)
    for k in np.unique(fold):
        held = fold == k
        weights = ensemble_selection(preds[:, ~held], y[~held], size=size, metric=metric).weights
        pooled[held] = np.tensordot(weights, preds[:, held], axes=1)
    return float(get_metric(metric).fn(y, pooled))


@register_method("selection", sized=True, complexity=3)
def fit_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 50, **kwargs) -> FittedEnsemble:
    """Greedy selection with replacement from the best model, best in-sample prefix kept (the reference
    method of proceedings L2800-2808; see selection.py)."""
    sel = ensemble_selection(preds, y, size=size, metric=metric, **kwargs)
    return from_selection("selection", sel, metric, {"size": size})


@register_method("bagged_selection", sized=True, grouped=True, complexity=3)
def fit_bagged_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 20, bags: int = 20,
                         bag_fraction: float = 0.5, seed: int = 0, init: int | str = "auto",
                         steps: int | str = "auto", groups: np.ndarray | None = None) -> FittedEnsemble:
    """Selections on `bags` random halves of the library from a sorted initialization, weights averaged
    (Caruana et al. 2004); the number of steps is chosen by inner (grouped) cross-validation."""
    return _select("bagged_selection", preds, y, metric, size, steps, init, bags, bag_fraction, seed, groups)


@register_method("per_class_selection", sized=True, grouped=True, complexity=5)
def fit_per_class_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 20,
                            shrink: float | str = "auto", seed: int = 0,
                            groups: np.ndarray | None = None) -> FittedEnsemble:
    """A selection per class (the metric on that class alone), shrunk towards the global selection:
    w_c = (1 - shrink) w_class + shrink w_global (digest §4 per-class model selection, L16385-16391);
    `shrink` chosen by inner (grouped) cross-validation from SHRINK_GRID unless given."""
    chosen_by = "given"
    if shrink == "auto":
        folds = _inner_folds(y, groups, seed)
        if folds is None:
            shrink = 0.5
        else:
            scores, scored = np.zeros(len(SHRINK_GRID)), 0
            for f in np.unique(folds):
                rest, held = folds != f, folds == f
                glob, per = _per_class_parts(preds[:, rest], y[rest], metric, size)
                fold = np.array([metric(y[held], np.einsum("mc,mnc->nc", (1 - s) * per + s * glob[:, None],
                                                           preds[:, held].astype(np.float64))) for s in SHRINK_GRID])
                if np.isfinite(fold).all():  # a held-out fold the metric is undefined on (no positives) says nothing
                    scores, scored = scores + metric.sign() * fold, scored + 1
            if scored:
                shrink = float(SHRINK_GRID[int(np.flatnonzero(scores >= scores.max() - 1e-12)[-1])])  # ties: more shrinkage
                chosen_by = "inner cross-validation"
            else:
                shrink, chosen_by = 0.5, "default (no inner held-out fold could be scored)"
    glob, per = _per_class_parts(preds, y, metric, size)
    weights = (1 - float(shrink)) * per + float(shrink) * glob[:, None]
    params = {"combine": "per_class", "metric": metric.name, "size": size, "shrink": float(shrink),
              "shrink_chosen_by": chosen_by, "seed": seed}
    return FittedEnsemble("per_class_selection", weights, params)


def _per_class_parts(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Global selection weights [M] and per-class selection weights [M, C] (the global ones for classes
    without positives)."""
    glob = ensemble_selection(preds, y, size=size, metric=metric).weights
    per = np.repeat(glob[:, None], preds.shape[2], axis=1)
    for c in np.flatnonzero(y.any(axis=0) & ~y.all(axis=0)):
        per[:, c] = ensemble_selection(preds[:, :, c: c + 1], y[:, c: c + 1], size=size, metric=metric).weights
    return glob, per
