"""Ensembles that fit an inference budget: the honest-score / cost Pareto front and the budgeted recommendation.

`harmonia ensemble --pareto` fits `fit_within` (ensembles/costs.py) at budgets of increasing cost, scores each
fit honestly on the stage's held-out folds and, with the stage's own methods as points too, keeps the points
whose honest score beats every cheaper one (the front); `--budget 20ms` / `--max-members N` adds the fit within that budget and recommends the best
honest-scoring candidate (a method of the stage or the budgeted fit) whose cost fits, so that is what
`harmonia export` writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harmonia import tracking
from harmonia.ensembles.costs import cost_summary, ensemble_cost, fit_within, member_costs, run_costs
from harmonia.ensembles.honest import HonestScore, honest_score
from harmonia.ensembles.library import Library, LibraryError
from harmonia.ensembles.registry import FittedEnsemble, member_weights
from harmonia.ensembles.stage import (HONEST_NOTE, RECOMMENDED_TAG, EnsembleReport, HonestSetup, compare, fit_sed,
                                      honest_method, labelled)
from harmonia.metrics import fit_thresholds, get_metric

PARETO_BUDGETS = 12
"""Budgets on the front's grid: geometric from the cheapest member to the whole library's cost."""


@dataclass
class BudgetPoint:
    """One budgeted fit: its constraint, the ensemble refitted on all of valid, its cost and scores."""

    budget_ms: float
    max_members: int | None
    fitted: FittedEnsemble
    cost_ms: float
    honest: HonestScore
    insample: float
    test: float
    run_id: str = ""
    method: str = "budget_selection"  # or a method of the stage, as a point of the front

    @property
    def members(self) -> int:
        return int((member_weights(self.fitted) > 0).sum())


def budget_point(lib: Library, setup: HonestSetup, costs: np.ndarray, metric: str, size: int,
                 budget_ms: float = math.inf, max_members: int | None = None) -> BudgetPoint:
    """`fit_within` on all of valid, scored honestly (refitted on K-1 folds, scored on the held-out one)."""
    groups = setup.groups(lib, lib.valid_ids)

    def fit(rows: np.ndarray) -> FittedEnsemble:
        return fit_within(lib.valid[:, rows], lib.y_valid[rows], metric, costs, budget_ms, max_members, size)

    fitted = fit(np.arange(len(lib.valid_ids)))
    honest = honest_score(fit, lib.valid, lib.y_valid, setup.folds, metric, setup.grouped, groups, setup.seed)
    m = get_metric(metric)
    test = float("nan") if lib.test is None else float(m.fn(lib.y_test, fitted.predict(lib.test)))
    return BudgetPoint(budget_ms, max_members, fitted, ensemble_cost(fitted, costs), honest,
                       float(m.fn(lib.y_valid, fitted.predict(lib.valid))), test)


def report_point(report: EnsembleReport, costs: np.ndarray) -> BudgetPoint:
    """A method the stage fitted (bagged selection, the average, ...) as a point beside the budgeted fits."""
    row = report.comparison.loc["ensemble"]
    return BudgetPoint(float("nan"), None, report.fitted, ensemble_cost(report.fitted, costs), report.honest,
                       float(row["valid"]), float(row["test"]), report.run_id, report.method)


def budget_grid(costs: np.ndarray, n: int = PARETO_BUDGETS) -> list[float]:
    """Budgets from the cheapest member's cost to the sum of all members' costs, geometrically spaced."""
    lo, hi = float(costs.min()), float(costs.sum())
    return sorted(set(np.geomspace(lo, hi, n).tolist())) if hi > lo else [lo]


def pareto_front(points: list[BudgetPoint], metric: str) -> list[BudgetPoint]:
    """The points no cheaper (or equally cheap) point matches in honest score, cheapest first: along the
    front cost goes up and the honest score strictly up."""
    sign = get_metric(metric).sign()
    front: list[BudgetPoint] = []
    for p in sorted(points, key=lambda p: (p.cost_ms, -sign * p.honest.mean)):
        if np.isfinite(p.honest.mean) and (not front or sign * (p.honest.mean - front[-1].honest.mean) > 1e-12):
            front.append(p)
    return front


def points_table(points: list[BudgetPoint], front: list[BudgetPoint]) -> pd.DataFrame:
    on_front = {id(p) for p in front}
    return pd.DataFrame([{"method": p.method, "budget_ms": p.budget_ms, "max_members": p.max_members, "cost_ms": p.cost_ms,
                          "members": p.members, "honest_valid": p.honest.mean, "honest_valid_se": p.honest.se,
                          "insample_valid": p.insample, "test": p.test, "on_front": id(p) in on_front,
                          "run_id": p.run_id} for p in sorted(points, key=lambda p: p.cost_ms)])


def front_png(table: pd.DataFrame, metric: str, reference: tuple[float, float] | None):
    """Honest score vs cost per clip: every budgeted fit, the front as a step line, the recommended ensemble."""
    def write(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(table["cost_ms"], table["honest_valid"], color="0.6", label="budgeted fits and methods")
        front = table[table["on_front"]]
        ax.step(front["cost_ms"], front["honest_valid"], where="post", marker="o", label="front")
        if reference is not None:
            ax.scatter([reference[0]], [reference[1]], marker="*", s=150, color="C3", label="recommended (no budget)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("CPU ms per clip (batch 1, one thread; sum over members)")
        ax.set_ylabel(f"honest valid {metric}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return write


def log_point(lib: Library, uri: str, experiment: str, point: BudgetPoint, setup: HonestSetup, metric: str,
              size: int, top_k: int) -> str:
    """One budgeted fit as an ensemble run (`harmonia.kind=ensemble`, method budget_selection) that export reads."""
    fitted = point.fitted
    table = compare(lib, fitted, metric, top_k)
    scores = [point.honest, honest_method(lib, setup, "best_single", metric),  # cached by the stage's own fits
              honest_method(lib, setup, "average", metric, k=top_k)]
    table.insert(0, "honest_se", [s.se for s in scores])
    table.insert(0, "honest", [s.mean for s in scores])
    weights = member_weights(fitted)
    members = [{"run_id": lib.run_ids[i], "run_name": lib.run_names[i], "weight": float(weights[i])}
               for i in np.flatnonzero(weights > 0)]
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, experiment)
    run = tracking.retry(lambda: c.create_run(exp_id, run_name=f"{experiment}-budget-{point.cost_ms:.3g}ms",
                                              tags={tracking.KIND_TAG: "ensemble", "harmonia.method": fitted.method}))
    rid = run.info.run_id
    tracking.log_params(c, rid, {"method": fitted.method, "size": size, "metric": metric, "library_size": len(lib.run_ids),
                                 "budget_ms": point.budget_ms, "max_members": point.max_members,
                                 "honest_folds": setup.describe(), "members": ",".join(m["run_id"] for m in members)})
    metrics = {f"honest_valid_{metric}": point.honest.mean, f"honest_valid_{metric}_se": point.honest.se,
               f"insample_valid_{metric}": point.insample, f"test_{metric}": point.test,
               "members": float(len(members)), "cost_cpu_ms_per_clip": point.cost_ms}
    tracking.log_metrics(c, rid, {k: float(v) for k, v in metrics.items() if np.isfinite(v)}, step=0)
    sed = fit_sed(lib, weights) if lib.frames else None
    spec = {"format": "harmonia.ensemble/1", "method": fitted.method, "metric": metric, "classes": lib.classes,
            "library": lib.run_ids, "members": members, "fitted": fitted.to_dict(),
            "thresholds": fit_thresholds(lib.y_valid, fitted.predict(lib.valid)).tolist(),
            "scores": {m: {k: float(r[k]) for k in r.index if k != "members"} for m, r in labelled(table).iterrows()},
            "honest": {"folds": setup.describe(), "note": HONEST_NOTE, **point.honest.to_dict()},
            "sed": None if sed is None else sed["decisions"],
            "costs": cost_summary(run_costs(uri, [m["run_id"] for m in members]))}
    tracking.log_files(c, rid, {"ensemble.json": tracking.json_bytes(spec),
                                "comparison.csv": labelled(table).to_csv().encode()})
    tracking.retry(lambda: c.set_terminated(rid, "FINISHED"))
    point.run_id = rid
    return rid


def log_front(uri: str, experiment: str, table: pd.DataFrame, metric: str, reference: tuple[float, float] | None) -> str:
    """The front as a run of its own (`harmonia.kind=pareto`): pareto.csv and pareto.png."""
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, experiment)
    run = tracking.retry(lambda: c.create_run(exp_id, run_name=f"{experiment}-pareto", tags={tracking.KIND_TAG: "pareto"}))
    rid = run.info.run_id
    tracking.log_files(c, rid, {"pareto.csv": table.to_csv(index=False).encode(),
                                "pareto.png": front_png(table, metric, reference)})
    tracking.retry(lambda: c.set_terminated(rid, "FINISHED"))
    return rid


@dataclass
class BudgetOutcome:
    """What `apply_budget` adds to the stage's output: the methods table with costs, the front, the choice."""

    table: pd.DataFrame
    points: pd.DataFrame | None = None
    pareto_run_id: str = ""
    budgeted: BudgetPoint | None = None


