"""The ensemble stage: fit methods on valid, score each honestly (held-out folds), recommend one, log runs.

Every score that chooses something is honest (ensembles/honest.py): a method with all its own choices
is refitted on K-1 folds of valid (grouped by source where the dataset's split keeps valid's and test's
sources apart) and scored on the held-out fold; in-sample valid scores are reported beside it, labelled as
such, and never rank anything; test is only reported. The recommendation follows `ensemble.rule`
(ensembles/honest.py `recommend`; default `anchored`: bagged selection unless another ensemble clearly
beats it fold by fold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harmonia import tracking
from harmonia.ensembles.artifacts import curve_png, per_class_table, weights_png
from harmonia.ensembles.cross_validated import compare_oof, fit_inputs
from harmonia.ensembles.honest import (ANCHOR, DEFAULT_FOLDS, DEFAULT_GROUPING, DEFAULT_REPEATS, DEFAULT_RULE, Candidate,
                                      HonestScore, fold_difference, folds_by_source, has_groups, honest_score, recommend,
                                      repeated_folds, split_mixes_sources)
from harmonia.ensembles.library import Library, clip_groups, collect
from harmonia.ensembles.methods import METHOD_INFO, FittedEnsemble, by_simplicity, fit_method, member_weights, uses_oof
from harmonia.metrics import fit_thresholds, get_metric

RECOMMENDED_TAG = "harmonia.recommended"
HONEST_NOTE = ("honest = the score of held-out-fold predictions of valid ± bootstrap s.e.; "
               "in-sample = fitted and scored on all of valid")


@dataclass
class HonestSetup:
    """The folds every method of one library is scored on, and the scores already computed on them."""

    folds: list[np.ndarray]  # one fold index per valid clip, for each repeat
    grouped: bool  # folds hold out whole sources, and fits with an inner CV group by them too
    seed: int = 0
    cache: dict = field(default_factory=dict)
    why: str = ""  # why the folds are not grouped although the library has groups
    shared_sources: bool = False  # the dataset's split draws most test clips from valid's sources (no source shift)

    def groups(self, lib: Library, ids: list[str]) -> np.ndarray | None:
        """The source groups of `ids` that fits on these folds see: none when the folds are not grouped."""
        return clip_groups(lib, ids) if self.grouped else None

    @property
    def k(self) -> int:
        return int(len(np.unique(self.folds[0])))

    def describe(self) -> str:
        times = f" x{len(self.folds)}" if len(self.folds) > 1 else ""
        why = f" ({self.why})" if self.why else ""
        return f"{self.k}-fold{times} {'grouped by source' if self.grouped else 'stratified by label set'}{why}"


@dataclass
class EnsembleReport:
    run_id: str
    method: str
    metric: str
    fitted: FittedEnsemble
    library: Library
    thresholds: np.ndarray
    comparison: pd.DataFrame  # rows: ensemble, best single, average top-k; columns honest, honest_se, valid, test, members
    honest: HonestScore | None = None
    setup: HonestSetup | None = None
    extra: dict = field(default_factory=dict)

    @property
    def members(self) -> list[tuple[str, float]]:
        w = member_weights(self.fitted)
        return [(self.library.run_ids[i], float(w[i])) for i in np.flatnonzero(w > 0)]


def honest_setup(lib: Library, k: int = DEFAULT_FOLDS, repeats: int = DEFAULT_REPEATS, seed: int = 0,
                 grouping: str = DEFAULT_GROUPING) -> HonestSetup:
    """Folds over the valid clips (`repeats` assignments): grouped when the library knows which share a source,
    unless `grouping` says otherwise (`auto`: not when the split mixes valid's and test's sources)."""
    groups, test_groups = clip_groups(lib, lib.valid_ids), clip_groups(lib, lib.test_ids)
    grouped = folds_by_source(groups, test_groups, grouping)
    why = ""
    if has_groups(groups) and not grouped:
        why = "grouping=clip" if grouping == "clip" else "most test clips share a source with valid clips"
    return HonestSetup(repeated_folds(lib.y_valid, groups if grouped else None, k, repeats, seed), grouped, seed,
                       why=why, shared_sources=split_mixes_sources(groups, test_groups))


def honest_method(lib: Library, setup: HonestSetup, method: str, metric: str, **kwargs) -> HonestScore:
    """The method refitted (with all its choices) on K-1 valid folds and scored on the held-out one; an OOF
    method is fitted on the out-of-fold rows of train plus those of the K-1 valid folds."""
    key = (method, metric, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key in setup.cache:
        return setup.cache[key]
    groups_valid = setup.groups(lib, lib.valid_ids)
    if uses_oof(method):
        fit_inputs(lib, method)  # LibraryError when the library has no OOF predictions
        n_train = len(lib.oof_ids) - len(lib.valid_ids)
        groups_oof = setup.groups(lib, lib.oof_ids)

        def fit(rest: np.ndarray) -> FittedEnsemble:
            rows = np.r_[np.arange(n_train), n_train + rest]
            return fit_method(method, lib.oof[:, rows], lib.y_oof[rows], metric,
                              groups=None if groups_oof is None else groups_oof[rows], **kwargs)
    else:
        def fit(rest: np.ndarray) -> FittedEnsemble:
            return fit_method(method, lib.valid[:, rest], lib.y_valid[rest], metric,
                              groups=None if groups_valid is None else groups_valid[rest], **kwargs)

    score = honest_score(fit, lib.valid, lib.y_valid, setup.folds, metric, setup.grouped, groups_valid, setup.seed)
    setup.cache[key] = score
    return score


def _score(metric_name: str, y: np.ndarray | None, p: np.ndarray | None) -> float:
    return float("nan") if y is None or p is None else float(get_metric(metric_name).fn(y, p))


def compare(lib: Library, fitted: FittedEnsemble, metric: str, top_k: int) -> pd.DataFrame:
    """Ensemble vs best single model vs plain average of the top-k models: in-sample valid and test."""
    m = get_metric(metric)
    single = np.array([m.fn(lib.y_valid, p) for p in lib.valid])
    order = np.argsort(-single if m.greater_is_better else single, kind="stable")
    best, top = int(order[0]), order[:top_k]
    rows = [
        ("ensemble", fitted.predict(lib.valid), None if lib.test is None else fitted.predict(lib.test),
         int((member_weights(fitted) > 0).sum())),
        ("best single", lib.valid[best], None if lib.test is None else lib.test[best], 1),
        (f"average top {len(top)}", lib.valid[top].mean(0), None if lib.test is None else lib.test[top].mean(0), len(top)),
    ]
    return pd.DataFrame(
        [{"model": name, "valid": _score(metric, lib.y_valid, pv), "test": _score(metric, lib.y_test, pt), "members": n}
         for name, pv, pt, n in rows]).set_index("model")


def _with_honest(table: pd.DataFrame, scores: list[HonestScore]) -> pd.DataFrame:
    table = table.copy()
    table.insert(0, "honest_se", [s.se for s in scores])
    table.insert(0, "honest", [s.mean for s in scores])
    return table


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison with columns named so that no in-sample score passes for an honest one (comparison.csv)."""
    return table.rename(columns={"honest": "honest_valid", "honest_se": "honest_valid_se", "valid": "insample_valid",
                                 "oof": "insample_oof"})


