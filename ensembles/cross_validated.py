"""Ensembles fitted on out-of-fold predictions: `cv_selection` over cross-validated trials.

Trials run with `train.cv_folds: k >= 2` (trainables/cross_validation.py) log
`predictions/oof.parquet`: a prediction for every clip of train ∪ valid from the fold model that did
not train on it. `library.add_oof` puts them in the library (`Library.oof`, with `oof_ids` and `y_oof` from the
search run's `labels/train.parquet` + `labels/valid.parquet`) when every member has them.

`cv_selection` is greedy selection with replacement (selection.py, the same code as `selection`)
fitted on those OOF predictions: every clip of train ∪ valid instead of valid alone, each scored by a
model that did not train on it. Its per-class thresholds are fitted on the OOF predictions too; SED
decisions stay fitted on the valid frames (the OOF frames of the valid clips). The comparison table (`compare_oof`)
ranks the single models on OOF and reports ensemble, best single and the top-k average on OOF, valid
(the OOF rows of the valid clips) and test. Test predictions (mean of each member's k fold models)
are only ever scored.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from harmonia.ensembles.library import Library, LibraryError
from harmonia.ensembles.greedy import from_selection
from harmonia.ensembles.registry import FittedEnsemble, register_method, uses_oof
from harmonia.ensembles.selection import ensemble_selection
from harmonia.metrics import Metric, get_metric



@register_method("cv_selection", fit_on="oof", sized=True, complexity=3)
def fit_cv_selection(preds: np.ndarray, y: np.ndarray, metric: Metric, size: int = 50, **kwargs) -> FittedEnsemble:
    """Greedy selection with replacement on the predictions passed in: the stage passes the members'
    out-of-fold predictions of train ∪ valid (`fit_inputs`)."""
    sel = ensemble_selection(preds, y, size=size, metric=metric, **kwargs)
    return from_selection("cv_selection", sel, metric, {"size": size, "fitted_on": "oof", "clips": int(y.shape[0])})


def fit_inputs(lib: Library, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(member predictions [M, N, C], targets [N, C]) a method is fitted on: valid, or for the OOF
    methods the out-of-fold predictions of train ∪ valid; LibraryError says why they are missing."""
    if not uses_oof(method):
        return lib.valid, lib.y_valid
    if lib.oof is None or lib.y_oof is None:
        raise LibraryError(f"{method} is fitted on out-of-fold predictions, which this library lacks: "
                           f"{lib.oof_note or 'no member logged predictions/oof.parquet'}. Search with "
                           "train.cv_folds >= 2 (every trial of the experiment), or use method 'selection' (fitted on valid)")
    return lib.oof, lib.y_oof


def compare_oof(lib: Library, fitted: FittedEnsemble, metric: str, top_k: int) -> pd.DataFrame:
    """Ensemble vs best single model vs the top-k average, single models ranked on OOF; scored on OOF,
    valid and test (test only reported)."""
    m = get_metric(metric)
    single = np.array([m.fn(lib.y_oof, p) for p in lib.oof])
    order = np.argsort(-single if m.greater_is_better else single, kind="stable")
    best, top = int(order[0]), order[:top_k]
    has_test = lib.test is not None and lib.y_test is not None

    def score(y, p):
        return float(m.fn(y, p))

    used = int((np.abs(np.asarray(fitted.weights)).reshape(len(lib.oof), -1) > 0).any(axis=1).sum())
    rows = []
    for name, combine, n in (("ensemble", fitted.predict, used),
                             ("best single", lambda p: p[best], 1),
                             (f"average top {len(top)}", lambda p: p[top].mean(0), len(top))):
        rows.append({"model": name, "oof": score(lib.y_oof, combine(lib.oof)),
                     "valid": score(lib.y_valid, combine(lib.valid)),
                     "test": score(lib.y_test, combine(lib.test)) if has_test else float("nan"), "members": n})
    return pd.DataFrame(rows).set_index("model")
