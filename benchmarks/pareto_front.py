"""The honest-score / cost front of a tracked search against its full ensemble (issue 13 target).

Target: the front's cheapest point within 0.01 test mAP of the full ensemble (bagged selection, the stage's
default recommendation) at <= 1/3 of its cost. Reads the trials of EXPERIMENT from the MLflow store (they must
have logged their costs: trainables/costs.py); writes nothing to it.

    python benchmarks/pareto_front.py --tracking-uri sqlite:///mlruns.db --experiment quickstart
"""

from __future__ import annotations

import argparse
import time

from harmonia.ensembles.budget import budget_grid, budget_point, pareto_front, points_table
from harmonia.ensembles.costs import ensemble_cost, member_costs
from harmonia.ensembles.library import clip_groups, collect
from harmonia.ensembles.methods import fit_method
from harmonia.ensembles.stage import honest_method, honest_setup
from harmonia.metrics import get_metric
from harmonia.trainables.costs import LATENCY_METRIC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns.db")
    ap.add_argument("--experiment", default="quickstart")
    ap.add_argument("--metric", default="mAP")
    ap.add_argument("--size", type=int, default=20)
    ap.add_argument("--budgets", type=int, default=12)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--cost-metric", default=LATENCY_METRIC,
                    help="the trial metric summed as cost: cost_cpu_ms_per_clip_b1 (default) or cost_macs_per_second "
                         "(deterministic: the times of trials measured under load are noisy)")
    args = ap.parse_args()
    start = time.perf_counter()
    lib = collect(args.tracking_uri, args.experiment, progress=False)
    costs = member_costs(args.tracking_uri, lib, args.cost_metric)
    setup = honest_setup(lib)
    m = get_metric(args.metric)
    full = fit_method("bagged_selection", lib.valid, lib.y_valid, args.metric, groups=clip_groups(lib, lib.valid_ids),
                      size=args.size)
    full_cost, full_test = ensemble_cost(full, costs), float(m.fn(lib.y_test, full.predict(lib.test)))
    full_honest = honest_method(lib, setup, "bagged_selection", args.metric, size=args.size)
    points = [budget_point(lib, setup, costs, args.metric, args.size, b) for b in budget_grid(costs, args.budgets)]
    front = pareto_front(points, args.metric)
    table = points_table(points, front)
    print(f"library: {len(lib.run_ids)} members, {args.cost_metric} {costs.min():.3g}-{costs.max():.3g} "
          f"(sum {costs.sum():.3g}); honest folds {setup.describe()}")
    print(f"full ensemble (bagged_selection): {int((full.weights > 0).sum())} members, {full_cost:.3g} cost, "
          f"honest {full_honest.mean:.3f}±{full_honest.se:.3f}, test {args.metric} {full_test:.3f}")
    print(table.drop(columns=["run_id", "max_members"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    close = [p for p in front if p.test >= full_test - args.tolerance]
    if close:
        p = min(close, key=lambda p: p.cost_ms)
        print(f"cheapest front point within {args.tolerance} test {args.metric} of the full ensemble: {p.members} members, "
              f"cost {p.cost_ms:.3g} = {p.cost_ms / full_cost:.2f}x the full ensemble's cost "
              f"(target <= 0.33), test {p.test:.3f} ({p.test - full_test:+.3f})")
    else:
        print(f"no front point within {args.tolerance} test {args.metric} of the full ensemble "
              f"(best front test {max(p.test for p in front):.3f})")
    cheapest = front[0]
    print(f"cheapest front point: {cheapest.members} members, cost {cheapest.cost_ms:.3g} "
          f"({cheapest.cost_ms / full_cost:.2f}x), test {cheapest.test:.3f} ({cheapest.test - full_test:+.3f})")
    print(f"elapsed {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
