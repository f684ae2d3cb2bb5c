"""Deterministic synthetic sound-event dataset in DESED / DCASE task-4 layout.

Ten procedurally synthesized classes with per-event random pitch, duration, envelope and
timbre over coloured noise; pairs (beep/whistle/bell, chirp/siren, knock/click_train,
hum/engine, rain vs the background) overlap more as `similarity` rises, unlabelled near-miss
distractors (short blips, noise bursts, babble) add false alarms, and lower `snr_db` buries
events deeper, so difficulty can be tuned without touching code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from scipy.signal import fftconvolve

from harmonia.data.audio import write_wav
from harmonia.data.shift import SHIFT_INSTANCES, ShiftRenderer, plan_world

CLASSES: tuple[str, ...] = (
    "beep", "whistle", "chirp", "siren", "knock",
    "click_train", "hum", "engine", "bell", "rain",
)
SPLITS: tuple[tuple[str, float], ...] = (("train", 0.6), ("valid", 0.2), ("test", 0.2))
SNR_RANGE_DB: tuple[float, float] = (-6.0, 9.0)
SIMILARITY: float = 0.7
DISTRACTOR_RATE: float = 1.0
EVENTS_PER_CLIP: tuple[int, int] = (1, 4)
EVENT_SECONDS: tuple[float, float] = (0.2, 2.0)
BACKGROUND_DBFS: tuple[float, float] = (-34.0, -24.0)
NOISE_COLORS: tuple[str, ...] = ("white", "pink", "brown")

Generator = Callable[[np.random.Generator, int, int, float], np.ndarray]


@dataclass(frozen=True)
class Event:
    onset: float
    offset: float
    label: str


@dataclass(frozen=True)
class ClipPlan:
    split: str
    name: str
    events: tuple[Event, ...]
    seed: int


def _lu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw in [lo, hi]."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _nyq(f: np.ndarray | float, sr: int) -> np.ndarray | float:
    return np.minimum(f, 0.45 * sr)


def _envelope(rng: np.random.Generator, n: int, sr: int, shape: str | None = None) -> np.ndarray:
    """Random amplitude envelope: flat with ramps, exponential decay, or a swell."""
    shape = shape or str(rng.choice(["flat", "flat", "decay", "swell"]))
    t = _t(n, sr)
    dur = n / sr
    if shape == "decay":
        env = np.exp(-t / (dur * rng.uniform(0.15, 0.6)))
    elif shape == "swell":
        env = np.sin(np.pi * np.clip(t / dur, 0, 1)) ** rng.uniform(0.5, 2.0)
    else:
        env = np.ones(n)
    ramp = max(1, min(n // 2, int(sr * rng.uniform(0.003, 0.05))))
    fade = np.linspace(0.0, 1.0, ramp)
    env[:ramp] *= fade
    env[-ramp:] *= fade[::-1]
    return env


def _band_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """White noise restricted to [lo, hi] Hz with a smooth spectral mask."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    width = max(hi - lo, 1.0)
    centre = 0.5 * (lo + hi)
    mask = 1.0 / (1.0 + ((f - centre) / (0.5 * width)) ** 8)
    return np.fft.irfft(spec * mask, n)


def _harmonics(phase: np.ndarray, amps: np.ndarray) -> np.ndarray:
    k = np.arange(1, len(amps) + 1)[:, None]
    return amps @ np.sin(k * np.mod(phase, 2 * np.pi)[None, :])


