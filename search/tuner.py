"""Build and run the Tuner: OptunaSearch (TPE) over the composed space, ASHA over epochs, MLflow runs."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from harmonia import tracking
from harmonia.config import ConfigError, HarmoniaConfig
from harmonia.feature_store import load_feature_sets, open_feature_set
from harmonia.featureset import FeatureSet, load_data
from harmonia.metrics import get_metric
from harmonia.progress import console, progress_bar
from harmonia.search.callbacks import MlflowRunCloser, ProgressCallback
from harmonia.search.cluster import connect, prepare_client, relay_progress
from harmonia.search.failures import FinalTrialErrors, SearchFailed, error_reason, failure_summary
from harmonia.search.naming import TrialRunNamer
from harmonia.search.library_service import OBJECTIVE_METRIC, EnsembleScore, ensemble_library
from harmonia.search.warm_workers import trial_actors_on_warm_workers
from harmonia.spaces import define_by_run, validate_overrides
from harmonia.spaces.features import feature_kinds
from harmonia.spaces.semi_supervised import semi_supervised_requested
from harmonia.trainables.trial import TrialContext, harmonia_trial, scheduler_milestones

SEARCH_STATE = "harmonia_search.json"


@dataclass
class SearchResult:
    name: str
    experiment_id: str
    search_run_id: str
    path: str
    trials: pd.DataFrame  # one row per trial: trial_id, status, score, epochs, run_id, params


def source_groups(clips: pd.DataFrame) -> pd.DataFrame:
    """clip_id, split, group for every clip: the dataset's `group` column (which clips share a source),
    else a scene dataset's recording `identifier`, else each clip its own group."""
    col = next((c for c in ("group", "identifier") if c in clips.columns), None)
    groups = clips[col].astype(str) if col else clips["clip_id"].astype(str)
    return pd.DataFrame({"clip_id": clips["clip_id"].astype(str), "split": clips["split"].astype(str),
                         "group": groups.to_numpy()})


def _log_labels(c, run_id: str, fs: FeatureSet, events: pd.DataFrame | None = None, train: bool = False,
                groups: pd.DataFrame | None = None) -> None:
    """Targets (and strong events) of valid and test on the search run: the ensemble stage needs only MLflow.
    With `train` (cross-validated trials) also those of train: out-of-fold predictions cover train ∪ valid."""
    files = {}
    for split in (("train",) if train else ()) + ("valid", "test"):
        if split in fs.splits:
            df = tracking.predictions_frame(fs.splits[split].clip_ids, fs.splits[split].y, fs.classes)
            files[f"labels/{split}.parquet"] = lambda p, df=df: df.to_parquet(p, index=False)
    if events is not None and len(events):
        for split in ("valid", "test"):
            if split in fs.splits:
                ev = events[events["clip_id"].isin(fs.splits[split].clip_ids)][["clip_id", "onset", "offset", "event_label"]]
                files[f"labels/{split}_events.parquet"] = lambda p, ev=ev.reset_index(drop=True): ev.to_parquet(p, index=False)
        files["labels/hop_seconds.json"] = tracking.json_bytes({"hop_seconds": fs.hop_seconds})
    if groups is not None:
        files["labels/groups.parquet"] = lambda p: groups.to_parquet(p, index=False)
    tracking.log_files(c, run_id, files)


def _search_run(cfg: HarmoniaConfig, exp_id: str, fs: FeatureSet, events, state_file: Path, resume: bool,
                groups: pd.DataFrame | None = None) -> str:
    c = tracking.client(cfg.tracking.uri)
    if resume and state_file.is_file():
        run_id = json.loads(state_file.read_text())["search_run_id"]
        tracking.retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    run = tracking.retry(lambda: c.create_run(exp_id, run_name=f"{cfg.name}-search",
                                              tags={tracking.KIND_TAG: "search"}))
    tracking.log_params(c, run.info.run_id, cfg.model_dump(exclude={"tracking"}))
    _log_labels(c, run.info.run_id, fs, events, train=cfg.train.cross_validated, groups=groups)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"search_run_id": run.info.run_id, "experiment_id": exp_id}))
    return run.info.run_id


def trial_dirname(trial) -> str:
    """Short trial folders (the default name lists every param and can exceed path limits)."""
    return f"{trial.trial_id}"


