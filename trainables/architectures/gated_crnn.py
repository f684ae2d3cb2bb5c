"""Gated CRNN: GLU conv blocks + BGRU + frame classifier × localization (attention) pooling.

gated_crnn_attention_dcase2017.txt §2.3 (GLU, eq. 2), §3 (localization, eqs. 3–4) and §4.1 (3 blocks ×
64 filters 3×3, BGRU 128, pooling 2×2 for tagging and 1×2 for SED).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harmonia.trainables.architectures.crnn import RecurrentHead
from harmonia.trainables.architectures.registry import ModelOutput, register_architecture


class GLUBlock(nn.Module):
    """Y = BN(W * X + b) ⊙ σ(BN(V * X + c)), then max-pool and dropout.

    gated_crnn_attention_dcase2017.txt §2.3, eq. 2: a linear 3×3 conv gated element-wise by a
    sigmoid 3×3 conv; each conv is followed by batch norm.
    """

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int], dropout: float):
        super().__init__()
        self.linear = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.gate = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.pool = nn.MaxPool2d(pool)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.linear(x) * torch.sigmoid(self.gate(x))))


@dataclass(frozen=True)
class GatedCRNNConfig:
    """`blocks` GLU blocks of `channels` filters; `task_pooling` picks 2×2 ("tagging") or 1×2 ("sed").

    Paper values (§4.1): 3 blocks, 64 filters, BGRU 128. `gru_size` defaults to 64 to stay cheap
    on CPU; the paper gives no dropout, the default 0.1 is ours.
    """

    blocks: int = 3
    channels: int = 64
    gru_size: int = 64
    dropout: float = 0.1
    task_pooling: Literal["tagging", "sed"] = "tagging"


class GatedCRNN(nn.Module):
    """Gated CRNN with attention/localization (gated_crnn_attention_dcase2017.txt §2.3, §3, Fig. 1).

    Frequency is pooled by 2 per block (while at least 2 bins remain). Time is pooled by 2 per block
    for `task_pooling="tagging"` (`time_pool = 2**blocks`, T' = T // 2**blocks, T ≥ 2**blocks) and
    not at all for "sed" (`time_pool = 1`, T' = T, the paper's SED setting that keeps the time
    resolution). Frame output O(t) = sigmoid(FNN(h_t)); localization Z(t) = softmax over time of
    FNN(h_t); clip = Σ_t O(t)·Z(t) / Σ_t Z(t) (eqs. 3–4).
    """

    def __init__(self, cfg: GatedCRNNConfig, n_mels: int, n_classes: int):
        super().__init__()
        if cfg.task_pooling not in ("tagging", "sed"):
            raise ValueError(f"gated_crnn.task_pooling must be 'tagging' or 'sed', got {cfg.task_pooling!r}")
        self.cfg = cfg
        t_pool = 2 if cfg.task_pooling == "tagging" else 1
        layers, c_in, f = [], 1, n_mels
        for _ in range(cfg.blocks):
            pool = (t_pool, 2 if f >= 2 else 1)
            layers.append(GLUBlock(c_in, cfg.channels, pool, cfg.dropout))
            c_in, f = cfg.channels, f // pool[1]
        self.convs = nn.Sequential(*layers)
        self.head = RecurrentHead(c_in * f, cfg.gru_size, n_classes, "attention")
        self.time_pool = t_pool ** cfg.blocks

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.head(self.convs(x.unsqueeze(1)))


@register_architecture("gated_crnn", GatedCRNNConfig)
def build_gated_crnn(cfg: GatedCRNNConfig, n_mels: int, n_classes: int) -> nn.Module:
    return GatedCRNN(cfg, n_mels, n_classes)