def _beep(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    f = _nyq(_lu(rng, 500, 1500 + 2500 * s), sr)
    amps = np.array([1.0, rng.uniform(0, 0.25), rng.uniform(0, 0.1)])
    y = _harmonics(2 * np.pi * f * _t(n, sr), amps) * _envelope(rng, n, sr, "flat")
    if rng.random() < 0.35:
        period = rng.uniform(0.08, 0.3)
        gate = (np.mod(_t(n, sr), period) < period * rng.uniform(0.4, 0.7)).astype(float)
        smooth = np.hanning(max(3, min(n, sr // 400)))
        y *= np.convolve(gate, smooth / smooth.sum(), mode="same")
    return y


def _whistle(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    f0 = _lu(rng, 3500 - 2000 * s, 5500)
    t = _t(n, sr)
    depth = rng.uniform(0.005, 0.04) * (1.2 - s)
    glide = rng.uniform(-0.1, 0.1)
    inst = _nyq(f0 * (1 + glide * t / max(t[-1], 1e-6) + depth * np.sin(2 * np.pi * rng.uniform(3, 8) * t)), sr)
    tone = np.sin(2 * np.pi * np.cumsum(inst) / sr)
    bw = rng.uniform(40, 250)
    breath = _band_noise(rng, n, sr, f0 - bw, f0 + bw)
    breath /= breath.std() + 1e-12
    return (tone + rng.uniform(0.1, 0.6) * breath) * _envelope(rng, n, sr)


def _chirp(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    f0 = _lu(rng, 300, 1800)
    ratio = rng.uniform(1.3, 4.0 - 1.5 * s)
    t = _t(n, sr)
    inst = _nyq(f0 * ratio ** (t / max(t[-1], 1e-6)), sr)
    phase = 2 * np.pi * np.cumsum(inst) / sr
    amps = np.array([1.0, rng.uniform(0, 0.4), rng.uniform(0, 0.2)])
    return _harmonics(phase, amps) * _envelope(rng, n, sr)


def _siren(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    fc = _lu(rng, 500, 1800)
    depth = rng.uniform(0.1, 0.45)
    rate = rng.uniform(0.3, 4.0 - 2.5 * s)
    t = _t(n, sr)
    inst = _nyq(fc * (1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))), sr)
    phase = 2 * np.pi * np.cumsum(inst) / sr
    amps = np.array([1.0, rng.uniform(0, 0.5), rng.uniform(0, 0.3), rng.uniform(0, 0.15)])
    return _harmonics(phase, amps) * _envelope(rng, n, sr, "flat")


def _impulses(n: int, times: np.ndarray, sr: int, gains: np.ndarray) -> np.ndarray:
    train = np.zeros(n)
    idx = np.clip((times * sr).astype(int), 0, n - 1)
    np.add.at(train, idx, gains)
    return train


def _knock(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    dur = n / sr
    hits = int(rng.integers(1, 7))
    gap = rng.uniform(0.08, 0.3)
    times = rng.uniform(0, 0.05) + gap * np.arange(hits) + rng.normal(0, 0.01, hits)
    times = times[(times >= 0) & (times < dur)]
    tau = rng.uniform(0.008, 0.04)
    klen = min(n, int(sr * tau * 6))
    kt = _t(klen, sr)
    f_res = _lu(rng, 120, 900 + 1500 * s)
    thud = 0.5 * rng.standard_normal(klen) * np.exp(-kt / (tau / 4))
    kernel = np.exp(-kt / tau) * (np.sin(2 * np.pi * f_res * kt) + thud)
    train = _impulses(n, times, sr, rng.uniform(0.5, 1.0, len(times)))
    return fftconvolve(train, kernel)[:n]


def _click_train(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    dur = n / sr
    rate = rng.uniform(8 - 4 * s, 45)
    times = np.arange(rng.uniform(0, 1 / rate), dur, 1 / rate)
    times = times + rng.normal(0, 0.02 / rate, len(times))
    times = times[(times >= 0) & (times < dur)]
    tau = rng.uniform(0.0005, 0.002 + 0.006 * s)
    klen = max(2, min(n, int(sr * tau * 8)))
    kt = _t(klen, sr)
    kernel = np.exp(-kt / tau) * rng.standard_normal(klen)
    kernel = np.diff(kernel, prepend=0.0) if rng.random() < 0.7 else kernel
    train = _impulses(n, times, sr, rng.uniform(0.6, 1.0, len(times)))
    return fftconvolve(train, kernel)[:n] * _envelope(rng, n, sr, "flat")


def _hum(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    f0 = _lu(rng, 50, 250)
    k = int(rng.integers(3, 9))
    amps = rng.uniform(0.3, 1.0, k) * np.arange(1, k + 1) ** -rng.uniform(0.3, 1.5)
    t = _t(n, sr)
    wobble = 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t)
    return _harmonics(2 * np.pi * f0 * t, amps) * wobble * _envelope(rng, n, sr)


def _engine(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    lo = _lu(rng, 60, 300)
    noise = _band_noise(rng, n, sr, lo, lo + rng.uniform(200, 1200))
    noise /= noise.std() + 1e-12
    t = _t(n, sr)
    fire = rng.uniform(10, 45)
    am = 1 - rng.uniform(0.3, 0.9) * 0.5 * (1 + np.sin(2 * np.pi * fire * t))
    y = noise * am
    if rng.random() < s:
        y += rng.uniform(0.2, 0.8) * _harmonics(2 * np.pi * fire * 2 * t, rng.uniform(0.2, 1.0, 6))
    return y * _envelope(rng, n, sr)


_BELL_RATIOS = np.array([0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76, 4.07])


def _bell(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    f0 = _lu(rng, 300, 1500)
    ratios = _BELL_RATIOS * (1 + rng.normal(0, 0.03, len(_BELL_RATIOS)))
    freqs = _nyq(f0 * ratios, sr)
    amps = rng.uniform(0.2, 1.0, len(ratios))
    tau = (n / sr) * rng.uniform(0.2, 0.8) / ratios
    t = _t(n, sr)
    partials = amps[:, None] * np.exp(-t[None, :] / tau[:, None]) * np.sin(2 * np.pi * freqs[:, None] * t[None, :])
    return partials.sum(axis=0) * _envelope(rng, n, sr, "flat")


def _rain(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    lo = rng.uniform(800, 3000)
    hiss = _band_noise(rng, n, sr, lo, min(lo + rng.uniform(2000, 6000), 0.48 * sr))
    hiss /= hiss.std() + 1e-12
    dur = n / sr
    drops = rng.uniform(0, dur, int(rng.uniform(40, 400) * dur) + 1)
    klen = max(2, int(sr * 0.004))
    kernel = np.diff(np.exp(-_t(klen, sr) / 0.0008) * rng.standard_normal(klen), prepend=0.0)
    patter = fftconvolve(_impulses(n, drops, sr, rng.uniform(0.2, 1.0, len(drops))), kernel)[:n]
    patter /= patter.std() + 1e-12
    mix = rng.uniform(0.3, 1.0)
    return (mix * hiss + (1 - mix * s) * patter) * _envelope(rng, n, sr, "swell" if rng.random() < 0.5 else "flat")


GENERATORS: dict[str, Generator] = {
    "beep": _beep, "whistle": _whistle, "chirp": _chirp, "siren": _siren, "knock": _knock,
    "click_train": _click_train, "hum": _hum, "engine": _engine, "bell": _bell, "rain": _rain,
}


def _blip(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    """Unlabelled: a few very short tones, a near miss for beep/whistle/bell."""
    y = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        m = min(n, int(sr * rng.uniform(0.03, 0.15)))
        a = int(rng.integers(0, n - m + 1))
        y[a:a + m] += np.sin(2 * np.pi * _nyq(_lu(rng, 300, 6000), sr) * _t(m, sr)) * np.hanning(m)
    return y


def _burst(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    """Unlabelled: a band of noise with a random band, a near miss for engine/rain."""
    lo = _lu(rng, 80, 4000)
    return _band_noise(rng, n, sr, lo, min(lo * rng.uniform(1.3, 4.0), 0.48 * sr)) * _envelope(rng, n, sr)


def _babble(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    """Unlabelled: voiced, vowel-like harmonics on a wandering pitch, a near miss for hum/siren."""
    t = _t(n, sr)
    steps = np.cumsum(rng.normal(0, 0.02, n // 160 + 2))
    contour = np.interp(t, np.linspace(0, t[-1] if n > 1 else 1.0, len(steps)), steps)
    f0 = _lu(rng, 90, 320) * np.exp(contour - contour.mean())
    phase = 2 * np.pi * np.cumsum(f0) / sr
    k = np.arange(1, 16)
    formant = _lu(rng, 300, 2500)
    centre = k * f0.mean()
    amps = (np.exp(-((centre - formant) / (0.5 * formant)) ** 2) + 0.05) * (centre * 1.2 < 0.45 * sr)
    syllables = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 2 * np.pi)))
    return _harmonics(phase, amps) * syllables * _envelope(rng, n, sr)


DISTRACTORS: dict[str, Generator] = {"blip": _blip, "burst": _burst, "babble": _babble}


def colored_noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[color]
    y = np.fft.irfft(spec / f**exponent, n)
    y -= y.mean()
    return y / (y.std() + 1e-12)


def split_sizes(clips: int) -> list[int]:
    """Clips per split (train, valid, test) for `clips` in all, by the SPLITS fractions."""
    n_train = int(round(clips * SPLITS[0][1]))
    n_valid = int(round(clips * SPLITS[1][1]))
    return [n_train, n_valid, clips - n_train - n_valid]


def plan_clips(
    clips: int,
    seconds: float,
    seed: int,
    classes: tuple[str, ...] = CLASSES,
    events_per_clip: tuple[int, int] = EVENTS_PER_CLIP,
    event_seconds: tuple[float, float] = EVENT_SECONDS,
) -> list[ClipPlan]:
    """Labels and times of every event; each split holds every class at least once."""
    lo_ev, hi_ev = events_per_clip
    sizes = split_sizes(clips)
    if min(sizes) * hi_ev < len(classes):
        need = int(np.ceil(len(classes) / hi_ev / min(s for _, s in SPLITS)))
        raise ValueError(f"clips={clips} is too few to put all {len(classes)} classes in every split (need >= {need})")
    min_ms = int(round(event_seconds[0] * 1000))
    max_ms = int(round(min(event_seconds[1], seconds) * 1000))
    clip_ms = int(np.floor(seconds * 1000))
    if min_ms > clip_ms:
        raise ValueError(f"seconds={seconds} is shorter than the shortest event ({event_seconds[0]} s)")
    rng = np.random.default_rng(seed)
    plans: list[ClipPlan] = []
    index = 0
    for (split, _), size in zip(SPLITS, sizes):
        counts = rng.integers(lo_ev, hi_ev + 1, size)
        while counts.sum() < len(classes):
            counts[rng.choice(np.flatnonzero(counts < hi_ev))] += 1
        labels = list(rng.permutation(classes)) + list(rng.choice(classes, int(counts.sum()) - len(classes)))
        labels = [str(x) for x in rng.permutation(labels)]
        start = 0
        for count in counts:
            events = []
            for label in labels[start:start + count]:
                dur_ms = int(rng.integers(min_ms, min(max_ms, clip_ms) + 1))
                on_ms = int(rng.integers(0, clip_ms - dur_ms + 1))
                events.append(Event(on_ms / 1000, (on_ms + dur_ms) / 1000, label))
            start += count
            events.sort(key=lambda e: (e.onset, e.offset, e.label))
            plans.append(ClipPlan(split, f"synth_{index:06d}.wav", tuple(events), int(rng.integers(2**62))))
            index += 1
    return plans


def render_clip(
    plan: ClipPlan,
    seconds: float,
    sample_rate: int,
    snr_db: tuple[float, float] = SNR_RANGE_DB,
    similarity: float = SIMILARITY,
    distractors: float = DISTRACTOR_RATE,
) -> np.ndarray:
    """Mix the planned events and unlabelled distractors over coloured noise, each at its own SNR."""
    rng = np.random.default_rng(plan.seed)
    n = int(round(seconds * sample_rate))
    bg_rms = 10 ** (rng.uniform(*BACKGROUND_DBFS) / 20)
    y = bg_rms * colored_noise(rng, n, str(rng.choice(NOISE_COLORS)))
    layers = [(GENERATORS[ev.label], ev.onset, ev.offset) for ev in plan.events]
    for _ in range(int(rng.poisson(distractors))):
        length = min(seconds, rng.uniform(0.1, 1.5))
        onset = rng.uniform(0, seconds - length)
        layers.append((DISTRACTORS[str(rng.choice(sorted(DISTRACTORS)))], onset, onset + length))
    for generate, onset, offset in layers:
        a, b = int(round(onset * sample_rate)), min(n, int(round(offset * sample_rate)))
        if b - a < 2:
            continue
        sig = generate(rng, b - a, sample_rate, similarity)
        rms = np.sqrt(np.mean(sig**2)) + 1e-12
        y[a:b] += sig * (bg_rms * 10 ** (rng.uniform(*snr_db) / 20) / rms)
    peak = np.abs(y).max()
    if peak > 0.95:
        y *= 0.95 / peak
    return y.astype(np.float32)


def write_metadata(
    out: Path, plans: list[ClipPlan], seconds: float, sample_rate: int, classes: tuple[str, ...],
    groups: Mapping[str, str] | None = None,
) -> None:
    """Write metadata/: strong and weak TSVs per split, durations.tsv and classes.txt.

    With `groups` (clip id `<split>/<name>` -> group) both TSVs get a `group` column, and a clip
    without events gets an empty strong row (DESED style) so that its group is recorded there too.
    """
    meta = out / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    duration = round(seconds * sample_rate) / sample_rate
    tail = "" if groups is None else "\tgroup"
    for split, _ in SPLITS:
        strong = ["filename\tonset\toffset\tevent_label" + tail]
        weak = ["filename\tevent_labels" + tail]
        for p in (p for p in plans if p.split == split):
            g = "" if groups is None else f"\t{groups[f'{split}/{p.name}']}"
            strong += [f"{p.name}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}{g}" for e in p.events]
            if groups is not None and not p.events:
                strong.append(f"{p.name}\t\t\t{g}")
            weak.append(f"{p.name}\t{','.join(sorted({e.label for e in p.events}))}{g}")
        (meta / f"{split}.tsv").write_text("\n".join(strong) + "\n")
        (meta / f"{split}_weak.tsv").write_text("\n".join(weak) + "\n")
    rows = ["filename\tduration"] + [f"{p.split}/{p.name}\t{duration:.3f}" for p in plans]
    (meta / "durations.tsv").write_text("\n".join(rows) + "\n")
    (meta / "classes.txt").write_text("\n".join(classes) + "\n")


def synthesize(
    out: Path,
    clips: int = 600,
    seconds: float = 4.0,
    seed: int = 0,
    sample_rate: int = 16000,
    progress: bool = False,
    *,
    snr_db: tuple[float, float] = SNR_RANGE_DB,
    similarity: float = SIMILARITY,
    distractors: float = DISTRACTOR_RATE,
    events_per_clip: tuple[int, int] = EVENTS_PER_CLIP,
    event_seconds: tuple[float, float] = EVENT_SECONDS,
    classes: tuple[str, ...] = CLASSES,
    shift: bool = False,
    instances: tuple[int, int, int] = SHIFT_INSTANCES,
) -> Path:
    """Write the dataset under `out` and return it; same arguments give byte-identical files.

    Difficulty: lower `snr_db` (per-event SNR range over the background, dB), higher
    `similarity` (0..1, how far confusable class pairs overlap in pitch, rate and timbre) and
    more `distractors` (mean number of unlabelled near-miss sounds per clip, Poisson); `classes`
    is a subset of the ten CLASSES (fewer classes: an easier dataset).
    `shift` draws each split's sounds from its own source `instances` per class (train, valid,
    test) and background recordings (`harmonia.data.shift`), and writes a `group` per clip.
    """
    unknown = [c for c in classes if c not in GENERATORS]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct names among {', '.join(CLASSES)}; got {classes!r}")
    if not 0.0 <= similarity <= 1.0:
        raise ValueError(f"similarity must be in [0, 1], got {similarity}")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if snr_db[0] > snr_db[1] or not 1 <= events_per_clip[0] <= events_per_clip[1]:
        raise ValueError(f"bad ranges: snr_db={snr_db}, events_per_clip={events_per_clip}")
    if not 0.01 <= event_seconds[0] <= event_seconds[1]:
        raise ValueError(f"event_seconds={event_seconds} must satisfy 0.01 <= shortest <= longest")
    out = Path(out)
    plans = plan_clips(clips, seconds, seed, tuple(classes), events_per_clip, event_seconds)
    for split, _ in SPLITS:
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    renderer = None
    if shift:
        world = plan_world(seed, tuple(classes), instances)
        renderer = ShiftRenderer(world, GENERATORS, DISTRACTORS, colored_noise)
    groups: dict[str, str] = {}

    def render_all(advance: Callable[[], None]) -> None:
        for plan in plans:
            if renderer is None:
                y = render_clip(plan, seconds, sample_rate, snr_db, similarity, distractors)
            else:
                y, groups[f"{plan.split}/{plan.name}"] = renderer.render(
                    plan, seconds, sample_rate, snr_db, similarity, distractors)
            write_wav(out / "audio" / plan.split / plan.name, y, sample_rate)
            advance()

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns) as bar:
            task = bar.add_task("synth", total=len(plans))
            render_all(lambda: bar.advance(task))
    else:
        render_all(lambda: None)
    write_metadata(out, plans, seconds, sample_rate, tuple(classes), groups if shift else None)
    return out


# --- Acoustic scenes in the DCASE 2018 task 1 development-set layout -------------------------------


@dataclass(frozen=True)
class SceneProfile:
    """What a scene sounds like: background colour odds (white, pink, brown), the odds of each sound
    (event classes and unlabelled distractors), and the mean number of sounds per clip beyond one."""

    colors: tuple[float, float, float]
    sounds: dict[str, float]
    rate: float


SCENE_PROFILES: dict[str, SceneProfile] = {
    # The ten DCASE 2018 task 1 scenes, in its order; ingredients overlap on purpose.
    "airport": SceneProfile((0.2, 0.6, 0.2), {"babble": 3, "beep": 1.5, "bell": 1, "engine": 1, "knock": 0.5}, 2.0),
    "bus": SceneProfile((0.1, 0.3, 0.6), {"engine": 3, "hum": 2, "babble": 1, "beep": 0.5}, 1.5),
    "metro": SceneProfile((0.1, 0.2, 0.7), {"hum": 3, "click_train": 2, "siren": 1, "engine": 1}, 1.5),
    "metro_station": SceneProfile((0.2, 0.5, 0.3), {"babble": 2, "hum": 2, "click_train": 1, "whistle": 1}, 2.0),
    "park": SceneProfile((0.6, 0.3, 0.1), {"chirp": 3, "whistle": 1.5, "rain": 1, "babble": 0.5}, 1.5),
    "public_square": SceneProfile((0.4, 0.4, 0.2), {"babble": 2, "chirp": 1, "bell": 1, "knock": 1}, 2.0),
    "shopping_mall": SceneProfile((0.2, 0.7, 0.1), {"babble": 3, "beep": 1, "knock": 1, "blip": 1}, 2.5),
    "street_pedestrian": SceneProfile((0.5, 0.3, 0.2), {"knock": 2, "babble": 2, "engine": 1, "burst": 1}, 2.0),
    "street_traffic": SceneProfile((0.3, 0.2, 0.5), {"engine": 3, "siren": 1, "beep": 1, "burst": 1}, 2.0),
    "tram": SceneProfile((0.2, 0.2, 0.6), {"hum": 2, "bell": 2, "click_train": 1, "engine": 1}, 1.5),
}
CITIES: tuple[str, ...] = ("barcelona", "helsinki", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
SEGMENTS_PER_LOCATION: float = 4.5
EVALUATE_FRACTION: float = 0.3
SCENE_SNR_DB: tuple[float, float] = (0.0, 12.0)


@dataclass(frozen=True)
class ScenePlan:
    filename: str  # audio/<scene>-<city>-<location>-<segment>-a.wav, as in DCASE 2018
    scene: str
    identifier: str  # <city>-<location>: the recording location
    part: str  # "train" or "evaluate" (fold 1)
    location_seed: int
    seed: int


def plan_scenes(clips: int, seed: int, scenes: int | tuple[str, ...] = 10) -> list[ScenePlan]:
    """Clips spread evenly over the scenes, grouped into locations of about 4–5 segments; about 30 %
    of each scene's locations (at least one) are the evaluate fold, the others the train fold."""
    names = tuple(SCENE_PROFILES)[:scenes] if isinstance(scenes, int) else tuple(scenes)
    unknown = [n for n in names if n not in SCENE_PROFILES]
    if unknown or not 2 <= len(names):
        raise ValueError(f"scenes must be 2–{len(SCENE_PROFILES)} of {', '.join(SCENE_PROFILES)}; got {scenes!r}")
    if clips < 3 * len(names):
        raise ValueError(f"clips={clips} is too few for {len(names)} scenes (need >= {3 * len(names)}: three "
                         "locations per scene, for the train, valid and evaluate locations)")
    rng = np.random.default_rng(seed)
    plans: list[ScenePlan] = []
    location = 0
    for i, scene in enumerate(names):
        n = clips // len(names) + (i < clips % len(names))
        n_loc = max(3, int(round(n / SEGMENTS_PER_LOCATION)))
        sizes = np.bincount(rng.integers(0, n_loc, n - n_loc), minlength=n_loc) + 1  # every location >= 1 clip
        evaluate = set(rng.permutation(n_loc)[: max(1, int(round(EVALUATE_FRACTION * n_loc)))].tolist())
        for j, size in enumerate(sizes):
            city = str(rng.choice(CITIES))
            loc_seed = int(rng.integers(2**62))
            for segment in range(int(size)):
                plans.append(ScenePlan(f"audio/{scene}-{city}-{location}-{segment}-a.wav", scene, f"{city}-{location}",
                                       "evaluate" if j in evaluate else "train", loc_seed, int(rng.integers(2**62))))
            location += 1
    return plans


def render_scene(plan: ScenePlan, seconds: float, sample_rate: int, similarity: float = SIMILARITY) -> np.ndarray:
    """A scene clip: the location's background colour (mostly) and level, sounds drawn from the
    location's own mixture of the scene's ingredients, then the location's room (a decaying-noise
    reverb) — so locations of one scene differ and a model must generalize across them."""
    profile = SCENE_PROFILES[plan.scene]
    loc = np.random.default_rng(plan.location_seed)
    names = sorted(profile.sounds)
    weights = loc.dirichlet(np.array([profile.sounds[k] for k in names]) * 10.0)
    color = str(loc.choice(NOISE_COLORS, p=profile.colors))
    bg_db = loc.uniform(*BACKGROUND_DBFS)
    tau = loc.uniform(0.02, 0.2)
    wet = loc.uniform(0.1, 0.6)
    rng = np.random.default_rng(plan.seed)
    n = int(round(seconds * sample_rate))
    if rng.random() < 0.25:
        color = str(rng.choice(NOISE_COLORS))
    bg_rms = 10 ** ((bg_db + rng.normal(0, 2)) / 20)
    y = bg_rms * colored_noise(rng, n, color)
    for _ in range(1 + int(rng.poisson(profile.rate))):
        name = str(rng.choice(names, p=weights))
        length = min(seconds, rng.uniform(0.3, 2.0))
        a = int(round(rng.uniform(0, seconds - length) * sample_rate))
        b = min(n, a + int(round(length * sample_rate)))
        if b - a < 2:
            continue
        sig = (GENERATORS.get(name) or DISTRACTORS[name])(rng, b - a, sample_rate, similarity)
        y[a:b] += sig * (bg_rms * 10 ** (rng.uniform(*SCENE_SNR_DB) / 20) / (np.sqrt(np.mean(sig**2)) + 1e-12))
    k = np.arange(max(2, int(3 * tau * sample_rate))) / sample_rate
    ir = loc.standard_normal(len(k)) * np.exp(-k / tau)
    rev = fftconvolve(y, ir / (np.sqrt(np.sum(ir**2)) + 1e-12))[:n]
    y = (1 - wet) * y + wet * rev
    peak = np.abs(y).max()
    if peak > 0.95:
        y *= 0.95 / peak
    return y.astype(np.float32)


def _write_scene_metadata(out: Path, plans: list[ScenePlan]) -> None:
    rows = sorted(plans, key=lambda p: p.filename)
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    meta += [f"{p.filename}\t{p.scene}\t{p.identifier}\ta" for p in rows]
    (out / "meta.csv").write_text("\n".join(meta) + "\n")
    setup = out / "evaluation_setup"
    setup.mkdir(parents=True, exist_ok=True)
    for part in ("train", "evaluate"):
        lines = ["filename\tscene_label"] + [f"{p.filename}\t{p.scene}" for p in rows if p.part == part]
        (setup / f"fold1_{part}.csv").write_text("\n".join(lines) + "\n")
    test = ["filename"] + [p.filename for p in rows if p.part == "evaluate"]
    (setup / "fold1_test.csv").write_text("\n".join(test) + "\n")


def synthesize_scenes(
    out: Path,
    clips: int = 600,
    seconds: float = 4.0,
    seed: int = 0,
    sample_rate: int = 16000,
    progress: bool = False,
    *,
    scenes: int | tuple[str, ...] = 10,
    similarity: float = SIMILARITY,
) -> Path:
    """Write an acoustic scene dataset in the DCASE 2018 task 1 development layout under `out`
    (meta.csv, audio/, evaluation_setup/fold1_{train,evaluate,test}.csv); same arguments give
    byte-identical files. `scenes` is a number of the ten DCASE 2018 scenes or their names."""
    out = Path(out)
    plans = plan_scenes(clips, seed, scenes)
    (out / "audio").mkdir(parents=True, exist_ok=True)

    def render_all(advance: Callable[[], None]) -> None:
        for plan in plans:
            write_wav(out / plan.filename, render_scene(plan, seconds, sample_rate, similarity), sample_rate)
            advance()

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("synth scenes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task("synth", total=len(plans))
            render_all(lambda: bar.advance(task))
    else:
        render_all(lambda: None)
    _write_scene_metadata(out, plans)
    return out
