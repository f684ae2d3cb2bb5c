"""The registered dataset formats: importing this package registers each one (one module per format)."""

from harmonia.data import scenes
from harmonia.data.formats import desed, esc50, flat, fsd50k, fsdkaggle2018, harmonia_layout, urbansound8k

__all__ = ["desed", "esc50", "flat", "fsd50k", "fsdkaggle2018", "harmonia_layout", "scenes", "urbansound8k"]
