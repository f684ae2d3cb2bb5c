"""The CRNN family: conv blocks + BGRU + frame classifier + clip pooling (max, avg, attention)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harmonia.trainables.architectures.registry import ModelOutput, register_architecture


class ClipPooling(nn.Module):
    """Frame probabilities → clip probabilities by max (CRMP), average (CRAP) or attention.

    CRMP/CRAP: crnn_ctc_sequential_labels.txt §1.3; attention: clip = Σ_t O(t)·Z(t) / Σ_t Z(t)
    with Z a per-class softmax over time (gated_crnn_attention_dcase2017.txt §3).
    """

    def __init__(self, kind: Literal["max", "avg", "attention"], hidden: int, n_classes: int):
        super().__init__()
        self.kind = kind
        self.localization = nn.Linear(hidden, n_classes) if kind == "attention" else None

    def forward(self, frame_probs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return frame_probs.max(dim=1).values
        if self.kind == "avg":
            return frame_probs.mean(dim=1)
        z = torch.softmax(self.localization(hidden), dim=1)  # [B, T, C], sums to 1 over time
        return (frame_probs * z).sum(dim=1).clamp(1e-7, 1 - 1e-7)


class RecurrentHead(nn.Module):
    """Conv feature map [B, ch, T, F] → BGRU over time → frame sigmoid classifier → clip pooling."""

    def __init__(self, in_features: int, gru_size: int, n_classes: int, pooling: str):
        super().__init__()
        self.gru = nn.GRU(in_features, gru_size, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * gru_size, n_classes)
        self.pool = ClipPooling(pooling, 2 * gru_size, n_classes)

    def frame_logits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(classifier logits [B, T, n_classes], BGRU states [B, T, 2·gru]) of a conv map [B, ch, T, F]."""
        b, ch, t, f = h.shape
        h, _ = self.gru(h.permute(0, 2, 1, 3).reshape(b, t, ch * f))
        return self.classifier(h), h

    def forward(self, h: torch.Tensor) -> ModelOutput:
        logits, h = self.frame_logits(h)
        frames = torch.sigmoid(logits)
        return self.pool(frames, h), frames


def conv_block(c_in: int, c_out: int, pool: tuple[int, int], dropout: float) -> nn.Sequential:
    """3×3 conv, batch norm, ReLU, max-pool, dropout (crnn_ctc_sequential_labels.txt §1.3)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
        nn.Dropout(dropout),
    )


def crnn_convs(blocks: int, channels: int, dropout: float, time_pool: int, n_mels: int) -> tuple[nn.Sequential, int]:
    """The CRNN conv stack and its output width (channels × remaining bins, the BGRU input).

    Block i has `channels` × min(2^i, 4) filters and pools frequency by 2 (while ≥ 2 bins remain);
    time is pooled once, by `time_pool`, in the first block.
    """
    layers, c_in, f = [], 1, n_mels
    for i in range(blocks):
        c_out = channels * min(2**i, 4)
        pool = (time_pool if i == 0 else 1, 2 if f >= 2 else 1)
        layers.append(conv_block(c_in, c_out, pool, dropout))
        c_in, f = c_out, f // pool[1]
    return nn.Sequential(*layers), c_in * f


@dataclass(frozen=True)
class CRNNConfig:
    """Blocks double channels from `channels` up to 4×; frequency is pooled by 2 per block."""

    blocks: int = 3
    channels: int = 32
    gru_size: int = 64
    dropout: float = 0.2
    pooling: Literal["max", "avg", "attention"] = "attention"
    time_pool: int = 2


class CRNN(nn.Module):
    """CRNN baseline / CRMP / CRAP / attention: conv blocks with BN, BGRU, frame-level sigmoid classifier.

    crnn_ctc_sequential_labels.txt §1.3 (Fig. 1.2) and gated_crnn_attention_dcase2017.txt §3.
    Time is pooled once by `time_pool` in the first block; the frame hop is hop × time_pool.
    """

    def __init__(self, cfg: CRNNConfig, n_mels: int, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.convs, width = crnn_convs(cfg.blocks, cfg.channels, cfg.dropout, cfg.time_pool, n_mels)
        self.head = RecurrentHead(width, cfg.gru_size, n_classes, cfg.pooling)
        self.time_pool = cfg.time_pool

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.head(self.convs(x.unsqueeze(1)))


@register_architecture("crnn", CRNNConfig)
def build_crnn(cfg: CRNNConfig, n_mels: int, n_classes: int) -> nn.Module:
    return CRNN(cfg, n_mels, n_classes)
