"""A thin layer over `optuna.Trial` that applies the config's overrides to each named parameter."""

from __future__ import annotations

from typing import Any, Callable, Sequence

SpacePart = Callable[["Space"], None]


class SpaceError(ValueError):
    """A search-space override that cannot be used; names the key and what was expected."""


class Space:
    """Suggest parameters by name; a config override may fix a value, give choices, or move a range.

    Override forms: a scalar fixes the value; a list gives the choices (numeric parameters too);
    `{low, high, log}` a range;
    `{choices: [...]}` the choices. Fixed values are collected in `constants` (OptunaSearch merges
    what the define-by-run function returns into the config).
    """

    def __init__(self, trial: Any, overrides: dict[str, Any] | None = None):
        self.trial = trial
        self.overrides = overrides or {}
        self.constants: dict[str, Any] = {}
        self.seen: list[str] = []

    def _fixed(self, name: str) -> tuple[bool, Any]:
        self.seen.append(name)
        ov = self.overrides.get(name)
        if ov is None or isinstance(ov, (list, dict)):
            return False, None
        self.constants[name] = ov
        return True, ov

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        fixed, value = self._fixed(name)
        if fixed:
            return float(value)
        if isinstance(self.overrides.get(name), list):
            return float(self.categorical(name, self.overrides[name]))
        low, high, log = _range(name, self.overrides.get(name), low, high, log)
        return self.trial.suggest_float(name, float(low), float(high), log=log)

    def int(self, name: str, low: int, high: int, log: bool = False) -> int:
        fixed, value = self._fixed(name)
        if fixed:
            return int(value)
        if isinstance(self.overrides.get(name), list):
            return int(self.categorical(name, self.overrides[name]))
        low, high, log = _range(name, self.overrides.get(name), low, high, log)
        return self.trial.suggest_int(name, int(low), int(high), log=log)

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        fixed, value = self._fixed(name)
        if fixed:
            if value not in choices:
                raise SpaceError(f"space.{name}: {value!r} is not one of {list(choices)}")
            return value
        choices = _choices(name, self.overrides.get(name), choices)
        if len(choices) == 1:
            self.constants[name] = choices[0]
            return choices[0]
        return self.trial.suggest_categorical(name, list(choices))

    def bool(self, name: str, default_choices: Sequence[bool] = (False, True)) -> bool:
        return bool(self.categorical(name, list(default_choices)))


def _range(name: str, ov: Any, low: float, high: float, log: bool) -> tuple[float, float, bool]:
    if ov is None:
        return low, high, log
    unknown = set(ov) - {"low", "high", "log"}
    if unknown:
        raise SpaceError(f"space.{name}: unknown keys {sorted(unknown)}; valid: high, log, low")
    low, high, log = ov.get("low", low), ov.get("high", high), bool(ov.get("log", log))
    if not low < high:
        raise SpaceError(f"space.{name}: inverted or empty range low={low} high={high}")
    if log and low <= 0:
        raise SpaceError(f"space.{name}: a log range needs low > 0, got {low}")
    return low, high, log


def _choices(name: str, ov: Any, defaults: Sequence[Any]) -> list[Any]:
    if ov is None:
        return list(defaults)
    choices = ov.get("choices") if isinstance(ov, dict) else ov
    if isinstance(ov, dict) and set(ov) != {"choices"}:
        raise SpaceError(f"space.{name}: a choice takes a value, a list, or {{choices: [...]}}")
    if not choices:
        raise SpaceError(f"space.{name}: empty choice list")
    unique: list[Any] = []
    for c in choices:  # a repeated choice would weigh twice in the sampler
        if c not in unique:
            unique.append(c)
    return unique


class RecordingTrial:
    """A stand-in trial that picks the first choice / the low end and remembers what it was asked:
    `values` (name → the value it took) and `choices` (name → the choices offered)."""

    def __init__(self):
        self.values: dict[str, Any] = {}
        self.choices: dict[str, list[Any]] = {}

    def suggest_float(self, name, low, high, log=False):
        self.values[name] = low
        return low

    def suggest_int(self, name, low, high, log=False):
        self.values[name] = low
        return low

    def suggest_categorical(self, name, choices):
        self.choices[name] = list(choices)
        self.values[name] = choices[0]
        return choices[0]
