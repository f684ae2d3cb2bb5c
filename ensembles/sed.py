"""Sound event detection decisions for an ensemble: frame outputs combined, thresholds and median
filters fitted per class on valid to maximize event F1 (or another registered objective), events decoded
and scored with sed_eval (DCASE settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harmonia.psds import psds_scores
from harmonia.sed_metrics import (EventArrays, binary_median, decode_events, event_metrics, f_measure, frame_runs,
                                  matched_pairs, segment_metrics)

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
MEDIAN_SECONDS = (0.0, 0.06, 0.1, 0.2, 0.3, 0.45, 0.7, 1.0, 1.5)  # 1 frame (no filter) to 1.5 s
DEFAULT_OBJECTIVE = "event_f1"


@dataclass
class SedDecisions:
    """Per-class threshold and median-filter length (in frames of `hop_seconds`), fitted on valid; which
    chosen values sit at an edge of the grid (the best may lie beyond it) and the objective fitted."""

    hop_seconds: float
    thresholds: np.ndarray
    median_frames: np.ndarray
    objective: str = DEFAULT_OBJECTIVE
    at_grid_edge: dict[str, list[str]] = field(default_factory=dict)  # class -> e.g. ["threshold 0.05 (floor)"]

    def to_dict(self) -> dict:
        return {"hop_seconds": self.hop_seconds, "thresholds": self.thresholds.tolist(),
                "median_frames": self.median_frames.astype(int).tolist(), "objective": self.objective,
                "at_grid_edge": self.at_grid_edge}

    @classmethod
    def from_dict(cls, d: dict) -> "SedDecisions":
        return cls(float(d["hop_seconds"]), np.asarray(d["thresholds"], float), np.asarray(d["median_frames"], int),
                   d.get("objective", "frame_f1"), dict(d.get("at_grid_edge", {})))


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


def median_grid(hop: float, seconds: tuple[float, ...] = MEDIAN_SECONDS) -> np.ndarray:
    """Odd median-filter lengths in frames of `hop` for the given spans (0 s: 1 frame, no filter)."""
    return np.unique([max(1, int(round(x / hop)) // 2 * 2 + 1) for x in seconds])


def event_f1_per_threshold(active: np.ndarray, ref: EventArrays, hop: float) -> np.ndarray:
    """[K] event F1 of one class (DCASE collars, optimal matching) of K decodings `active` [K, N, T]; a class
    without references scores minus its estimated events (fewer is better)."""
    k, n, _ = active.shape
    est = frame_runs(active.reshape(k * n, -1, 1), hop)
    reps = np.arange(k).repeat(len(ref.file))
    refs = EventArrays(np.tile(ref.file, k) + reps * n, np.zeros(len(reps), np.int64), np.tile(ref.onset, k),
                       np.tile(ref.offset, k))
    i, _ = matched_pairs(refs, est)
    ntp = np.bincount(refs.file[i] // n, minlength=k)
    nsys = np.bincount(est.file // n, minlength=k)
    if not len(ref.file):
        return -nsys.astype(float)
    return f_measure(ntp, nsys, np.full(k, len(ref.file)))


def frame_f1_per_threshold(active: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[K] frame-level F1 of one class's K decodings [K, N, T] against its frame targets [N, T]."""
    t = target.astype(bool)[None]
    tp = np.count_nonzero(active & t, axis=(1, 2))
    return 2 * tp / np.maximum(1, np.count_nonzero(active, axis=(1, 2)) + np.count_nonzero(t))


DECISION_OBJECTIVES = {
    "event_f1": lambda active, ref, target, hop: event_f1_per_threshold(active, ref, hop),
    "frame_f1": lambda active, ref, target, hop: frame_f1_per_threshold(active, target),
}
"""Per-class decoding objectives `fn(active [K, N, T], class reference events, frame targets [N, T], hop) -> [K]`."""


