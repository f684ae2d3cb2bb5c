"""What event metrics and PSDS add to a `task: sed` epoch, on the quickstart-sized synthetic set.

Trains the quickstart's CRNN for a few epochs and times, per epoch: training plus the valid pass, the
clip scores (what an epoch cost before), the event / segment scores of the epoch decoding, and PSDS1 +
PSDS2 (threshold-free). Prints the epoch time with and without PSDS and the ratio (target ≤ 1.3×).

    python benchmarks/sed_epoch_cost.py --root /tmp/sed_bench [--epochs 3] [--clips 600]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(root: Path, epochs: int, clips: int) -> dict[str, float]:
    """Mean seconds per epoch of each part, and the ratios with / without PSDS."""
    from harmonia.config import parse_config
    from harmonia.featureset import prepare
    from harmonia.psds import psds_scores
    from harmonia.sed_metrics import frame_runs
    from harmonia.trainables.tasks import sed_scores, tag_scores
    from harmonia.trainables.training import Trainer

    cfg = parse_config({
        "name": "sed_cost", "task": "sed",
        "data": {"root": str(root / "data"), "synth": {"root": str(root / "data"), "clips": clips, "seconds": 4.0}},
        "features": {"sample_rate": 16000, "n_fft": 1024, "hop_length": 320, "n_mels": 64,
                     "cache_dir": str(root / "cache")},
    }).resolved(root)
    _, fs = prepare(cfg, progress=False)
    params = {"arch": "crnn", "lr": 1e-3, "batch_size": 32}
    trainer = Trainer(params, fs, max_epochs=epochs, patience=epochs, seed=0, task="sed", metric="mAP")
    valid = fs.splits["valid"]
    y_frames = np.asarray(valid.y_frames)
    parts: dict[str, list[float]] = {"train+predict": [], "clip scores": [], "event+segment": [], "psds1+psds2": []}
    for _ in range(epochs):
        _, t_train = _timed(trainer.train_epoch)
        (clip, frames), t_pred = _timed(lambda: trainer.predict("valid"))
        parts["train+predict"].append(t_train + t_pred)
        parts["clip scores"].append(_timed(lambda: tag_scores(valid.y, clip, "valid"))[1])
        _, t_all = _timed(lambda: sed_scores(y_frames, frames, fs.hop_seconds, "valid"))
        hop = fs.hop_seconds * max(1, y_frames.shape[1] // frames.shape[1])
        ref = frame_runs(y_frames, fs.hop_seconds)
        _, t_psds = _timed(lambda: psds_scores(frames, hop, ref, None, "valid_"))
        parts["psds1+psds2"].append(t_psds)
        parts["event+segment"].append(max(0.0, t_all - t_psds))
    mean = {k: float(np.mean(v)) for k, v in parts.items()}
    before = mean["train+predict"] + mean["clip scores"]
    without = before + mean["event+segment"]
    mean.update({"epoch without PSDS": without, "epoch with PSDS": without + mean["psds1+psds2"],
                 "ratio with/without PSDS": (without + mean["psds1+psds2"]) / without,
                 "ratio with all SED scores/clip scores only": (without + mean["psds1+psds2"]) / before})
    mean["valid clips"], mean["valid frames"] = float(len(valid.y)), float(frames.shape[1])
    return mean


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="where the synthetic set and its features go")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=600, help="synthetic clips (the quickstart's 600)")
    args = parser.parse_args(argv)
    for name, value in run(args.root, args.epochs, args.clips).items():
        print(f"{name:>42}: {value:.3f}")


if __name__ == "__main__":
    main()