@contextmanager
def only_json_result_logger():
    """While fitting, Tune adds no CSV/TensorBoard result loggers (`build_tuner` passes the JSON one);
    the process's setting is restored after, so other Tuners in it keep Tune's defaults."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def build_tuner(cfg: HarmoniaConfig, fs: FeatureSet | dict[str, FeatureSet], ctx: TrialContext, callbacks: list,
                resume: bool):
    """A new Tuner, or the one restored from `storage_path/name` when resuming.

    `fs`: the FeatureSet of every kind the space can sample (kind → FeatureSet, see `search_kinds`), put
    in the object store once by `tune.with_parameters`; each trial picks its sampled kind's."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.search.optuna import OptunaSearch


    s = cfg.search
    trainable = tune.with_resources(tune.with_parameters(harmonia_trial, data=fs, ctx=ctx),
                                    {"cpu": s.resources.cpu, "gpu": s.resources.gpu})
    path = str(Path(s.storage_path) / cfg.name)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"{path}: no search to resume here")
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    metric = OBJECTIVE_METRIC if s.objective == "ensemble" else f"valid_{s.metric}"  # search/library_service.py
    mode = "max" if get_metric(s.metric).greater_is_better else "min"
    searcher = OptunaSearch(space=define_by_run(cfg.space, cfg.task, cfg.features), metric=metric, mode=mode,
                            sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(2, s.num_samples // 3)))
    scheduler = ASHAScheduler(metric=metric, mode=mode, time_attr="training_iteration", max_t=s.max_epochs,
                              grace_period=min(s.grace_period, s.max_epochs), reduction_factor=s.reduction_factor)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher,
                                    scheduler=scheduler, num_samples=s.num_samples,
                                    max_concurrent_trials=s.max_concurrent,
                                    # On a cluster a reused actor can sit on a node that died; a fresh
                                    # actor per trial is placed on a live one (about 2 s per trial).
                                    reuse_actors=s.address is None,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=cfg.name, storage_path=s.storage_path, verbose=0,
                                  # MLflow is the dashboard: of Tune's per-result loggers keep only
                                  # result.json (its ResultGrid reads it), not CSV and TensorBoard files.
                                  callbacks=[*callbacks, JsonLoggerCallback()],
                                  failure_config=tune.FailureConfig(max_failures=s.max_failures),
                                  # num_to_keep=1 makes Tune save its resume state after every checkpoint,
                                  # so a killed driver resumes every trial it had started.
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )


def run_search(cfg: HarmoniaConfig, *, resume: bool = False, progress: bool = True,
               ensemble_score: EnsembleScore | None = None) -> SearchResult:
    """The whole search stage; `cfg` must be resolved (absolute paths). `ensemble_score`: the greedy rule
    that `search.objective: ensemble` scores trials with (the app layer passes the ensemble stage's)."""
    # Every input is checked before any trial starts: space, tracking server and dataset before Ray, then
    # the features (a corrupt audio file found while computing them stops here, the cache intact).
    validate_overrides(cfg.space, cfg.task, cfg.features)
    tracking.check_reachable(cfg.tracking.uri)
    ds = load_data(cfg, progress=progress)
    fold_of = _check_cv_folds(cfg, ds)
    # Ray starts before the features load: its prestarted workers import torch and mlflow meanwhile.
    connect(cfg.search.address)
    # Above features.memory_budget_mb each kind is a small handle to memory-mapped files (feature_store.py).
    feature_sets = load_feature_sets(ds, cfg.features, search_kinds(cfg), progress=progress,
                                     unlabeled=semi_supervised_requested(cfg.space))
    fs = open_feature_set(next(iter(feature_sets.values())))  # clip ids and targets are the same in every kind's
    prepare_client(cfg.search.storage_path, feature_sets)  # ray:// only: storage_path shared with the head
    exp_id = tracking.ensure_experiment(cfg.tracking.uri, cfg.name, cfg.tracking.artifacts)
    tracking.retry(lambda: tracking.client(cfg.tracking.uri).set_experiment_tag(
        exp_id, "mlflow.note.content", experiment_description(cfg)))
    path = Path(cfg.search.storage_path) / cfg.name
    search_run_id = _search_run(cfg, exp_id, fs, ds.events if ds.has_strong else None, path / SEARCH_STATE, resume,
                                groups=source_groups(ds.clips))
    s = cfg.search
    ctx = TrialContext(cfg.tracking.uri, exp_id, search_run_id, s.max_epochs, cfg.train.patience,
                       s.metric, cfg.train.seed, max(1, int(s.resources.cpu)), cfg.task,
                       scheduler_milestones(min(s.grace_period, s.max_epochs), s.reduction_factor, s.max_epochs),
                       cfg.train.snapshots, cv_folds=len(set(fold_of.values())) if fold_of else cfg.train.cv_folds,
                       fold_of=tuple(fold_of.items()))
    library = ensemble_library(cfg, exp_id, search_run_id, fs, resume, ensemble_score, progress)  # search.objective: ensemble
    if library is not None:
        ctx = replace(ctx, library_actor=library.name)
    c = tracking.client(cfg.tracking.uri)
    status = "FAILED"
    try:
        with progress_bar(f"search {cfg.name}", s.num_samples, enabled=progress) as bar, relay_progress(bar) as advance:
            callbacks = [MlflowRunCloser(cfg.tracking.uri, exp_id), ProgressCallback(s.num_samples, s.metric, advance),
                         FinalTrialErrors(), TrialRunNamer(cfg.tracking.uri, exp_id)]
            if library is not None:
                callbacks.append(library.feeder)
            tuner = build_tuner(cfg, feature_sets, ctx, callbacks, resume)
            with trial_actors_on_warm_workers(local=s.address is None), only_json_result_logger():
                results = tuner.fit()
        close_orphans(c, exp_id, search_run_id)
        errors = [error_reason(r.error) for r in results if r.error is not None]
        status = "FAILED" if len(results) and len(errors) == len(results) else "FINISHED"
    finally:
        tracking.retry(lambda: c.set_terminated(search_run_id, status))
    if status == "FAILED":
        summary = failure_summary(cfg.name, errors)
        tracking.retry(lambda: c.set_tag(search_run_id, "harmonia.error", summary[:5000]))
        raise SearchFailed(summary)
    table = trials_table(results, s.metric)
    if len(table):
        best = table.iloc[0]
        tracking.log_metrics(c, search_run_id, {f"best_valid_{s.metric}": float(best["score"])}, step=0)
    return SearchResult(cfg.name, exp_id, search_run_id, str(path), table)


def experiment_description(cfg: HarmoniaConfig) -> str:
    """The experiment's description in MLflow: what is searched, on what, and how its runs are named."""
    from harmonia.spaces.compose import describe_space

    arch = next(v for _, n, v in describe_space(cfg.space, cfg.task, cfg.features) if n == "arch")
    return (f"harmonia search `{cfg.name}`: task {cfg.task}, data {cfg.data.root}, {cfg.search.num_samples} trials "
            f"(Optuna TPE + ASHA, up to {cfg.search.max_epochs} epochs), arch {arch}, ranked by valid_{cfg.search.metric}.\n\n"
            "Runs: tag harmonia.kind = search (the search, with the labels), trial (named `ARCH-POOLING "
            "AUGMENTATIONS #N`, e.g. `crnn-attention mixup+tid #3`) or ensemble. Trial params, per-epoch metrics "
            "and predictions are on each trial run.")


def search_kinds(cfg: HarmoniaConfig) -> list[str]:
    """The feature kinds the space can sample (`space.features.kind`, or the config's `features.kind`),
    the config's first when it is one of them (trials resumed from before the kind was a param use it)."""
    kinds = feature_kinds(cfg.space, cfg.features.kind)
    return sorted(kinds, key=lambda k: k != cfg.features.kind)


def _check_cv_folds(cfg: HarmoniaConfig, ds) -> dict[str, int]:
    """`train.cv_folds` needs a valid split and at most one fold per clip of train ∪ valid; `predefined`
    needs the dataset's folds (ESC-50, UrbanSound8K) and returns clip id -> fold of train ∪ valid."""
    k = cfg.train.cv_folds
    if k == "predefined":
        return _predefined_folds(cfg, ds)
    if k < 2:
        return {}
    counts = dict(ds.clips["split"].value_counts())
    n = int(counts.get("train", 0) + counts.get("valid", 0))
    if not counts.get("valid") or k > n:
        raise ConfigError(f"train.cv_folds={k}: needs a valid split and 2 <= k <= the {n} clips of train ∪ valid "
                          f"in {cfg.data.root}")
    return {}


def _predefined_folds(cfg: HarmoniaConfig, ds) -> dict[str, int]:
    pool = ds.clips[ds.clips["split"].isin(["train", "valid"])]
    if "fold" not in ds.clips.columns or (pool["fold"] < 0).any():
        raise ConfigError(f"train.cv_folds=predefined: {cfg.data.root} (format {ds.format}) has no predefined folds "
                          "(ESC-50 and UrbanSound8K have them); set train.cv_folds to a number")
    fold_of = dict(zip(pool["clip_id"], pool["fold"].astype(int)))
    if len(set(fold_of.values())) < 2:
        raise ConfigError(f"train.cv_folds=predefined: train ∪ valid of {cfg.data.root} spans fewer than 2 folds")
    return fold_of


def close_orphans(c, exp_id: str, search_run_id: str) -> None:
    """After fit, trial runs of this search still RUNNING belong to attempts lost with a killed driver
    (Tune had not saved their state): mark them KILLED so none stays RUNNING forever."""
    flt = (f"tags.`{tracking.PARENT_TAG}` = '{search_run_id}' and tags.`{tracking.KIND_TAG}` = 'trial' "
           "and attributes.status = 'RUNNING'")
    for run in tracking.retry(lambda: c.search_runs([exp_id], filter_string=flt)):
        tracking.retry(lambda: c.set_tag(run.info.run_id, "harmonia.error",
                                         "attempt lost when the driver died before Tune saved its state"))
        tracking.retry(lambda: c.set_terminated(run.info.run_id, "KILLED"))


def trials_table(results, metric: str) -> pd.DataFrame:
    """One row per trial, best first: id, status, best valid score, epochs, MLflow run id, params."""
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({
            "trial_id": m.get("trial_id", ""),
            "status": "ERROR" if r.error else "TERMINATED",
            "score": m.get("best_valid_score", float("nan")),
            "epochs": m.get("training_iteration", 0),
            "run_id": m.get("mlflow_run_id", ""),
            "arch": (r.config or {}).get("arch", ""),
            "params": {k: v for k, v in (r.config or {}).items()},
        })
    df = pd.DataFrame(rows)
    ascending = not get_metric(metric).greater_is_better
    return df.sort_values("score", ascending=ascending, na_position="last").reset_index(drop=True) if len(df) else df


STATUS_SHORT = {"TERMINATED": "done", "ERROR": "error"}
"""Trial statuses as the top-trials table shows them (one word that fits its column)."""


def print_trials(table: pd.DataFrame, metric: str, top: int = 10) -> None:
    """The top trials in 80 columns: the augmentations each one used (+name) and the params that differ
    among them share one column that wraps between words; ids are cut to what tells the trials apart."""
    from rich.table import Table

    shown = table.head(top)
    rows = [r["params"] for _, r in shown.iterrows()]
    varying = sorted({k for k in set().union(*rows) if not k.startswith("aug.") and k != "arch"
                      and len({repr(p.get(k)) for p in rows}) > 1})
    short = {k: k.split(".", 1)[-1] for k in varying}
    label = {k: n if list(short.values()).count(n) == 1 else k for k, n in short.items()}  # mixup.alpha, mixup_lp.alpha
    t = Table(title=f"top trials by valid {metric}", caption="+name: an augmentation it used; "
              "run: its MLflow run id (first 8)", expand=True)
    for col in ("trial", "status", metric, "ep", "arch"):
        t.add_column(col, no_wrap=True)
    t.add_column("augmentations, params", ratio=1, overflow="fold")
    t.add_column("run", no_wrap=True)
    for (_, r), p in zip(shown.iterrows(), rows):
        augs = [f"+{k[4:]}" for k, v in sorted(p.items()) if k.startswith("aug.") and k.count(".") == 1 and v is True]
        params = [f"{label[k]}={_short(p[k])}" for k in varying if k in p]
        t.add_row(str(r["trial_id"]).rsplit("_", 1)[-1], STATUS_SHORT.get(r["status"], str(r["status"]).lower()),
                  f"{r['score']:.4f}", str(int(r["epochs"])), r["arch"], " ".join(augs or ["no-aug"]) + " " + " ".join(params),
                  r["run_id"][:8])
    console.print(t)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
