"""`harmonia ensemble --metric event_f1|psds1`: greedy selection by an SED objective, scored honestly, logged.

The selection runs on the members' valid frame outputs (ensembles/sed_selection.py). Its honest score:
the whole selection refitted on K−1 folds of valid (the stage's folds, grouped by source where known)
predicts the held-out fold; the objective of the pooled held-out frame outputs is the headline. The
best single member (chosen by the objective) and the plain average of all members are scored the same
way. Thresholds and median filters of the chosen ensemble are fitted on valid for event F1 (`fit_sed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harmonia import tracking
from harmonia.ensembles import sed
from harmonia.ensembles.artifacts import weights_png
from harmonia.ensembles.honest import DEFAULT_GROUPING
from harmonia.ensembles.library import Library, LibraryError, collect
from harmonia.ensembles.sed_selection import SedSelection, objective_of, sed_greedy_selection
from harmonia.ensembles.stage import DEFAULT_FOLDS, fit_sed, honest_setup
from harmonia.metrics import fit_thresholds

METHOD = "sed_selection"


@dataclass
class SedSelectionReport:
    run_id: str
    metric: str
    selection: SedSelection
    library: Library
    table: pd.DataFrame  # rows ensemble, best single, average; columns honest, valid_insample, test, members
    sed: dict = field(default_factory=dict)  # fit_sed's decisions and scores of the ensemble


def _objective(lib: Library, metric: str, split: str, idx: np.ndarray | None = None):
    ids = lib.valid_ids if split == "valid" else lib.test_ids
    ids = ids if idx is None else [ids[i] for i in idx]
    return objective_of(metric, sed.reference_arrays(lib.events[split], ids, lib.classes), lib.hop_seconds)


def _fits(frames: np.ndarray, lib: Library, metric: str, size: int,
          idx: np.ndarray) -> tuple[SedSelection, dict[str, np.ndarray]]:
    """The selection on the valid clips `idx` and the member weights of the three candidates fitted there."""
    sel = sed_greedy_selection(frames[:, idx], _objective(lib, metric, "valid", idx), size)
    single = np.zeros(len(frames))
    single[sel.picks[0]] = 1.0  # the first pick is the best single member on these clips
    return sel, {"ensemble": sel.weights, "best single": single, "average": np.full(len(frames), 1.0 / len(frames))}


def honest_scores(lib: Library, metric: str, size: int, folds: np.ndarray) -> dict[str, float]:
    """Each candidate's objective on the pooled held-out frame outputs: every valid clip predicted by the
    weights fitted on the folds that did not hold it."""
    frames = lib.frames["valid"]
    pooled = {name: np.zeros(frames.shape[1:], np.float32) for name in ("ensemble", "best single", "average")}
    for f in np.unique(folds):
        rest, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        for name, w in _fits(frames, lib, metric, size, rest)[1].items():
            pooled[name][held] = sed.combine_frames(frames[:, held], w)
    score = _objective(lib, metric, "valid")
    return {name: float(score(p)) for name, p in pooled.items()}


def fit_sed_selection(lib: Library, metric: str, size: int = 20, folds: int = DEFAULT_FOLDS,
                      fold_of: np.ndarray | None = None) -> tuple[SedSelection, pd.DataFrame]:
    """The selection on all of valid and the comparison table (honest, in-sample valid, test, members);
    `fold_of` (one fold per valid clip) defaults to the stage's first assignment of `folds` folds."""
    if not lib.frames:
        raise LibraryError(f"--metric {metric}: selection by an SED objective needs frame outputs; this experiment's "
                           "trials logged none (a `task: sed` search logs them)")
    frames = lib.frames["valid"]
    sel, fitted = _fits(frames, lib, metric, size, np.arange(frames.shape[1]))
    fold_of = honest_setup(lib, folds, repeats=1).folds[0] if fold_of is None else fold_of
    honest = honest_scores(lib, metric, size, fold_of)
    valid, test = _objective(lib, metric, "valid"), _objective(lib, metric, "test") if "test" in lib.frames else None
    rows = []
    for name, w in fitted.items():
        rows.append({"model": name, "honest": honest[name], "valid_insample": float(valid(sed.combine_frames(frames, w))),
                     "test": float(test(sed.combine_frames(lib.frames["test"], w))) if test else float("nan"),
                     "members": int(np.count_nonzero(w))})
    return sel, pd.DataFrame(rows).set_index("model")


def build_sed_selection(uri: str, experiment: str, *, metric: str, size: int = 20, folds: int = DEFAULT_FOLDS,
                        progress: bool = True, snapshots: bool = True,
                        grouping: str = DEFAULT_GROUPING) -> SedSelectionReport:
    """Collect the experiment's trials, select by `metric`, fit the event decisions, log one ensemble run."""
    lib = collect(uri, experiment, progress=progress, snapshots=snapshots)
    fold_of = honest_setup(lib, folds, repeats=1, grouping=grouping).folds[0]
    sel, table = fit_sed_selection(lib, metric, size, folds, fold_of)
    decided = fit_sed(lib, sel.weights, fold_of)
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, experiment)
    run = tracking.retry(lambda: c.create_run(exp_id, run_name=f"{experiment}-{METHOD}-{metric}",
                                              tags={tracking.KIND_TAG: "ensemble", "harmonia.method": METHOD}))
    rid = run.info.run_id
    members = [{"run_id": lib.run_ids[i], "run_name": lib.run_names[i], "weight": float(sel.weights[i])}
               for i in np.flatnonzero(sel.weights > 0)]
    tracking.log_params(c, rid, {"method": METHOD, "size": size, "metric": metric, "library_size": len(lib.run_ids),
                                 "members": ",".join(m["run_id"] for m in members)})
    metrics = {f"{model.replace(' ', '_')}_{col}_{metric}": float(v) for model, row in table.iterrows()
               for col, v in row.items() if col != "members"}
    metrics.update({f"{'insample_valid' if split == 'valid' else split}_{k}": v
                    for split, scores in decided["scores"].items() for k, v in scores.items()})
    metrics["members"] = float(len(members))
    tracking.log_metrics(c, rid, {k: float(v) for k, v in metrics.items() if np.isfinite(v)}, step=0)
    spec = {"format": "harmonia.ensemble/1", "method": METHOD, "metric": metric, "classes": lib.classes,
            "library": lib.run_ids, "members": members,
            "fitted": {"method": METHOD, "weights": sel.weights.tolist(),
                       "params": {"combine": "linear", "metric": metric, "picks": sel.picks, "best_step": sel.best_step},
                       "curve": sel.curve},
            "thresholds": fit_thresholds(lib.y_valid, np.tensordot(sel.weights, lib.valid, axes=1)).tolist(),
            "scores": {model: {k: float(v) for k, v in row.items()} for model, row in table.iterrows()},
            "sed": decided["decisions"]}
    tracking.log_files(c, rid, {"ensemble.json": tracking.json_bytes(spec), "comparison.csv": table.to_csv().encode(),
                                "weights.png": weights_png(lib.run_names, sel.weights)})
    tracking.retry(lambda: c.set_terminated(rid, "FINISHED"))
    return SedSelectionReport(rid, metric, sel, lib, table, decided)
