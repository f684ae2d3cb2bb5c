"""Architecture registry: an architecture is added by writing a build function and registering it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

ModelOutput = tuple[torch.Tensor, torch.Tensor]
"""(clip probabilities [B, C], frame probabilities [B, T', C]) from every architecture."""

DEFAULT_TASKS: tuple[str, ...] = ("tagging", "sed", "scene")
"""Tasks of an architecture with a sigmoid frame classifier; CTC architectures register ("sequence",)."""


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    config_type: type
    build: Callable[..., nn.Module]
    tasks: tuple[str, ...]


ARCHITECTURES: dict[str, ArchitectureSpec] = {}


def register_architecture(name: str, config_type: type, tasks: tuple[str, ...] = DEFAULT_TASKS):
    """Register `build(cfg, n_mels, n_classes) -> nn.Module` under `name`, valid for `tasks`."""

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = ArchitectureSpec(name, config_type, build, tasks)
        return build

    return deco


def architectures_for(task: str) -> list[str]:
    """Names of the registered architectures that support `task`, sorted."""
    return sorted(n for n, spec in ARCHITECTURES.items() if task in spec.tasks)


def check_task(name: str, task: str) -> None:
    """ValueError naming the architecture and the task when `name` cannot be trained for `task`."""
    spec = ARCHITECTURES[name]
    if task not in spec.tasks:
        raise ValueError(f"architecture {name!r} does not support task {task!r} (it supports: "
                         f"{', '.join(spec.tasks)}); architectures for task {task!r}: "
                         f"{', '.join(architectures_for(task)) or 'none'}")


def softmax_over_classes(module: nn.Module, inputs, output: ModelOutput) -> ModelOutput:
    """Forward hook of task scene: one label per clip, so clip and frame outputs become a softmax over
    classes of the sigmoid outputs' logits (logit(σ(z)) = z: the architecture's own logits for a
    sigmoid classifier, a monotone score for pooled ones). The state dict is unchanged."""
    clip, frames = output
    return (torch.softmax(torch.logit(clip.float(), eps=1e-7), dim=-1),
            torch.softmax(torch.logit(frames.float(), eps=1e-7), dim=-1))


OUTPUT_HOOKS = {"scene": softmax_over_classes}
"""Per-task changes of the (clip, frame) outputs, applied by `build_model` to every architecture."""


def build_model(name: str, params: dict, n_mels: int, n_classes: int) -> nn.Module:
    """Build a registered architecture from flat params (`<name>.<field>` keys or bare field names).

    `params["task"]` (default "tagging"; the Trainer records it with the model's params, so bundles
    rebuild the same outputs) must be one of the architecture's tasks.
    """
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
    task = params.get("task", "tagging")
    check_task(name, task)
    model = ARCHITECTURES[name].build(arch_config(name, params), n_mels, n_classes)
    if task in OUTPUT_HOOKS:
        model.register_forward_hook(OUTPUT_HOOKS[task])
    return model


def arch_config(name: str, params: dict):
    """The architecture's config object from flat trial params, ignoring keys of other parts."""
    spec = ARCHITECTURES[name]
    prefix = f"{name}."
    kwargs = {}
    for f in fields(spec.config_type):
        if prefix + f.name in params:
            kwargs[f.name] = params[prefix + f.name]
    return spec.config_type(**kwargs)


