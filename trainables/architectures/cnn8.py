"""CNN8: the VGG-style cross-task baseline of DCASE 2018 (4 blocks of 2 × [3×3 conv, BN, ReLU], 2×2 pooling).

dcase2018_digest.md §2b; dcase2018_workshop_proceedings.txt L20203–20292 (Table 1, "Configurations of
CNN4 and CNN8", and §3 "Convolutional neural networks").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harmonia.trainables.architectures.registry import ModelOutput, register_architecture


def vgg_block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    """[3×3 conv, BN, ReLU] × 2 then 2×2 max-pool (proceedings L20203–20252, Table 1; L20283–20285)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
    )


@dataclass(frozen=True)
class CNN8Config:
    """Block filters are `channels` × (1, 2, 4, 8): the paper's 64/128/256/512 is `channels=64`.

    The default 32 (32/64/128/256) keeps a trial affordable on CPU. `pooling` is the global pooling
    over frequency and then time: "max" is the paper's global max pooling (L20252, L20285–20289).
    """

    channels: int = 32
    pooling: Literal["max", "avg"] = "max"


class CNN8(nn.Module):
    """CNN8 (proceedings L20203–20292): 4 VGG blocks, each pooling 2×2, then global pooling and fc + sigmoid.

    Frequency is pooled by 2 per block while ≥ 2 bins remain; time always by 2, so `time_pool = 16`
    and T' = T // 16 (T ≥ 16). Global pooling is split: over frequency first, giving a sequence
    h(t) [B, T', ch]; the frame output is sigmoid(fc(h(t))) per time step, and the clip output is
    sigmoid(fc(pool_t h(t))) with the same fc, i.e. the paper's GMP/fc head (for "avg" the clip
    logits are the mean of the frame logits). The frame output is our addition for the SED
    contract; the paper only has the clip head.
    """

    def __init__(self, cfg: CNN8Config, n_mels: int, n_classes: int):
        super().__init__()
        if cfg.pooling not in ("max", "avg"):
            raise ValueError(f"cnn8.pooling must be 'max' or 'avg', got {cfg.pooling!r}")
        self.cfg = cfg
        layers, c_in, f = [], 1, n_mels
        for i in range(4):
            c_out = cfg.channels * 2**i
            pool = (2, 2 if f >= 2 else 1)
            layers.append(vgg_block(c_in, c_out, pool))
            c_in, f = c_out, f // pool[1]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, n_classes)
        self.time_pool = 16

    def _pool(self, h: torch.Tensor, dim: int) -> torch.Tensor:
        return h.amax(dim=dim) if self.cfg.pooling == "max" else h.mean(dim=dim)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.convs(x.unsqueeze(1))  # [B, ch, T', F']
        seq = self._pool(h, dim=3).transpose(1, 2)  # [B, T', ch]
        frames = torch.sigmoid(self.fc(seq))
        clip = torch.sigmoid(self.fc(self._pool(seq, dim=1)))
        return clip, frames


@register_architecture("cnn8", CNN8Config)
def build_cnn8(cfg: CNN8Config, n_mels: int, n_classes: int) -> nn.Module:
    return CNN8(cfg, n_mels, n_classes)
