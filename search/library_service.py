"""The ensemble-aware objective (`search.objective: ensemble`): a named Ray actor holding the library.

The actor holds the valid predictions of finished trials and the current greedy ensemble (selection with
replacement, best prefix kept, scored on held-out folds of valid by the injected rule). Each epoch a trial sends its valid predictions
and gets its marginal gain: the score of the greedy ensemble over the library plus the trial minus the
current ensemble's score (Lévesque, Gagné & Sabourin 2016: optimize each new trial for its contribution to
the current ensemble). The greedy rule itself is the ensemble stage's: the app layer passes it in as `score` (an `EnsembleScore`,
`harmonia.ensembles.greedy.greedy_ensemble_score`), so the search stage never imports the ensemble stage.
The trial reports `valid_ensemble_gain` and `valid_objective` = the current
ensemble's score + gain, the score of the ensemble it would join (its own score while the library is empty),
which ASHA and Optuna rank. The driver feeds the actor each completed trial's predictions from MLflow
(`LibraryFeeder`), so on `--resume` a new actor is rebuilt from the finished trial runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ray import tune

from harmonia import tracking

OBJECTIVE_METRIC = "valid_objective"
GAIN_METRIC = "valid_ensemble_gain"

EnsembleScore = Callable[[np.ndarray, np.ndarray, int, str], float]
"""(predictions [M, N, C], labels [N, C], ensemble size, metric name) -> the greedy ensemble's score."""


def actor_name(search_run_id: str) -> str:
    return f"harmonia-library-{search_run_id}"


class LibraryState:
    """Finished trials' valid predictions [M, N, C] and the greedy ensemble over them (plain, testable)."""

    def __init__(self, y_valid: np.ndarray, metric: str, score: EnsembleScore, size: int = 20):
        self.y, self.metric, self.size, self.score_fn = np.asarray(y_valid, np.float32), metric, size, score
        self.keys: list[str] = []
        self.preds = np.zeros((0, *self.y.shape), np.float32)
        self.score = float("nan")  # the current ensemble's score; nan while the library is empty

    def ensemble_score(self, preds: np.ndarray) -> float:
        """Score of the greedy ensemble over `preds` (the injected rule)."""
        return float(self.score_fn(preds, self.y, self.size, self.metric))

    def add(self, key: str, preds: np.ndarray) -> int:
        """Add a finished trial's valid predictions (once per key) and refit the ensemble; returns the size."""
        if key not in self.keys:
            self.keys.append(key)
            self.preds = np.concatenate([self.preds, np.asarray(preds, np.float32)[None]])
            self.score = self.ensemble_score(self.preds)
        return len(self.keys)

    def gain(self, preds: np.ndarray) -> dict[str, float]:
        """{gain, objective, library}: the greedy ensemble's score with `preds` added minus the current one's,
        and the score with them (the trial's own score, gain 0, while the library is empty)."""
        from harmonia.metrics import get_metric

        p = np.asarray(preds, np.float32)
        if not self.keys:
            return {"gain": 0.0, "objective": float(get_metric(self.metric).fn(self.y, p)), "library": 0}
        with_trial = self.ensemble_score(np.concatenate([self.preds, p[None]]))
        return {"gain": with_trial - self.score, "objective": with_trial, "library": len(self.keys)}


class LibraryService(LibraryState):
    """`LibraryState` as a Ray actor (one per search, named `actor_name`), reachable locally and over ray://."""


def start_service(search_run_id: str, y_valid: np.ndarray, metric: str, score: EnsembleScore, size: int = 20):
    """The search's library actor (an existing one with that name is reused)."""
    import ray

    actor = ray.remote(num_cpus=0)(LibraryService)
    return actor.options(name=actor_name(search_run_id), get_if_exists=True).remote(y_valid, metric, score, size)


def valid_predictions(uri: str, run_id: str, clip_ids: list[str], classes: list[str]) -> np.ndarray:
    """A trial run's predictions/valid.parquet aligned to the search's valid clips and classes."""
    return tracking.predictions_array(tracking.read_table(uri, run_id, "predictions/valid.parquet"), clip_ids,
                                      classes, f"run {run_id} valid")


