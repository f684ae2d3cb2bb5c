"""Issue 13: measured member costs, the honest-score / cost front, and ensembles within an inference budget."""

from __future__ import annotations

import numpy as np
import pytest

from harmonia import tracking
from harmonia.trainables.costs import COST_METRICS, LATENCY_METRIC


def _crnn(channels: int, blocks: int, gru: int):
    from harmonia.trainables.architectures import build_model

    return build_model("crnn", {"crnn.channels": channels, "crnn.blocks": blocks, "crnn.gru_size": gru}, 32, 5)


def test_macs_match_a_hand_count():
    from torch import nn

    from harmonia.trainables.costs import measure_costs

    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))  # [B, T, F] → [B, T, 4]
    got = measure_costs(model, frames=50, n_features=32, hop_seconds=0.02, repeats=1)
    assert got["cost_params"] == 32 * 16 + 16 + 16 * 4 + 4
    assert got["cost_macs_per_second"] == pytest.approx(50 * (32 * 16 + 16 * 4) / (50 * 0.02))


def test_costs_are_positive_and_ordered_as_the_architectures_sizes():
    from harmonia.trainables.costs import measure_costs

    small = measure_costs(_crnn(4, 2, 8), frames=100, n_features=32, hop_seconds=0.02, repeats=3)
    large = measure_costs(_crnn(48, 3, 96), frames=100, n_features=32, hop_seconds=0.02, repeats=3)
    for costs in (small, large):
        assert set(COST_METRICS) <= set(costs) and all(costs[k] > 0 for k in COST_METRICS)
    assert large["cost_params"] > 10 * small["cost_params"]
    assert large["cost_macs_per_second"] > 10 * small["cost_macs_per_second"]
    # about 100x the multiply-accumulates: the measured order cannot flip (no threshold on the times)
    assert large["cost_cpu_ms_per_clip_b32"] > small["cost_cpu_ms_per_clip_b32"]
    assert large["cost_cpu_ms_per_clip_b1"] > small["cost_cpu_ms_per_clip_b1"]


def _library(m: int = 8, n: int = 60, c: int = 4, seed: int = 0):
    """Members of increasing quality (less noise around the labels) and increasing cost."""
    from harmonia.ensembles.library import Library

    rng = np.random.default_rng(seed)
    y = (rng.random((2 * n, c)) < 0.3).astype(np.float32)
    noise = np.linspace(2.0, 0.8, m)
    logits = (2 * y - 1)[None] + noise[:, None, None] * rng.standard_normal((m, 2 * n, c))
    p = (1 / (1 + np.exp(-logits))).astype(np.float32)
    lib = Library(classes=[f"c{i}" for i in range(c)], run_ids=[f"r{i}" for i in range(m)],
                  run_names=[f"m{i}" for i in range(m)], valid_ids=[f"v{i}" for i in range(n)],
                  test_ids=[f"t{i}" for i in range(n)], y_valid=y[:n], y_test=y[n:], valid=p[:, :n], test=p[:, n:],
                  skipped={})
    costs = np.geomspace(1.0, 30.0, m)
    return lib, costs


def test_fit_within_never_exceeds_the_budget_or_the_member_limit():
    from harmonia.ensembles.costs import ensemble_cost, fit_within

    lib, costs = _library()
    for budget in (1.0, 2.5, 7.0, 20.0, 60.0):
        fitted = fit_within(lib.valid, lib.y_valid, "mAP", costs, budget, size=10)
        assert 0 < ensemble_cost(fitted, costs) <= budget
    for n in (1, 2, 3):
        fitted = fit_within(lib.valid, lib.y_valid, "mAP", costs, max_members=n, size=10)
        assert 1 <= (fitted.weights > 0).sum() <= n
    with pytest.raises(ValueError, match="no member fits a budget of 0.5 ms"):
        fit_within(lib.valid, lib.y_valid, "mAP", costs, 0.5)


def test_the_front_is_monotone_and_every_point_fits_its_budget():
    from harmonia.ensembles.budget import budget_grid, budget_point, pareto_front
    from harmonia.ensembles.stage import honest_setup

    lib, costs = _library()
    setup = honest_setup(lib, k=3, repeats=1)
    points = [budget_point(lib, setup, costs, "mAP", 8, b) for b in budget_grid(costs, 6)]
    assert all(p.cost_ms <= p.budget_ms * (1 + 1e-9) for p in points)
    front = pareto_front(points, "mAP")
    assert len(front) >= 2
    assert all(a.cost_ms < b.cost_ms and a.honest.mean < b.honest.mean for a, b in zip(front, front[1:]))
    for p in points:  # nothing off the front is at least as good for at most the cost
        assert any(f.cost_ms <= p.cost_ms and f.honest.mean >= p.honest.mean for f in front)


def test_trials_log_positive_costs(searched):
    cfg, _ = searched
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    runs = c.search_runs([exp.experiment_id],
                         filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial' and attributes.status = 'FINISHED'")
    assert runs
    for run in runs:
        assert all(run.data.metrics.get(k, 0) > 0 for k in COST_METRICS), run.data.metrics


def test_cli_budget_exports_an_ensemble_within_the_budget(searched, tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli import app
    from harmonia.ensembles.bundle import read_bundle

    cfg, _ = searched
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    trials = c.search_runs([exp.experiment_id],
                           filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial' and attributes.status = 'FINISHED'")
    costs = sorted(r.data.metrics[LATENCY_METRIC] for r in trials)
    budget = 1.5 * costs[0]  # room for the cheapest member only when the trials cost about the same
    runner = CliRunner()
    res = runner.invoke(app, ["ensemble", "-e", cfg.name, "--size", "5", "--method", "bagged_selection", "--pareto",
                              "--budget", f"{budget}ms", "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 0, res.output
    assert "front" in res.output and f"within {budget:.3g} ms per clip: recommended" in res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "the best honest score among the ensembles within the budget" in said  # not the rule's reason
    assert "the robust default" not in said
    recommended = c.search_runs([exp.experiment_id], filter_string="tags.`harmonia.recommended` = 'true'",
                                order_by=["attributes.start_time DESC"])[0]
    out = tmp_path / "bundle"
    res = runner.invoke(app, ["export", str(out), "--run", recommended.info.run_id, "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 0, res.output
    bundle = read_bundle(out)
    member_costs = [bundle.costs["members"][m.run_id][LATENCY_METRIC] for m in bundle.members]
    assert bundle.costs["total"][LATENCY_METRIC] == pytest.approx(sum(member_costs))
    assert 0 < bundle.costs["total"][LATENCY_METRIC] <= budget
    pareto = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'pareto'")
    assert {a.path for a in c.list_artifacts(pareto[0].info.run_id)} == {"pareto.csv", "pareto.png"}


def test_a_budget_below_every_member_is_refused(searched):
    from typer.testing import CliRunner

    from harmonia.cli import app

    cfg, _ = searched
    res = CliRunner().invoke(app, ["ensemble", "-e", cfg.name, "--size", "3", "--method", "average", "--budget", "1us",
                                   "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 2 and "no member fits; the cheapest costs" in res.output, res.output
    res = CliRunner().invoke(app, ["ensemble", "-e", cfg.name, "--budget", "fast", "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 2 and "expected a positive time per clip" in res.output, res.output
