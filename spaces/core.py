"""A thin layer over `optuna.Trial` that applies the config's overrides to each named parameter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

SpacePart = Callable[["Space"], None]


class SpaceError(ValueError):
    """A search-space override that cannot be used; names the key and what was expected."""


@dataclass(frozen=True)
class Domain:
    """The values a numeric parameter can take at all (not its search range): overrides must stay inside."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: Any) -> bool:
        """Whether `value` is a (finite) number of this domain; bools are not numbers here, while a
        numeric string is (YAML 1.1 reads `1e-3` without a dot as the string '1e-3')."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return False
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high == math.inf:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


POSITIVE = Domain(0.0, low_open=True)
"""Learning rates, mixing α, width multipliers."""
DROPOUT = Domain(0.0, 1.0, high_open=True)
PROBABILITY = Domain(0.0, 1.0)
FRACTION = Domain(0.0, 1.0, low_open=True)
"""A part of the clip: more than nothing, at most all of it."""
PART = Domain(0.0, 1.0, low_open=True, high_open=True)
"""A part of the clip strictly between nothing and all of it."""
SIZE = Domain(1, integer=True)
"""Counts and sizes: blocks, channels, units, batch size, chunks, masks, widths in frames."""


def check_domain(name: str, domain: Domain | None, values: Sequence[Any], what: str = "") -> None:
    """SpaceError naming the parameter, the first value outside `domain` and the domain."""
    if domain is None:
        return
    for v in values:
        if not domain.contains(v):
            raise SpaceError(f"space.{name}: {what}{v!r} is outside the parameter's domain: {domain}")


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
        self.domains: dict[str, Domain | None] = {}
        self.defaults: dict[str, Any] = {}  # name → the part's own range (low, high, log) or choices

    def _fixed(self, name: str) -> tuple[bool, Any]:
        self.seen.append(name)
        ov = self.overrides.get(name)
        if ov is None or isinstance(ov, (list, dict)):
            return False, None
        self.constants[name] = ov
        return True, ov

    def _declare(self, name: str, domain: Domain | None, default: Any) -> None:
        self.domains[name], self.defaults[name] = domain, default
        check_domain(name, domain, [v for v in default if not isinstance(v, bool)] if isinstance(default, list)
                     else default[:2], "its own default ")

    def float(self, name: str, low: float, high: float, log: bool = False, *, domain: Domain) -> float:
        self._declare(name, domain, (low, high, log))
        fixed, value = self._fixed(name)
        if fixed:
            check_domain(name, domain, [value])
            return float(value)
        if isinstance(self.overrides.get(name), list):
            return float(self.categorical(name, self.overrides[name], domain=domain))
        low, high, log = _range(name, self.overrides.get(name), low, high, log)
        check_domain(name, domain, [low, high], "range end ")
        return self.trial.suggest_float(name, float(low), float(high), log=log)

    def int(self, name: str, low: int, high: int, log: bool = False, *, domain: Domain) -> int:
        self._declare(name, domain, (low, high, log))
        fixed, value = self._fixed(name)
        if fixed:
            check_domain(name, domain, [value])
            return int(value)
        if isinstance(self.overrides.get(name), list):
            return int(self.categorical(name, self.overrides[name], domain=domain))
        low, high, log = _range(name, self.overrides.get(name), low, high, log)
        check_domain(name, domain, [low, high], "range end ")
        return self.trial.suggest_int(name, int(low), int(high), log=log)

    def categorical(self, name: str, choices: Sequence[Any], *, domain: Domain | None = None) -> Any:
        """Choices among `choices`; numeric choices name their `domain`, which override choices must keep."""
        if name not in self.defaults:
            self._declare(name, domain, list(choices))
        fixed, value = self._fixed(name)
        if fixed:
            if value not in choices:
                raise SpaceError(f"space.{name}: {value!r} is not one of {list(choices)}")
            return value
        choices = override_choices(name, self.overrides.get(name), choices)
        check_domain(name, domain, choices, "choice ")
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


def override_choices(name: str, ov: Any, defaults: Sequence[Any]) -> list[Any]:
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
