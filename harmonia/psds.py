"""Polyphonic sound detection score (PSDS; Bilen, Ferroni, Tuveri, Azcarreta, Krstulovic, "A Framework for
the Robust Evaluation of Sound Event Detection", ICASSP 2020), threshold-free from frame probabilities.

Intersection-based detection (Bilen et al. §2): a detection is true when at least `dtc` of its length
lies on reference events of its class, a reference event is found when true detections cover at least
`gtc` of it, and a false detection is a cross-trigger on another class when `cttc` of it lies on that
class's events. Each class's PSD-ROC (true positive ratio against the effective false positive rate
per hour, eFPR = FPR + alpha_ct · mean cross-trigger rate) is swept over every decision threshold at
once, as Ebbers, Serizel and Haeb-Umbach ("Threshold-independent evaluation of sound event detection
scores", ICASSP 2022; the `sed_scores_eval` package) do: per file, the statistics at each of its own
score values, merged over files by their changes. PSDS is the area under mean − alpha_st · std of the
per-class ROCs up to `max_efpr`, divided by `max_efpr`. The DCASE 2021+ scenarios are `PSDS_SCENARIOS`.
Tests check the value against sed_scores_eval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harmonia.sed_metrics import EventArrays

SECONDS_PER_HOUR = 3600.0
TIME_DECIMALS = 6  # intersections are compared rounded, as sed_scores_eval does
CHUNK_ELEMENTS = 4_000_000  # files × thresholds × frames per block


@dataclass(frozen=True)
class PsdsScenario:
    """Detection, ground-truth and cross-trigger tolerance criteria and the PSDS weights (Bilen et al. §2–3)."""

    dtc: float
    gtc: float
    cttc: float | None
    alpha_ct: float
    alpha_st: float
    max_efpr: float = 100.0


PSDS_SCENARIOS: dict[str, PsdsScenario] = {
    "psds1": PsdsScenario(dtc=0.7, gtc=0.7, cttc=None, alpha_ct=0.0, alpha_st=1.0),
    "psds2": PsdsScenario(dtc=0.1, gtc=0.1, cttc=0.3, alpha_ct=0.5, alpha_st=1.0),
}


@dataclass(frozen=True)
class _Frames:
    """The time grid of a [N, T, C] probability array and the reference coverage at its frame edges."""

    edges: np.ndarray  # [T + 1] seconds
    cover: np.ndarray  # [C, N, T + 1] reference time of each class in [0, edge]
    reference: EventArrays

    @classmethod
    def build(cls, n_files: int, n_frames: int, n_classes: int, hop: float, reference: EventArrays) -> "_Frames":
        edges = np.arange(n_frames + 1) * hop
        cover = np.zeros((n_classes, n_files, n_frames + 1))
        length = reference.offset - reference.onset
        np.add.at(cover, (reference.cls, reference.file),
                  np.clip(edges[None, :] - reference.onset[:, None], 0.0, length[:, None]))
        return cls(edges, cover, reference)


def _rounded(x: np.ndarray) -> np.ndarray:
    return np.round(x, TIME_DECIMALS)


def _candidates(scores: np.ndarray) -> np.ndarray:
    """[N, K] each file's distinct scores ascending, +inf padded: the thresholds where its detections change."""
    s = np.sort(scores, axis=1)
    s[:, 1:][s[:, 1:] == s[:, :-1]] = np.inf
    s = np.sort(s, axis=1)
    return s[:, : int(np.isfinite(s).sum(1).max(initial=1))]


