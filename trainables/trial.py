"""The Ray Tune function a trial runs: Trainer + one MLflow run + a checkpoint per epoch."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harmonia import tracking
from harmonia.featureset import FeatureSet, pick_feature_set
from harmonia.trainables.cross_validation import CrossValidatedTrainer, cv_member_files, trainer_factory
from harmonia.trainables.artifacts import member_config, prediction_files, weights_bytes
from harmonia.trainables.costs import trainer_costs
from harmonia.trainables.failures import TrialFailed, failure_reason, is_deterministic
from harmonia.trainables.naming import trial_run_name
from harmonia.trainables.snapshots import INDEX_FILE, SnapshotKeeper, snapshot_prefix
from harmonia.trainables.training import Trainer

STATE_FILE = "state.pt"
SNAPSHOTS_FILE = "snapshots.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class TrialContext:
    """What the driver passes to every trial besides the sampled params (small, picklable)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    max_epochs: int
    patience: int
    metric: str
    seed: int
    num_threads: int
    task: str = "tagging"
    log_epochs: frozenset[int] = frozenset()  # epochs after which the scheduler may stop the trial
    snapshots: int = 0  # keep the predictions of this many best epochs as extra members
    cv_folds: int = 0  # k >= 2: k fold models on train ∪ valid, out-of-fold predictions (cross_validation.py)
    fold_of: tuple[tuple[str, int], ...] = ()  # train.cv_folds: predefined: (clip id, the dataset's fold) pairs
    library_actor: str = ""  # search.objective: ensemble: the named library actor (search/library_service.py)


def scheduler_milestones(grace_period: int, reduction_factor: int, max_epochs: int) -> frozenset[int]:
    """The epochs at which ASHA may stop a trial (grace · rf^k): the best model must be logged by then."""
    out, t = set(), grace_period
    while t < max_epochs:
        out.add(t)
        t *= reduction_factor
    return frozenset(out | {max_epochs})


def member_files(trainer: Trainer, state: dict, epoch: int, valid: tuple[np.ndarray, np.ndarray] | None,
                 prefix: str = "") -> dict:
    """`{prefix}model/` (weights, config) and `{prefix}predictions/` (valid and test, clip and frame level)
    of the model with weights `state`; valid outputs are recomputed when not given (after a restore)."""
    if isinstance(trainer, CrossValidatedTrainer):  # k fold weights, oof.parquet (cross_validation.py)
        return cv_member_files(trainer, state, epoch, valid, prefix)
    data = trainer.data
    model = trainer.model_with(state)
    valid_probs, valid_frames = valid or trainer.predict("valid", model=model)
    hop = data.hop_seconds * getattr(trainer.model, "time_pool", 1)
    files = {f"{prefix}model/model.safetensors": weights_bytes(state),
             f"{prefix}model/config.json": tracking.json_bytes(member_config(trainer.params, data, epoch)),
             **prediction_files(prefix, "valid", data.splits["valid"].clip_ids, valid_probs, valid_frames,
                                data.classes, hop)}
    if "test" in data.splits:
        test_probs, test_frames = trainer.predict("test", model=model)
        files.update(prediction_files(prefix, "test", data.splits["test"].clip_ids, test_probs, test_frames,
                                      data.classes, hop))
    return files


def log_best(c, run_id: str, trainer: Trainer, snapshots: SnapshotKeeper | None = None) -> None:
    """Weights, config and valid/test predictions of the best epoch so far, and of the kept epoch
    snapshots not logged yet, as run artifacts."""
    files = member_files(trainer, trainer.best_state, trainer.best_epoch, trainer.best_valid)
    if snapshots is not None and snapshots.k > 0:
        for snap in snapshots.pending:
            if snap.epoch != trainer.best_epoch:  # the best epoch's files are the trial's own model/, predictions/
                files.update(member_files(trainer, snap.state, snap.epoch, snap.valid, snapshot_prefix(snap.epoch)))
        files[INDEX_FILE] = tracking.json_bytes({"epochs": snapshots.epochs, "best_epoch": trainer.best_epoch,
                                                 "scores": {str(s.epoch): s.score for s in snapshots.kept}})
    tracking.log_files(c, run_id, files)
    for snap in (snapshots.pending if snapshots is not None else []):
        snap.logged = snap.epoch != trainer.best_epoch  # a best epoch overtaken later is logged then


def start_run(c, ctx: TrialContext, params: dict, run_id: str | None) -> str:
    """The trial's MLflow run: a new one, or the one a restored checkpoint names (set RUNNING again)."""
    from ray import tune
    import ray

    tctx = tune.get_context()
    if run_id is None:
        # A retried attempt that crashed before its first checkpoint continues the same run.
        flt = f"tags.`{tracking.TRIAL_ID_TAG}` = '{tctx.get_trial_id()}'"
        if ctx.parent_run_id:
            flt += f" and tags.`{tracking.PARENT_TAG}` = '{ctx.parent_run_id}'"
        found = tracking.retry(lambda: c.search_runs([ctx.experiment_id], filter_string=flt, max_results=1))
        run_id = found[0].info.run_id if found else None
    if run_id is not None:
        tracking.retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    tags = {
        tracking.KIND_TAG: "trial",
        tracking.TRIAL_ID_TAG: tctx.get_trial_id(),
        "harmonia.trial_name": tctx.get_trial_name(),
        tracking.NODE_TAG: ray.get_runtime_context().get_node_id(),
    }
    if ctx.parent_run_id:
        tags[tracking.PARENT_TAG] = ctx.parent_run_id
    # numbered by the driver (search/naming.py) once known; Tune's trial name stays in the harmonia.trial_name tag
    name = trial_run_name(params, tctx.get_trial_id())
    run = tracking.retry(lambda: c.create_run(ctx.experiment_id, run_name=name, tags=tags))
    tracking.log_params(c, run.info.run_id, params)
    return run.info.run_id


