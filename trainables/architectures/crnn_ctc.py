"""CRNN-CTC: the CRNN's conv blocks and BGRU, a frame softmax over N classes + blank, trained with CTC.

crnn_ctc_sequential_labels.txt §1.4 (§1.4.1 sequentially labelled data, §1.4.2 CTC loss and best-path
decoding) and Fig. 1.2 ("For CRNN-CTC, N=17 (16+1), the extra '1' indicates the blank label").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harmonia.trainables.architectures.crnn import RecurrentHead, crnn_convs
from harmonia.trainables.architectures.registry import ModelOutput, register_architecture


@dataclass(frozen=True)
class CRNNCTCConfig:
    """The CRNN's fields without the clip pooling (CTC needs none).

    The paper gives no time pooling; the default 4 (12.5 frames/s at a 20 ms hop) still leaves
    T' ≥ 2L + 1 frames for the few events of a clip, and on the synthetic sequence data CTC leaves its
    all-blank start within a few hundred steps where a pooling of 2 had not after 45 epochs.
    """

    blocks: int = 3
    channels: int = 32
    gru_size: int = 64
    dropout: float = 0.1
    time_pool: int = 4


class CRNNCTC(nn.Module):
    """Conv blocks with BN + ReLU (`crnn_convs`), BGRU and a dense layer of N + 1 outputs per frame
    (`RecurrentHead.frame_logits`), softmax over the N classes and the blank (the last index).

    `log_probs(x)` [B, T', N + 1] is what `torch.nn.CTCLoss(blank=N)` takes (time-major after a
    transpose). `forward(x)` gives the (clip, frame) outputs every architecture gives: frames are the
    class posteriors without the blank [B, T', N] (the blank is 1 − their sum), and a clip score per
    class is its largest posterior over frames, for mAP / AUC and the ensemble stage.
    """

    def __init__(self, cfg: CRNNCTCConfig, n_mels: int, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.blank = n_classes
        self.convs, width = crnn_convs(cfg.blocks, cfg.channels, cfg.dropout, cfg.time_pool, n_mels)
        self.head = RecurrentHead(width, cfg.gru_size, n_classes + 1, "max")  # "max": no parameters, unused
        self.time_pool = cfg.time_pool

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Log posteriors [B, T', N + 1] of the N classes and the blank (last)."""
        logits, _ = self.head.frame_logits(self.convs(x.unsqueeze(1)))
        return torch.log_softmax(logits.float(), dim=-1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        frames = self.log_probs(x).exp()[..., : self.blank]
        return frames.amax(dim=1), frames


@register_architecture("crnn_ctc", CRNNCTCConfig, tasks=("sequence",))
def build_crnn_ctc(cfg: CRNNCTCConfig, n_mels: int, n_classes: int) -> nn.Module:
    return CRNNCTC(cfg, n_mels, n_classes)
