"""Architectures, each registered once; importing this package registers them all."""

from harmonia.trainables.architectures.registry import (
    ARCHITECTURES, ArchitectureSpec, ModelOutput, arch_config, architectures_for, build_model, check_task,
    register_architecture)
from harmonia.trainables.architectures import crnn  # noqa: F401  (registers)
from harmonia.trainables.architectures import gated_crnn  # noqa: F401  (registers)
from harmonia.trainables.architectures import elu_crnn  # noqa: F401  (registers)
from harmonia.trainables.architectures import cnn8  # noqa: F401  (registers)
from harmonia.trainables.architectures import multi_input_cnn  # noqa: F401  (registers)
from harmonia.trainables.architectures import crnn_ctc  # noqa: F401  (registers)

__all__ = ["ARCHITECTURES", "ArchitectureSpec", "ModelOutput", "arch_config", "architectures_for", "build_model",
           "check_task", "register_architecture"]
