"""Optuna define-by-run search spaces: one per architecture and augmentation, composed."""

from harmonia.spaces.compose import define_by_run, parameter_names, validate_overrides
from harmonia.spaces.core import Space, SpaceError

__all__ = ["Space", "SpaceError", "define_by_run", "parameter_names", "validate_overrides"]
