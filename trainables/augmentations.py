"""Batch augmentations on normalized features, registered by name with a small config each."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Batch:
    """Features [B, T, F], clip targets [B, C], optional frame targets [B, T, C]."""

    x: torch.Tensor
    y: torch.Tensor
    y_frames: torch.Tensor | None = None


class Augmentation(Protocol):
    def __call__(self, batch: Batch, gen: torch.Generator) -> Batch: ...


@dataclass(frozen=True)
class AugmentationSpec:
    name: str
    config_type: type
    build: Callable[[object], Augmentation]


AUGMENTATIONS: dict[str, AugmentationSpec] = {}


def register_augmentation(name: str, config_type: type):
    """Register `build(cfg) -> Augmentation`; its params are `<name>.<field>` in a trial config."""

    def deco(build):
        AUGMENTATIONS[name] = AugmentationSpec(name, config_type, build)
        return build

    return deco


def build_augmentations(params: dict) -> list[Augmentation]:
    """The augmentations switched on in flat trial params (`aug.<name>: True` plus `<name>.<field>`)."""
    chosen = []
    for name, spec in AUGMENTATIONS.items():
        if not params.get(f"aug.{name}", False):
            continue
        kwargs = {f.name: params[f"{name}.{f.name}"] for f in fields(spec.config_type) if f"{name}.{f.name}" in params}
        chosen.append(spec.build(spec.config_type(**kwargs)))
    return chosen


def _beta(alpha: float, gen: torch.Generator) -> float:
    """λ ~ Beta(α, α) drawn from `gen` (two gammas), so augmentation is reproducible per trial seed."""
    a = torch._standard_gamma(torch.full((2,), float(alpha)), generator=gen)
    return float(a[0] / a.sum())


@dataclass(frozen=True)
class ChunkMixConfig:
    p: float = 0.6  # chance of each added chunk (the paper's per-chunk chances: 40–80 %)
    chunks: int = 3  # chances per clip (the paper: up to 3 no-event + 2 same-label chunks)
    min_span: float = 0.5  # chunk length as a fraction of the clip: drawn from [min_span, max_span]
    max_span: float = 1.0
    max_attenuation: float = 1.0  # the chunk is lowered by U(0, this) normalized units (random amplitude)
    same_label: bool = True  # False: chunks of no-event clips only (task sequence: see ChunkMix)


@dataclass(frozen=True)
class Chunk:
    """One added chunk: frames [src_start, src_start + length) of clip `src`, lowered by `-gain`, added
    onto frames [start, start + length) of clip `dst`."""

    dst: int
    src: int
    start: int
    src_start: int
    length: int
    gain: float


class ChunkMix:
    """Chunk mixing: add chunks (time spans) of other clips that have the same labels or no event.

    dcase2018_workshop_proceedings.txt L13552–13564 and Table 2 (L13591–13599): each training chunk
    gets up to 3 chunks of random files with label 0 (no bird) and 2 of random files with the same
    label, each with its own chance (40–80 %), amplitudes scaled by a random factor, then summed.
    Here: per clip, `chunks` chances of `p` each; the source is drawn uniformly from the other clips
    of the batch whose label row equals the clip's or is all zero (none eligible: nothing added); the
    chunk is `length` ∈ [min_span, max_span] × T frames taken at a random position of the source and
    added at a random position of the clip. The paper's chunks span the whole example (4 s ± 0.4 s),
    max_span = 1; shorter spans are what the search may also try.

    On normalized log-mel features (cheap, on the batch): the sum of two sources' energies is taken
    as the element-wise max of their log-mel (the log-max approximation, exact up to ~3 dB; per-bin
    standardization is increasing, so it commutes with the max), the chunk lowered first by a gain
    drawn from U(0, max_attenuation) (standardized units: the random amplitude factor). On MFCC the
    max is a perturbation of the same shape, not a superposition. The original frames are never
    lowered, so nothing of the clip's own events is lost.

    Labels: clip labels are unchanged. The source has the same label set (so the clip's tags stay
    true) or no event (so it adds none). Scene clips carry one-hot labels, so sources are clips of
    the same scene (the same-scene rule). SED: frame targets of the added chunk are OR-ed into the
    clip's at the span it lands on, so frame labels stay true where a same-label source's event
    lands; ORing (rather than allowing no-event sources only) keeps the paper's same-label chunks and
    adds only classes the clip already has. Task sequence (CTC on the ordered events) sets
    `same_label` off: an added same-label event would change the sequence, a no-event chunk does not.
    """

    def __init__(self, cfg: ChunkMixConfig):
        if not 0 <= cfg.p <= 1 or cfg.chunks < 1 or not 0 < cfg.min_span <= cfg.max_span <= 1 \
                or cfg.max_attenuation < 0:
            raise ValueError(f"chunkmix: need 0 ≤ p ≤ 1, chunks ≥ 1, 0 < min_span ≤ max_span ≤ 1 and "
                             f"max_attenuation ≥ 0, got {cfg}")
        self.cfg = cfg

    def sources(self, y: torch.Tensor) -> torch.Tensor:
        """[B, B] bool: clip j may give clip i a chunk (j ≠ i; same label row, or no event)."""
        none = (y == 0).all(1)
        ok = none[None, :].expand(len(y), -1).clone()
        if self.cfg.same_label:
            ok |= (y[:, None, :] == y[None, :, :]).all(-1)
        ok.fill_diagonal_(False)
        return ok

    def plan(self, batch: Batch, gen: torch.Generator) -> list[Chunk]:
        """The chunks to add to `batch` (in order), drawn from `gen`."""
        b, t = batch.x.shape[:2]
        ok = self.sources(batch.y)
        lo = max(1, int(round(self.cfg.min_span * t)))
        hi = max(lo, int(round(self.cfg.max_span * t)))
        out = []
        for i in range(b):
            eligible = torch.nonzero(ok[i]).flatten()
            for _ in range(self.cfg.chunks):
                if float(torch.rand(1, generator=gen)) >= self.cfg.p or not len(eligible):
                    continue
                j = int(eligible[int(torch.randint(len(eligible), (1,), generator=gen))])
                length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
                start = int(torch.randint(0, t - length + 1, (1,), generator=gen))
                src_start = int(torch.randint(0, t - length + 1, (1,), generator=gen))
                gain = -float(torch.rand(1, generator=gen)) * self.cfg.max_attenuation
                out.append(Chunk(i, j, start, src_start, length, gain))
        return out

    def apply(self, batch: Batch, chunks: list[Chunk]) -> Batch:
        """`batch` with `chunks` added (sources read from the unmodified batch); labels kept, frame
        targets OR-ed over each chunk's span."""
        x, yf = batch.x.clone(), None if batch.y_frames is None else batch.y_frames.clone()
        t = x.shape[1]
        for c in chunks:
            piece = batch.x[c.src, c.src_start:c.src_start + c.length] + c.gain
            x[c.dst, c.start:c.start + c.length] = torch.maximum(x[c.dst, c.start:c.start + c.length], piece)
            if yf is not None:
                a, n = _scale_span(c.start, c.length, t, yf.shape[1])
                sa, _ = _scale_span(c.src_start, c.length, t, yf.shape[1])
                n = min(n, yf.shape[1] - a, yf.shape[1] - sa)
                yf[c.dst, a:a + n] = torch.maximum(yf[c.dst, a:a + n], batch.y_frames[c.src, sa:sa + n])
        return replace(batch, x=x, y_frames=yf)

    def __call__(self, batch: Batch, gen: torch.Generator) -> Batch:
        return self.apply(batch, self.plan(batch, gen))