def fits(cost_ms: float, members: int, budget_ms: float, max_members: int | None) -> bool:
    return cost_ms <= budget_ms * (1 + 1e-9) and (max_members is None or members <= max_members)


def apply_budget(uri: str, experiment: str, reports: list[EnsembleReport], table: pd.DataFrame, *, metric: str,
                 size: int, top_k: int, pareto: bool = False, budget_ms: float = math.inf,
                 max_members: int | None = None) -> BudgetOutcome:
    """Costs of the stage's candidates; with `pareto` the front (each point an exportable ensemble run);
    with a budget or a member limit the budgeted fit, and the recommendation moved to the best honest
    score among the candidates that fit (LibraryError when members have no logged costs)."""
    lib, setup = reports[0].library, reports[0].setup
    costs = member_costs(uri, lib)
    table = table.copy()
    table["cost_ms"] = [ensemble_cost(r.fitted, costs) for r in reports]
    out = BudgetOutcome(table)
    if pareto:
        points = [budget_point(lib, setup, costs, metric, size, b) for b in budget_grid(costs)]
        points += [report_point(r, costs) for r in reports if r.honest is not None]
        front = pareto_front(points, metric)
        for p in front:
            if not p.run_id:  # the stage's methods are ensemble runs already
                log_point(lib, uri, experiment, p, setup, metric, size, top_k)
        rec = table.loc[table["recommended"]].iloc[0]
        out.points = points_table(points, front)
        out.pareto_run_id = log_front(uri, experiment, out.points, metric, (float(rec["cost_ms"]), float(rec["honest"])))
    if math.isfinite(budget_ms) or max_members is not None:
        if costs.min() > budget_ms:
            raise LibraryError(f"--budget {budget_ms:.3g} ms per clip: no member fits; the cheapest costs "
                               f"{costs.min():.3g} ms ({lib.run_names[int(np.argmin(costs))]})")
        p = budget_point(lib, setup, costs, metric, size, budget_ms, max_members)
        log_point(lib, uri, experiment, p, setup, metric, size, top_k)
        out.budgeted = p
        row = {"method": p.fitted.method, "honest": p.honest.mean, "honest_se": p.honest.se, "valid_insample": p.insample,
               "test": p.test, "members": p.members, "recommended": False, "run_id": p.run_id, "cost_ms": p.cost_ms}
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        sign = get_metric(metric).sign()
        ok = table[[fits(r.cost_ms, r.members, budget_ms, max_members) for r in table.itertuples()]]
        chosen = ok.index[int(np.argmax(sign * ok["honest"].to_numpy()))]
        table["recommended"] = table.index == chosen
        c = tracking.client(uri)
        for r in table.itertuples():
            tracking.retry(lambda r=r: c.set_tag(r.run_id, RECOMMENDED_TAG, str(bool(r.recommended)).lower()))
        for r in table.itertuples():  # the stage named its own recommendation <experiment>-<method>-recommended
            name = f"{experiment}-{r.method}-recommended" if r.recommended else (
                f"{experiment}-budget-{r.cost_ms:.3g}ms" if r.method == p.fitted.method else f"{experiment}-{r.method}")
            tracking.retry(lambda r=r, name=name: c.update_run(r.run_id, name=name))
        out.table = table
    return out


