"""Sound event detection metrics with the DCASE settings: frame decoding, event- and segment-based F1 / ER.

Two ways to the same numbers: `event_metrics` / `segment_metrics` call sed_eval file by file (what the
reports use; event ER needs its substitution rule), and `event_counts` / `segment_counts` count the same
hits vectorized over all files at once (what trials score every epoch and what decision fitting calls
hundreds of times). Tests check the counts against sed_eval. Rules (dcase2018_digest.md §metrics): onset
collar 200 ms, offset collar max(200 ms, 20 % of the reference length), optimal (maximum bipartite)
matching per file and class; 1 s segments. PSDS lives in `harmonia.psds`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

Event = tuple[float, float, str]
EventLists = Mapping[str, Sequence[Event]]

DCASE_T_COLLAR = 0.2
DCASE_PERCENTAGE_OF_LENGTH = 0.2
DCASE_SEGMENT_RESOLUTION = 1.0


# ------------------------------------------------------------------ decoding
def decode_events(
    frame_probs: np.ndarray,
    hop_seconds: float,
    classes: Sequence[str],
    thresholds: np.ndarray | Sequence[float] | float,
    median_lengths: np.ndarray | Sequence[int] | int,
) -> list[Event]:
    """Frame probabilities [T, C] to events: ``prob >= threshold``, a per-class median filter
    (scipy.ndimage, ``median_lengths`` in frames, 1 = none), then contiguous runs.

    Returns (onset, offset, label) sorted by onset then class order; offset is the end of the last frame.
    """
    probs = np.asarray(frame_probs, dtype=np.float64)
    n_frames, n_classes = probs.shape
    if len(classes) != n_classes:
        raise ValueError(f"{len(classes)} class names for {n_classes} columns")
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_classes,))
    med = np.broadcast_to(np.asarray(median_lengths, dtype=np.int64), (n_classes,))
    events: list[tuple[int, int, Event]] = []
    for c in range(n_classes):
        active = (probs[:, c] >= thr[c]).astype(np.uint8)
        if med[c] > 1:
            active = median_filter(active, size=int(med[c]), mode="nearest")
        edges = np.diff(np.r_[0, active, 0].astype(np.int8))
        for on, off in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            events.append((int(on), c, (float(on * hop_seconds), float(off * hop_seconds), classes[c])))
    return [e for _, _, e in sorted(events, key=lambda x: (x[0], x[1]))]


def binary_median(active: np.ndarray, length: int) -> np.ndarray:
    """Median filter of odd ``length`` along the last axis of a 0/1 array, edges repeated: the same values
    as scipy's ``median_filter(mode="nearest")`` (a window's median of 0/1 is its majority), in O(T)."""
    if length <= 1:
        return active.astype(bool)
    if length % 2 == 0:
        raise ValueError(f"median length must be odd, got {length}")
    h = length // 2
    a = active.astype(np.int32)
    padded = np.concatenate([np.repeat(a[..., :1], h, -1), a, np.repeat(a[..., -1:], h, -1)], axis=-1)
    csum = np.concatenate([np.zeros_like(padded[..., :1]), np.cumsum(padded, axis=-1)], axis=-1)
    return (csum[..., length:] - csum[..., :-length]) > h


@dataclass(frozen=True)
class EventArrays:
    """A set of events as parallel arrays: file index, class index, onset and offset in seconds."""

    file: np.ndarray
    cls: np.ndarray
    onset: np.ndarray
    offset: np.ndarray

    @classmethod
    def from_lists(cls, events: EventLists, files: Sequence[str], classes: Sequence[str]) -> "EventArrays":
        """Events of `files` whose label is one of `classes` (others are left out, as sed_eval's label list does)."""
        idx = {c: i for i, c in enumerate(classes)}
        rows = [(f, idx[lab], float(on), float(off)) for f, name in enumerate(files)
                for on, off, lab in events.get(name, ()) if lab in idx]
        a = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return cls(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], a[:, 3])

    def of_class(self, c: int) -> "EventArrays":
        m = self.cls == c
        return EventArrays(self.file[m], self.cls[m], self.onset[m], self.offset[m])


def frame_runs(active: np.ndarray, hop_seconds: float) -> EventArrays:
    """Contiguous active runs of a [N, T, C] 0/1 array as events (onset = first frame · hop, offset = end of
    the last frame), the times `decode_events` gives."""
    a = np.asarray(active, dtype=np.int8)
    n, _, c = a.shape
    pad = np.zeros((n, 1, c), np.int8)
    edges = np.diff(np.concatenate([pad, a, pad], axis=1), axis=1)
    edges = edges.transpose(0, 2, 1)
    f, k, start = np.nonzero(edges == 1)  # ordered by (file, class, frame): the starts
    end = np.nonzero(edges == -1)[2]      # and their ends, in the same order
    return EventArrays(f, k, start * hop_seconds, end * hop_seconds)


