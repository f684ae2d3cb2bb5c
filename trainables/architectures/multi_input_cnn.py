"""Multi-input CNN (MI-CNN) on a log-mel and its nearest-neighbour-filtered (NNF) version.

dcase2018_workshop_proceedings.txt L2700–2775 (paper at L2569: §2.2 "Nearest Neighbor Filter",
§2.3 "Multi-input Convolution Neural Network", Fig. 2) and L2812–2834 (Table 1: 2/3/4 blocks,
single "s" and double "db" conv blocks); dcase2018_digest.md §2g (L2735–2773).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harmonia.features import nn_filter  # noqa: F401  (the NNF math lives in the kernel, shared with `nnf_logmel`)
from harmonia.trainables.architectures.registry import ModelOutput, register_architecture

BLOCK_FILTERS = {2: (32, 256), 3: (32, 64, 256), 4: (32, 64, 128, 256)}
"""Filters per conv block for 2, 3 and 4 blocks (proceedings L2767–2771)."""


def conv_unit(c_in: int, c_out: int) -> nn.Sequential:
    """Zero-padding 1×1, batch norm, 3×3 conv, ReLU (proceedings L2738–2746, §2.3)."""
    return nn.Sequential(nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))


class Branch(nn.Module):
    """One input branch: conv blocks (1 or 2 conv units each), max-pool 2×2 + dropout after every
    block but the last; the last is followed by global average pooling (here over frequency only,
    so a time sequence remains)."""

    def __init__(self, filters: tuple[int, ...], double: bool, n_mels: int, dropout: float):
        super().__init__()
        layers, c_in, f = [], 1, n_mels
        for i, c_out in enumerate(filters):
            layers.append(conv_unit(c_in, c_out))
            if double:
                layers.append(conv_unit(c_out, c_out))
            if i < len(filters) - 1:
                pool = (2, 2 if f >= 2 else 1)
                layers += [nn.MaxPool2d(pool), nn.Dropout(dropout)]
                f //= pool[1]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.unsqueeze(1)).mean(dim=3).transpose(1, 2)  # [B, T', ch]


@dataclass(frozen=True)
class MultiInputCNNConfig:
    """`variant` single/double conv blocks; `blocks` 2–4 with the paper's 32…256 filters × `width`.

    `k` and `metric` are the NNF's (the paper: k = 5, euclidean; the default here is k = 8, cosine).
    The paper compares with and without dropout but gives no rate; 0.2 is ours.
    """

    variant: Literal["single", "double"] = "single"
    blocks: int = 3
    width: float = 0.5
    dropout: float = 0.2
    k: int = 8
    metric: Literal["cosine", "euclidean"] = "cosine"


class MultiInputCNN(nn.Module):
    """MI-CNN (proceedings L2723–2760, Fig. 2): a log-mel branch and an NNF branch of the same structure,
    concatenated before the fully connected layer.

    The NNF input is computed inside the module from x by `nn_filter`. Time is pooled by 2 after
    every block but the last: `time_pool = 2**(blocks - 1)`, T' = T // time_pool. The paper is a
    clip classifier (GAP, fc); for the frame output the GAP is split: average over frequency per
    branch gives h(t) [B, T', 2·ch]; frames = sigmoid(fc(h(t))), clip = sigmoid(fc(mean_t h(t)))
    (= the paper's GAP head; clip logits are the time-mean of the frame logits).
    """

    def __init__(self, cfg: MultiInputCNNConfig, n_mels: int, n_classes: int):
        super().__init__()
        if cfg.variant not in ("single", "double"):
            raise ValueError(f"multi_input_cnn.variant must be 'single' or 'double', got {cfg.variant!r}")
        if cfg.blocks not in BLOCK_FILTERS:
            raise ValueError(f"multi_input_cnn.blocks must be one of {sorted(BLOCK_FILTERS)}, got {cfg.blocks}")
        self.cfg = cfg
        filters = tuple(max(1, round(c * cfg.width)) for c in BLOCK_FILTERS[cfg.blocks])
        double = cfg.variant == "double"
        self.logmel = Branch(filters, double, n_mels, cfg.dropout)
        self.nnf = Branch(filters, double, n_mels, cfg.dropout)
        self.fc = nn.Linear(2 * filters[-1], n_classes)
        self.time_pool = 2 ** (cfg.blocks - 1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = torch.cat([self.logmel(x), self.nnf(nn_filter(x, self.cfg.k, self.cfg.metric))], dim=2)
        frames = torch.sigmoid(self.fc(h))
        clip = torch.sigmoid(self.fc(h.mean(dim=1)))
        return clip, frames


@register_architecture("multi_input_cnn", MultiInputCNNConfig)
def build_multi_input_cnn(cfg: MultiInputCNNConfig, n_mels: int, n_classes: int) -> nn.Module:
    return MultiInputCNN(cfg, n_mels, n_classes)