def print_budget(experiment: str, metric: str, out: BudgetOutcome, budget_ms: float, max_members: int | None) -> None:
    """The front (when fitted) and, under a budget, what is recommended within it and how to export it."""
    from rich.table import Table

    from harmonia.progress import console

    if out.points is not None:
        t = Table(title=f"honest {metric} / cost front on {experiment}",
                  caption="budgeted greedy selection at each budget, and the stage's methods; cost = CPU ms per clip summed over members (batch 1, one thread); "
                          "* = on the front (each an ensemble run that export reads)")
        for col in ("method", "budget ms", "cost ms", "members", "honest", "in-sample", "test", "run"):
            t.add_column(col)
        for _, r in out.points.iterrows():
            t.add_row(r["method"], "—" if np.isnan(r["budget_ms"]) else f"{r['budget_ms']:.3g}", f"{r['cost_ms']:.3g}" + (" *" if r["on_front"] else ""), str(r["members"]),
                      f"{r['honest_valid']:.3f}±{r['honest_valid_se']:.3f}", f"{r['insample_valid']:.3f}",
                      f"{r['test']:.3f}", r["run_id"][:8], style="bold" if r["on_front"] else None)
        console.print(t)
        console.print(f"front logged in run {out.pareto_run_id} (pareto.csv, pareto.png)")
    if out.budgeted is not None:
        rec = out.table.loc[out.table["recommended"]].iloc[0]
        limit = " and ".join(x for x in (f"{budget_ms:.3g} ms per clip" if math.isfinite(budget_ms) else "",
                                         f"{max_members} members" if max_members else "") if x)
        console.print(f"within {limit}: recommended [bold]{rec['method']}[/] ({rec['members']} members, "
                      f"{rec['cost_ms']:.3g} ms per clip, honest {rec['honest']:.3f}, test {rec['test']:.3f}); export it with:")
        console.print(f"harmonia export out/{experiment} --run {rec['run_id']}", soft_wrap=True)
