"""Cost of waveform augmentations in the training loop vs precomputed into the feature cache.

On a synthetic dataset, with the proceedings' copies (pitch shift −2, −1, 1, 2 semitones; time stretch
0.9, 0.95, 1.05, 1.1: dcase2018_workshop_proceedings.txt L4558–4561, "before training as the
required processing time is long"), times:

  (a) on the fly: one epoch (best of --repeats) of train clips, each read, pitch-shifted or time-stretched by librosa
      (one copy drawn at random per clip, as a training loop would) and turned into features, in
      this process: what the augmentation would cost inside the training loop, every epoch;
  (b) the one-off precompute of every copy of every train clip into the cache (`build_feature_set`
      with `features.augmented_copies`, parallel worker processes as for the originals);
  (c) one epoch read from the cache: one randomly drawn cached copy per train clip (`np.load`);
  (d) one epoch as training sees it: `FeatureSet.epoch_train` picks rows from copies held in memory.

    python benchmarks/waveform_augmentation.py [--clips 120] [--seconds 4] [--workers N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from harmonia.config import FeatureConfig
from harmonia.data.datasets import load_dataset
from harmonia.features import FeatureCache, extract, wave_copies
from harmonia.featureset import build_feature_set
from harmonia.data.synth import synthesize

COPIES = {"pitch_shift_semitones": [-2, -1, 1, 2], "time_stretch_rates": [0.9, 0.95, 1.05, 1.1]}


def best_of(repeats: int, fn) -> float:
    """Shortest wall time of `repeats` calls (the machine may be shared)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=None, help="processes for (b); default: all cores")
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed for (a), (c), (d); the best counts")
    ap.add_argument("--kind", default="logmel", choices=["logmel", "mfcc", "nnf_logmel"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        synthesize(base / "data", clips=args.clips, seconds=args.seconds, seed=0)
        ds = load_dataset(base / "data")
        cfg = FeatureConfig(kind=args.kind, cache_dir=str(base / "cache"), augmented_copies=COPIES)
        copies = wave_copies(cfg.augmented_copies)
        paths = list(ds.split("train")["path"])
        build_feature_set(ds, cfg.model_copy(update={"augmented_copies": FeatureConfig().augmented_copies}),
                          progress=False, workers=args.workers)  # originals cached first: (b) is copies only
        extract(paths[0], cfg, copies[0])  # warm-up (librosa's lazy imports and first-call costs)

        def on_the_fly() -> None:
            for p in paths:
                extract(p, cfg, copies[rng.integers(len(copies))])

        a = best_of(args.repeats, on_the_fly)

        t = time.perf_counter()
        fs = build_feature_set(ds, cfg, progress=False, workers=args.workers)
        b = time.perf_counter() - t
        assert len(fs.train_copies) == len(copies)

        cache = FeatureCache(cfg)
        entries = [[cache.entry(p, c) for c in copies] for p in paths]

        def from_cache() -> None:
            for row in entries:
                assert cache.load(row[rng.integers(len(copies))]) is not None

        c = best_of(args.repeats, from_cache)
        d = best_of(args.repeats, lambda: fs.epoch_train(rng.integers(len(copies) + 1, size=len(paths))))

    workers = args.workers or os.cpu_count()
    n = len(paths)
    print(f"{n} train clips × {args.seconds:g} s, {len(copies)} copies each ({', '.join(x.name for x in copies)}), "
          f"{args.kind} {cfg.n_features}×{fs.frames}")
    rows = [
        ("(a) on the fly: one epoch, librosa in the loop (1 process)", a, f"{n / a:9.1f} clips/s"),
        (f"(b) precompute all copies once ({workers} worker process{'es' * (workers > 1)})", b,
         f"{n * len(copies) / b:9.1f} copies/s = {b / a:.1f} on-the-fly epochs"),
        ("(c) one epoch of copies read from the cache (np.load)", c, f"{n / c:9.1f} clips/s"),
        ("(d) one epoch picked from copies in memory (epoch_train)", d, f"{n / d:9.1f} clips/s"),
    ]
    for label, secs, rate in rows:
        print(f"{label:<60}{secs:9.4f} s  {rate}")
    print(f"(a)/(c) = {a / c:.0f}×   (a)/(d) = {a / d:.0f}×   precompute pays off after {b / max(a - c, 1e-9):.1f} epochs")


if __name__ == "__main__":
    main()
