"""Trials that start on warm workers: the ~5 s of imports a trial needs are paid before it is scheduled.

Ray prestarts one worker per CPU when a local instance starts; with `preload_python_modules` each of them
imports torch, mlflow's SQL store and the trial module in the background, while the driver loads the
dataset and features. Two things would keep Tune's trial actors off those workers: `ray.init` with a
job `runtime_env`, and the `runtime_env` (env vars) Tune gives every trainable actor; Ray places an
actor that has a runtime_env only on a worker started for it. Locally, workers inherit this process's
environment anyway, so both are dropped there; on a cluster nothing changes.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from harmonia.search.cluster import loopback_node

PRELOAD_MODULES = ("ray.tune", "harmonia.trainables.trial", "mlflow.store.tracking.sqlalchemy_store")
SYSTEM_CONFIG = {
    "preload_python_modules": list(PRELOAD_MODULES),
    "enable_worker_prestart": True,
    # The default makes `ray.init` wait until the prestarted workers have registered, i.e. preloaded.
    "prestart_worker_first_driver": False,
}


def _tune_env_vars() -> dict[str, str]:
    """The env vars Tune would set on its trial actors, as this process has them."""
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

    return {**DEFAULT_ENV_VARS, **{k: os.environ[k] for k in ENV_VARS_TO_PROPAGATE if k in os.environ}}


@contextmanager
def trial_actors_on_warm_workers(local: bool) -> Iterator[bool]:
    """While fitting on a local Ray this driver started, create trial actors without a runtime_env.

    Yields whether it did. Not done when an env var Tune propagates (credentials for a bucket, Train
    settings) was set after Ray started: the workers would not have it.
    """
    import ray
    from ray.tune.execution import class_cache

    started = _WORKER_ENV.get("env")
    wanted = _tune_env_vars()
    ours = started is not None and _WORKER_ENV.get("session") == _session()  # not a later ray.init elsewhere
    if not local or not ours or any(started.get(k) != v for k, v in wanted.items()) \
            or not _PATCH_LOCK.acquire(blocking=False):  # a fit already running in this process keeps it
        yield False
        return
    original = class_cache._ActorClassCache.get

    def get(self, trainable_cls):
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    class_cache._ActorClassCache.get = get
    try:
        yield True
    finally:
        class_cache._ActorClassCache.get = original
        _PATCH_LOCK.release()


_WORKER_ENV: dict[str, object] = {}
_PATCH_LOCK = threading.Lock()


def _session() -> str | None:
    """The running Ray session's name (None without Ray): tells our local instance from a later one."""
    import ray

    if not ray.is_initialized():
        return None
    node = getattr(ray._private.worker.global_worker, "node", None)  # the driver's node: its session folder
    return getattr(node, "session_name", None)


def init_local(num_cpus: int) -> None:
    """`ray.init` of a local instance whose prestarted workers preload the trial's imports."""
    import ray

    # Tune's default trial-actor env (checked against Tune's own at fit) plus quiet workers.
    for k, v in {"PL_DISABLE_FORK": "1", "PYTHONWARNINGS": "ignore"}.items():
        os.environ.setdefault(k, v)
    with loopback_node():
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False,
                 _system_config=SYSTEM_CONFIG)
    _WORKER_ENV.update(env=dict(os.environ), session=_session())