def _method_kwargs(method: str, size: int, extra: dict) -> dict:
    kwargs = dict(extra)
    if METHOD_INFO[method].sized:
        kwargs.setdefault("size", size)
    return kwargs


def fit_and_log(lib: Library, uri: str, experiment: str, *, method: str, size: int, metric: str, top_k: int,
                setup: HonestSetup | None = None, **method_kwargs) -> EnsembleReport:
    """Fit one method on valid (cv_selection: on out-of-fold predictions of train ∪ valid), score it honestly
    and in-sample beside the best single model and the top-k average, and log it as an ensemble run."""
    setup = setup or honest_setup(lib)
    kwargs = _method_kwargs(method, size, method_kwargs)
    fit_preds, fit_y = fit_inputs(lib, method)  # LibraryError when an OOF method meets a library without OOF
    groups = setup.groups(lib, lib.oof_ids if uses_oof(method) else lib.valid_ids)
    fitted = fit_method(method, fit_preds, fit_y, metric, groups=groups, **kwargs)
    thresholds = fit_thresholds(fit_y, fitted.predict(fit_preds))
    honest = honest_method(lib, setup, method, metric, **kwargs)
    baselines = [honest_method(lib, setup, "best_single", metric), honest_method(lib, setup, "average", metric, k=top_k)]
    table = _with_honest((compare_oof if uses_oof(method) else compare)(lib, fitted, metric, top_k), [honest, *baselines])
    on = "oof" if uses_oof(method) else "valid"
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, experiment)
    run = tracking.retry(lambda: c.create_run(exp_id, run_name=f"{experiment}-{method}",
                                              tags={tracking.KIND_TAG: "ensemble", "harmonia.method": method}))
    rid = run.info.run_id
    weights = member_weights(fitted)
    members = [{"run_id": lib.run_ids[i], "run_name": lib.run_names[i], "weight": float(weights[i])}
               for i in np.flatnonzero(weights > 0)]
    tracking.log_params(c, rid, {"method": method, "size": size, "metric": metric, "library_size": len(lib.run_ids),
                                 "library_read": lib.n_read or len(lib.run_ids), "honest_folds": setup.describe(),
                                 "members": ",".join(m["run_id"] for m in members)})
    def name(col: str) -> str:  # honest_valid_se -> honest_valid_mAP_se
        return f"{col[:-3]}_{metric}_se" if col.endswith("_se") else f"{col}_{metric}"

    metrics = {}
    for model, row in labelled(table).iterrows():
        key = model.replace(" ", "_")
        metrics.update({f"{key}_{name(col)}": row[col] for col in row.index if col != "members"})
    ens = labelled(table).loc["ensemble"]
    metrics.update({name(col): ens[col] for col in ens.index if col != "members"})
    metrics.update({"members": float(len(members)), "honest_valid_f1_at_thresholds": honest.f1_mean})
    sed = fit_sed(lib, weights, setup.folds[0]) if lib.frames else None
    if sed is not None:
        metrics.update({f"{'insample_valid' if split == 'valid' else split}_{k}": v
                        for split, scores in sed["scores"].items() for k, v in scores.items()})
    tracking.log_metrics(c, rid, {k: float(v) for k, v in metrics.items() if np.isfinite(v)}, step=0)
    spec = {
        "format": "harmonia.ensemble/1", "method": method, "metric": metric, "classes": lib.classes,
        "library": lib.run_ids, "members": members, "fitted": fitted.to_dict(),
        "thresholds": thresholds.tolist(),
        "scores": {m: {k: float(r[k]) for k in r.index if k != "members"} for m, r in labelled(table).iterrows()},
        "honest": {"folds": setup.describe(), "note": HONEST_NOTE, **honest.to_dict()},
        "sed": None if sed is None else sed["decisions"],
    }
    files = {
        "ensemble.json": tracking.json_bytes(spec),
        "comparison.csv": labelled(table).to_csv().encode(),
        "weights.png": weights_png(lib.run_names, weights),
        "weights.csv": pd.DataFrame(members).to_csv(index=False).encode(),
        "per_class.csv": per_class_table(lib, fitted).to_csv(index=False).encode(),
    }
    if fitted.curve:
        chosen = "held_out" if fitted.params.get("steps_chosen_by") == "inner cross-validation" else f"insample_{on}"
        files["curve.csv"] = pd.DataFrame({"steps": range(len(fitted.curve)),
                                           f"{chosen}_{metric}": fitted.curve}).to_csv(index=False).encode()
        files["curve.png"] = curve_png(fitted.curve, metric, chosen.replace("_", " "))
    tracking.log_files(c, rid, files)
    tracking.retry(lambda: c.set_terminated(rid, "FINISHED"))
    return EnsembleReport(rid, method, metric, fitted, lib, thresholds, table, honest, setup,
                          extra={} if sed is None else {"sed": sed})


