"""Search for the ensemble vs for the single model: the same trial budget, `search.objective` single vs ensemble.

For each seed both searches run on the same synthetic set (shifted: each split from its own sources), then the
stage's bagged selection (its default recommendation) is fitted on valid; prints its test score, member count
and cost per clip for both objectives, and the means. Target (issue 13): the ensemble-aware search's ensemble
beats the single-objective one on test on average, with fewer or equally many members.

    python benchmarks/ensemble_aware_search.py [--seeds 3] [--trials 6] [--epochs 4] [--clips 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from harmonia.config import parse_config
from harmonia.data.synth import synthesize
from harmonia.ensembles.costs import ensemble_cost, member_costs
from harmonia.ensembles.library import clip_groups, collect
from harmonia.ensembles.methods import fit_method
from harmonia.metrics import get_metric
from harmonia.ensembles.greedy import greedy_ensemble_score
from harmonia.search.tuner import run_search


def config(base: Path, name: str, seed: int, objective: str, trials: int, epochs: int, clips: int):
    return parse_config({
        "name": name,
        "data": {"root": str(base / "data")},
        "features": {"n_mels": 32, "hop_length": 320, "n_fft": 512, "cache_dir": str(base / "cache")},
        "tracking": {"uri": f"sqlite:///{base}/mlruns.db", "artifacts": str(base / "mlartifacts")},
        "search": {"num_samples": trials, "max_concurrent": 1, "max_epochs": epochs, "grace_period": 2,
                   "storage_path": str(base / "ray_results"), "seed": seed, "objective": objective},
        "train": {"patience": epochs, "seed": seed},
        "space": {"arch": "crnn", "crnn.blocks": [2, 3], "crnn.channels": [8, 16], "crnn.gru_size": [16, 32],
                  "balanced_batches": False},
    }).resolved(base)


def recommended(uri: str, experiment: str, size: int = 20) -> dict[str, float]:
    lib = collect(uri, experiment, progress=False)
    fitted = fit_method("bagged_selection", lib.valid, lib.y_valid, "mAP", groups=clip_groups(lib, lib.valid_ids),
                        size=size)
    return {"test": float(get_metric("mAP").fn(lib.y_test, fitted.predict(lib.test))),
            "members": float((fitted.weights > 0).sum()), "cost_ms": ensemble_cost(fitted, member_costs(uri, lib))}


def gain_cost(sizes=(4, 16, 64, 256), n: int = 120, c: int = 10, size: int = 20, repeats: int = 3) -> None:
    """Time of one `gain` request (what each epoch of a trial waits for) by library size, on random predictions."""
    from harmonia.search.library_service import LibraryState

    rng = np.random.default_rng(0)
    y = (rng.random((n, c)) < 0.2).astype(np.float32)
    print(f"gain per epoch (valid {n} clips x {c} classes, ensemble size {size}):")
    for m in sizes:
        state = LibraryState(y, "mAP", greedy_ensemble_score, size)
        for i in range(m):
            state.add(f"r{i}", rng.random((n, c)).astype(np.float32))
        probe = rng.random((n, c)).astype(np.float32)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            state.gain(probe)
            times.append(time.perf_counter() - t)
        print(f"  library {m:4d}: {1000 * np.median(times):8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--gain-cost-only", action="store_true", help="only time the gain request by library size")
    args = ap.parse_args()
    gain_cost()
    if args.gain_cost_only:
        return
    base = args.out or Path(tempfile.mkdtemp(prefix="ensemble-aware-"))
    if not (base / "data").exists():
        synthesize(base / "data", clips=args.clips, seconds=2.0, seed=0, shift=True)
    rows = []
    for seed in range(args.seeds):
        for objective in ("single", "ensemble"):
            start = time.perf_counter()
            cfg = config(base, f"{objective}-{seed}", seed, objective, args.trials, args.epochs, args.clips)
            run_search(cfg, progress=False, ensemble_score=greedy_ensemble_score)
            r = {"seed": seed, "objective": objective, **recommended(cfg.tracking.uri, cfg.name),
                 "search_s": time.perf_counter() - start}
            rows.append(r)
            print(f"seed {seed} {objective:8s} test mAP {r['test']:.3f}  members {r['members']:.0f}  "
                  f"cost {r['cost_ms']:.1f} ms/clip  ({r['search_s']:.0f} s)", flush=True)
    print("\n| objective | test mAP (mean ± sd) | members | cost ms/clip |\n|---|---|---|---|")
    for objective in ("single", "ensemble"):
        sel = [r for r in rows if r["objective"] == objective]
        t = np.array([r["test"] for r in sel])
        print(f"| {objective} | {t.mean():.3f} ± {t.std(ddof=1) if len(t) > 1 else 0:.3f} | "
              f"{np.mean([r['members'] for r in sel]):.1f} | {np.mean([r['cost_ms'] for r in sel]):.1f} |")
    diff = [e["test"] - s["test"] for s, e in zip(rows[::2], rows[1::2])]
    print(f"ensemble − single test mAP per seed: {', '.join(f'{d:+.3f}' for d in diff)}; mean {np.mean(diff):+.3f}")


if __name__ == "__main__":
    main()
