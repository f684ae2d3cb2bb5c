"""What a trained member costs at inference: parameters, multiply-accumulates per second of audio, CPU time per clip.

Logged once per trial as MLflow metrics (`COST_METRICS`), so the ensemble stage can bound an ensemble's
cost (ensembles/budget.py). MACs come from `torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2; it
counts convolutions, linear layers and the GRU/LSTM matrix products on CPU); times are the median of a
few repeats on one thread, after one warm-up pass.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

COST_METRICS = ("cost_params", "cost_macs_per_second", "cost_cpu_ms_per_clip_b1", "cost_cpu_ms_per_clip_b32")
"""Metric names a trial logs: parameter count, MACs per second of audio, CPU ms per clip at batch 1 and 32."""

LATENCY_METRIC = "cost_cpu_ms_per_clip_b1"
"""The per-clip cost the ensemble stage sums over members (ms at batch 1, one thread)."""


def parameter_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def macs(model: nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of one forward pass over `x` (FLOPs counted by FlopCounterMode, halved)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2.0


@torch.no_grad()
def ms_per_clip(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of a forward pass over the batch `x`, divided by its size, in milliseconds."""
    model.eval()
    model(x)  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / len(x)


@torch.no_grad()
def gpu_ms_per_clip(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """As `ms_per_clip` on the current CUDA device, synchronized around each pass."""
    model, x = model.to("cuda").eval(), x.to("cuda")
    model(x)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / len(x)


def measure_costs(model: nn.Module, frames: int, n_features: int, hop_seconds: float,
                  repeats: int = 5) -> dict[str, float]:
    """`COST_METRICS` of `model` on CPU for clips of `frames` × `n_features` (one thread while timing),
    plus `cost_gpu_ms_per_clip_b32` where CUDA is available."""
    gpu = {}
    if torch.cuda.is_available():
        gpu = {"cost_gpu_ms_per_clip_b32": gpu_ms_per_clip(model, torch.randn(32, frames, n_features), repeats)}
    model = model.to("cpu").eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = torch.randn(1, frames, n_features)
        batch = torch.randn(32, frames, n_features)
        return {
            "cost_params": float(parameter_count(model)),
            "cost_macs_per_second": macs(model, one) / max(frames * hop_seconds, 1e-9),
            "cost_cpu_ms_per_clip_b1": ms_per_clip(model, one, repeats),
            "cost_cpu_ms_per_clip_b32": ms_per_clip(model, batch, max(1, repeats // 2)),
            **gpu,
        }
    finally:
        torch.set_num_threads(threads)


def trainer_costs(trainer, repeats: int = 5) -> dict[str, float]:
    """`measure_costs` of a Trainer's (or CrossValidatedTrainer's: all k folds) best model on its clips' shape."""
    data = trainer.data
    return measure_costs(trainer.model_with(trainer.best_state), data.frames, data.n_features, data.hop_seconds,
                         repeats)
