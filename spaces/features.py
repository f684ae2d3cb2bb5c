"""The feature kind a trial trains on (`features.kind`): a parameter of the space like the others.

Absent from `space:`, every trial uses the config's `features.kind` (as before it was searchable);
`space: {features.kind: [logmel, mfcc]}` samples it per trial; a scalar fixes it. The search builds
one FeatureSet per kind that can be sampled (`feature_kinds`), each cached on disk.
"""

from __future__ import annotations

from typing import Any, get_args

from harmonia.config import FEATURE_KIND_PARAM, FeatureConfig
from harmonia.spaces.core import Space, SpaceError, override_choices

FEATURE_KIND_NAMES: tuple[str, ...] = get_args(FeatureConfig.model_fields["kind"].annotation)
"""The kinds `FeatureConfig.kind` accepts (each registered in `harmonia.features.FEATURE_KINDS`)."""


def feature_kinds(overrides: dict[str, Any] | None, default: str) -> list[str]:
    """The kinds trials can sample, in the override's order (just `default` when not overridden);
    an unknown kind or a malformed override raises SpaceError naming it and the valid kinds."""
    ov = (overrides or {}).get(FEATURE_KIND_PARAM)
    kinds = [ov] if isinstance(ov, str) else override_choices(FEATURE_KIND_PARAM, ov, [default])
    for k in kinds:
        if k not in FEATURE_KIND_NAMES:
            raise SpaceError(f"space.{FEATURE_KIND_PARAM}: unknown feature kind {k!r}; "
                             f"valid: {', '.join(FEATURE_KIND_NAMES)}")
    return kinds


def features_space(s: Space, default: str) -> str:
    """Suggest `features.kind` among `feature_kinds`; a single possible kind becomes a constant, so
    every trial's params (and MLflow run) name the kind it trained on."""
    return s.categorical(FEATURE_KIND_PARAM, feature_kinds(s.overrides, default))
