"""Overhead of `harmonia search` over calling the training loop directly, on the same fixed configs.

Runs N identical trials (every parameter fixed by config overrides, ASHA off) three ways in one run:
direct `Trainer` calls in this process (the baseline), `harmonia search` with one trial at a time,
and `harmonia search` with two concurrent trials. Prints wall times and ratios.

    python benchmarks/search_overhead.py [--trials 4] [--epochs 6] [--clips 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from harmonia.config import parse_config
from harmonia.tracking import ensure_experiment
from harmonia.featureset import prepare
from harmonia.search.cluster import connect
from harmonia.search.tuner import run_search
from harmonia.trainables.training import Trainer

BASE = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 16, "crnn.gru_size": 32, "crnn.dropout": 0.1,
        "crnn.pooling": "attention", "lr": 3e-3, "batch_size": 32, "aug.mixup": False, "aug.tid": False}


def pinned(base: dict) -> dict:
    """`base` plus every other parameter the space would sample, fixed (augmentations off): the search and
    the direct loop then train exactly the same configs."""
    from harmonia.spaces import define_by_run
    from harmonia.spaces.core import RecordingTrial

    trial = RecordingTrial()
    constants = define_by_run(base)(trial)
    return {**constants, **trial.values}


FIXED = pinned(BASE)


def config(base: Path, name: str, trials: int, epochs: int, concurrent: int, clips: int):
    return parse_config({
        "name": name,
        "data": {"root": str(base / "data"), "synth": {"root": str(base / "data"), "clips": clips, "seconds": 4.0,
                                                    "seed": 0}},
        "features": {"cache_dir": str(base / "cache")},
        "tracking": {"uri": f"sqlite:///{base}/mlruns.db", "artifacts": str(base / "mlartifacts")},
        "search": {"num_samples": trials, "max_concurrent": concurrent, "max_epochs": epochs,
                   "grace_period": epochs, "storage_path": str(base / "ray_results")},
        "train": {"patience": epochs + 1},
        "space": FIXED,
    }).resolved(base)


def direct(cfg, trials: int) -> float:
    _, fs = prepare(cfg, progress=False)
    torch.set_num_threads(1)
    t = time.perf_counter()
    for _ in range(trials):
        trainer = Trainer(dict(FIXED), fs, max_epochs=cfg.search.max_epochs, patience=cfg.train.patience,
                          seed=cfg.train.seed)
        while not trainer.done:
            trainer.run_epoch()
    return time.perf_counter() - t


def searched(cfg) -> tuple[float, float, float]:
    """(wall time of the search, seconds until the first trial's MLflow run started, seconds after the
    last one ended)."""
    from harmonia import tracking

    t0, t = time.time(), time.perf_counter()
    result = run_search(cfg, progress=False)
    wall = time.perf_counter() - t
    assert len(result.trials) == cfg.search.num_samples
    for params in result.trials["params"]:  # the search trained exactly the configs the direct loop does
        assert {k: params.get(k) for k in FIXED} == FIXED, params
    c = tracking.client(cfg.tracking.uri)
    infos = [c.get_run(r).info for r in result.trials["run_id"]]
    first = min(i.start_time for i in infos) / 1000
    last = max(i.end_time for i in infos) / 1000
    return wall, first - t0, t0 + wall - last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--clips", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        serial = config(base, "serial", args.trials, args.epochs, 1, args.clips)
        prepare(serial, progress=False)  # dataset + feature cache, shared by all three
        connect(None, num_cpus=2)  # Ray start-up is paid once per session, not per search
        ensure_experiment(serial.tracking.uri, "warm-up", serial.tracking.artifacts)  # one-off store creation
        # Direct runs before and after the searches: their mean cancels slow drifts in machine load.
        before = direct(serial, args.trials)
        t_serial, start_serial, tail_serial = searched(serial)
        t_conc, start_conc, _ = searched(config(base, "concurrent", args.trials, args.epochs, 2, args.clips))
        after = direct(serial, args.trials)
        t_direct = (before + after) / 2
    print(f"{args.trials} trials × {args.epochs} epochs, {args.clips} clips")
    print(f"direct training loop          {t_direct:7.1f} s   (before {before:.1f} s, after {after:.1f} s)")
    print(f"harmonia search, 1 at a time  {t_serial:7.1f} s   ratio {t_serial / t_direct:.3f}  (target ≤ 1.15)"
          f"   of which {start_serial:.1f} s before the first trial's run started and {tail_serial:.1f} s after "
          "the last one ended")
    print(f"  trials only (first run start to last run end): ratio "
          f"{(t_serial - start_serial - tail_serial) / t_direct:.3f}")
    print(f"harmonia search, 2 at a time  {t_conc:7.1f} s   speed-up over 1 at a time {t_serial / t_conc:.2f}×")


if __name__ == "__main__":
    main()
