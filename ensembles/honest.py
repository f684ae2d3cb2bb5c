"""Honest scores: every ensemble choice judged on clips it was not fitted on.

A method (with everything it chooses: k, the greedy prefix, a regularization, thresholds) is fitted on
K-1 folds of the clips it is fitted on and predicts the held-out fold; the metric of those pooled
held-out predictions, with a bootstrap standard error, is its honest score, and the final ensemble is
refitted on all the clips. Folds are
grouped when the dataset says which clips share a source (a recording, a location, a video) and its
split keeps test's sources apart from valid's, so a held-out fold holds sources the fit never saw, as
test and new audio do; they are stratified by label set when there are no groups or the split mixes
sources (then test shares valid's sources, and clip-level folds mimic that). The same folds serve
every method, so their scores compare fold by fold.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from harmonia.metrics import Metric, f1_macro_thresholds, fit_thresholds, get_metric

DEFAULT_FOLDS = 5
DEFAULT_REPEATS = 3
RULES = ("anchored", "one_se", "paired_se", "best")
DEFAULT_RULE = "anchored"
GROUPINGS = ("auto", "source", "clip")
DEFAULT_GROUPING = "auto"
"""How honest folds split valid: `source` holds out whole groups, `clip` stratifies clips by label set,
`auto` (default) holds out groups unless the dataset's split mixes sources (`split_mixes_sources`)."""
ANCHOR = "bagged_selection"
"""The robust default the `anchored` rule keeps unless another candidate clearly beats it."""


BOOTSTRAP = 200
"""Resamples of the pooled held-out predictions behind an honest score's standard error."""


@dataclass
class HonestScore:
    """One fitted-and-scored procedure on held-out folds: the metric of the pooled held-out predictions
    (every clip predicted by the fit that did not see it), its bootstrap replicates and per-fold scores.

    The headline is the pooled score, not the mean of per-fold scores: AP on a small fold is biased
    upward (few positives), so a mean of fold scores is not comparable with a score on a whole split.
    """

    score: float
    boot: list[float]  # the metric on BOOTSTRAP resamples (of groups when grouped) of the pooled predictions
    folds: list[float]  # the metric on each held-out fold alone (for the spread; not the headline)
    grouped: bool
    f1: float = float("nan")  # macro F1 of the pooled decisions at thresholds fitted on the other folds
    k: int = DEFAULT_FOLDS  # folds per assignment (`folds` holds k scores for each assignment)

    @property
    def mean(self) -> float:
        return self.score

    @property
    def se(self) -> float:
        v = np.asarray(self.boot, np.float64)
        v = v[np.isfinite(v)]
        return float(v.std(ddof=1)) if len(v) > 1 else float("nan")

    @property
    def f1_mean(self) -> float:
        return self.f1

    def to_dict(self) -> dict:
        return {"score": self.score, "se": self.se, "folds": [float(v) for v in self.folds],
                "grouped": self.grouped, "f1": self.f1, "k": self.k}


def _label_sets(y: np.ndarray, k: int) -> np.ndarray:
    """One stratum per label set; sets rarer than k clips share one stratum (they cannot spread over k folds)."""
    keys = np.array(["".join("1" if v else "0" for v in row) for row in np.asarray(y) > 0.5])
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    rare = counts[inverse] < k
    codes = inverse.copy()
    codes[rare] = len(uniq)
    return codes


def has_groups(groups: Sequence[str] | np.ndarray | None) -> bool:
    """Whether `groups` says anything: some clips share a source (each clip its own group says nothing)."""
    return groups is not None and len(set(map(str, groups))) < len(groups)


def split_mixes_sources(valid_groups: Sequence[str] | np.ndarray | None,
                        test_groups: Sequence[str] | np.ndarray | None) -> bool:
    """Whether the dataset's split shares sources between valid and test: most test clips come from a
    source that valid clips come from too (a clip-level split of grouped data). False when either is unknown."""
    if not has_groups(valid_groups) or test_groups is None or len(test_groups) == 0:
        return False
    seen = set(map(str, valid_groups))
    return float(np.mean([str(g) in seen for g in test_groups])) > 0.5


