"""Architectures, each registered once; importing this package registers them all."""

from harmonia.trainables.architectures.registry import (
    ARCHITECTURES, ArchitectureSpec, ModelOutput, arch_config, build_model, register_architecture)
from harmonia.trainables.architectures import crnn  # noqa: F401  (registers)

__all__ = ["ARCHITECTURES", "ArchitectureSpec", "ModelOutput", "arch_config", "build_model", "register_architecture"]
