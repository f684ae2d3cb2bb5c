"""Honest event scores of an ensemble's SED decisions: thresholds and median filters fitted on K−1 folds.

The frame outputs are combined with the ensemble's weights; per fold, the per-class decisions are fitted
for event F1 on the other folds' clips (`sed.fit_decisions`) and decode the held-out clips. The events of
all held-out clips, each decoded by decisions that never saw it, are scored together (sed_eval's DCASE
settings), so the SED table's honest event F1 sits beside the in-sample one on the same clips.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harmonia.ensembles import sed
from harmonia.featureset import frame_targets


def honest_event_scores(probs: np.ndarray, events: pd.DataFrame, clip_ids: list[str], classes: list[str],
                        hop: float, folds: np.ndarray) -> dict[str, float]:
    """Event and segment scores of valid frame outputs [N, T, C] decoded with decisions fitted out of fold."""
    folds = np.asarray(folds)
    if folds.shape != (len(clip_ids),):
        raise ValueError(f"folds: one fold per clip expected ({len(clip_ids)}), got shape {folds.shape}")
    targets = frame_targets(events, clip_ids, classes, probs.shape[1], hop)
    estimated: dict[str, list] = {}
    for f in np.unique(folds):
        rest, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        rest_ids, held_ids = [clip_ids[i] for i in rest], [clip_ids[i] for i in held]
        decisions = sed.fit_decisions(probs[rest], targets[rest], hop, classes=classes,
                                      reference=sed.reference_arrays(events, rest_ids, classes))
        estimated.update(sed.decode(probs[held], held_ids, classes, decisions))
    return sed.score(events, estimated, clip_ids, classes)
