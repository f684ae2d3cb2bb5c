"""Metrics shared by trials, ensembles and reports: tagging, scene, sequence (CTC), and the registry.

Tagging inputs are ``y_true [N, C]`` in {0, 1} and ``y_score [N, C]`` floats; sequence metrics
take lists of label sequences. Everything is plain numpy (scipy for ranks); tests check each metric
against scikit-learn or its direct definition. SED metrics (event, segment, PSDS) are in
`harmonia.sed_metrics` and `harmonia.psds`; the registry names them too (inputs "events").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

# SED metrics live in harmonia.sed_metrics and harmonia.psds; these names stay importable from here.
from harmonia.sed_metrics import (DCASE_PERCENTAGE_OF_LENGTH, DCASE_SEGMENT_RESOLUTION, DCASE_T_COLLAR,  # noqa: F401
                                  Event, EventLists, decode_events, event_metrics, import_sed_eval,
                                  segment_metrics)

BCE_EPS = 1e-7


def _as_2d(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, scores) pair and return them as 2-D bool / float64 arrays."""
    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if t.shape != s.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_score {s.shape} must both be [N, C]")
    return t.astype(bool), s


COLUMN_CELLS = 2**20
"""Per-class metrics work on blocks of columns of about this many cells (their temporaries stay small)."""