def rebuild(actor, uri: str, experiment_id: str, search_run_id: str, clip_ids: list[str], classes: list[str]) -> int:
    """Feed the actor every FINISHED trial run of the search (after a driver restart); returns the library size."""
    import ray

    c = tracking.client(uri)
    flt = (f"tags.`{tracking.PARENT_TAG}` = '{search_run_id}' and tags.`{tracking.KIND_TAG}` = 'trial' "
           "and attributes.status = 'FINISHED'")
    runs = tracking.retry(lambda: c.search_runs([experiment_id], filter_string=flt, order_by=["attributes.start_time ASC"]))
    size = 0
    for run in runs:
        try:
            preds = valid_predictions(uri, run.info.run_id, clip_ids, classes)
        except Exception:  # noqa: BLE001 - a finished run without predictions adds nothing
            continue
        size = ray.get(actor.add.remote(run.info.run_id, preds))
    return size


class LibraryFeeder(tune.Callback):
    """On the driver: each completed trial's valid predictions (from its MLflow run) go into the library.
    Holds the actor's name, not a handle: Tune pickles callbacks with its state, and a resumed driver
    starts a new actor under the same name."""

    def __init__(self, uri: str, name: str, clip_ids: list[str], classes: list[str]):
        self.uri, self.name, self.clip_ids, self.classes = uri, name, clip_ids, classes

    def on_trial_complete(self, iteration, trials, trial, **info):
        import ray

        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if not run_id:
            return
        try:
            preds = valid_predictions(self.uri, run_id, self.clip_ids, self.classes)
        except Exception:  # noqa: BLE001 - a trial stopped before its first logged epoch has no predictions
            return
        ray.get(ray.get_actor(self.name).add.remote(run_id, preds))


class EnsembleLibrary:
    """What the search driver holds while trials run: the actor (kept referenced, so it lives), its name
    and the callback that feeds it."""

    def __init__(self, actor, name: str, feeder: LibraryFeeder):
        self.actor, self.name, self.feeder = actor, name, feeder


def ensemble_library(cfg, experiment_id: str, search_run_id: str, fs, resume: bool, score: EnsembleScore | None,
                     progress: bool = False) -> EnsembleLibrary | None:
    """With `search.objective: ensemble` the search's library actor, rebuilt from MLflow when resuming;
    None for `single`. ConfigError for a metric the greedy ensemble cannot score, cross-validated trials, or
    no `score` rule given by the caller."""
    from harmonia.config import ConfigError
    from harmonia.metrics import get_metric
    from harmonia.progress import console

    s = cfg.search
    if s.objective != "ensemble":
        return None
    if get_metric(s.metric).inputs != "scores":
        raise ConfigError(f"search.objective: ensemble needs a clip-score search.metric (mAP, auc, f1, accuracy, "
                          f"log_loss), got {s.metric!r}")
    if cfg.train.cross_validated:
        raise ConfigError("search.objective: ensemble is not combinable with train.cv_folds (the library holds "
                          "valid predictions; cross-validated trials report out-of-fold ones)")
    if score is None:
        raise ConfigError("search.objective: ensemble needs the ensemble stage's greedy rule: run it with `harmonia "
                          "search`, or pass run_search(..., ensemble_score=harmonia.ensembles.greedy."
                          "greedy_ensemble_score)")
    valid = fs.splits["valid"]
    name = actor_name(search_run_id)
    actor = start_service(search_run_id, valid.y, s.metric, score, cfg.ensemble.size)
    if resume:
        n = rebuild(actor, cfg.tracking.uri, experiment_id, search_run_id, list(valid.clip_ids), list(fs.classes))
        if progress:
            console.print(f"ensemble library rebuilt from MLflow: {n} finished trials")
    return EnsembleLibrary(actor, name, LibraryFeeder(cfg.tracking.uri, name, list(valid.clip_ids), list(fs.classes)))
