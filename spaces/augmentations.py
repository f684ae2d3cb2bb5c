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
