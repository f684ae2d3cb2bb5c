"""ELU CRNN: 7 conv blocks (8–64 filters, BN, ELU, frequency pooling) + BGRU + attention/localization.

sample_mixed_augmentation_crnn.txt §2 ("Convolutional recurrent neural network with attention and
localization") and its Fig. 1 (7 conv blocks with 8, 16, 32, 64, 64, 64, 64 filters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harmonia.trainables.architectures.crnn import RecurrentHead
from harmonia.trainables.architectures.registry import ModelOutput, register_architecture

BASE_FILTERS = (8, 16, 32, 64, 64, 64, 64)
"""Filters of the 7 conv blocks (sample_mixed_augmentation_crnn.txt, Fig. 1 caption)."""


def elu_block(c_in: int, c_out: int, pool_freq: int, dropout: float) -> nn.Sequential:
    """3×3 conv, BN, ELU, max-pool 1×`pool_freq`, dropout (sample_mixed_augmentation_crnn.txt §2)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ELU(inplace=True),
        nn.MaxPool2d((1, pool_freq)),
        nn.Dropout(dropout),
    )


@dataclass(frozen=True)
class EluCRNNConfig:
    """`width` multiplies the paper's filters (8…64); `dropout` 0.1 and the 7 blocks are the paper's.

    The paper does not give the GRU size; `gru_size` is searched.
    """

    width: float = 1.0
    dropout: float = 0.1
    gru_size: int = 64


class EluCRNN(nn.Module):
    """7 × [3×3 conv, BN, ELU, max-pool 1×2, dropout] + BGRU + frame sigmoid × softmax-over-time attention.

    sample_mixed_augmentation_crnn.txt §2: the paper pools 1×2 (frequency only) in every block on
    128 mel bins; with fewer bins a block pools frequency only while ≥ 2 bins remain (the paper:
    "the number of convolutional layers can be changed automatically according to the input").
    Time is never pooled: `time_pool = 1`, T' = T. The attention/localization head follows the
    ATT-LOC model the paper builds on: clip = Σ_t O(t)·Z(t) / Σ_t Z(t) with Z a per-class softmax
    over time (gated_crnn_attention_dcase2017.txt §3).
    """

    def __init__(self, cfg: EluCRNNConfig, n_mels: int, n_classes: int):
        super().__init__()
        self.cfg = cfg
        layers, c_in, f = [], 1, n_mels
        for base in BASE_FILTERS:
            c_out = max(1, round(base * cfg.width))
            pool = 2 if f >= 2 else 1
            layers.append(elu_block(c_in, c_out, pool, cfg.dropout))
            c_in, f = c_out, f // pool
        self.convs = nn.Sequential(*layers)
        self.head = RecurrentHead(c_in * f, cfg.gru_size, n_classes, "attention")
        self.time_pool = 1

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.head(self.convs(x.unsqueeze(1)))


@register_architecture("elu_crnn", EluCRNNConfig)
def build_elu_crnn(cfg: EluCRNNConfig, n_mels: int, n_classes: int) -> nn.Module:
    return EluCRNN(cfg, n_mels, n_classes)