def folds_by_source(valid_groups: Sequence[str] | np.ndarray | None,
                    test_groups: Sequence[str] | np.ndarray | None, grouping: str = "auto") -> bool:
    """Whether honest folds hold out whole sources, for a `grouping` of GROUPINGS: they do when the groups say
    anything, unless `grouping` is `clip`, or `auto` and the split mixes sources (folds mimic the split)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping: unknown {grouping!r}; valid: {', '.join(GROUPINGS)}")
    if grouping == "clip" or not has_groups(valid_groups):
        return False
    return grouping == "source" or not split_mixes_sources(valid_groups, test_groups)


def clip_folds(y: np.ndarray, groups: Sequence[str] | np.ndarray | None = None, k: int = DEFAULT_FOLDS,
               seed: int = 0) -> np.ndarray:
    """Fold index per clip: grouped (no group on both sides of a fold) when `groups` says which clips share
    a source, stratified by label set otherwise; seeded. Fewer folds when there are fewer groups or clips."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n = len(y)
    if n < 2:
        raise ValueError(f"honest folds need at least 2 clips, got {n}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the least populated class has only ... members"
        if has_groups(groups):
            g = np.asarray([str(v) for v in groups])
            n_folds = min(k, len(set(g)))
            if n_folds < 2:
                raise ValueError("honest folds: every clip is in one group; there is nothing to hold out")
            if seed == 0:
                split = StratifiedGroupKFold(n_folds).split(np.zeros(n), _label_sets(y, n_folds), g)
            else:  # StratifiedGroupKFold's shuffle leaves most assignments unchanged: shuffled balanced groups
                return _shuffled_group_folds(g, n_folds, np.random.default_rng(seed))
        else:
            n_folds = min(k, n)
            strata = _label_sets(y, n_folds)
            if np.bincount(strata).max() < n_folds:  # no stratum can spread over the folds: plain shuffled folds
                strata = np.zeros(n, int)
            split = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n), strata)
        folds = np.empty(n, int)
        for f, (_, held) in enumerate(split):
            folds[held] = f
    return folds


