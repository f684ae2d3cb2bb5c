"""Splits with real shift: each split draws its sounds from its own source instances and background
recordings, like recordings made of different sources (``synthesize(..., shift=True)``).

A source instance is one class generator with a fixed seed (its fundamental, harmonic mix, envelope,
noise band), a fixed spectral tilt and a fixed amplitude modulation; every event of the instance is
that sound with a small per-event speed jitter. Instances and background recordings are drawn per
split and never shared, so a model fitted on train and valid meets new sources on test. A clip's
`group` is the instance of its loudest event (its background recording when it has no events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

Generator = Callable[[np.random.Generator, int, int, float], np.ndarray]
NoiseFn = Callable[[np.random.Generator, int, str], np.ndarray]

SHIFT_SPLITS: tuple[str, ...] = ("train", "valid", "test")
SHIFT_INSTANCES: tuple[int, int, int] = (4, 2, 2)  # source instances per class in train, valid, test
BACKGROUNDS_PER_SPLIT: int = 3
SPLIT_COLORS: dict[str, tuple[str, ...]] = {"train": ("white", "pink"), "valid": ("pink", "brown"),
                                            "test": ("brown", "white")}
SPLIT_LEVEL_DB: dict[str, tuple[float, float]] = {"train": (-34.0, -28.0), "valid": (-31.0, -25.0),
                                                  "test": (-30.0, -24.0)}
SPEED_JITTER: float = 0.03
TILT_RANGE: tuple[float, float] = (-0.6, 0.6)
CHANNEL_TILT_RANGE: tuple[float, float] = (-0.4, 0.4)


class EventLike(Protocol):
    onset: float
    offset: float
    label: str


class PlanLike(Protocol):
    split: str
    events: Sequence[EventLike]
    seed: int


@dataclass(frozen=True)
class Instance:
    """One sound source of a class: generator seed, spectral tilt, tremolo rate (Hz) and depth."""

    id: str  # <split>-<class>-<index>
    label: str
    seed: int
    tilt: float
    mod_rate: float
    mod_depth: float


@dataclass(frozen=True)
class Background:
    """One background recording: noise colour and tilt, level (dBFS), a mains hum and its level, and
    the recording channel's tilt (applied to the whole clip: events and background)."""

    id: str  # <split>-bg-<index>
    color: str
    tilt: float
    level_db: float
    hum_hz: float
    hum_db: float
    channel_tilt: float = 0.0


@dataclass(frozen=True)
class ShiftWorld:
    """The sources of every split: instances per class and background recordings."""

    instances: dict[str, dict[str, tuple[Instance, ...]]]
    backgrounds: dict[str, tuple[Background, ...]]


def plan_backgrounds(rng: np.random.Generator, split: str, count: int = BACKGROUNDS_PER_SPLIT,
                     colors: Sequence[str] | None = None,
                     level_db: tuple[float, float] | None = None) -> tuple[Background, ...]:
    """`count` background recordings of `split`, in that split's colours and level range."""
    colors = tuple(colors or SPLIT_COLORS.get(split, ("white", "pink", "brown")))
    lo, hi = level_db or SPLIT_LEVEL_DB.get(split, (-34.0, -24.0))
    return tuple(
        Background(f"{split}-bg-{i}", colors[i % len(colors)], float(rng.uniform(-0.4, 0.4)),
                   float(rng.uniform(lo, hi)), float(rng.choice([50.0, 60.0])) * float(rng.choice([1, 2])),
                   float(rng.uniform(-20.0, -6.0)), float(rng.uniform(*CHANNEL_TILT_RANGE)))
        for i in range(count)
    )


def plan_world(seed: int, classes: Sequence[str], instances: tuple[int, int, int] = SHIFT_INSTANCES,
               backgrounds: int = BACKGROUNDS_PER_SPLIT) -> ShiftWorld:
    """Draw every split's own instances per class and background recordings, deterministic in `seed`."""
    if len(instances) != len(SHIFT_SPLITS) or min(instances) < 1 or backgrounds < 1:
        raise ValueError(f"instances must be 3 counts >= 1 (train, valid, test), backgrounds >= 1; "
                         f"got {instances}, {backgrounds}")
    rng = np.random.default_rng([seed, 0x5F1F7])
    pools: dict[str, dict[str, tuple[Instance, ...]]] = {}
    for split, count in zip(SHIFT_SPLITS, instances):
        pools[split] = {
            label: tuple(
                Instance(f"{split}-{label}-{i}", label, int(rng.integers(2**62)), float(rng.uniform(*TILT_RANGE)),
                         float(rng.uniform(2.0, 12.0)), float(rng.uniform(0.2, 0.7)) if rng.random() < 0.5 else 0.0)
                for i in range(count)
            )
            for label in classes
        }
    beds = {split: plan_backgrounds(rng, split, backgrounds) for split in SHIFT_SPLITS}
    return ShiftWorld(pools, beds)


