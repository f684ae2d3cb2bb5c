"""Learning-rate schedules a trial trains with: linear warm-up, then constant, exponential or cosine decay.

Every DCASE baseline ramps the rate up and/or decays it (the DESED baseline: a warm-up, then a fixed
rate; the 2018 task 2 systems: decays). The factor is a pure function of the optimizer step, so a
resumed trial (whose epoch counter comes back with its checkpoint) continues on the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

DecayFn = Callable[["LRSchedule", float, float], float]
"""(schedule, epochs since the warm-up ended, epochs the decay lasts) → factor of the base rate."""

DECAYS: dict[str, DecayFn] = {}


def register_decay(name: str):
    def deco(fn: DecayFn) -> DecayFn:
        DECAYS[name] = fn
        return fn

    return deco


@register_decay("constant")
def constant_decay(s: "LRSchedule", since: float, length: float) -> float:
    """The base rate after the warm-up: what every trial trained with before schedules existed."""
    return 1.0


@register_decay("exponential")
def exponential_decay(s: "LRSchedule", since: float, length: float) -> float:
    """× `gamma` per epoch, step by step (a fractional epoch gives the fractional power)."""
    return s.gamma ** since


@register_decay("cosine")
def cosine_decay(s: "LRSchedule", since: float, length: float) -> float:
    """Half a cosine from 1 to `min_ratio` over the epochs left after the warm-up (SGDR without restarts)."""
    frac = min(since / length, 1.0) if length > 0 else 1.0
    return s.min_ratio + (1.0 - s.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class LRSchedule:
    """`kind` (a DECAYS name), `warmup_epochs` of linear ramp, `gamma` (exponential), `min_ratio` (cosine)."""

    kind: str = "constant"
    warmup_epochs: int = 0
    gamma: float = 0.9
    min_ratio: float = 0.0

    def __post_init__(self):
        if self.kind not in DECAYS:
            raise ValueError(f"lr_schedule {self.kind!r}: unknown schedule; valid: {', '.join(sorted(DECAYS))}")
        if self.warmup_epochs < 0:
            raise ValueError(f"lr_warmup_epochs {self.warmup_epochs}: expected an integer >= 0")

    def factor(self, step: int, steps_per_epoch: int, max_epochs: int) -> float:
        """The base rate's factor at optimizer step `step` (0-based, over the whole trial).

        Warm-up: (step + 1) / (warmup_epochs · steps_per_epoch), so the first step is not at rate 0;
        then the decay of the epochs since the warm-up ended, over `max_epochs − warmup_epochs` epochs.
        """
        spe = max(steps_per_epoch, 1)
        warmup = self.warmup_epochs * spe
        if step < warmup:
            return (step + 1) / warmup
        return DECAYS[self.kind](self, (step - warmup) / spe, float(max(max_epochs - self.warmup_epochs, 0)))


def schedule_from_params(params: dict) -> LRSchedule:
    """The schedule of a trial's flat params; absent keys give constant without warm-up (older trials)."""
    return LRSchedule(kind=str(params.get("lr_schedule", "constant")),
                      warmup_epochs=int(params.get("lr_warmup_epochs", 0)),
                      gamma=float(params.get("lr_exponential.gamma", 0.9)),
                      min_ratio=float(params.get("lr_cosine.min_ratio", 0.0)))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of an epoch over `n` clips: a last batch of one clip is skipped (batch norm)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)