@register_augmentation("chunkmix", ChunkMixConfig)
def build_chunkmix(cfg: ChunkMixConfig) -> Augmentation:
    """Registered first: it compares hard label rows, before any label-mixing augmentation runs."""
    return ChunkMix(cfg)


@dataclass(frozen=True)
class MixupConfig:
    alpha: float = 0.4


class Mixup:
    """x = λ xi + (1-λ) xj and y = λ yi + (1-λ) yj, λ ~ Beta(α, α), j a permutation of the batch.

    sample_mixed_augmentation_crnn.txt §3.1.
    """

    def __init__(self, cfg: MixupConfig):
        if cfg.alpha <= 0:
            raise ValueError(f"mixup.alpha must be > 0, got {cfg.alpha}")
        self.alpha = cfg.alpha

    def __call__(self, batch: Batch, gen: torch.Generator) -> Batch:
        lam = _beta(self.alpha, gen)
        perm = torch.randperm(batch.x.shape[0], generator=gen)
        mix = lambda t: None if t is None else lam * t + (1 - lam) * t[perm]  # noqa: E731
        return Batch(mix(batch.x), mix(batch.y), mix(batch.y_frames))


@register_augmentation("mixup", MixupConfig)
def build_mixup(cfg: MixupConfig) -> Augmentation:
    return Mixup(cfg)


