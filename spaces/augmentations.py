"""Search spaces of the augmentations; `aug.<name>` switches one on, its fields follow."""

from __future__ import annotations

from harmonia.spaces.core import Space, SpacePart

AUGMENTATION_SPACES: dict[str, SpacePart] = {}


def register_augmentation_space(name: str):
    def deco(fn: SpacePart) -> SpacePart:
        AUGMENTATION_SPACES[name] = fn
        return fn

    return deco


@register_augmentation_space("mixup")
def mixup_space(s: Space) -> None:
    """α from 0.1 to 2 (sample_mixed_augmentation_crnn.txt §4: best 1.5–2; digest §3: 0.2–1 elsewhere)."""
    s.float("mixup.alpha", 0.1, 2.0, log=True)


@register_augmentation_space("tid")
def time_interval_dropout_space(s: Space) -> None:
    """Probability around the paper's 30 % and the longest skipped span (proceedings L13679)."""
    s.float("tid.p", 0.1, 0.5)
    s.float("tid.max_span", 0.05, 0.3)


@register_augmentation_space("samplepairing")
def samplepairing_space(s: Space) -> None:
    """SamplePairing has no parameter (sample_mixed_augmentation_crnn.txt §3.2)."""


@register_augmentation_space("mixup_lp")
def mixup_lp_space(s: Space) -> None:
    s.float("mixup_lp.alpha", 0.1, 2.0, log=True)


@register_augmentation_space("extrapolation")
def extrapolation_space(s: Space) -> None:
    s.float("extrapolation.alpha", 0.1, 2.0, log=True)


@register_augmentation_space("specaugment")
def specaugment_space(s: Space) -> None:
    s.int("specaugment.time_masks", 1, 3)
    s.int("specaugment.time_width", 5, 40)
    s.int("specaugment.freq_masks", 1, 3)
    s.int("specaugment.freq_width", 2, 12)
