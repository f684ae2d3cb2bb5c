"""Inference cost of ensemble members and ensembles, and greedy selection within a cost budget.

A member's cost is what its trial measured (trainables/costs.py: CPU ms per clip at batch 1, one thread);
an ensemble costs the sum over the members it gives a weight (each is one forward pass per clip; features
shared by members of one kind are computed once and not counted). `fit_within` is greedy selection
(selection.py's `ensemble_selection`) kept within a budget in ms or a number of members: the hardware-aware
post-hoc ensembling of issue 13.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from harmonia import tracking
from harmonia.ensembles.library import Library, LibraryError, member_source
from harmonia.ensembles.registry import FittedEnsemble, member_weights
from harmonia.ensembles.selection import ensemble_selection
from harmonia.metrics import Metric, get_metric
from harmonia.trainables.costs import COST_METRICS, LATENCY_METRIC

COST_SPLITS = (1, 2, 3, 4)
"""`fit_within` also selects among members costing at most budget / k, so k cheap members can share it."""

_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_budget(text: str) -> float:
    """'20ms', '0.5s', '800us' or a bare number (ms) → milliseconds per clip; ValueError says what is expected."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)?\s*", str(text))
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"--budget {text!r}: expected a positive time per clip such as 20ms, 0.5s or 800us")
    return float(m.group(1)) * _UNITS[m.group(2) or "ms"]


def run_costs(uri: str, keys: list[str]) -> dict[str, dict[str, float]]:
    """Each member key's logged `COST_METRICS` (a snapshot `RUN@EPOCH` costs what its run does); {} when none."""
    c = tracking.client(uri)
    runs = sorted({member_source(k)[0] for k in keys})
    with ThreadPoolExecutor(max_workers=8) as pool:
        metrics = dict(zip(runs, pool.map(lambda r: tracking.retry(lambda: c.get_run(r)).data.metrics, runs)))
    return {k: {n: float(metrics[member_source(k)[0]][n]) for n in COST_METRICS if n in metrics[member_source(k)[0]]}
            for k in keys}


def member_costs(uri: str, lib: Library, metric: str = LATENCY_METRIC) -> np.ndarray:
    """Cost per clip [M] of every library member; LibraryError naming the members whose trial logged none."""
    costs = run_costs(uri, lib.run_ids)
    missing = [n for k, n in zip(lib.run_ids, lib.run_names) if metric not in costs[k]]
    if missing:
        raise LibraryError(f"{len(missing)} of {len(lib.run_ids)} members have no {metric} metric (trials logged "
                           f"before costs were measured), e.g. {', '.join(missing[:3])}; rerun the search")
    return np.array([costs[k][metric] for k in lib.run_ids], np.float64)


def ensemble_cost(fitted: FittedEnsemble, costs: np.ndarray) -> float:
    """Sum of the costs of the members the ensemble gives a weight."""
    return float(costs[member_weights(fitted) > 0].sum())


def cost_summary(costs: dict[str, dict[str, float]]) -> dict:
    """The bundle's `costs`: each member's metrics and their sums over the members (the ensemble's total)."""
    names = [n for n in COST_METRICS if costs and all(n in v for v in costs.values())]
    return {"members": costs, "total": {n: float(sum(v[n] for v in costs.values())) for n in names},
            "note": "cost_* per member as its trial measured them (trainables/costs.py); total = sum over members"}


def fit_within(preds: np.ndarray, y: np.ndarray, metric: str | Metric, costs: np.ndarray,
               budget: float = math.inf, max_members: int | None = None, size: int = 20) -> FittedEnsemble:
    """Greedy selection with replacement whose distinct members cost at most `budget` and number at most
    `max_members`: the best in-sample prefix that fits, over selections among members costing at most
    budget / k (k in COST_SPLITS). Fitted on what it is given; the stage scores it honestly."""
    met = get_metric(metric)
    limit = max_members or len(preds)
    best: tuple[float, list[int], float] | None = None
    for cap in dict.fromkeys(budget / k for k in (COST_SPLITS if math.isfinite(budget) else (1,))):
        allowed = np.flatnonzero(costs <= cap * (1 + 1e-9))
        if not len(allowed):
            continue
        sel = ensemble_selection(preds[allowed], y, size=size, metric=met, keep_best_prefix=False)
        n_init = len(sel.picks) - size
        for step in range(size + 1):
            kept = [int(allowed[p]) for p in sel.picks[: n_init + step]]
            distinct = sorted(set(kept))
            if costs[distinct].sum() > budget * (1 + 1e-9) or len(distinct) > limit:
                break  # a longer prefix only adds members
            score = met.sign() * sel.curve[step]
            if best is None or score > best[0] + 1e-12:
                best = (score, kept, cap)
    if best is None:
        raise ValueError(f"no member fits a budget of {budget:.3g} ms per clip (the cheapest costs {costs.min():.3g} ms)")
    _, kept, cap = best
    weights = np.bincount(kept, minlength=len(preds)) / len(kept)
    params = {"combine": "linear", "metric": met.name, "size": size, "budget_ms": budget if math.isfinite(budget) else None,
              "max_members": max_members, "member_cost_cap_ms": cap if math.isfinite(cap) else None, "picks": kept}
    return FittedEnsemble("budget_selection", weights, params)
