"""Training throughput (clips/s) per architecture on CPU: `Trainer.train_epoch()` vs a plain PyTorch loop.

For every registered architecture (default params) both loops train the same model class with the
same params and seed, Adam, clip BCE (CTC on the event order for the CTC architecture), the same batch size and a `torch.randperm` order per epoch, no
augmentation, over the same cached, normalized features of a small synthetic dataset, in the same
process with one torch thread. Each measurement is `--epochs` epochs; the two loops alternate
(which one goes first alternates too) for `--repeats` rounds and the best round of each counts.
Clips/s are given per CPU second of the training thread (robust to other load on the machine) and
per wall second. The platform's loop should be within 5 % of the plain one.

    python benchmarks/train_throughput.py [--clips 60] [--seconds 4] [--epochs 1] [--repeats 10] [--arch NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from harmonia.config import FeatureConfig
from harmonia.data.datasets import load_dataset
from harmonia.featureset import FeatureSet, build_feature_set
from harmonia.data.synth import synthesize
from harmonia.trainables.architectures import ARCHITECTURES, build_model
from harmonia.trainables.training import Trainer

LR = 1e-3


class PlainLoop:
    """The reference: the textbook PyTorch epoch over in-memory tensors."""

    def __init__(self, params: dict, fs: FeatureSet, seed: int = 0):
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.model = build_model(params["arch"], params, fs.n_features, len(fs.classes))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.x = torch.from_numpy(fs.splits["train"].x)
        self.y = torch.from_numpy(fs.splits["train"].y)
        self.seq = fs.splits["train"].y_seq
        self.ctc = params.get("task") == "sequence"
        self.bs = int(params["batch_size"])

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        if self.ctc:  # the textbook CTC step: log posteriors [T, B, C + 1], blank last, padded targets
            lp = self.model.log_probs(self.x[idx])
            seq = torch.from_numpy(self.seq[idx.numpy()])
            lengths = (seq >= 0).sum(1)
            return nn.functional.ctc_loss(lp.transpose(0, 1), seq[seq >= 0], torch.full((len(idx),), lp.shape[1]),
                                          lengths, blank=lp.shape[2] - 1, zero_infinity=True)
        clip, _ = self.model(self.x[idx])
        return nn.functional.binary_cross_entropy(clip.clamp(1e-7, 1 - 1e-7), self.y[idx])

    def train_epoch(self) -> float:
        order = torch.randperm(len(self.x), generator=self.gen)
        self.model.train()
        total, count = 0.0, 0
        for start in range(0, len(self.x), self.bs):
            idx = order[start:start + self.bs]
            if len(idx) < 2:
                continue
            loss = self.loss(idx)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        return total / max(count, 1)


def timed(loop, epochs: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) for `epochs` epochs. With one torch thread all the
    work runs on the calling thread, so its CPU time is what the loop costs even on a shared machine
    where other processes preempt it (the wall time then includes their share)."""
    w, c = time.perf_counter(), time.thread_time()
    for _ in range(epochs):
        loop.train_epoch()
    return time.perf_counter() - w, time.thread_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=60, help="synthetic clips (60 %% train)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed measurement")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--arch", nargs="*", default=None, help="architectures (default: all registered)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        synthesize(base / "data", clips=args.clips, seconds=args.seconds, seed=0)
        fs = build_feature_set(load_dataset(base / "data"), FeatureConfig(cache_dir=str(base / "cache")),
                               progress=False)
    n = len(fs.splits["train"].y)
    print(f"{n} train clips, features {fs.frames}×{fs.n_features}, batch {args.batch_size}, 1 torch thread, "
          f"{args.epochs} epochs per measurement, best of {args.repeats}")
    print(f"{'':<28}{'clips per CPU second':^36}{'clips per wall second':^36}")
    print(f"{'architecture':<18}{'params':>10}" + f"{'trainer':>12}{'plain':>12}{'ratio':>12}" * 2)
    rows = []
    for name in args.arch or sorted(ARCHITECTURES):
        task = ARCHITECTURES[name].tasks[0]  # tagging, or sequence for the CTC architecture
        params = {"arch": name, "lr": LR, "batch_size": args.batch_size, "task": task}
        trainer = Trainer(params, fs, max_epochs=10**6, patience=10**6, seed=0, device=torch.device("cpu"), task=task)
        plain = PlainLoop(params, fs, seed=0)
        size = sum(p.numel() for p in plain.model.parameters())
        timed(trainer, 1), timed(plain, 1)  # warm-up: allocator, first-call kernels
        wall = {"trainer": float("inf"), "plain": float("inf")}
        cpu = dict(wall)
        for r in range(args.repeats):
            order = [("trainer", trainer), ("plain", plain)]
            for key, loop in order if r % 2 == 0 else order[::-1]:
                w, c = timed(loop, args.epochs)
                wall[key], cpu[key] = min(wall[key], w), min(cpu[key], c)
        clips = n * args.epochs
        ct, cp, wt, wp = clips / cpu["trainer"], clips / cpu["plain"], clips / wall["trainer"], clips / wall["plain"]
        rows.append((name, ct / cp, wt / wp))
        print(f"{name:<18}{size:>10,}{ct:>12.1f}{cp:>12.1f}{ct / cp:>12.3f}{wt:>12.1f}{wp:>12.1f}{wt / wp:>12.3f}")
    worst_cpu, worst_wall = min(r[1] for r in rows), min(r[2] for r in rows)
    print(f"worst trainer/plain: {worst_cpu:.3f} per CPU second ({'within' if worst_cpu >= 0.95 else 'NOT within'} 5 %), "
          f"{worst_wall:.3f} per wall second")


if __name__ == "__main__":
    main()
