"""Sound event detection decisions for an ensemble: frame outputs combined, thresholds and median
filters fitted per class on valid, events decoded and scored with sed_eval (DCASE settings)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import median_filter

from harmonia.metrics import decode_events, event_metrics, segment_metrics

THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.05), 2)
MEDIAN_FRAMES = (1, 3, 5, 9, 15, 21, 31)


@dataclass
class SedDecisions:
    """Per-class threshold and median-filter length (in frames of `hop_seconds`), fitted on valid."""

    hop_seconds: float
    thresholds: np.ndarray
    median_frames: np.ndarray

    def to_dict(self) -> dict:
        return {"hop_seconds": self.hop_seconds, "thresholds": self.thresholds.tolist(),
                "median_frames": self.median_frames.astype(int).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "SedDecisions":
        return cls(float(d["hop_seconds"]), np.asarray(d["thresholds"], float), np.asarray(d["median_frames"], int))


def to_base_rate(probs: np.ndarray, hop: float, base_hop: float, frames: int) -> np.ndarray:
    """[N, T', C] at `hop` → [N, frames, C] at `base_hop` by repeating frames (members pool time differently)."""
    factor = max(1, int(round(hop / base_hop)))
    up = np.repeat(probs.astype(np.float32), factor, axis=1)[:, :frames]
    if up.shape[1] < frames:
        up = np.concatenate([up, np.repeat(up[:, -1:], frames - up.shape[1], axis=1)], axis=1)
    return up


def combine_frames(member_frames: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average of members' frame probabilities [M, N, T, C] with the ensemble's member weights."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    used = np.flatnonzero(w)
    return np.tensordot(w[used], member_frames[used].astype(np.float64), axes=1).astype(np.float32)


def fit_decisions(probs: np.ndarray, targets: np.ndarray, hop: float) -> SedDecisions:
    """Per class, the (threshold, median length) maximizing frame-level F1 on valid; a fast proxy for
    event F1 that sed_eval then reports."""
    n_classes = probs.shape[2]
    thr, med = np.full(n_classes, 0.5), np.ones(n_classes, int)
    for c in range(n_classes):
        p, t = probs[:, :, c], targets[:, :, c].astype(bool)
        best = -1.0
        for m in MEDIAN_FRAMES:
            for th in THRESHOLDS:
                active = p >= th
                if m > 1:
                    active = median_filter(active.astype(np.uint8), size=(1, m), mode="nearest").astype(bool)
                tp = np.count_nonzero(active & t)
                f1 = 2 * tp / max(1, np.count_nonzero(active) + np.count_nonzero(t))
                if f1 > best + 1e-12:
                    best, thr[c], med[c] = f1, th, m
    return SedDecisions(hop, thr, med)


def decode(probs: np.ndarray, clip_ids: list[str], classes: list[str], d: SedDecisions) -> dict[str, list]:
    return {cid: decode_events(p, d.hop_seconds, classes, d.thresholds, d.median_frames)
            for cid, p in zip(clip_ids, probs)}


def score(events: pd.DataFrame, estimated: dict[str, list], clip_ids: list[str], classes: list[str]) -> dict[str, float]:
    """Event-based (DCASE collars) and segment-based F1 and error rate."""
    ref: dict[str, list] = {cid: [] for cid in clip_ids}
    for cid, on, off, lab in events[["clip_id", "onset", "offset", "event_label"]].itertuples(index=False):
        if cid in ref:
            ref[cid].append((float(on), float(off), lab))
    ev = event_metrics(ref, estimated, clip_ids, classes)
    seg = segment_metrics(ref, estimated, clip_ids, classes)
    return {"event_f1": ev["f_measure"], "event_er": ev["error_rate"],
            "segment_f1": seg["f_measure"], "segment_er": seg["error_rate"]}