@dataclass(frozen=True)
class TimeIntervalDropoutConfig:
    p: float = 0.3
    max_span: float = 0.25


class TimeIntervalDropout:
    """With probability p, skip a random span of frames at a random position, as when reading audio.

    The rest of the clip moves forward and the end is filled with the clip's minimum (silence), so
    the length is kept; frame targets move with it. Proceedings L13679–13685 (30 % chance, span up to
    a chunk); `max_span` is the longest span as a fraction of the clip.
    """

    def __init__(self, cfg: TimeIntervalDropoutConfig):
        if not 0 <= cfg.p <= 1 or not 0 < cfg.max_span < 1:
            raise ValueError(f"tid.p must be in [0, 1] and tid.max_span in (0, 1), got {cfg}")
        self.cfg = cfg

    def __call__(self, batch: Batch, gen: torch.Generator) -> Batch:
        x, yf = batch.x.clone(), None if batch.y_frames is None else batch.y_frames.clone()
        t = x.shape[1]
        apply = torch.rand(x.shape[0], generator=gen) < self.cfg.p
        for i in torch.nonzero(apply).flatten().tolist():
            span = int(torch.randint(1, max(2, int(self.cfg.max_span * t) + 1), (1,), generator=gen))
            start = int(torch.randint(0, t - span + 1, (1,), generator=gen))
            x[i] = drop_span(x[i], start, span, fill=float(x[i].min()))
            if yf is not None:
                frame_start, frame_span = _scale_span(start, span, t, yf.shape[1])
                yf[i] = drop_span(yf[i], frame_start, frame_span, fill=0.0)
        return replace(batch, x=x, y_frames=yf)


def _scale_span(start: int, span: int, t: int, t_out: int) -> tuple[int, int]:
    r = t_out / t
    return int(start * r), max(1, int(round(span * r)))


def drop_span(a: torch.Tensor, start: int, span: int, fill: float) -> torch.Tensor:
    """`a` [T, ...] without rows start..start+span, padded at the end to length T with `fill`."""
    rest = torch.cat([a[:start], a[start + span:]])
    pad = a.new_full((a.shape[0] - rest.shape[0], *a.shape[1:]), fill)
    return torch.cat([rest, pad])


@register_augmentation("tid", TimeIntervalDropoutConfig)
def build_time_interval_dropout(cfg: TimeIntervalDropoutConfig) -> Augmentation:
    return TimeIntervalDropout(cfg)


@dataclass(frozen=True)
class SampleMixConfig:
    alpha: float = 1.0


