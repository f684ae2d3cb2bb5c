"""Trial actors land on the workers Ray prestarted, which have already imported what a trial needs."""

from __future__ import annotations

import time


def _probe(config):
    import os
    import sys

    from ray import tune
    import psutil  # Ray workers have the copy Ray bundles

    tune.report({"born": psutil.Process(os.getpid()).create_time(),
                 "preloaded": float("mlflow.store.tracking.sqlalchemy_store" in sys.modules)})


def _fit(tmp_path, name: str):
    from ray import tune

    return tune.Tuner(_probe, tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
                      run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0)).fit()


def test_trial_actor_uses_a_prestarted_preloaded_worker(ray_local, tmp_path):
    from harmonia.search.warm_workers import trial_actors_on_warm_workers

    started = time.time()
    with trial_actors_on_warm_workers(local=True) as patched:
        result = _fit(tmp_path, "warm")[0]
    assert patched
    assert result.metrics["preloaded"] == 1.0
    assert result.metrics["born"] < started, "the trial got a worker started for it, not a prestarted one"


def test_cluster_fit_keeps_tunes_actor_env(ray_local):
    from ray.tune.execution import class_cache

    original = class_cache._ActorClassCache.get
    from harmonia.search.warm_workers import trial_actors_on_warm_workers

    with trial_actors_on_warm_workers(local=False) as patched:
        assert not patched
        assert class_cache._ActorClassCache.get is original
    assert class_cache._ActorClassCache.get is original


def test_nested_fits_patch_once_and_restore_tunes_method(ray_local):
    from ray.tune.execution import class_cache

    from harmonia.search.warm_workers import trial_actors_on_warm_workers

    original = class_cache._ActorClassCache.get
    with trial_actors_on_warm_workers(local=True) as outer:
        with trial_actors_on_warm_workers(local=True) as inner:
            assert outer and not inner
        assert class_cache._ActorClassCache.get is not original  # the outer fit still has it
    assert class_cache._ActorClassCache.get is original


def test_tune_result_loggers_setting_is_restored_after_fit(monkeypatch):
    import os

    from harmonia.search.tuner import only_json_result_logger

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    with only_json_result_logger():
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
