"""Search spaces of the architectures, one registered function per architecture name."""

from __future__ import annotations

from harmonia.spaces.core import Space, SpacePart

ARCHITECTURE_SPACES: dict[str, SpacePart] = {}


def register_architecture_space(name: str):
    def deco(fn: SpacePart) -> SpacePart:
        ARCHITECTURE_SPACES[name] = fn
        return fn

    return deco


@register_architecture_space("crnn")
def crnn_space(s: Space) -> None:
    """CRNN / CRMP / CRAP / attention (crnn_ctc_sequential_labels.txt §1.3): depth, width, GRU, pooling."""
    s.int("crnn.blocks", 2, 4)
    s.categorical("crnn.channels", [16, 32])
    s.categorical("crnn.gru_size", [32, 64])
    s.float("crnn.dropout", 0.0, 0.4)
    s.categorical("crnn.pooling", ["max", "avg", "attention"])