def on_grid(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Scores snapped down to the largest threshold not above them (-inf below all): `score >= θ` is unchanged
    for every θ of the grid, so the threshold-free sweep of these scores is the sweep over the grid."""
    grid = np.sort(np.asarray(thresholds, np.float64))
    i = np.searchsorted(grid, scores, "right") - 1
    return np.where(i >= 0, grid[np.maximum(i, 0)], -np.inf)


def _run_count_deltas(scores: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, Δ) of files where every detection is false: runs at θ = #{t: s_t ≥ θ} − #{t: min(s_t, s_t−1) ≥ θ}."""
    up = scores.ravel()
    down = np.minimum(scores[:, 1:], scores[:, :-1]).ravel()
    d = np.zeros((len(up) + len(down), width))
    d[: len(up), 1], d[len(up):, 1] = 1.0, -1.0
    return np.r_[up, down], d


def _file_stats(scores: np.ndarray, cand: np.ndarray, files: np.ndarray, c: int, fr: _Frames,
                sc: PsdsScenario) -> np.ndarray:
    """[n, K, 2 + C] true positives, false positives and cross-triggers per other class of class `c` in
    `files` at each candidate threshold (Bilen et al. §2.1–2.2)."""
    n, k = cand.shape
    padded = np.pad(scores, ((0, 0), (1, 1)), constant_values=-np.inf)
    above = padded[:, None, :] >= cand[:, :, None]  # [n, K, T + 2]
    fi, ki, a = np.nonzero(above[..., 1:] & ~above[..., :-1])  # run starts, ordered by (file, threshold, frame)
    b = np.nonzero(~above[..., 1:] & above[..., :-1])[2]  # and their ends, in the same order
    length = fr.edges[b] - fr.edges[a]
    cover = fr.cover[:, files]
    same = cover[c, fi, b] - cover[c, fi, a]
    true = _rounded(same) >= _rounded(sc.dtc * length)
    out = np.zeros((n * k, 2 + cover.shape[0]))
    out[:, 1] = np.bincount((fi * k + ki)[~true], minlength=n * k)
    if sc.cttc is not None:  # false detections lying by `cttc` on another class's references
        f = ~true
        other = _rounded(cover[:, fi[f], b[f]] - cover[:, fi[f], a[f]]) >= _rounded(sc.cttc * length[f])
        other[c] = False
        cls, run = np.nonzero(other)
        out[:, 2:] = np.bincount((fi * k + ki)[f][run] * cover.shape[0] + cls,
                                 minlength=n * k * cover.shape[0]).reshape(n * k, -1)
    out[:, 0] = _found(fi[true], ki[true], fr.edges[a[true]], fr.edges[b[true]], n, k, files, c, fr, sc)
    return out.reshape(n, k, -1)


def _found(fi: np.ndarray, ki: np.ndarray, on_run: np.ndarray, off_run: np.ndarray, n: int, k: int,
           files: np.ndarray, c: int, fr: _Frames, sc: PsdsScenario) -> np.ndarray:
    """[n · K] reference events of class `c` that the true detections (file, threshold, onset, offset) cover by
    at least `gtc`: each event's intersection with every true run of its file, summed per threshold."""
    ref = fr.reference.of_class(c)
    local = np.full(max(int(files.max(initial=-1)), int(ref.file.max(initial=-1))) + 2, -1)
    local[files] = np.arange(len(files))
    keep = local[ref.file] >= 0
    rf, on, off = local[ref.file[keep]], ref.onset[keep], ref.offset[keep]
    if not len(rf) or not len(fi):
        return np.zeros(n * k)
    order = np.argsort(fi, kind="stable")  # runs grouped by file
    start = np.searchsorted(fi[order], np.arange(n + 1))
    count = (start[1:] - start[:-1])[rf]
    e = np.repeat(np.arange(len(rf)), count)
    r = order[np.repeat(start[rf] - np.cumsum(count) + count, count) + np.arange(int(count.sum()))]
    inter = np.maximum(np.minimum(off_run[r], off[e]) - np.maximum(on_run[r], on[e]), 0.0)
    covered = np.bincount(e * k + ki[r], weights=inter, minlength=len(rf) * k).reshape(len(rf), k)
    hit = _rounded(covered) >= _rounded(sc.gtc * (off - on))[:, None]
    return np.bincount(np.repeat(rf * k, k) + np.tile(np.arange(k), len(rf)), weights=hit.ravel(), minlength=n * k)


def _relevant(fr: _Frames, c: int, n_files: int, sc: PsdsScenario) -> np.ndarray:
    """Files whose statistics of class `c` need the detections' extents: those with references of `c` (or,
    with cross-triggers, of any class); in the others every detection is false and only runs are counted."""
    ref = fr.reference
    has = ref.file[ref.cls == c] if sc.cttc is None else ref.file
    return np.isin(np.arange(n_files), has)


def _class_curve(scores: np.ndarray, c: int, fr: _Frames, sc: PsdsScenario) -> tuple[np.ndarray, np.ndarray]:
    """(distinct thresholds descending, [U, 2 + C] statistics summed over files at each), +inf first."""
    n_files, t = scores.shape
    relevant = np.flatnonzero(_relevant(fr, c, n_files, sc))
    width = 2 + fr.cover.shape[0]
    us, deltas = [], []
    if len(relevant) < n_files:
        u, d = _run_count_deltas(scores[np.setdiff1d(np.arange(n_files), relevant)], width)
        us.append(u)
        deltas.append(d)
    cand_all = _candidates(scores[relevant]) if len(relevant) else np.zeros((0, 1))
    step = max(1, CHUNK_ELEMENTS // max(1, cand_all.shape[1] * t))
    for lo in range(0, len(relevant), step):
        files = relevant[lo: lo + step]
        cand = cand_all[lo: lo + step]
        stats = _file_stats(scores[files], cand, files, c, fr, sc)
        # stats at the file's k-th threshold minus at the next higher one: the change as the threshold falls
        d = stats - np.concatenate([stats[:, 1:], np.zeros_like(stats[:, :1])], axis=1)
        finite = np.isfinite(cand)
        us.append(cand[finite])
        deltas.append(d[finite])
    u, d = np.concatenate(us), np.concatenate(deltas)
    keep = np.isfinite(u)  # -inf: below every grid threshold
    u, d = u[keep], d[keep]
    order = np.argsort(-u, kind="stable")
    u, total = u[order], np.cumsum(d[order], axis=0)
    last = np.r_[u[1:] != u[:-1], True]
    return np.r_[np.inf, u[last]], np.concatenate([np.zeros((1, width)), total[last]])


def psd_rocs(frame_probs: np.ndarray, hop_seconds: float, reference: EventArrays, durations: np.ndarray | None,
             scenario: PsdsScenario, thresholds: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class, the (true positive ratio, eFPR per hour) of every operating point (Bilen et al. eq. 3–5)."""
    probs = np.asarray(frame_probs, np.float64)
    if thresholds is not None:
        probs = on_grid(probs, thresholds)
    n, t, n_classes = probs.shape
    fr = _Frames.build(n, t, n_classes, hop_seconds, reference)
    total = float(np.sum(durations)) if durations is not None else n * t * hop_seconds
    n_ref = np.bincount(reference.cls, minlength=n_classes)
    t_ref = np.bincount(reference.cls, weights=reference.offset - reference.onset, minlength=n_classes)
    rocs = []
    for c in range(n_classes):
        _, stats = _class_curve(np.ascontiguousarray(probs[:, :, c]), c, fr, scenario)
        tpr = stats[:, 0] / max(int(n_ref[c]), 1)
        efpr = stats[:, 1] / total
        if scenario.alpha_ct:
            others = [c2 for c2 in range(n_classes) if c2 != c]
            ct_rate = stats[:, [2 + c2 for c2 in others]] / np.maximum(t_ref[others], 1e-12)
            efpr = efpr + scenario.alpha_ct * ct_rate.mean(axis=1)
        rocs.append((tpr, efpr * SECONDS_PER_HOUR))
    return rocs


def psds_from_rocs(rocs: list[tuple[np.ndarray, np.ndarray]], alpha_st: float, max_efpr: float) -> float:
    """Area under max(0, mean − alpha_st · std) of the per-class step ROCs up to `max_efpr`, over `max_efpr`
    (Bilen et al. eq. 6–7); a class's ROC at e is its best ratio with eFPR ≤ e."""
    grid = np.unique(np.concatenate([efpr[efpr <= max_efpr] for _, efpr in rocs]))
    curves = []
    for tpr, efpr in rocs:
        order = np.argsort(efpr, kind="stable")
        best = np.maximum.accumulate(tpr[order])
        i = np.searchsorted(efpr[order], grid, "right") - 1
        curves.append(np.where(i >= 0, best[np.maximum(i, 0)], 0.0))
    curves = np.asarray(curves)
    etpr = np.maximum(curves.mean(axis=0) - alpha_st * curves.std(axis=0), 0.0)
    widths = np.diff(np.r_[grid, max_efpr])
    return float(np.sum(etpr * widths) / max_efpr)


def psds(frame_probs: np.ndarray, hop_seconds: float, reference: EventArrays, durations: np.ndarray | None = None,
         scenario: PsdsScenario | str = "psds1", thresholds: np.ndarray | None = None) -> float:
    """PSDS of frame probabilities [N, T, C] (frame t covers [t·hop, (t+1)·hop)) against reference events;
    threshold-free unless a `thresholds` grid is given (as psds_eval's operating points)."""
    sc = PSDS_SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    rocs = psd_rocs(frame_probs, hop_seconds, reference, durations, sc, thresholds)
    return psds_from_rocs(rocs, sc.alpha_st, sc.max_efpr)


def psds_scores(frame_probs: np.ndarray, hop_seconds: float, reference: EventArrays,
                durations: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """`{prefix}psds1` and `{prefix}psds2`, the DCASE 2021+ scenarios."""
    return {f"{prefix}{name}": psds(frame_probs, hop_seconds, reference, durations, name) for name in PSDS_SCENARIOS}