# ------------------------------------------------------------------ event-based counts
def _candidate_pairs(ref: EventArrays, est: EventArrays, t_collar: float) -> tuple[np.ndarray, np.ndarray]:
    """(ref i, est j) pairs of one class in the same file whose onsets lie within the collar (plus a hair)."""
    span = float(max(ref.offset.max(initial=0.0), est.offset.max(initial=0.0), est.onset.max(initial=0.0))) + 10.0
    key_e = est.file * span + est.onset
    order = np.argsort(key_e, kind="stable")
    key_r = ref.file * span + ref.onset
    lo = np.searchsorted(key_e[order], key_r - t_collar - 1e-6, "left")
    hi = np.searchsorted(key_e[order], key_r + t_collar + 1e-6, "right")
    n = hi - lo
    i = np.repeat(np.arange(len(key_r)), n)
    j = order[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))]
    return i, j


def matched_pairs(ref: EventArrays, est: EventArrays, t_collar: float = DCASE_T_COLLAR,
                  percentage_of_length: float = DCASE_PERCENTAGE_OF_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Reference and estimated event indices matched one to one, maximizing the matches (sed_eval's
    "optimal" matching): same file and class, |Δonset| ≤ collar, |Δoffset| ≤ max(collar, pol · ref length)."""
    if not len(ref.file) or not len(est.file):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = ref.cls.max(initial=0) + 1
    r = EventArrays(ref.file * key + ref.cls, ref.cls, ref.onset, ref.offset)  # (file, class) as one "file"
    e = EventArrays(est.file * key + est.cls, est.cls, est.onset, est.offset)
    i, j = _candidate_pairs(r, e, t_collar)
    ok = ((r.file[i] == e.file[j]) & (np.abs(r.onset[i] - e.onset[j]) <= t_collar)
          & (np.abs(r.offset[i] - e.offset[j]) <= np.maximum(t_collar, percentage_of_length * (r.offset[i] - r.onset[i]))))
    i, j = i[ok], j[ok]
    if len(np.unique(i)) == len(i) and len(np.unique(j)) == len(j):
        return i, j  # no event has two candidates: every pair is a match
    graph = csr_matrix((np.ones(len(i), np.int8), (i, j)), shape=(len(r.file), len(e.file)))
    match = maximum_bipartite_matching(graph, perm_type="column")
    rows = np.flatnonzero(match >= 0)
    return rows, match[rows]


def event_counts(ref: EventArrays, est: EventArrays, n_classes: int, **collars: float) -> dict[str, np.ndarray]:
    """Per class: hits `ntp`, estimated `nsys` and reference `nref` event counts under the DCASE collars."""
    i, _ = matched_pairs(ref, est, **collars)
    return {"ntp": np.bincount(ref.cls[i], minlength=n_classes), "nsys": np.bincount(est.cls, minlength=n_classes),
            "nref": np.bincount(ref.cls, minlength=n_classes)}


def f_measure(ntp: np.ndarray, nsys: np.ndarray, nref: np.ndarray) -> np.ndarray:
    """F1 with sed_eval's rules and DCASE's `zero_score`: 0 without system output, NaN without references."""
    ntp, nsys, nref = (np.asarray(x, np.float64) for x in (ntp, nsys, nref))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2.0 * ntp / (nsys + nref)
    return np.where(nref == 0, np.nan, np.where(nsys == 0, 0.0, f))


def f_scores(counts: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """`{prefix}_f1` (micro over all events, sed_eval's overall) and `{prefix}_f1_macro` (class-wise mean over
    the classes with references, DCASE 2018–2019 task 4's ranking) from per-class counts."""
    total = f_measure(counts["ntp"].sum(), counts["nsys"].sum(), counts["nref"].sum())
    per_class = f_measure(counts["ntp"], counts["nsys"], counts["nref"])
    macro = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return {f"{prefix}_f1": float(total), f"{prefix}_f1_macro": macro}


# ------------------------------------------------------------------ segment-based counts
def segment_rolls(events: EventArrays, n_files: int, n_classes: int, n_segments: int,
                  resolution: float = DCASE_SEGMENT_RESOLUTION) -> np.ndarray:
    """[N, S, C] activity of `resolution`-second segments: floor(onset / r) to ceil(offset / r), as sed_eval."""
    roll = np.zeros((n_files, n_segments + 1, n_classes), np.int32)
    a = np.floor(events.onset / resolution).astype(np.int64)
    b = np.minimum(np.ceil(events.offset / resolution).astype(np.int64), n_segments)
    keep = b > a
    np.add.at(roll, (events.file[keep], a[keep], events.cls[keep]), 1)
    np.add.at(roll, (events.file[keep], b[keep], events.cls[keep]), -1)
    return np.cumsum(roll, axis=1)[:, :n_segments] > 0


def segment_counts(ref: EventArrays, est: EventArrays, n_files: int, n_classes: int,
                   resolution: float = DCASE_SEGMENT_RESOLUTION) -> dict[str, np.ndarray]:
    """Per class segment hits, system and reference counts, and the overall S, D, I of sed_eval's segment ER."""
    last = max(ref.offset.max(initial=0.0), est.offset.max(initial=0.0))
    n_seg = int(np.ceil(last / resolution)) + 1
    r = segment_rolls(ref, n_files, n_classes, n_seg, resolution)
    e = segment_rolls(est, n_files, n_classes, n_seg, resolution)
    tp_seg, ref_seg, sys_seg = (r & e).sum(2), r.sum(2), e.sum(2)
    return {"ntp": (r & e).sum((0, 1)), "nsys": e.sum((0, 1)), "nref": r.sum((0, 1)),
            "S": int((np.minimum(ref_seg, sys_seg) - tp_seg).sum()),
            "D": int(np.maximum(0, ref_seg - sys_seg).sum()), "I": int(np.maximum(0, sys_seg - ref_seg).sum())}


def segment_scores(counts: dict[str, np.ndarray], prefix: str = "segment") -> dict[str, float]:
    """`{prefix}_f1`, `{prefix}_f1_macro` and `{prefix}_er` = (S + D + I) / Nref (sed_eval's overall ER)."""
    nref = float(counts["nref"].sum())
    er = (counts["S"] + counts["D"] + counts["I"]) / (nref + np.spacing(1))
    return {**f_scores(counts, prefix), f"{prefix}_er": float(er)}


# ------------------------------------------------------------------ sed_eval, file by file
def _sed_event_list(events: EventLists, filename: str) -> list[dict]:
    """One file's events in sed_eval's format; a file without events is ``[{"filename": f}]``."""
    rows = [
        {"filename": filename, "event_onset": float(on), "event_offset": float(off), "event_label": lab}
        for on, off, lab in events.get(filename, ())
    ]
    return rows or [{"filename": filename}]


def _sed_labels(reference: EventLists, estimated: EventLists, classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        return list(classes)
    labels = {e[2] for evs in (*reference.values(), *estimated.values()) for e in evs}
    return sorted(labels)


def _sed_results(metric: object) -> dict[str, float]:
    overall = metric.results_overall_metrics()  # type: ignore[attr-defined]
    classwise = metric.results_class_wise_average_metrics()  # type: ignore[attr-defined]
    return {
        "f_measure": float(overall["f_measure"]["f_measure"]),
        "precision": float(overall["f_measure"]["precision"]),
        "recall": float(overall["f_measure"]["recall"]),
        "error_rate": float(overall["error_rate"]["error_rate"]),
        "f_measure_macro": float(classwise["f_measure"]["f_measure"]),
    }


def import_sed_eval():
    """`sed_eval` (and its dependency dcase_util), imported only where event metrics are computed, with
    dcase_util's `pkg_resources is deprecated` warning filtered at that import."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import dcase_util.containers  # noqa: F401
        import sed_eval
    return sed_eval


def _evaluate_sed(
    metric: object, reference: EventLists, estimated: EventLists, files: Sequence[str]
) -> dict[str, float]:
    import_sed_eval()
    from dcase_util.containers import MetaDataContainer

    for f in files:
        metric.evaluate(  # type: ignore[attr-defined]
            reference_event_list=MetaDataContainer(_sed_event_list(reference, f)),
            estimated_event_list=MetaDataContainer(_sed_event_list(estimated, f)),
        )
    return _sed_results(metric)


def event_metrics(
    reference_events: EventLists,
    estimated_events: EventLists,
    files: Sequence[str],
    classes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Event-based F1 / ER with the DCASE settings (200 ms onset collar, offset collar
    max(200 ms, 20 % of length); dcase2018_digest.md §metrics), evaluated file by file with sed_eval.

    Events are {filename: [(onset, offset, label), ...]}; files missing there have no events.
    """
    sed_eval = import_sed_eval()
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=_sed_labels(reference_events, estimated_events, classes),
        t_collar=DCASE_T_COLLAR,
        percentage_of_length=DCASE_PERCENTAGE_OF_LENGTH,
        empty_system_output_handling="zero_score",
    )
    return _evaluate_sed(metric, reference_events, estimated_events, files)


def segment_metrics(
    reference_events: EventLists,
    estimated_events: EventLists,
    files: Sequence[str],
    classes: Sequence[str] | None = None,
    time_resolution: float = DCASE_SEGMENT_RESOLUTION,
) -> dict[str, float]:
    """Segment-based F1 / ER (1 s segments, DCASE setting) with sed_eval, file by file."""
    sed_eval = import_sed_eval()
    metric = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=_sed_labels(reference_events, estimated_events, classes),
        time_resolution=time_resolution,
    )
    return _evaluate_sed(metric, reference_events, estimated_events, files)
