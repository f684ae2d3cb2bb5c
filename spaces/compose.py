"""The define-by-run function OptunaSearch samples: architecture + training + augmentations."""

from __future__ import annotations

from typing import Any

from harmonia.config import FeatureConfig
from harmonia.spaces.architectures import ARCHITECTURE_SPACES, ARCHITECTURE_TASKS, architectures_for
from harmonia.spaces.augmentations import (AUGMENTATION_SPACES, WAVEFORM_COPIES_PARAM, augmentations_for,
                                           check_waveform_copies, waveform_copies_space)
from harmonia.spaces.core import POSITIVE, SIZE, RecordingTrial, Space, SpaceError
from harmonia.spaces.features import FEATURE_KIND_PARAM, feature_kinds, features_space
from harmonia.spaces.schedules import SCHEDULE_SPACES, lr_schedule_space, schedule_choices
from harmonia.spaces.semi_supervised import SEMI_SUPERVISED_SPACES, check_semi_supervised, semi_supervised_space


def training_space(s: Space) -> None:
    s.float("lr", 1e-3, 1e-2, log=True, domain=POSITIVE)
    s.categorical("batch_size", [16, 32, 64], domain=SIZE)
    s.bool("balanced_batches")
    lr_schedule_space(s)


class DefineByRun:
    """The function of an optuna.Trial that `OptunaSearch(space=...)` takes; returns the constants.

    A class rather than a closure so that Tune can pickle the searcher state for resume. `arch` is
    sampled from the architectures of `task` only (CRNN-CTC for "sequence", never for the others).
    `features.kind` from `feature_kinds(overrides, feature_kind)` (the config's kind unless the space
    names others); `aug.waveform_copies` only when the config precomputes copies (`n_copies` > 0).
    """

    def __init__(self, overrides: dict[str, Any] | None = None, task: str = "tagging",
                 feature_kind: str | None = "logmel", n_copies: int = 0):
        self.overrides = dict(overrides or {})
        self.task = task
        self.feature_kind, self.n_copies = feature_kind, n_copies

    def __setstate__(self, state: dict[str, Any]) -> None:
        # searcher state pickled before `task` / the feature kind existed: its trials keep the config's kind
        self.__dict__.update({"task": "tagging", "feature_kind": None, "n_copies": 0, **state})

    def __call__(self, trial) -> dict[str, Any]:
        s = Space(trial, self.overrides)
        if self.feature_kind is not None:
            features_space(s, self.feature_kind)
        arch = s.categorical("arch", architectures_for(self.task))
        ARCHITECTURE_SPACES[arch](s)
        training_space(s)
        for name in augmentations_for(self.task):
            if s.bool(f"aug.{name}"):
                AUGMENTATION_SPACES[name](s)
        waveform_copies_space(s, self.n_copies)
        semi_supervised_space(s)
        return s.constants


def define_by_run(overrides: dict[str, Any] | None = None, task: str = "tagging",
                  features: FeatureConfig | None = None) -> DefineByRun:
    """The space of a config: `features` is its `features` section (the default kind and the copies)."""
    features = features or FeatureConfig()
    return DefineByRun(overrides, task, features.kind, features.augmented_copies.n_copies)


def parameter_names() -> dict[str, list[str]]:
    """Every parameter a space can suggest, grouped by the part that owns it."""
    parts: dict[str, list[str]] = {"search": ["arch"], "features": [FEATURE_KIND_PARAM]}
    switches = {"augmentation": "aug.", "semi-supervised": "semi."}
    for group, registry in (("architecture", ARCHITECTURE_SPACES), ("augmentation", AUGMENTATION_SPACES),
                            ("schedule", SCHEDULE_SPACES), ("semi-supervised", SEMI_SUPERVISED_SPACES)):
        for name, fn in registry.items():
            s = Space(RecordingTrial())
            fn(s)
            parts[f"{group} {name}"] = ([switches[group] + name] if group in switches else []) + s.seen
    parts["augmentation waveform_copies"] = [WAVEFORM_COPIES_PARAM]
    s = Space(RecordingTrial())
    training_space(s)
    parts["training"] = s.seen
    return parts


