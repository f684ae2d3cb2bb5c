"""Search spaces of the semi-supervised methods (`harmonia.trainables.semi_supervised`): opt-in per config.

`semi.<name>` is sampled (on or off) only when the config's space names it; otherwise it is fixed off,
so default searches sample what they did before and build no features for the `unlabeled` split.
"""

from __future__ import annotations

from harmonia.spaces.core import FRACTION, PART, POSITIVE, SIZE, Domain, Space, SpaceError, SpacePart

SEMI_SUPERVISED_SPACES: dict[str, SpacePart] = {}
EMA_DECAY = Domain(0.0, 1.0, high_open=True)
WARMUP = Domain(0, integer=True)
EPSILON = Domain(0.0, 1.0, high_open=True)
SEMI_SUPERVISED_TASKS: dict[str, tuple[str, ...]] = {"mean_teacher": ("tagging", "sed"), "pseudo_label": ("tagging", "sed"),
                                                     "label_smoothing": ("tagging", "sed", "scene")}
"""The tasks each method serves (the trainables' registry checks the same when a trial starts)."""
UNLABELED_METHODS = frozenset({"mean_teacher", "pseudo_label"})


def register_semi_supervised_space(name: str):
    def deco(fn: SpacePart) -> SpacePart:
        SEMI_SUPERVISED_SPACES[name] = fn
        return fn

    return deco


@register_semi_supervised_space("mean_teacher")
def mean_teacher_space(s: Space) -> None:
    """EMA decay 0.99–0.999 (Tarvainen & Valpola 2017 §3; DESED: 0.999), the consistency weight around
    the DESED baseline's 2, and its ramp-up in epochs."""
    s.float("mean_teacher.ema_decay", 0.99, 0.999, domain=EMA_DECAY)
    s.float("mean_teacher.weight", 0.5, 4.0, log=True, domain=POSITIVE)
    s.int("mean_teacher.rampup_epochs", 1, 10, domain=WARMUP)


@register_semi_supervised_space("pseudo_label")
def pseudo_label_space(s: Space) -> None:
    """The first (clip-level) pass's epochs, the tagging threshold (the baseline's 0.5) and the weight of
    the pseudo-labelled batch (DCASE 2018 task 4 baseline, proceedings L1370–1420)."""
    s.int("pseudo_label.first_epochs", 3, 10, domain=SIZE)
    s.float("pseudo_label.threshold", 0.3, 0.7, domain=PART)
    s.float("pseudo_label.weight", 0.3, 1.0, domain=FRACTION)


@register_semi_supervised_space("label_smoothing")
def label_smoothing_space(s: Space) -> None:
    """ε for the unverified clips' targets (proceedings L4445–4465 smooth those; 0.1 is the usual choice)."""
    s.float("label_smoothing.epsilon", 0.05, 0.3, domain=EPSILON)


def semi_supervised_space(s: Space) -> None:
    """`semi.<name>` on or off where the config names it (else fixed off), then the method's fields."""
    for name, fn in SEMI_SUPERVISED_SPACES.items():
        switch = f"semi.{name}"
        if s.bool(switch, (False, True) if switch in s.overrides else (False,)):
            fn(s)


def requested(overrides: dict) -> list[str]:
    """The methods a search of this space may switch on."""
    out = []
    for name in SEMI_SUPERVISED_SPACES:
        ov = overrides.get(f"semi.{name}")
        values = ov.get("choices", []) if isinstance(ov, dict) else (ov if isinstance(ov, list) else [ov])
        if any(v is True for v in values):
            out.append(name)
    return out


def semi_supervised_requested(overrides: dict) -> bool:
    """Whether a search may switch on a method that trains on unlabelled clips (which then need features)."""
    return any(name in UNLABELED_METHODS for name in requested(overrides))


def check_semi_supervised(overrides: dict, task: str | None) -> None:
    """SpaceError for a semi-supervised method switched on for a task it cannot serve."""
    for name in requested(overrides):
        tasks = SEMI_SUPERVISED_TASKS[name]
        if task is not None and task not in tasks:
            raise SpaceError(f"space.semi.{name}: serves tasks {', '.join(tasks)}, not {task!r}")
