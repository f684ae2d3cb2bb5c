"""Issue 13: the ensemble-aware objective: the library actor's marginal gain, its rebuild from MLflow, a search."""

from __future__ import annotations

import numpy as np
import pytest

from harmonia import tracking
from harmonia.ensembles.greedy import greedy_ensemble_score


def _preds(seed: int, m: int, n: int = 40, c: int = 3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.4).astype(np.float32)
    noise = np.linspace(1.8, 1.0, m)[:, None, None] * rng.standard_normal((m, n, c))
    return y, (1 / (1 + np.exp(-((2 * y - 1)[None] + noise)))).astype(np.float32)


def _hand_map(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(np.mean([average_precision_score(y[:, k], p[:, k]) for k in range(y.shape[1])]))


def test_reported_gain_equals_the_gain_computed_by_hand_from_the_librarys_ensemble():
    from harmonia.ensembles.honest import clip_folds
    from harmonia.ensembles.selection import ensemble_selection
    from harmonia.search.library_service import LibraryState

    y, p = _preds(0, 5)
    state = LibraryState(y, "mAP", greedy_ensemble_score, size=6)
    first = state.gain(p[0])  # empty library: the trial's own score, no gain
    assert first["gain"] == 0.0 and first["objective"] == pytest.approx(_hand_map(y, p[0]))
    for i in range(4):
        state.add(f"r{i}", p[i])
    state.add("r0", p[0])  # a key is added once
    assert state.keys == ["r0", "r1", "r2", "r3"]
    fold = clip_folds(y, None, k=5, seed=0)  # the ensemble is scored on folds it was not selected on

    def held_out(preds):
        pooled = np.zeros(y.shape)
        for k in np.unique(fold):
            h = fold == k
            pooled[h] = np.tensordot(ensemble_selection(preds[:, ~h], y[~h], size=6, metric="mAP").weights,
                                     preds[:, h], axes=1)
        return _hand_map(y, pooled)

    assert len(np.unique(fold)) == 5
    hand = held_out(p) - held_out(p[:4])
    got = state.gain(p[4])
    assert got["library"] == 4
    assert got["gain"] == pytest.approx(hand, abs=1e-9)
    assert got["objective"] == pytest.approx(held_out(p), abs=1e-9)
    insample = _hand_map(y, np.tensordot(ensemble_selection(p, y, size=6, metric="mAP").weights, p, axes=1))
    assert got["objective"] < insample  # honest, not the in-sample score of weights fitted on the same clips
    assert state.gain(p[1])["gain"] == pytest.approx(0.0, abs=1e-12)  # a member already in the library adds nothing new


def test_library_actor_answers_like_the_state_and_is_rebuilt_from_mlflow(searched):
    import ray

    from harmonia.tracking import read_table
    from harmonia.search.library_service import LibraryState, actor_name, rebuild, start_service, valid_predictions

    cfg, result = searched
    labels = read_table(cfg.tracking.uri, result.search_run_id, "labels/valid.parquet")
    classes = [k for k in labels.columns if k != "clip_id"]
    ids, y = list(labels["clip_id"].astype(str)), labels[classes].to_numpy(np.float32)
    probe = np.random.default_rng(1).random(y.shape).astype(np.float32)
    actor = start_service("test-rebuild", y, "mAP", greedy_ensemble_score, 5)
    n = rebuild(actor, cfg.tracking.uri, result.experiment_id, result.search_run_id, ids, classes)
    c = tracking.client(cfg.tracking.uri)
    finished = c.search_runs([result.experiment_id], filter_string=(
        f"tags.`{tracking.PARENT_TAG}` = '{result.search_run_id}' and tags.`{tracking.KIND_TAG}` = 'trial' "
        "and attributes.status = 'FINISHED'"))
    assert n == len(finished) >= 2
    local = LibraryState(y, "mAP", greedy_ensemble_score, 5)  # the same trials' predictions, read here
    for run in sorted(finished, key=lambda r: r.info.start_time):
        local.add(run.info.run_id, valid_predictions(cfg.tracking.uri, run.info.run_id, ids, classes))
    remote = ray.get(ray.get_actor(actor_name("test-rebuild")).gain.remote(probe))
    assert remote == pytest.approx(local.gain(probe))
    ray.kill(actor)
    again = start_service("test-rebuild", y, "mAP", greedy_ensemble_score, 5)  # a restarted driver: a new actor, the same state from MLflow
    assert rebuild(again, cfg.tracking.uri, result.experiment_id, result.search_run_id, ids, classes) == n
    assert ray.get(again.gain.remote(probe)) == pytest.approx(local.gain(probe))
    ray.kill(again)


@pytest.mark.slow
def test_search_with_the_ensemble_objective_reports_gains(ray_local, tmp_path):
    from harmonia.search.tuner import run_search
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, name="ens-objective", objective="ensemble", num_samples=4, max_concurrent=1)
    result = run_search(cfg, progress=False, ensemble_score=greedy_ensemble_score)
    c = tracking.client(cfg.tracking.uri)
    runs = c.search_runs([result.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'",
                         order_by=["attributes.start_time ASC"])
    assert len(runs) == 4
    for run in runs:
        assert {"valid_objective", "valid_ensemble_gain", "valid_mAP"} <= set(run.data.metrics)
    first = runs[0].data.metrics
    assert first["ensemble_library_size"] == 0 and first["valid_objective"] == pytest.approx(first["valid_mAP"])
    later = [r.data.metrics for r in runs[1:]]
    assert any(m["ensemble_library_size"] >= 1 for m in later)
    # once the library holds a trial, the objective is the ensemble's score, at least the current ensemble's
    assert all(m["valid_objective"] - m["valid_ensemble_gain"] > 0 for m in later)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_library_actor_is_rebuilt_from_mlflow_when_a_killed_driver_resumes(tmp_path):
    """The driver (and its local Ray, the actor with it) SIGKILLed while trial 2 of 3 runs, then --resume:
    the resumed trial's epochs see a library holding the trial that finished before the kill."""
    import tempfile
    import time
    import uuid

    from mlflow.tracking import MlflowClient

    from harmonia.data.synth import synthesize
    from tests.test_resume import (SLOW_SPACE, _mlflow_state, driver_env, kill_marked, kill_session, start_driver,
                                   store_ready, tail, wait_driver, write_config)

    synthesize(tmp_path / "shared" / "data", clips=60, seconds=2.0, seed=1, progress=False)
    epochs, name = 5, "objective-resume"
    config = write_config(tmp_path, name, data=tmp_path / "shared", space=SLOW_SPACE, patience=epochs,
                          num_samples=3, max_concurrent=1, max_epochs=epochs, grace_period=epochs, objective="ensemble")
    db, marker = tmp_path / "mlruns.db", uuid.uuid4().hex
    env, log = driver_env(marker, tempfile.mkdtemp(prefix="hre-", dir="/tmp")), tmp_path / "driver.log"
    proc = start_driver(["search", config], env, log)
    try:
        c, deadline, killed = None, time.monotonic() + 400, False
        while time.monotonic() < deadline and not killed:
            assert proc.poll() is None, f"the search ended before it could be interrupted:\n{tail(log)}"
            c = c or (MlflowClient(f"sqlite:///{db}") if store_ready(db, name) else None)
            state = _mlflow_state(c, name) if c else {}
            if any(s["status"] == "FINISHED" for s in state.values()) and any(
                    s["status"] == "RUNNING" and 2 <= len(s["steps"]) < epochs for s in state.values()):
                kill_session(proc)
                killed = True
            time.sleep(0.3)
        assert killed, f"no moment with a finished and a running trial:\n{tail(log)}"
        proc = start_driver(["search", config, "--resume"], env, log)
        wait_driver(proc, log, timeout=400)
    finally:
        kill_session(proc)
        kill_marked(marker)
    assert "ensemble library rebuilt from MLflow: 1 finished trials" in log.read_text(), tail(log)
    c = MlflowClient(f"sqlite:///{db}")
    runs = sorted(_mlflow_state(c, name).values(), key=lambda s: s["history"][0][1])
    sizes = [[m.value for m in c.get_metric_history(r["run_id"], "ensemble_library_size")] for r in runs]
    assert sizes[0] and max(sizes[0]) == 0  # the first trial met an empty library
    assert sizes[1][-1] >= 1, sizes  # the interrupted trial, after the resume: the rebuilt library
