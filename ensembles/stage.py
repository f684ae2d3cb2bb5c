"""The ensemble stage: fit a method on valid, compare with the best model and the plain average, log a run."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harmonia import tracking
from harmonia.ensembles.cross_validated import compare_oof, fit_inputs
from harmonia.ensembles.library import Library, collect
from harmonia.ensembles.methods import METHOD_INFO, FittedEnsemble, fit_method, uses_oof
from harmonia.metrics import fit_thresholds, get_metric


@dataclass
class EnsembleReport:
    run_id: str
    method: str
    metric: str
    fitted: FittedEnsemble
    library: Library
    thresholds: np.ndarray
    comparison: pd.DataFrame  # rows: ensemble, best single, average top-k; columns valid, test, members
    extra: dict = field(default_factory=dict)

    @property
    def members(self) -> list[tuple[str, float]]:
        w = _member_weights(self.fitted)
        return [(self.library.run_ids[i], float(w[i])) for i in np.flatnonzero(w > 0)]


def _member_weights(fitted: FittedEnsemble) -> np.ndarray:
    """Per-member weight magnitude (per-class weights are averaged over classes)."""
    w = np.abs(np.asarray(fitted.weights, np.float64))
    return w.mean(axis=1) if w.ndim == 2 else w


def _score(metric_name: str, y: np.ndarray | None, p: np.ndarray | None) -> float:
    return float("nan") if y is None or p is None else float(get_metric(metric_name).fn(y, p))


def compare(lib: Library, fitted: FittedEnsemble, metric: str, top_k: int) -> pd.DataFrame:
    """Ensemble vs best single model vs plain average of the top-k models, on valid and test."""
    m = get_metric(metric)
    single = np.array([m.fn(lib.y_valid, p) for p in lib.valid])
    order = np.argsort(-single if m.greater_is_better else single, kind="stable")
    best, top = int(order[0]), order[:top_k]
    rows = [
        ("ensemble", fitted.predict(lib.valid), None if lib.test is None else fitted.predict(lib.test),
         int((_member_weights(fitted) > 0).sum())),
        ("best single", lib.valid[best], None if lib.test is None else lib.test[best], 1),
        (f"average top {len(top)}", lib.valid[top].mean(0), None if lib.test is None else lib.test[top].mean(0), len(top)),
    ]
    return pd.DataFrame(
        [{"model": name, "valid": _score(metric, lib.y_valid, pv), "test": _score(metric, lib.y_test, pt), "members": n}
         for name, pv, pt, n in rows]).set_index("model")


def _weights_png(names: list[str], weights: np.ndarray):
    def write(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        idx = np.flatnonzero(weights > 0)
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(idx) + 1.2))
        ax.barh([names[i] for i in idx], weights[idx])
        ax.set_xlabel("weight")
        ax.set_title("ensemble members")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return write




def _method_kwargs(method: str, size: int, top_k: int, extra: dict) -> dict:
    kwargs = dict(extra)
    if METHOD_INFO[method].sized:
        kwargs.setdefault("size", size)
    return kwargs


def _per_class_table(lib: Library, fitted: FittedEnsemble, metric: str) -> pd.DataFrame:
    """Per-class score of each member and of the ensemble, on valid and test (for the run's artifacts)."""
    from harmonia.metrics import average_precision_per_class

    rows = []
    weights = _member_weights(fitted)
    splits = [("valid", lib.valid, lib.y_valid)] + ([("test", lib.test, lib.y_test)] if lib.test is not None else [])
    for split, preds, y in splits:
        models = [(lib.run_names[i], preds[i]) for i in np.flatnonzero(weights > 0)] + [("ensemble", fitted.predict(preds))]
        for name, p in models:
            ap = average_precision_per_class(y, p)
            rows += [{"split": split, "model": name, "class": c, "AP": float(v)} for c, v in zip(lib.classes, ap)]
    return pd.DataFrame(rows)


def _curve_png(curve: list[float], metric: str, on: str = "valid"):
    def write(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(range(1, len(curve) + 1), curve, marker=".")
        ax.set_xlabel("ensemble size (greedy steps)")
        ax.set_ylabel(f"{on} {metric}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return write


def fit_and_log(lib: Library, uri: str, experiment: str, *, method: str, size: int, metric: str, top_k: int,
                **method_kwargs) -> EnsembleReport:
    """Fit one method on valid only (cv_selection: on out-of-fold predictions of train ∪ valid), score it
    on valid and test (and OOF), and log it as an ensemble run."""
    fit_preds, fit_y = fit_inputs(lib, method)  # LibraryError when an OOF method meets a library without OOF
    fitted = fit_method(method, fit_preds, fit_y, metric=metric,
                        **_method_kwargs(method, size, top_k, method_kwargs))
    thresholds = fit_thresholds(fit_y, fitted.predict(fit_preds))
    table = (compare_oof if uses_oof(method) else compare)(lib, fitted, metric, top_k)
    on = "oof" if uses_oof(method) else "valid"
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, experiment)
    run = tracking.retry(lambda: c.create_run(exp_id, run_name=f"{experiment}-{method}",
                                              tags={tracking.KIND_TAG: "ensemble", "harmonia.method": method}))
    rid = run.info.run_id
    weights = _member_weights(fitted)
    members = [{"run_id": lib.run_ids[i], "run_name": lib.run_names[i], "weight": float(weights[i])}
               for i in np.flatnonzero(weights > 0)]
    tracking.log_params(c, rid, {"method": method, "size": size, "metric": metric, "library_size": len(lib.run_ids),
                                 "members": ",".join(m["run_id"] for m in members)})
    metrics = {}
    for model, row in table.iterrows():
        key = model.replace(" ", "_")
        metrics[f"{key}_valid_{metric}"] = row["valid"]
        if "oof" in row and np.isfinite(row["oof"]):
            metrics[f"{key}_oof_{metric}"] = row["oof"]
        if np.isfinite(row["test"]):
            metrics[f"{key}_test_{metric}"] = row["test"]
    metrics.update({f"valid_{metric}": table.loc["ensemble", "valid"], "members": float(len(members))})
    if np.isfinite(table.loc["ensemble", "test"]):
        metrics[f"test_{metric}"] = table.loc["ensemble", "test"]
    sed = fit_sed(lib, weights) if lib.frames else None
    if sed is not None:
        metrics.update({f"{split}_{k}": v for split, scores in sed["scores"].items() for k, v in scores.items()})
    tracking.log_metrics(c, rid, metrics, step=0)
    spec = {
        "format": "harmonia.ensemble/1", "method": method, "metric": metric, "classes": lib.classes,
        "library": lib.run_ids, "members": members, "fitted": fitted.to_dict(),
        "thresholds": thresholds.tolist(),
        "scores": {m: {k: float(r[k]) for k in ("oof", "valid", "test") if k in r} for m, r in table.iterrows()},
        "sed": None if sed is None else sed["decisions"],
    }
    files = {
        "ensemble.json": tracking.json_bytes(spec),
        "comparison.csv": table.to_csv().encode(),
        "weights.png": _weights_png(lib.run_names, weights),
        "weights.csv": pd.DataFrame(members).to_csv(index=False).encode(),
        "per_class.csv": _per_class_table(lib, fitted, metric).to_csv(index=False).encode(),
    }
    if fitted.curve:
        files["curve.csv"] = pd.DataFrame({"size": range(1, len(fitted.curve) + 1),
                                           f"{on}_{metric}": fitted.curve}).to_csv(index=False).encode()
        files["curve.png"] = _curve_png(fitted.curve, metric, on)
    tracking.log_files(c, rid, files)
    tracking.retry(lambda: c.set_terminated(rid, "FINISHED"))
    return EnsembleReport(rid, method, metric, fitted, lib, thresholds, table,
                          extra={} if sed is None else {"sed": sed})


def fit_sed(lib: Library, weights: np.ndarray) -> dict:
    """Frame outputs combined with the member weights; per-class threshold and median filter fitted on
    valid; event- and segment-based scores on valid and test."""
    from harmonia.ensembles import sed
    from harmonia.featureset import frame_targets

    probs = {split: sed.combine_frames(f, weights) for split, f in lib.frames.items()}
    ids = {"valid": lib.valid_ids, "test": lib.test_ids}
    n_frames = probs["valid"].shape[1]
    targets = frame_targets(lib.events["valid"], lib.valid_ids, lib.classes, n_frames, lib.hop_seconds)
    decisions = sed.fit_decisions(probs["valid"], targets, lib.hop_seconds)
    scores = {split: sed.score(lib.events[split], sed.decode(p, ids[split], lib.classes, decisions), ids[split], lib.classes)
              for split, p in probs.items()}
    return {"decisions": decisions.to_dict(), "scores": scores}


def build_ensemble(uri: str, experiment: str, *, method: str = "selection", size: int = 20,
                   metric: str = "mAP", top_k: int = 5, progress: bool = True, snapshots: bool = True,
                   **method_kwargs) -> EnsembleReport:
    """Collect the experiment's trials and fit one method; test is scored and reported, never used for a choice."""
    lib = collect(uri, experiment, progress=progress, snapshots=snapshots)
    return fit_and_log(lib, uri, experiment, method=method, size=size, metric=metric, top_k=top_k, **method_kwargs)


def build_ensembles(uri: str, experiment: str, *, methods: list[str], size: int = 20, metric: str = "mAP",
                    top_k: int = 5, progress: bool = True, snapshots: bool = True,
                    skip_unavailable: bool = False) -> tuple[list[EnsembleReport], pd.DataFrame]:
    """Every method on the same library, one run each, and a table: method, valid, test, oof, members, run.
    With `skip_unavailable` the methods fitted on out-of-fold predictions are left out (with a note)
    when the library has none, instead of failing."""
    lib = collect(uri, experiment, progress=progress, snapshots=snapshots)
    if skip_unavailable and lib.oof is None and any(uses_oof(m) for m in methods):
        if progress:
            from harmonia.progress import console

            console.print(f"[yellow]left out {', '.join(m for m in methods if uses_oof(m))}:[/] {lib.oof_note}")
        methods = [m for m in methods if not uses_oof(m)]
    reports = [fit_and_log(lib, uri, experiment, method=m, size=size, metric=metric, top_k=top_k) for m in methods]
    oof = lambda t, name: t.loc[name, "oof"] if "oof" in t.columns else float("nan")  # noqa: E731
    rows = [{"method": r.method, "valid": r.comparison.loc["ensemble", "valid"],
             "test": r.comparison.loc["ensemble", "test"], "oof": oof(r.comparison, "ensemble"),
             "members": int(r.comparison.loc["ensemble", "members"]), "run_id": r.run_id} for r in reports]
    base = reports[0].comparison
    for name in base.index[1:]:
        rows.append({"method": name, "valid": base.loc[name, "valid"], "test": base.loc[name, "test"],
                     "oof": oof(base, name), "members": int(base.loc[name, "members"]), "run_id": ""})
    return reports, pd.DataFrame(rows)