def _shuffled_group_folds(g: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Groups in a random order, larger first, each to the fold with the fewest clips so far."""
    names, sizes = np.unique(g, return_counts=True)
    order = rng.permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    fill = np.zeros(n_folds, int)
    fold_of = {}
    for i in order:
        f = int(np.argmin(fill))
        fold_of[names[i]] = f
        fill[f] += sizes[i]
    return np.array([fold_of[v] for v in g])


def repeated_folds(y: np.ndarray, groups: Sequence[str] | np.ndarray | None = None, k: int = DEFAULT_FOLDS,
                   repeats: int = 1, seed: int = 0) -> list[np.ndarray]:
    """`repeats` fold assignments (seeds seed, seed + 1, ...): averaging over them removes the luck of one split."""
    return [clip_folds(y, groups, k, seed + r) for r in range(repeats)]


def bootstrap_indices(n: int, groups: Sequence[str] | np.ndarray | None = None, b: int = BOOTSTRAP,
                      seed: int = 0) -> list[np.ndarray]:
    """`b` resamples of clip indices, drawing whole groups when `groups` says which clips share a source;
    seeded, so every candidate of one library is resampled the same way (paired)."""
    rng = np.random.default_rng(seed)
    if not has_groups(groups):
        return [rng.integers(0, n, n) for _ in range(b)]
    g = np.asarray([str(v) for v in groups])
    members = [np.flatnonzero(g == u) for u in np.unique(g)]
    return [np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))]) for _ in range(b)]


def honest_score(fit: Callable[[np.ndarray], object], preds: np.ndarray, y: np.ndarray,
                 folds: np.ndarray | list[np.ndarray], metric: str | Metric, grouped: bool = False,
                 groups: Sequence[str] | np.ndarray | None = None, seed: int = 0) -> HonestScore:
    """`fit(train_idx) -> FittedEnsemble` on the other folds predicts each held-out fold of `preds [M, N, C]`;
    the pooled predictions are scored against `y [N, C]`, with bootstrap replicates for the standard error
    and F1 at per-class thresholds fitted on the other folds. With several fold assignments (`folds` a
    list, see `repeated_folds`) every figure is the mean over assignments."""
    m = get_metric(metric)
    assignments = [folds] if isinstance(folds, np.ndarray) and folds.ndim == 1 else list(folds)
    index = bootstrap_indices(len(y), groups if grouped else None, seed=seed)
    scores, boots, f1s, per_fold = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for assignment in assignments:
            pooled = np.zeros(y.shape, np.float64)
            decided = np.zeros(y.shape, bool)
            for f in np.unique(assignment):
                held, rest = np.flatnonzero(assignment == f), np.flatnonzero(assignment != f)
                fitted = fit(rest)
                pooled[held] = fitted.predict(preds[:, held])
                decided[held] = pooled[held] >= fit_thresholds(y[rest], fitted.predict(preds[:, rest]))[None, :]
                per_fold.append(float(m(y[held], pooled[held])))
            scores.append(float(m(y, pooled)))
            boots.append([float(m(y[i], pooled[i])) for i in index])
            f1s.append(float(f1_macro_thresholds(y, decided.astype(np.float64), np.full(y.shape[1], 0.5))))
    return HonestScore(float(np.mean(scores)), [float(v) for v in np.mean(boots, axis=0)], per_fold, grouped,
                       float(np.mean(f1s)), len(np.unique(assignments[0])))


def _paired_se(a: "Candidate", b: "Candidate") -> float:
    """Standard error of the honest-score difference of two candidates over the same bootstrap resamples."""
    d = np.asarray(a.honest.boot) - np.asarray(b.honest.boot)
    d = d[np.isfinite(d)]
    return float(d.std(ddof=1)) if len(d) > 1 else 0.0


def fold_difference(a: HonestScore, b: HonestScore) -> tuple[float, float]:
    """Mean difference a − b of the per-fold scores on the same held-out folds, and its standard error
    corrected for the overlap of the fits' training folds: sd · sqrt(1/J + 1/(k−1)) over J fold scores
    (Nadeau & Bengio 2003, the corrected resampled t-test). NaN when the folds do not pair.

    Fold by fold, not pooled: pooling held-out predictions of k different fits also charges a method for
    moving its output scale between fits (stacking, per-class weights), which new audio, scored by one
    fit, never sees (Forman & Scholz 2010, "Apples-to-apples in cross-validation studies")."""
    fa, fb = np.asarray(a.folds, np.float64), np.asarray(b.folds, np.float64)
    if len(fa) != len(fb) or len(fa) == 0:
        return float("nan"), float("nan")
    d = (fa - fb)[np.isfinite(fa - fb)]
    if len(d) < 2:
        return float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) * np.sqrt(1 / len(d) + 1 / max(a.k - 1, 1)))


@dataclass(frozen=True)
class Candidate:
    """A method the recommendation may pick: its name, complexity (lower is simpler) and honest score."""

    name: str
    complexity: int
    honest: HonestScore


def recommend(candidates: list[Candidate], metric: str | Metric, rule: str = DEFAULT_RULE, anchor: str = ANCHOR,
              shared_sources: bool = False) -> str:
    """The candidate to export, by `rule` (ties to the simpler).

    `anchored` (default): the robust default `anchor` (bagged selection) unless another ensemble beats it on
    the same held-out folds by more than the corrected standard error of the per-fold differences
    (`fold_difference`); of several, the largest gain. The best single model does not displace it: under
    shift, valid-based estimates under-rate averaging. With `shared_sources` (the dataset's split draws test
    from valid's sources, `split_mixes_sources`) there is no source shift for the anchor to guard against and
    valid is a fair sample of test: any per-fold gain displaces it (the ensemble with the best per-fold score);
    `one_se`: the simplest candidate within one standard error of the best honest score (Breiman's rule);
    `paired_se`: the simplest within the paired standard error of the difference to the best; `best`: the
    best honest score. benchmarks/ensemble_validity.py compares them on sets with real shift: valid-based
    estimates do not see how much more averaging pays on shifted new audio, so anchoring at the best single
    model (`one_se`) nearly always exports it.

    `one_se`: within the best's standard error (Breiman's one-SE rule); `paired_se`: within the standard
    error of the difference to the best over the same bootstrap resamples; `best`: the best honest score."""
    if rule not in RULES:
        raise ValueError(f"unknown recommendation rule {rule!r}; valid: {', '.join(RULES)}")
    sign = get_metric(metric).sign()
    usable = [c for c in candidates if np.isfinite(c.honest.mean)]
    if not usable:
        raise ValueError("no candidate has a finite honest score")
    best = max(usable, key=lambda c: (sign * c.honest.mean, -c.complexity))
    if rule == "best":
        return best.name
    if rule == "anchored":
        base = next((c for c in usable if c.name == anchor), None)
        if base is not None:  # it gives way only to another ensemble (complexity >= 1) that clearly beats it
            gain = {c.name: fold_difference(c.honest, base.honest) for c in usable
                    if c.complexity >= 1 and c.name != anchor}
            margin = {n: 0.0 if shared_sources else se for n, (_, se) in gain.items()}
            better = [c for c in usable if c.name in gain and sign * gain[c.name][0] > margin[c.name]]
            return max(better, key=lambda c: (sign * gain[c.name][0], -c.complexity)).name if better else base.name
        rule = "one_se"

    def close(c: Candidate) -> bool:
        gap = sign * (best.honest.mean - c.honest.mean)
        if rule == "one_se":
            return gap <= (best.honest.se if np.isfinite(best.honest.se) else 0.0) + 1e-12
        return gap <= _paired_se(best, c) + 1e-12

    return min((c for c in usable if close(c)), key=lambda c: (c.complexity, -sign * c.honest.mean)).name