def fail_run(c, run_id: str | None, err: Exception) -> None:
    """Tag the trial's run with the reason and mark it FAILED; raise `TrialFailed` (never retried) for the
    trial's own errors, the original error (retried) for infrastructure ones."""
    reason = failure_reason(err)
    if run_id is not None:
        tracking.retry(lambda: c.set_tag(run_id, "harmonia.error", reason))
        tracking.retry(lambda: c.set_terminated(run_id, "FAILED"))
    if is_deterministic(err):
        raise TrialFailed(reason) from err
    raise err


def ensemble_objective(actor: str, valid_probs: np.ndarray) -> dict[str, float]:
    """The named library actor's answer for these valid predictions: the score of the ensemble they would
    join (`valid_objective`) and their marginal gain over the current one (`valid_ensemble_gain`)."""
    import ray

    got = ray.get(ray.get_actor(actor).gain.remote(valid_probs))
    return {"valid_objective": float(got["objective"]), "valid_ensemble_gain": float(got["gain"]),
            "ensemble_library_size": float(got["library"])}


def harmonia_trial(config: dict, data: FeatureSet, ctx: TrialContext) -> None:
    """Train one sampled config; report once per epoch with a checkpoint that a restored trial resumes.

    The run's artifacts (best epoch, kept epoch snapshots) are logged where the trial can end and the
    run is ended before the final report, because code after a report that ASHA stops never runs
    (STACK.md, MLflow).
    """
    from ray import tune

    torch.set_num_threads(ctx.num_threads)
    c = tracking.client(ctx.tracking_uri)
    params = dict(config)
    data = pick_feature_set(data, params)  # kind → FeatureSet from the search: the sampled features.kind's
    make_trainer = trainer_factory(ctx.cv_folds, ctx.seed, dict(ctx.fold_of) or None)  # Trainer, or k fold Trainers (cross_validation.py)
    try:
        trainer = make_trainer(params, data, max_epochs=ctx.max_epochs, patience=ctx.patience, metric=ctx.metric,
                               seed=ctx.seed + int(params.get("seed", 0)), task=ctx.task)
    except Exception as err:  # a config the model or an augmentation refuses: the trial's own error
        fail_run(c, start_run(c, ctx, params, None) if is_deterministic(err) else None, err)
    snapshots = SnapshotKeeper(ctx.snapshots, trainer.sign)
    run_id = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / STATE_FILE, weights_only=True))
            if (Path(d) / SNAPSHOTS_FILE).is_file():
                snapshots.load_state_dict(torch.load(Path(d) / SNAPSHOTS_FILE, weights_only=True))
            run_id = json.loads((Path(d) / META_FILE).read_text())["run_id"]
    run_id = start_run(c, ctx, params, run_id)
    pending = trainer.epoch > 0  # restored: the best so far may not have been logged before the failure
    costs_logged = False
    try:
        while not trainer.done:
            result = trainer.run_epoch()
            if ctx.library_actor:  # valid_objective, valid_ensemble_gain: the trial's worth to the current ensemble
                result.metrics.update(ensemble_objective(ctx.library_actor, trainer.last_valid[0]))
            tracking.log_metrics(c, run_id, result.metrics, step=result.epoch)
            kept = snapshots.offer(result.epoch, result.metrics[f"valid_{ctx.metric}"], trainer.model.state_dict(),
                                   trainer.last_valid)
            pending = pending or result.improved or kept
            # Artifacts of the best epoch are logged where the trial can end (a scheduler milestone or
            # its last epoch), not after every improvement: test predictions cost a pass over test.
            if pending and (result.done or result.epoch in ctx.log_epochs or not ctx.log_epochs):
                log_best(c, run_id, trainer, snapshots)
                pending = False
                if not costs_logged:  # once, where the trial can end: the architecture's cost (trainables/costs.py)
                    tracking.log_metrics(c, run_id, trainer_costs(trainer), step=result.epoch)
                    costs_logged = True
            if result.done:
                tracking.retry(lambda: c.set_terminated(run_id, "FINISHED"))
            with tempfile.TemporaryDirectory() as d:
                torch.save(trainer.state_dict(), Path(d) / STATE_FILE)
                if snapshots.k:
                    torch.save(snapshots.state_dict(), Path(d) / SNAPSHOTS_FILE)
                (Path(d) / META_FILE).write_text(json.dumps({"run_id": run_id, "epoch": result.epoch}))
                tune.report({**result.metrics, "epoch": result.epoch, "mlflow_run_id": run_id},
                            checkpoint=tune.Checkpoint.from_directory(d))
    except Exception as err:
        fail_run(c, run_id, err)