def by_columns(per_class):
    """``per_class(t, s)`` applied to blocks of columns of at most COLUMN_CELLS cells and concatenated:
    the same values (every column is scored on its own), with temporaries of one block, not of [N, C]."""

    def blocked(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
        t, s = _as_2d(y_true, y_score)
        step = max(1, COLUMN_CELLS // max(1, s.shape[0]))
        if s.shape[1] <= step:
            return per_class(t, s)
        return np.concatenate([per_class(t[:, c : c + step], s[:, c : c + step]) for c in range(0, s.shape[1], step)])
    blocked.__doc__, blocked.__name__ = per_class.__doc__, per_class.__name__
    return blocked


@by_columns
def average_precision_per_class(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """AP of each class as scikit-learn computes it (ties share one threshold); NaN without positives.

    AP = (1/P) * sum over positives i of TP(score >= s_i) / N(score >= s_i).
    """
    t, s = _as_2d(y_true, y_score)
    n = s.shape[0]
    order = np.argsort(-s, axis=0, kind="stable")
    vals = np.take_along_axis(s, order, axis=0)
    lab = np.take_along_axis(t, order, axis=0)
    tps = np.cumsum(lab, axis=0)
    is_end = np.ones_like(lab)
    is_end[:-1] = vals[:-1] != vals[1:]
    idx = np.arange(n)[:, None]
    end = np.minimum.accumulate(np.where(is_end, idx, n)[::-1], axis=0)[::-1]
    prec = np.take_along_axis(tps, end, axis=0) / (end + 1.0)
    n_pos = lab.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(lab, prec, 0.0).sum(axis=0) / n_pos
    return np.where(n_pos > 0, ap, np.nan)


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro AP over the classes that have at least one positive (NaN if none has)."""
    ap = average_precision_per_class(y_true, y_score)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


@by_columns
def roc_auc_per_class(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC AUC per class via the Mann-Whitney rank sum (tied ranks averaged); NaN if one label is absent."""
    t, s = _as_2d(y_true, y_score)
    ranks = rankdata(s, axis=0)
    n_pos = t.sum(axis=0).astype(np.float64)
    n_neg = t.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (np.where(t, ranks, 0.0).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def roc_auc_macro(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro ROC AUC over the classes where both labels occur."""
    auc = roc_auc_per_class(y_true, y_score)
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def lwlrap(y_true: np.ndarray, y_score: np.ndarray, chunk_elements: int = 4_000_000) -> float:
    """Label-weighted label-ranking AP (DCASE 2019 task 2): mean over all (clip, positive label) pairs
    of precision at that label's rank within the clip; ties count as ranked above."""
    t, s = _as_2d(y_true, y_score)
    n, c = s.shape
    total = 0.0
    step = max(1, chunk_elements // max(1, c * c))
    for a in range(0, n, step):
        ts, ss = t[a : a + step], s[a : a + step]
        above = ss[:, None, :] >= ss[:, :, None]
        rank = above.sum(axis=2)
        pos_above = (above & ts[:, None, :]).sum(axis=2)
        total += float(np.where(ts, pos_above / np.maximum(rank, 1), 0.0).sum())
    n_labels = int(t.sum())
    return total / n_labels if n_labels else float("nan")


def _eer_binary(t: np.ndarray, s: np.ndarray) -> float:
    """EER of one class: the point where the piecewise-linear ROC meets fpr = 1 - tpr."""
    order = np.argsort(-s, kind="stable")
    vals, lab = s[order], t[order]
    keep = np.r_[vals[:-1] != vals[1:], True]
    tps = np.cumsum(lab)[keep]
    fps = np.cumsum(~lab)[keep]
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    h = fpr + tpr - 1.0
    i = int(np.argmax(h >= 0))
    if i == 0 or h[i] == 0:
        return float(fpr[i])
    frac = -h[i - 1] / (h[i] - h[i - 1])
    return float(fpr[i - 1] + frac * (fpr[i] - fpr[i - 1]))


def eer_per_class(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Equal error rate per class (DCASE 2016 task 4 style); NaN where one label is absent."""
    t, s = _as_2d(y_true, y_score)
    out = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        if 0 < t[:, c].sum() < len(t):
            out[c] = _eer_binary(t[:, c], s[:, c])
    return out


def eer(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean per-class EER over the classes where both labels occur (lower is better)."""
    e = eer_per_class(y_true, y_score)
    return float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")


def _class_index(y_true: np.ndarray) -> np.ndarray:
    """Single-label targets as class indices, from one-hot [N, C] or indices [N]."""
    y = np.asarray(y_true)
    return y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64)


def map_at_3(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """MAP@3 for single-label clips (DCASE 2018 task 2): 1/rank of the true class if in the top 3."""
    truth = _class_index(y_true)
    top3 = np.argsort(-np.asarray(y_score, dtype=np.float64), axis=1, kind="stable")[:, :3]
    hit = top3 == truth[:, None]
    return float((hit / np.arange(1, top3.shape[1] + 1)).sum(axis=1).mean())


def accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Single-label accuracy of the argmax (acoustic scenes)."""
    return float((np.asarray(y_score).argmax(axis=1) == _class_index(y_true)).mean())


def log_loss(y_true: np.ndarray, y_score: np.ndarray, eps: float = float(np.finfo(np.float64).eps)) -> float:
    """Single-label cross-entropy of the true class probability, clipped like scikit-learn's."""
    truth = _class_index(y_true)
    p = np.asarray(y_score, dtype=np.float64)[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(p, eps, 1 - eps)).mean())


def bce(y_true: np.ndarray, y_score: np.ndarray, eps: float = BCE_EPS) -> float:
    """Mean binary cross-entropy over all clip x class cells, scores clipped to [eps, 1 - eps]."""
    t, s = _as_2d(y_true, y_score)
    p = np.clip(s, eps, 1 - eps)
    return float(-np.where(t, np.log(p), np.log1p(-p)).mean())


def _f1(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    denom = n_pred + n_true
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def f1_micro(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Micro F1 of ``y_score >= threshold`` (0 when nothing is true or predicted)."""
    t, s = _as_2d(y_true, y_score)
    pred = s >= threshold
    return float(_f1(np.sum(pred & t), np.sum(pred), np.sum(t)))


def f1_macro_thresholds(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray) -> float:
    """Macro F1 over all classes with one threshold per class (a class with nothing true or predicted scores 0)."""
    t, s = _as_2d(y_true, y_score)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.shape[0] != s.shape[1]:
        raise ValueError(f"need {s.shape[1]} thresholds, got {thr.shape[0]}")
    pred = s >= thr[None, :]
    return float(_f1((pred & t).sum(axis=0), pred.sum(axis=0), t.sum(axis=0)).mean())


def fit_thresholds(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-class threshold maximizing F1 of ``score >= thr`` on the given (valid) data.

    The threshold sits halfway between the chosen score and the next lower one; a class without
    positives gets a threshold just above its highest score (predict nothing).
    """
    t, s = _as_2d(y_true, y_score)
    out = np.empty(s.shape[1])
    for c in range(s.shape[1]):
        out[c] = _best_threshold(t[:, c], s[:, c])
    return out


def _best_threshold(t: np.ndarray, s: np.ndarray) -> float:
    order = np.argsort(-s, kind="stable")
    vals, lab = s[order], t[order]
    n_true = int(t.sum())
    if n_true == 0:
        return float(np.nextafter(vals[0], np.inf))
    ends = np.flatnonzero(np.r_[vals[:-1] != vals[1:], True])
    tps = np.cumsum(lab)[ends]
    f1 = 2.0 * tps / (ends + 1 + n_true)
    k = int(np.argmax(f1))
    lower = vals[ends[k] + 1] if ends[k] + 1 < len(vals) else None
    return float(vals[ends[k]] if lower is None else (vals[ends[k]] + lower) / 2)


def ctc_best_path(posteriors: np.ndarray, blank: int | None = None) -> list[int]:
    """Best-path CTC decoding of one clip: argmax per frame, collapse repeats, drop blanks.

    crnn_ctc_sequential_labels.txt §1.4.2: "select the label with the maximum probability at each
    frame, reduce adjacent repeating labels to a single one, and remove the blank labels".
    ``posteriors`` is [T, K] (K = classes + blank); ``blank`` defaults to the last column. A label
    repeated with a blank between (``a - a``) stays two labels.
    """
    p = np.asarray(posteriors)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"posteriors must be [T, K] with K >= 2 (classes + blank), got {p.shape}")
    blank = p.shape[1] - 1 if blank is None else int(blank)
    path = p.argmax(axis=1)
    keep = np.r_[True, path[1:] != path[:-1]] & (path != blank)
    return [int(k) for k in path[keep]]


def with_blank(class_posteriors: np.ndarray) -> np.ndarray:
    """Class posteriors [..., T, C] of a CTC model (blank left out) → [..., T, C + 1] with the blank
    as the last column, recovered as 1 - Σ classes (the CTC softmax sums to one per frame)."""
    p = np.asarray(class_posteriors, dtype=np.float64)
    return np.concatenate([p, np.clip(1.0 - p.sum(axis=-1, keepdims=True), 0.0, 1.0)], axis=-1)


def ctc_decode(class_posteriors: np.ndarray) -> list[list[int]]:
    """Best-path decoding of every clip of [N, T, C] class posteriors (blank = 1 - Σ classes)."""
    return [ctc_best_path(p) for p in with_blank(class_posteriors)]


def sequence_accuracy(y_true: Sequence[Sequence], y_pred: Sequence[Sequence]) -> float:
    """Fraction of clips whose decoded label sequence equals the true one exactly (order and repeats)."""
    if isinstance(y_true, np.ndarray) and y_true.ndim == 2 and np.issubdtype(y_true.dtype, np.floating):
        raise ValueError("sequence accuracy compares label sequences (lists of labels per clip), not [N, C] "
                         "scores: decode frame posteriors with ctc_decode first")
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true sequences but {len(y_pred)} predicted")
    if not len(y_true):
        return float("nan")
    return float(np.mean([list(t) == list(p) for t, p in zip(y_true, y_pred)]))


@dataclass(frozen=True)
class Metric:
    """A named metric ``fn(y_true, y_score) -> float`` and its direction.

    ``inputs`` says what it compares: "scores" (targets [N, C] and clip scores [N, C]; the ensemble
    stage can use it), "sequences" (true and decoded label sequences; trials of task sequence) or
    "events" (frame outputs against strong labels; trials of task sed; the registry gives name and direction).
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    inputs: str = "scores"

    def __call__(self, y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(self.fn(y_true, y_score))

    def sign(self) -> float:
        """+1 if higher is better, -1 otherwise: ``sign() * value`` is always maximized."""
        return 1.0 if self.greater_is_better else -1.0


def _scored_from_events(y_true: np.ndarray, y_score: np.ndarray) -> float:
    raise TypeError("event, segment and PSDS metrics are scored from frame outputs and strong labels "
                    "(harmonia.trainables.tasks.sed_scores; harmonia.sed_metrics, harmonia.psds), not from clip scores")


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("mAP", mean_average_precision, True),
        Metric("auc", roc_auc_macro, True),
        Metric("lwlrap", lwlrap, True),
        Metric("f1", f1_micro, True),
        Metric("bce", bce, False),
        Metric("eer", eer, False),
        Metric("map@3", map_at_3, True),
        Metric("accuracy", accuracy, True),
        Metric("log_loss", log_loss, False),
        Metric("seq_acc", sequence_accuracy, True, inputs="sequences"),
        *(Metric(name, _scored_from_events, name != "segment_er", inputs="events")
          for name in ("event_f1", "event_f1_macro", "segment_f1", "segment_er", "psds1", "psds2")),
    )
}


def get_metric(name: str | Metric) -> Metric:
    """The registered metric called ``name`` (a Metric passes through); KeyError lists the valid names."""
    if isinstance(name, Metric):
        return name
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; valid metrics: {', '.join(sorted(METRICS))}") from None