def grid_edges(thr: float, med: int, medians: np.ndarray) -> list[str]:
    """Which of a class's chosen values lie on an edge of the grid."""
    out = []
    if thr <= THRESHOLDS[0] or thr >= THRESHOLDS[-1]:
        out.append(f"threshold {thr:.2f} ({'floor' if thr <= THRESHOLDS[0] else 'ceiling'})")
    if len(medians) > 1 and med in (medians[0], medians[-1]):
        out.append(f"median {int(med)} frames ({'floor' if med == medians[0] else 'ceiling'})")
    return out


def fit_decisions(probs: np.ndarray, targets: np.ndarray, hop: float, objective: str = DEFAULT_OBJECTIVE,
                  reference: EventArrays | None = None, classes: list[str] | None = None) -> SedDecisions:
    """Per class, the (threshold, median length) on the grid maximizing `objective` on valid: event F1 by
    default (class-wise, so fitted class by class; their mean is DCASE 2018–2019 task 4's macro event F1),
    with `reference` events (default: the runs of `targets`) at hop `hop`; edges of the grid are reported."""
    fn = DECISION_OBJECTIVES[objective]
    n_classes = probs.shape[2]
    names = classes or [str(c) for c in range(n_classes)]
    reference = reference if reference is not None else frame_runs(targets, hop)
    medians = median_grid(hop)
    thr, med, edges = np.full(n_classes, 0.5), np.ones(n_classes, int), {}
    for c in range(n_classes):
        above = probs[None, :, :, c] >= THRESHOLDS[:, None, None]  # [K, N, T]
        ref, best = reference.of_class(c), -np.inf
        for m in medians:
            score = fn(binary_median(above, int(m)), ref, targets[:, :, c], hop)
            k = int(np.nanargmax(np.nan_to_num(score, nan=-np.inf)))
            if score[k] > best + 1e-12:
                best, thr[c], med[c] = float(score[k]), float(THRESHOLDS[k]), int(m)
        found = grid_edges(float(thr[c]), int(med[c]), medians)
        if found:
            edges[names[c]] = found
    return SedDecisions(hop, thr, med, objective, edges)


def decode(probs: np.ndarray, clip_ids: list[str], classes: list[str], d: SedDecisions) -> dict[str, list]:
    return {cid: decode_events(p, d.hop_seconds, classes, d.thresholds, d.median_frames)
            for cid, p in zip(clip_ids, probs)}


def reference_events(events: pd.DataFrame, clip_ids: list[str]) -> dict[str, list]:
    """{clip_id: [(onset, offset, label), ...]} of the given clips from a strong-label table."""
    ref: dict[str, list] = {cid: [] for cid in clip_ids}
    for cid, on, off, lab in events[["clip_id", "onset", "offset", "event_label"]].itertuples(index=False):
        if cid in ref:
            ref[cid].append((float(on), float(off), lab))
    return ref


def score(events: pd.DataFrame, estimated: dict[str, list], clip_ids: list[str], classes: list[str]) -> dict[str, float]:
    """Event-based (DCASE collars; micro and class-wise mean F1) and segment-based F1 and error rate."""
    ref = reference_events(events, clip_ids)
    ev = event_metrics(ref, estimated, clip_ids, classes)
    seg = segment_metrics(ref, estimated, clip_ids, classes)
    return {"event_f1": ev["f_measure"], "event_f1_macro": ev["f_measure_macro"], "event_er": ev["error_rate"],
            "segment_f1": seg["f_measure"], "segment_er": seg["error_rate"]}


def reference_arrays(events: pd.DataFrame, clip_ids: list[str], classes: list[str]) -> EventArrays:
    """The clips' strong labels as `EventArrays` (file = position in `clip_ids`)."""
    return EventArrays.from_lists(reference_events(events, clip_ids), clip_ids, classes)


def psds_of(probs: np.ndarray, hop: float, events: pd.DataFrame, clip_ids: list[str], classes: list[str]) -> dict[str, float]:
    """PSDS1 and PSDS2 (threshold-free, harmonia.psds) of combined frame outputs [N, T, C] at `hop`."""
    return psds_scores(probs, hop, reference_arrays(events, clip_ids, classes))