def fit_sed(lib: Library, weights: np.ndarray, folds: np.ndarray | None = None) -> dict:
    """Frame outputs combined with the member weights; per-class threshold and median filter fitted on
    valid for event F1; event- and segment-based scores and PSDS1/2 on valid (in-sample) and test. With
    `folds` (one per valid clip) also `honest_valid`: event scores with decisions fitted out of fold."""
    from harmonia.ensembles import sed
    from harmonia.featureset import frame_targets

    probs = {split: sed.combine_frames(f, weights) for split, f in lib.frames.items()}
    ids = {"valid": lib.valid_ids, "test": lib.test_ids}
    n_frames = probs["valid"].shape[1]
    targets = frame_targets(lib.events["valid"], lib.valid_ids, lib.classes, n_frames, lib.hop_seconds)
    reference = sed.reference_arrays(lib.events["valid"], lib.valid_ids, lib.classes)
    decisions = sed.fit_decisions(probs["valid"], targets, lib.hop_seconds, reference=reference, classes=lib.classes)
    scores = {split: {**sed.score(lib.events[split], sed.decode(p, ids[split], lib.classes, decisions), ids[split],
                                  lib.classes), **sed.psds_of(p, lib.hop_seconds, lib.events[split], ids[split], lib.classes)}
              for split, p in probs.items()}
    if folds is not None:
        from harmonia.ensembles.sed_honest import honest_event_scores

        scores["honest_valid"] = honest_event_scores(probs["valid"], lib.events["valid"], lib.valid_ids, lib.classes,
                                                     lib.hop_seconds, folds)
    return {"decisions": decisions.to_dict(), "scores": scores}


