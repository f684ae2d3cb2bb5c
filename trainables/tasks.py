"""What the Trainer does differently per task: loss on a train batch, scores of a split, data checks.

One strategy per task in `TASK_STRATEGIES`; the Trainer holds one and never branches on the task.
Every architecture returns (clip [B, C], frames [B, T', C]) probabilities (scene: a softmax over
classes, applied by `build_model`; sequence: CTC class posteriors without the blank), so
predictions and the ensemble stage are the same for every task.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from harmonia.config import TASK_METRICS
from harmonia.featureset import FeatureSet, SplitArrays
from harmonia.metrics import (accuracy, ctc_decode, f1_micro, log_loss, mean_average_precision, roc_auc_macro,
                              sequence_accuracy, with_blank)
from harmonia.psds import psds_scores
from harmonia.sed_metrics import (EventArrays, binary_median, event_counts, f_scores, frame_runs, segment_counts,
                                  segment_scores)
from harmonia.trainables.augmentations import Batch

EPS = 1e-7
EPOCH_THRESHOLD = 0.5  # a trial's event decoding: fixed threshold, then a median filter of about
EPOCH_MEDIAN_SECONDS = 0.45  # the DESED baseline's (7 frames of 64 ms); ensembles fit both per class


def pool_frame_targets(y_frames: torch.Tensor, t_out: int) -> torch.Tensor:
    """Frame targets [B, T, C] at feature hop → [B, t_out, C] by max over each output frame's window."""
    b, t, c = y_frames.shape
    if t_out == t:
        return y_frames
    p = max(1, t // t_out)
    y = y_frames[:, : t_out * p].reshape(b, t_out, p, c).amax(2)
    if y.shape[1] < t_out:
        y = torch.cat([y, y.new_zeros(b, t_out - y.shape[1], c)], 1)
    return y


def strong_clips(y: torch.Tensor, y_frames: torch.Tensor) -> torch.Tensor:
    """[B] bool: clips whose frame targets can be trusted. A clip tagged (a tag >= 0.5) with no active frame is
    weakly labelled (DESED's train/weak: tags, no onsets); its all-zero frames would teach "nothing is active",
    so only its clip output is trained, as in the DCASE task 4 baselines."""
    return ~((y.amax(1) >= 0.5) & (y_frames.amax((1, 2)) <= 0))


def _bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy(p.float().clamp(EPS, 1 - EPS), y)


def tag_scores(y: np.ndarray, probs: np.ndarray, prefix: str) -> dict[str, float]:
    """Clip-level scores of multi-label tags: mAP, macro ROC AUC, micro F1 at 0.5, BCE as `loss`."""
    p = np.clip(probs, EPS, 1 - EPS)
    out = {f"{prefix}_mAP": mean_average_precision(y, probs), f"{prefix}_auc": roc_auc_macro(y, probs),
           f"{prefix}_f1": f1_micro(y, probs)}
    out[f"{prefix}_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return {k: float(v) for k, v in out.items()}


class TaskStrategy:
    """Multi-label tagging (the base): BCE of the clip outputs against the clip tags."""

    name = "tagging"
    frame_targets = False  # train batches carry frame targets (Batch.y_frames)
    augmentation_params: dict = {}  # fixed over the trial's augmentation params (what keeps labels true)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The `valid_<name>` scores `evaluate` reports, any of which can be the search metric."""
        return TASK_METRICS[self.name]

    def check(self, data: FeatureSet) -> None:
        """ValueError when the data lacks the targets this task trains on."""

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Model outputs for `loss`; the Trainer checks the first is finite."""
        return model(x)

    def loss(self, out: tuple[torch.Tensor, ...], batch: Batch, split: SplitArrays, idx: np.ndarray) -> torch.Tensor:
        return _bce(out[0], batch.y)

    def evaluate(self, split: SplitArrays, clip: np.ndarray, frames: np.ndarray, prefix: str, *,
                 hop_seconds: float | None = None) -> dict[str, float]:
        """`{prefix}_<metric>` scores of a split's clip and frame outputs; `hop_seconds` is the feature hop."""
        return tag_scores(split.y, clip, prefix)


class SedStrategy(TaskStrategy):
    """Tagging plus frame activity: clip BCE + frame BCE against strong labels pooled to T'."""

    name = "sed"
    frame_targets = True

    def check(self, data: FeatureSet) -> None:
        if data.splits["train"].y_frames is None:
            raise ValueError("task 'sed' needs strong labels (onset/offset) in the train split")

    def loss(self, out, batch, split, idx):
        clip, frames = out
        target = pool_frame_targets(batch.y_frames, frames.shape[1]).to(frames.device)
        strong = strong_clips(batch.y, target)
        if not bool(strong.any()):
            return _bce(clip, batch.y)
        return _bce(clip, batch.y) + _bce(frames[strong], target[strong])

    def evaluate(self, split, clip, frames, prefix, *, hop_seconds=None):
        out = tag_scores(split.y, clip, prefix)
        if split.y_frames is not None and hop_seconds is not None:
            out.update(sed_scores(np.asarray(split.y_frames), frames, hop_seconds, prefix))
        return out


def epoch_decoding(frames: np.ndarray, hop: float) -> EventArrays:
    """Events of frame probabilities [N, T, C] at output hop `hop` by a trial's decoding: fixed threshold, then
    a median filter of about EPOCH_MEDIAN_SECONDS (an odd number of frames)."""
    median = max(1, int(round(EPOCH_MEDIAN_SECONDS / hop)) // 2 * 2 + 1)
    return frame_runs(binary_median((frames >= EPOCH_THRESHOLD).transpose(0, 2, 1), median).transpose(0, 2, 1), hop)


def sed_scores(y_frames: np.ndarray, frames: np.ndarray, hop_seconds: float, prefix: str) -> dict[str, float]:
    """Event F1 (micro, macro), segment F1 / ER of the epoch decoding, and PSDS1 / PSDS2 (threshold-free) of
    frame outputs [N, T', C] against the strong labels [N, T, C] at feature hop `hop_seconds` (events as the
    frame targets hold them, each edge within one hop of the annotation)."""
    hop = hop_seconds * max(1, y_frames.shape[1] // frames.shape[1])  # the model's output hop
    ref = frame_runs(y_frames, hop_seconds)
    est = epoch_decoding(frames, hop)
    n, _, c = frames.shape
    out = {**f_scores(event_counts(ref, est, c), f"{prefix}_event"),
           **segment_scores(segment_counts(ref, est, n, c), f"{prefix}_segment"),
           **psds_scores(frames, hop, ref, np.full(n, y_frames.shape[1] * hop_seconds), f"{prefix}_")}
    return {k: float(v) for k, v in out.items()}


class SequenceStrategy(TaskStrategy):
    """Ordered tags per clip with CTC (crnn_ctc_sequential_labels.txt §1.4.2): the loss marginalizes
    every alignment of the clip's label sequence to the frames; scores decode the frame posteriors
    by best path and compare the sequences exactly (`seq_acc`), besides tag mAP / AUC / F1 of the
    clip scores (each class's largest frame posterior).

    Sample-mixing augmentations keep each row's first sample, so its sequence is the target (as
    mixup-lp and SamplePairing keep the first label).
    """

    name = "sequence"
    # an added chunk of a same-label clip would change the ordered sequence: no-event chunks only
    augmentation_params = {"chunkmix.same_label": False}

    def check(self, data: FeatureSet) -> None:
        train = data.splits["train"]
        if train.y_seq is None or not (train.y_seq >= 0).any():
            raise ValueError("task 'sequence' needs ordered event sequences in the train split "
                             "(they come from strong labels: onset, offset, event_label)")

    def forward(self, model, x):
        if not hasattr(model, "log_probs"):
            raise ValueError(f"task 'sequence' needs a CTC architecture (log_probs per frame); got {type(model).__name__}")
        return (model.log_probs(x),)

    def loss(self, out, batch, split, idx):
        return ctc_loss(out[0], split.y_seq[idx])

    def evaluate(self, split, clip, frames, prefix, *, hop_seconds=None):
        out = tag_scores(split.y, clip, prefix)
        truth = split.sequences()
        out[f"{prefix}_seq_acc"] = sequence_accuracy(truth, ctc_decode(frames))
        lp = torch.from_numpy(np.log(np.clip(with_blank(frames), 1e-12, None))).float()
        out[f"{prefix}_loss"] = float(ctc_loss(lp, split.y_seq))
        return out


def ctc_loss(log_probs: torch.Tensor, y_seq: np.ndarray) -> torch.Tensor:
    """Mean CTC loss (per target length) of log posteriors [B, T', C + 1] (blank last) against padded
    sequences [B, L]; an empty sequence is the all-blank path, an impossible alignment costs 0."""
    b, t, k = log_probs.shape
    seq = torch.from_numpy(np.asarray(y_seq)).long()
    lengths = (seq >= 0).sum(1)
    targets = seq[seq >= 0]
    return nn.functional.ctc_loss(log_probs.float().transpose(0, 1), targets.to(log_probs.device),
                                  torch.full((b,), t, dtype=torch.long), lengths, blank=k - 1,
                                  reduction="mean", zero_infinity=True)


class SceneStrategy(TaskStrategy):
    """One label per clip: cross-entropy of the softmax clip output (soft targets, so mixup works);
    scored by accuracy and log-loss (dcase2018_digest.md metrics), mAP and AUC."""

    name = "scene"

    def check(self, data: FeatureSet) -> None:
        per_clip = data.splits["train"].y.sum(axis=1)
        bad = np.flatnonzero(per_clip != 1)
        if len(bad):
            clip = data.splits["train"].clip_ids[bad[0]]
            raise ValueError(f"task 'scene' needs exactly one label per clip; {len(bad)} train clips have "
                             f"another number, e.g. {clip} with {int(per_clip[bad[0]])}")

    def loss(self, out, batch, split, idx):
        return -(batch.y * torch.log(out[0].float().clamp_min(1e-30))).sum(dim=1).mean()

    def evaluate(self, split, clip, frames, prefix, *, hop_seconds=None):
        out = {f"{prefix}_accuracy": accuracy(split.y, clip), f"{prefix}_log_loss": log_loss(split.y, clip),
               f"{prefix}_mAP": mean_average_precision(split.y, clip), f"{prefix}_auc": roc_auc_macro(split.y, clip)}
        out[f"{prefix}_loss"] = out[f"{prefix}_log_loss"]
        return {k: float(v) for k, v in out.items()}


TASK_STRATEGIES: dict[str, TaskStrategy] = {s.name: s for s in (TaskStrategy(), SedStrategy(), SequenceStrategy(),
                                                                  SceneStrategy())}


def get_strategy(task: str) -> TaskStrategy:
    try:
        return TASK_STRATEGIES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASK_STRATEGIES)}") from None
