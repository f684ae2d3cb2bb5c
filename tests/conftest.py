"""Shared fixtures: one local Ray per test session, a tiny synthetic dataset, one real search."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")



def load_script(path: Path):
    """A script of benchmarks/ or infra/ (folders that are no packages) as a module named after its file;
    registered in sys.modules first, as dataclasses need."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance (about 5 s to start), shared by every test that runs trials."""
    import ray

    from harmonia.search.cluster import connect

    connect(None, num_cpus=2)  # as `harmonia search` starts it: workers preload the trial's imports
    yield ray
    ray.shutdown()


def tiny_config(base: Path, name: str = "tiny", **search):
    """A config small enough for CI: 60 clips of 2 s, 32 mels, a small CRNN, 3 epochs."""
    from harmonia.config import parse_config

    cfg = parse_config({
        "name": name,
        "data": {"root": str(base / "data"), "synth": {"root": str(base / "data"), "clips": 60, "seconds": 2.0,
                                                    "seed": 1}},
        "features": {"n_mels": 32, "hop_length": 320, "n_fft": 512, "cache_dir": str(base / "cache")},
        "tracking": {"uri": f"sqlite:///{base}/mlruns.db", "artifacts": str(base / "mlartifacts")},
        "search": {"num_samples": 4, "max_concurrent": 2, "max_epochs": 3, "grace_period": 1,
                   "storage_path": str(base / "ray_results"), **search},
        "train": {"patience": 3},
        "space": {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": [8], "crnn.gru_size": [16], "batch_size": [16]},
    })
    return cfg.resolved(base)


@pytest.fixture(scope="session")
def searched(ray_local, tmp_path_factory):
    """One real 4-trial search on local Ray with a SQLite MLflow store; shared by the downstream tests."""
    from harmonia.search.tuner import run_search

    base = tmp_path_factory.mktemp("e2e")
    cfg = tiny_config(base)
    result = run_search(cfg, progress=False)
    return cfg, result