def validate_overrides(overrides: dict[str, Any], task: str | None = "tagging",
                       features: FeatureConfig | None = None) -> None:
    """Unknown names, empty choices, inverted ranges, unknown feature kinds, waveform copies forced on
    without precomputed ones (in `features`, the config's section) and (with a task) architectures
    that do not support the task raise SpaceError before any trial starts."""
    features = features or FeatureConfig()
    valid = sorted({n for names in parameter_names().values() for n in names})
    for key in overrides:
        if key not in valid:
            raise SpaceError(f"space.{key}: unknown parameter; valid: {', '.join(valid)}")
    arch = overrides.get("arch")
    if arch is not None:
        for a in arch if isinstance(arch, list) else [arch]:
            if a not in ARCHITECTURE_SPACES:
                raise SpaceError(f"space.arch: unknown architecture {a!r}; valid: {', '.join(sorted(ARCHITECTURE_SPACES))}")
            if task is not None and task not in ARCHITECTURE_TASKS[a]:
                raise SpaceError(f"space.arch: architecture {a!r} does not support task {task!r} (it supports: "
                                 f"{', '.join(ARCHITECTURE_TASKS[a])}); architectures for task {task!r}: "
                                 f"{', '.join(architectures_for(task)) or 'none'}")
    if task is not None and not architectures_for(task):
        raise SpaceError(f"task {task!r}: no architecture supports it")
    for name in sorted(set(AUGMENTATION_SPACES) - set(augmentations_for(task))):
        value = overrides.get(f"aug.{name}")
        if value is True or (isinstance(value, list) and True in value):
            raise SpaceError(f"space.aug.{name}: augmentation {name!r} breaks the event order that task {task!r} "
                             f"learns; augmentations for it: {', '.join(augmentations_for(task))}")
    # Walk every branch once with a recorder so each override's form is checked.
    for arch_name in ARCHITECTURE_SPACES:
        s = Space(RecordingTrial(), overrides)
        ARCHITECTURE_SPACES[arch_name](s)
    for fn in SCHEDULE_SPACES.values():
        fn(Space(RecordingTrial(), overrides))
    check_semi_supervised(overrides, task)
    for name, fn in SEMI_SUPERVISED_SPACES.items():
        s = Space(RecordingTrial(), overrides)
        s.bool(f"semi.{name}")
        fn(s)
    s = Space(RecordingTrial(), overrides)
    training_space(s)
    for name, fn in AUGMENTATION_SPACES.items():
        s.bool(f"aug.{name}")
        fn(s)
    feature_kinds(overrides, features.kind)
    check_waveform_copies(overrides, features.augmented_copies.n_copies)
    if WAVEFORM_COPIES_PARAM in overrides:
        s.bool(WAVEFORM_COPIES_PARAM)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(name: str, default: Any, override: Any) -> str:
    """What parameter `name` can take: `fixed V`, `choices a, b` or `range [low, high] (log)`."""
    if override is not None and not isinstance(override, (list, dict)):
        return f"fixed {_shown(override)}"
    if isinstance(override, dict) and "choices" in override:
        override = override["choices"]
    if isinstance(override, list) and sorted(override) == [False, True]:
        return "on or off"
    if isinstance(override, list):
        return "fixed " + _shown(override[0]) if len(override) == 1 else "choices " + ", ".join(map(_shown, override))
    if isinstance(default, tuple):
        low, high, log = default
        if isinstance(override, dict):
            low, high = override.get("low", low), override.get("high", high)
            log = bool(override.get("log", log))
        return f"range [{_shown(low)}, {_shown(high)}]" + (" log" if log else "")
    if list(default) == [False, True]:
        return "on or off"
    if len(default) == 1:
        return f"fixed {_shown(default[0])}"
    return "choices " + ", ".join(map(_shown, default))


def describe_space(overrides: dict[str, Any] | None, task: str = "tagging",
                   features: FeatureConfig | None = None) -> list[tuple[str, str, str]]:
    """(part, parameter, what it can take) for every parameter a search of this config can sample:
    only the architectures and augmentations of `task` that the overrides leave on."""
    overrides, features = dict(overrides or {}), features or FeatureConfig()
    arch_ov = overrides.get("arch")
    archs = architectures_for(task) if arch_ov is None else list(dict.fromkeys(
        arch_ov if isinstance(arch_ov, list) else [arch_ov]))  # the sampler's order
    kinds = feature_kinds(overrides, features.kind)
    rows = [("search", "arch", describe("arch", archs, archs if len(archs) > 1 else archs[0])),
            ("features", FEATURE_KIND_PARAM, describe(FEATURE_KIND_PARAM, kinds, kinds)
             if FEATURE_KIND_PARAM in overrides else f"fixed {features.kind} (features.kind)")]

    def part_rows(part: str, fn, prefix: list[tuple[str, str, str]]) -> None:
        s = Space(RecordingTrial(), overrides)
        fn(s)
        rows.extend(prefix)
        rows.extend((part, n, describe(n, s.defaults[n], overrides.get(n))) for n in s.defaults)

    for a in archs:
        part_rows(f"architecture {a}", ARCHITECTURE_SPACES[a], [])
    part_rows("training", training_space, [])
    shown = {r[1] for r in rows}
    for kind in schedule_choices(overrides):  # the training walk shows the fields of one schedule only
        s = Space(RecordingTrial(), overrides)
        SCHEDULE_SPACES[kind](s)
        rows.extend(("training", n, describe(n, s.defaults[n], overrides.get(n))) for n in s.defaults if n not in shown)
    for name in augmentations_for(task):
        switch = overrides.get(f"aug.{name}")
        if switch is False or switch == [False]:
            rows.append((f"augmentation {name}", f"aug.{name}", "off"))
            continue
        on = describe(f"aug.{name}", [False, True], switch)
        part_rows(f"augmentation {name}", AUGMENTATION_SPACES[name], [(f"augmentation {name}", f"aug.{name}", on)])
    for name, fn in SEMI_SUPERVISED_SPACES.items():
        switch = overrides.get(f"semi.{name}")
        if switch is None or switch is False or switch == [False]:
            rows.append((f"semi-supervised {name}", f"semi.{name}", "off"))
            continue
        part_rows(f"semi-supervised {name}", fn,
                  [(f"semi-supervised {name}", f"semi.{name}", describe(f"semi.{name}", [False, True], switch))])
    if features.augmented_copies.n_copies:
        rows.append(("augmentation waveform_copies", WAVEFORM_COPIES_PARAM,
                     describe(WAVEFORM_COPIES_PARAM, [False, True], overrides.get(WAVEFORM_COPIES_PARAM))))
    else:
        rows.append(("augmentation waveform_copies", WAVEFORM_COPIES_PARAM, "off (features.augmented_copies is empty)"))
    return rows