class SampleMix:
    """Mixes each sample with a partner and keeps the FIRST sample's labels (no label mixing).

    sample_mixed_augmentation_crnn.txt §3.2 SamplePairing (x = 0.5 xi + 0.5 xj), §3.3 mixup-lp
    (x = λ xi + (1-λ) xj), §3.4 extrapolation (x = (1+λ) xi − λ xj); λ ~ Beta(α, α).
    """

    def __init__(self, kind: str, cfg: SampleMixConfig):
        if kind not in ("pairing", "interpolate", "extrapolate"):
            raise ValueError(f"unknown sample-mix kind {kind!r}")
        if cfg.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {cfg.alpha}")
        self.kind, self.alpha = kind, cfg.alpha

    def weights(self, gen: torch.Generator) -> tuple[float, float]:
        """(weight of xi, weight of xj)."""
        if self.kind == "pairing":
            return 0.5, 0.5
        lam = _beta(self.alpha, gen)
        return (lam, 1 - lam) if self.kind == "interpolate" else (1 + lam, -lam)

    def __call__(self, batch: Batch, gen: torch.Generator) -> Batch:
        wi, wj = self.weights(gen)
        perm = torch.randperm(batch.x.shape[0], generator=gen)
        return replace(batch, x=wi * batch.x + wj * batch.x[perm])


@register_augmentation("samplepairing", SampleMixConfig)
def build_samplepairing(cfg: SampleMixConfig) -> Augmentation:
    return SampleMix("pairing", cfg)


@register_augmentation("mixup_lp", SampleMixConfig)
def build_mixup_lp(cfg: SampleMixConfig) -> Augmentation:
    return SampleMix("interpolate", cfg)


@register_augmentation("extrapolation", SampleMixConfig)
def build_extrapolation(cfg: SampleMixConfig) -> Augmentation:
    return SampleMix("extrapolate", cfg)


@dataclass(frozen=True)
class SpecAugmentConfig:
    time_masks: int = 2
    time_width: int = 20
    freq_masks: int = 2
    freq_width: int = 8


class SpecAugment:
    """SpecAugment-style masking: zero `time_masks` spans of up to `time_width` frames and `freq_masks`
    bands of up to `freq_width` mel bins per sample (0 is the train mean after normalization)."""

    def __init__(self, cfg: SpecAugmentConfig):
        self.cfg = cfg

    def masks(self, t: int, f: int, gen: torch.Generator) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The ([start, end) time spans, [start, end) mel bands) for one sample."""
        def spans(n: int, width: int, size: int) -> list[tuple[int, int]]:
            out = []
            for _ in range(n):
                w = int(torch.randint(0, min(width, size) + 1, (1,), generator=gen))
                s = int(torch.randint(0, size - w + 1, (1,), generator=gen))
                out.append((s, s + w))
            return out

        return spans(self.cfg.time_masks, self.cfg.time_width, t), spans(self.cfg.freq_masks, self.cfg.freq_width, f)

    def __call__(self, batch: Batch, gen: torch.Generator) -> Batch:
        x = batch.x.clone()
        for i in range(x.shape[0]):
            times, bands = self.masks(x.shape[1], x.shape[2], gen)
            for a, b in times:
                x[i, a:b, :] = 0.0
            for a, b in bands:
                x[i, :, a:b] = 0.0
        return replace(batch, x=x)


@register_augmentation("specaugment", SpecAugmentConfig)
def build_specaugment(cfg: SpecAugmentConfig) -> Augmentation:
    return SpecAugment(cfg)


def balanced_sampling_weights(y: "torch.Tensor | np.ndarray", max_ratio: float = 5.0) -> torch.Tensor:
    """Per-clip sampling weights so that, per mini-batch, the most frequent class occurs at most about
    `max_ratio` times as often as the least frequent (gated_crnn_attention_dcase2017.txt §2.2)."""
    y = torch.as_tensor(y, dtype=torch.float32)
    freq = y.sum(0).clamp(min=1.0)
    # Each class's target share is its frequency compressed into [1, max_ratio] × the rarest.
    target = freq.min() * (freq / freq.min()).clamp(max=max_ratio)
    per_class = target / freq
    w = (y * per_class).max(1).values
    return torch.where(y.sum(1) > 0, w, per_class.min())
