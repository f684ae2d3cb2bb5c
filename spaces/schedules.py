"""Search space of the learning-rate schedule (`harmonia.trainables.schedules`): opt-in per config.

Without a `space.lr_schedule` / `space.lr_warmup_epochs` override a trial trains at a constant rate
without warm-up, fixed rather than sampled, so default searches sample exactly what they did before.
"""

from __future__ import annotations

from harmonia.spaces.core import PART, Domain, Space, SpaceError, SpacePart

SCHEDULE_SPACES: dict[str, SpacePart] = {}
COUNT = Domain(0, integer=True)
"""Epochs of warm-up: none or more."""
RATIO = Domain(0.0, 1.0, high_open=True)
"""A part of the base rate, below all of it."""


def register_schedule_space(name: str):
    def deco(fn: SpacePart) -> SpacePart:
        SCHEDULE_SPACES[name] = fn
        return fn

    return deco


@register_schedule_space("constant")
def constant_space(s: Space) -> None:
    """The base rate after the warm-up; no parameter."""


@register_schedule_space("exponential")
def exponential_space(s: Space) -> None:
    """× gamma per epoch: from a slow 0.99 to 0.8 (rate halves in about 3 epochs)."""
    s.float("lr_exponential.gamma", 0.8, 0.99, domain=PART)


@register_schedule_space("cosine")
def cosine_space(s: Space) -> None:
    """Half a cosine down to `min_ratio` × the base rate at the last epoch."""
    s.float("lr_cosine.min_ratio", 0.0, 0.1, domain=RATIO)


def schedules_offered(overrides: dict) -> list[str]:
    """The schedules a search samples: all when the config names `lr_schedule`, else constant only."""
    return list(SCHEDULE_SPACES) if "lr_schedule" in overrides else ["constant"]


def lr_schedule_space(s: Space) -> None:
    """`lr_schedule` and `lr_warmup_epochs` (0–5 when the config opens it, else fixed 0), then the
    chosen schedule's own fields."""
    check_schedules(s.overrides)
    kind = s.categorical("lr_schedule", schedules_offered(s.overrides))
    if "lr_warmup_epochs" in s.overrides:
        s.int("lr_warmup_epochs", 0, 5, domain=COUNT)
    else:
        s.categorical("lr_warmup_epochs", [0], domain=COUNT)
    SCHEDULE_SPACES[kind](s)


def schedule_choices(overrides: dict) -> list[str]:
    """The schedules a config's search can train with: its override's value or choices, else constant."""
    ov = overrides.get("lr_schedule")
    if ov is None:
        return ["constant"]
    return list(ov.get("choices", [])) if isinstance(ov, dict) else (list(ov) if isinstance(ov, list) else [ov])


def check_schedules(overrides: dict) -> None:
    """SpaceError for a `space.lr_schedule` naming a schedule that does not exist (listed choices too)."""
    for v in schedule_choices(overrides):
        if v not in SCHEDULE_SPACES:
            raise SpaceError(f"space.lr_schedule: unknown schedule {v!r}; valid: {', '.join(SCHEDULE_SPACES)}")