def build_ensemble(uri: str, experiment: str, *, method: str = "bagged_selection", size: int = 20,
                   metric: str = "mAP", top_k: int = 5, progress: bool = True, snapshots: bool = True,
                   folds: int = DEFAULT_FOLDS, grouping: str = DEFAULT_GROUPING, **method_kwargs) -> EnsembleReport:
    """Collect the experiment's trials and fit one method; test is scored and reported, never used for a choice."""
    lib = collect(uri, experiment, progress=progress, snapshots=snapshots)
    return fit_and_log(lib, uri, experiment, method=method, size=size, metric=metric, top_k=top_k,
                       setup=honest_setup(lib, folds, grouping=grouping), **method_kwargs)


def build_ensembles(uri: str, experiment: str, *, methods: list[str], size: int = 20, metric: str = "mAP",
                    top_k: int = 5, progress: bool = True, snapshots: bool = True, skip_unavailable: bool = False,
                    folds: int = DEFAULT_FOLDS, rule: str = DEFAULT_RULE,
                    grouping: str = DEFAULT_GROUPING) -> tuple[list[EnsembleReport], pd.DataFrame]:
    """Every method on the same library and the same honest folds, one run each, and the recommendation.

    The best single model and the plain average are always candidates. Returns the reports and a table
    (method, honest, honest_se, fold_gain, fold_gain_se, valid_insample, test, members, recommended, run_id),
    simplest first; fold_gain is the mean per-fold difference to bagged selection that the anchored rule reads.
    With `skip_unavailable` the OOF methods are left out (with a note) when the library has none."""
    lib = collect(uri, experiment, progress=progress, snapshots=snapshots)
    if skip_unavailable and lib.oof is None and any(uses_oof(m) for m in methods):
        if progress:
            from harmonia.progress import console

            console.print(f"[yellow]left out {', '.join(m for m in methods if uses_oof(m))}:[/] {lib.oof_note}")
        methods = [m for m in methods if not uses_oof(m)]
    methods = by_simplicity(list(dict.fromkeys(["best_single", "average", *methods])))
    setup = honest_setup(lib, folds, grouping=grouping)
    reports = [fit_and_log(lib, uri, experiment, method=m, size=size, metric=metric, top_k=top_k, setup=setup)
               for m in methods]
    chosen = recommend([Candidate(r.method, METHOD_INFO[r.method].complexity, r.honest) for r in reports], metric, rule,
                       shared_sources=setup.shared_sources)
    c = tracking.client(uri)
    for r in reports:
        tracking.retry(lambda r=r: c.set_tag(r.run_id, RECOMMENDED_TAG, str(r.method == chosen).lower()))
        if r.method == chosen:
            tracking.retry(lambda r=r: c.update_run(r.run_id, name=f"{experiment}-{r.method}-recommended"))
    anchor = next((r.honest for r in reports if r.method == ANCHOR), None)
    gains = {r.method: fold_difference(r.honest, anchor) if anchor is not None else (np.nan, np.nan) for r in reports}
    rows = [{"method": r.method, "honest": r.honest.mean, "honest_se": r.honest.se,
             "fold_gain": gains[r.method][0], "fold_gain_se": gains[r.method][1],
             "valid_insample": r.comparison.loc["ensemble", "valid"], "test": r.comparison.loc["ensemble", "test"],
             "members": int(r.comparison.loc["ensemble", "members"]), "recommended": r.method == chosen,
             "run_id": r.run_id} for r in reports]
    return reports, pd.DataFrame(rows)


def recommended(reports: list[EnsembleReport], table: pd.DataFrame) -> EnsembleReport:
    """The report of the recommended method in `build_ensembles`' output."""
    name = table.loc[table["recommended"], "method"].iloc[0]
    return next(r for r in reports if r.method == name)
