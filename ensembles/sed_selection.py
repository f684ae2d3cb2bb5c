"""Greedy ensemble selection by an SED objective: members picked on their combined frame outputs.

Caruana et al. 2004 forward selection with replacement, as ensembles/greedy.py, but each candidate
ensemble is scored on the weighted average of its members' frame probabilities [N, T, C] by an SED
objective: frame-level mAP or F1 (every output frame a row: vectorized like clip tagging), event F1
at the trials' decoding (threshold 0.5, 0.45 s median filter: what `search.metric: event_f1` scores
per epoch) or PSDS1/PSDS2 (threshold-free). The final ensemble's thresholds and
median filters are then fitted for event F1 as for every other method (`stage.fit_sed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from harmonia.ensembles.selection import ensemble_selection
from harmonia.ensembles.selection_core import first_best
from harmonia.metrics import get_metric
from harmonia.psds import psds
from harmonia.sed_metrics import EventArrays, event_counts, f_scores, segment_rolls
from harmonia.trainables.tasks import epoch_decoding

FrameObjective = Callable[[np.ndarray], float]
"""Combined frame probabilities [N, T, C] → score, higher is better."""
ObjectiveFactory = Callable[[EventArrays, float], FrameObjective]

SED_SELECTION_METRICS: dict[str, ObjectiveFactory] = {}


def register_sed_metric(name: str):
    def deco(fn: ObjectiveFactory) -> ObjectiveFactory:
        SED_SELECTION_METRICS[name] = fn
        return fn

    return deco


@register_sed_metric("event_f1")
def event_f1_objective(ref: EventArrays, hop: float) -> FrameObjective:
    """Micro event F1 (DCASE collars) of the epoch decoding."""
    return lambda p: f_scores(event_counts(ref, epoch_decoding(p, hop), p.shape[2]), "e")["e_f1"]


@register_sed_metric("event_f1_macro")
def event_f1_macro_objective(ref: EventArrays, hop: float) -> FrameObjective:
    """Class-wise mean event F1 of the epoch decoding (DCASE 2018–2019 task 4's ranking)."""
    return lambda p: f_scores(event_counts(ref, epoch_decoding(p, hop), p.shape[2]), "e")["e_f1_macro"]


@register_sed_metric("psds1")
def psds1_objective(ref: EventArrays, hop: float) -> FrameObjective:
    return lambda p: psds(p, hop, ref, None, "psds1")


@register_sed_metric("psds2")
def psds2_objective(ref: EventArrays, hop: float) -> FrameObjective:
    return lambda p: psds(p, hop, ref, None, "psds2")


@dataclass(frozen=True)
class FrameLevel:
    """A frame-level objective: a registered clip metric (mAP, f1) over every (clip, output frame) as one row,
    against the frames the reference events touch (`segment_rolls` at the output hop). It decomposes by class
    and by frame, so greedy selection by it is vectorized (`ensemble_selection` on [M, N * T, C])."""

    metric: str
    ref: EventArrays
    hop: float

    def targets(self, n: int, t: int, c: int) -> np.ndarray:
        """[N, T, C] frame targets: a frame is active where a reference event overlaps it."""
        return segment_rolls(self.ref, n, c, t, self.hop)

    def __call__(self, p: np.ndarray) -> float:
        n, t, c = p.shape
        return float(get_metric(self.metric)(self.targets(n, t, c).reshape(n * t, c), p.reshape(n * t, c)))


@register_sed_metric("frame_mAP")
def frame_map_objective(ref: EventArrays, hop: float) -> FrameObjective:
    """Macro AP over output frames (each frame a row; classes without an active frame left out)."""
    return FrameLevel("mAP", ref, hop)


@register_sed_metric("frame_f1")
def frame_f1_objective(ref: EventArrays, hop: float) -> FrameObjective:
    """Micro F1 of the output frames at threshold 0.5."""
    return FrameLevel("f1", ref, hop)


@dataclass
class SedSelection:
    """Member counts of the best prefix (`weights` sum to 1), the picks in order and each step's score;
    `path` says how candidates were scored (`ensemble_selection`'s path for frame-level objectives)."""

    picks: list[int]
    weights: np.ndarray
    curve: list[float]
    best_step: int
    path: str = "per-candidate"


def sed_greedy_selection(frames: np.ndarray, objective: FrameObjective, size: int = 20) -> SedSelection:
    """Start from the best single member, then add (with replacement) the member whose addition scores best,
    `size` picks in all; the prefix with the best score is kept (ties: the shorter). Frame-level objectives
    score every candidate at once (`FrameLevel`, tie rules of `selection_core.choose`); others make one
    objective call per candidate."""
    m = frames.shape[0]
    if m == 0:
        raise ValueError("no members to select from")
    if size < 1:
        raise ValueError(f"size {size}: expected an integer >= 1")
    if isinstance(objective, FrameLevel):
        return _frame_level_selection(frames, objective, size)
    total = np.zeros(frames.shape[1:], np.float64)
    picks: list[int] = []
    curve: list[float] = []
    for step in range(size):
        scores = [objective(((total + frames[i]) / (step + 1)).astype(np.float32)) for i in range(m)]
        best = int(np.nanargmax(np.nan_to_num(np.asarray(scores, float), nan=-np.inf)))
        picks.append(best)
        curve.append(float(scores[best]))
        total += frames[best]
    best_step = int(np.argmax(curve))
    counts = np.bincount(picks[: best_step + 1], minlength=m).astype(np.float64)
    return SedSelection(picks, counts / counts.sum(), curve, best_step)


def _frame_level_selection(frames: np.ndarray, objective: FrameLevel, size: int) -> SedSelection:
    """The same greedy selection by a frame-level objective: frames as rows of a clip-score library."""
    m, n, t, c = frames.shape
    y = objective.targets(n, t, c).reshape(n * t, c)
    sel = ensemble_selection(frames.reshape(m, n * t, c), y, size=size - 1, metric=objective.metric, init=1,
                             keep_best_prefix=False)
    best_step = first_best(sel.curve)
    counts = np.bincount(sel.picks[: best_step + 1], minlength=m).astype(np.float64)
    return SedSelection(list(sel.picks), counts / counts.sum(), list(sel.curve), best_step, sel.path)


def objective_of(name: str, ref: EventArrays, hop: float) -> FrameObjective:
    """The registered objective `name`; KeyError lists the valid names."""
    if name not in SED_SELECTION_METRICS:
        raise KeyError(f"unknown SED selection metric {name!r}; valid: {', '.join(SED_SELECTION_METRICS)}")
    return SED_SELECTION_METRICS[name](ref, hop)