def tilt(y: np.ndarray, sample_rate: int, slope: float) -> np.ndarray:
    """Apply a spectral tilt: magnitude scaled by (f / 1 kHz) ** slope (f floored at 50 Hz)."""
    if slope == 0.0 or len(y) < 2:
        return y
    spec = np.fft.rfft(y)
    f = np.maximum(np.fft.rfftfreq(len(y), 1 / sample_rate), 50.0)
    return np.fft.irfft(spec * (f / 1000.0) ** slope, len(y))


def render_background(rng: np.random.Generator, n: int, sample_rate: int, bed: Background,
                      noise: NoiseFn) -> np.ndarray:
    """A clip's stretch of background recording `bed`: tilted coloured noise plus hum, at its level."""
    y = tilt(noise(rng, n, bed.color), sample_rate, bed.tilt)
    y = y / (np.sqrt(np.mean(y**2)) + 1e-12)
    t = np.arange(n) / sample_rate
    hum = np.sin(2 * np.pi * bed.hum_hz * t + rng.uniform(0, 2 * np.pi))
    y = y + np.sqrt(2) * 10 ** (bed.hum_db / 20) * hum
    return 10 ** ((bed.level_db + rng.normal(0, 1.0)) / 20) * y / (np.sqrt(np.mean(y**2)) + 1e-12)


def instance_sound(inst: Instance, generate: Generator, n: int, sample_rate: int, similarity: float,
                   rng: np.random.Generator) -> np.ndarray:
    """`n` samples of instance `inst`: its seeded sound at a jittered speed, tilted and modulated."""
    m = max(2, int(round(n * (1 + rng.uniform(-SPEED_JITTER, SPEED_JITTER)))))
    raw = generate(np.random.default_rng(inst.seed), m, sample_rate, similarity)
    sig = np.interp(np.linspace(0, m - 1, n), np.arange(m), raw)
    sig = tilt(sig, sample_rate, inst.tilt)
    if inst.mod_depth > 0:
        t = np.arange(n) / sample_rate
        sig = sig * (1 - inst.mod_depth * 0.5 * (1 + np.sin(2 * np.pi * inst.mod_rate * t)))
    return sig


@dataclass(frozen=True)
class ShiftRenderer:
    """Renders clip plans from a ShiftWorld with the given class generators, distractors and noise."""

    world: ShiftWorld
    generators: Mapping[str, Generator]
    distractors: Mapping[str, Generator]
    noise: NoiseFn

    def render(self, plan: PlanLike, seconds: float, sample_rate: int, snr_db: tuple[float, float],
               similarity: float, distractor_rate: float) -> tuple[np.ndarray, str]:
        """(float32 clip, group): events from the split's instances over one of its backgrounds."""
        rng = np.random.default_rng(plan.seed)
        n = int(round(seconds * sample_rate))
        beds = self.world.backgrounds[plan.split]
        bed = beds[int(rng.integers(len(beds)))]
        y = render_background(rng, n, sample_rate, bed, self.noise)
        bg_rms = 10 ** (bed.level_db / 20)
        group, loudest = bed.id, -1.0
        for ev in plan.events:
            a, b = int(round(ev.onset * sample_rate)), min(n, int(round(ev.offset * sample_rate)))
            if b - a < 2:
                continue
            pool = self.world.instances[plan.split][ev.label]
            inst = pool[int(rng.integers(len(pool)))]
            sig = instance_sound(inst, self.generators[ev.label], b - a, sample_rate, similarity, rng)
            snr = rng.uniform(*snr_db)
            y[a:b] += sig * (bg_rms * 10 ** (snr / 20) / (np.sqrt(np.mean(sig**2)) + 1e-12))
            energy = 10 ** (snr / 10) * (b - a)
            if energy > loudest:
                group, loudest = inst.id, energy
        y += self._distractors(rng, n, seconds, sample_rate, bg_rms, snr_db, similarity, distractor_rate)
        y = tilt(y, sample_rate, bed.channel_tilt)
        peak = np.abs(y).max()
        if peak > 0.95:
            y *= 0.95 / peak
        return y.astype(np.float32), group

    def _distractors(self, rng: np.random.Generator, n: int, seconds: float, sample_rate: int, bg_rms: float,
                     snr_db: tuple[float, float], similarity: float, rate: float) -> np.ndarray:
        y = np.zeros(n)
        for _ in range(int(rng.poisson(rate))):
            length = min(seconds, rng.uniform(0.1, 1.5))
            a = int(round(rng.uniform(0, seconds - length) * sample_rate))
            b = min(n, a + int(round(length * sample_rate)))
            if b - a < 2:
                continue
            sig = self.distractors[str(rng.choice(sorted(self.distractors)))](rng, b - a, sample_rate, similarity)
            y[a:b] += sig * (bg_rms * 10 ** (rng.uniform(*snr_db) / 20) / (np.sqrt(np.mean(sig**2)) + 1e-12))
        return y
