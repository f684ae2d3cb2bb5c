"""Architecture registry: an architecture is added by writing a build function and registering it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

ModelOutput = tuple[torch.Tensor, torch.Tensor]
"""(clip probabilities [B, C], frame probabilities [B, T', C]) from every architecture."""


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    config_type: type
    build: Callable[..., nn.Module]
    tasks: tuple[str, ...]


ARCHITECTURES: dict[str, ArchitectureSpec] = {}


def register_architecture(name: str, config_type: type, tasks: tuple[str, ...] = ("tagging", "sed")):
    """Register `build(cfg, n_mels, n_classes) -> nn.Module` under `name`."""

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = ArchitectureSpec(name, config_type, build, tasks)
        return build

    return deco


def build_model(name: str, params: dict, n_mels: int, n_classes: int) -> nn.Module:
    """Build a registered architecture from flat params (`<name>.<field>` keys or bare field names)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
    spec = ARCHITECTURES[name]
    return spec.build(arch_config(name, params), n_mels, n_classes)


def arch_config(name: str, params: dict):
    """The architecture's config object from flat trial params, ignoring keys of other parts."""
    spec = ARCHITECTURES[name]
    prefix = f"{name}."
    kwargs = {}
    for f in fields(spec.config_type):
        if prefix + f.name in params:
            kwargs[f.name] = params[prefix + f.name]
    return spec.config_type(**kwargs)


