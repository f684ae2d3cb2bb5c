"""Does training on unlabelled clips help? Supervised-only vs pseudo-labels vs a mean teacher.

On the realistic synthetic SED set (`harmonia data synth --task sed --shift`: each split's sounds from
its own source instances and backgrounds), the labels of 70 % of the train clips are hidden (they
become the `unlabeled` clips); the same CRNN then trains for the same epochs and seeds three ways:
on the labelled 30 % only, with pseudo-labels (`semi.pseudo_label`, two passes) and with a mean
teacher (`semi.mean_teacher`). Each model's best valid epoch is scored on test: event F1 (the trial
decoding: threshold 0.5, 0.45 s median filter), PSDS1 and clip mAP, mean ± spread over the seeds.

`--real` runs on a real-audio SED set of benchmarks/real_audio.py instead (Debian sound packages mixed
DCASE-style, source-disjoint splits; `--classes` picks its event classes).

    python benchmarks/semi_supervised.py --root /tmp/ssl_bench [--clips 300] [--epochs 8] [--seeds 0 1]
    python benchmarks/semi_supervised.py --root /tmp/ssl_real --real --classes music crowd clock \
        --clips 600 --epochs 15 --seeds 0 1
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

METHODS: dict[str, dict] = {
    "supervised (30 % labels)": {},
    "pseudo-labels": {"semi.pseudo_label": True, "pseudo_label.first_epochs": 4, "pseudo_label.threshold": 0.5,
                      "pseudo_label.weight": 1.0},
    "mean teacher": {"semi.mean_teacher": True, "mean_teacher.ema_decay": 0.99, "mean_teacher.weight": 2.0,
                     "mean_teacher.rampup_epochs": 3},
}
ARCH = {"arch": "crnn", "crnn.blocks": 3, "crnn.channels": 16, "crnn.gru_size": 32, "lr": 3e-3, "batch_size": 16}
SCORES = ("test_event_f1", "test_psds1", "test_mAP")
REAL_AUDIO = Path(__file__).resolve().parent / "real_audio.py"
REAL_CLASSES = ("music", "crowd", "clock")


def hide_labels(fs, hidden: float, seed: int):
    """A FeatureSet whose train split keeps (1 − hidden) of the clips; the rest become its unlabelled clips."""
    from harmonia.featureset import SplitArrays

    train = fs.splits["train"]
    order = np.random.default_rng(seed).permutation(len(train.y))
    cut = int(round(len(order) * (1 - hidden)))
    keep, drop = np.sort(order[:cut]), np.sort(order[cut:])
    x = np.asarray(train.x)

    def rows(r: np.ndarray) -> SplitArrays:
        return SplitArrays([train.clip_ids[i] for i in r], x[r], train.y[r],
                           None if train.y_frames is None else np.asarray(train.y_frames)[r],
                           None if train.y_seq is None else train.y_seq[r])

    labelled = rows(keep)
    unlabelled = replace(rows(drop), y=np.zeros_like(train.y[drop]), y_frames=None, y_seq=None)
    return replace(fs, splits={**fs.splits, "train": labelled}, unlabeled=unlabelled, train_copies=[])


def train_and_score(fs, params: dict, epochs: int, seed: int) -> dict[str, float]:
    import torch

    from harmonia.trainables.training import Trainer

    t = Trainer(params, fs, max_epochs=epochs, patience=epochs, seed=seed, task="sed", metric="psds1",
                device=torch.device("cpu"))
    while not t.done:
        t.run_epoch()
    clip, frames = t.predict("test", model=t.best_model())
    scores = t.strategy.evaluate(fs.splits["test"], clip, frames, "test", hop_seconds=fs.hop_seconds)
    return {k: scores[k] for k in SCORES}


def real_audio_module():
    """benchmarks/real_audio.py loaded from its file (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("real_audio", REAL_AUDIO)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_audio", module)
    spec.loader.exec_module(module)
    return module


def make_data(data: Path, clips: int, real_classes: tuple[str, ...] | None) -> None:
    """Write the SED set under `data` unless it is there: synthetic (shifted), or real audio of `real_classes`."""
    if (data / "metadata").is_dir():
        return
    if real_classes is None:
        from harmonia.data.synth import synthesize

        synthesize(data, clips=clips, seconds=4.0, seed=0, shift=True)
    else:
        real_audio_module().build(data, clips=clips, seed=3, task="sed", classes=real_classes)


def run(root: Path, clips: int, epochs: int, seeds: list[int], hidden: float,
        real_classes: tuple[str, ...] | None = None) -> dict[str, dict[str, list[float]]]:
    from harmonia.config import parse_config
    from harmonia.featureset import build_feature_set
    from harmonia.data.datasets import load_dataset

    data = root / ("data" if real_classes is None else f"real_{'_'.join(real_classes)}_{clips}")
    make_data(data, clips, real_classes)
    cfg = parse_config({"name": "ssl_bench", "task": "sed", "data": {"root": str(data)},
                        "features": {"cache_dir": str(root / "cache")}}).resolved(root)
    fs = build_feature_set(load_dataset(data), cfg.features, progress=False)
    results: dict[str, dict[str, list[float]]] = {m: {k: [] for k in (*SCORES, "seconds")} for m in METHODS}
    for seed in seeds:
        part = hide_labels(fs, hidden, seed)
        print(f"seed {seed}: {len(part.splits['train'].y)} labelled train, {len(part.unlabeled.y)} unlabelled, "
              f"{len(fs.splits['valid'].y)} valid, {len(fs.splits['test'].y)} test clips", flush=True)
        for name, extra in METHODS.items():
            t0 = time.perf_counter()
            scores = train_and_score(part, {**ARCH, **extra}, epochs, seed)
            scores["seconds"] = time.perf_counter() - t0
            for k, v in scores.items():
                results[name][k].append(v)
            print(f"seed {seed} {name:>26}: " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="where the data set and its features go")
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--hidden", type=float, default=0.7, help="part of the train clips whose labels are hidden")
    parser.add_argument("--real", action="store_true", help="a real-audio SED set (benchmarks/real_audio.py)")
    parser.add_argument("--classes", nargs="+", default=list(REAL_CLASSES), help="the real-audio set's classes")
    args = parser.parse_args(argv)
    results = run(args.root, args.clips, args.epochs, args.seeds, args.hidden,
                  tuple(args.classes) if args.real else None)
    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs, {args.hidden:.0%} of train unlabelled; mean ± std (min–max)")
    print(f"{'method':>26}  " + "  ".join(f"{k:>24}" for k in (*SCORES, "seconds")))
    for name, cols in results.items():
        cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f} ({min(v):.2f}–{max(v):.2f})" for v in cols.values()]
        print(f"{name:>26}  " + "  ".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
