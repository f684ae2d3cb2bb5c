"""Greedy selection by an SED objective on frame outputs: each pick maximizes it; `ensemble --metric event_f1`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner


def test_each_pick_is_the_addition_that_scores_best_and_the_best_prefix_is_kept():
    from harmonia.ensembles.sed_selection import sed_greedy_selection

    rng = np.random.default_rng(0)
    frames = rng.random((4, 6, 10, 2)).astype(np.float32)
    target = rng.random((6, 10, 2))

    def objective(p):  # any score of combined frames: closeness to a target
        return -float(np.mean((p - target) ** 2))

    sel = sed_greedy_selection(frames, objective, size=5)
    total = np.zeros(frames.shape[1:])
    for step, pick in enumerate(sel.picks):
        scores = [objective(((total + frames[i]) / (step + 1)).astype(np.float32)) for i in range(4)]
        assert pick == int(np.argmax(scores)) and sel.curve[step] == pytest.approx(max(scores))
        total += frames[pick]
    assert sel.best_step == int(np.argmax(sel.curve))
    counts = np.bincount(sel.picks[: sel.best_step + 1], minlength=4)
    np.testing.assert_allclose(sel.weights, counts / counts.sum())


@pytest.mark.parametrize("metric", ["mAP", "f1"])
def test_frame_level_selection_scores_every_candidate_at_once_with_the_per_candidate_picks(metric):
    """Frame-level objectives take the vectorized clip-score path; forced through one call per candidate
    (the objective wrapped in a plain function) the picks, curve and weights are the same."""
    from harmonia.ensembles.sed_selection import FrameLevel, sed_greedy_selection
    from harmonia.sed_metrics import EventArrays

    rng = np.random.default_rng(4)
    n, t, c, hop = 30, 40, 3, 0.1
    files, classes = rng.integers(0, n, 45), rng.integers(0, c, 45)
    onsets = rng.uniform(0, 3.0, 45)
    ref = EventArrays(files, classes, onsets, onsets + rng.uniform(0.2, 1.0, 45))
    objective = FrameLevel(metric, ref, hop)
    y = objective.targets(n, t, c)
    skill = rng.uniform(0.5, 2.0, (8, 1, 1, 1))
    frames = (1 / (1 + np.exp(-(skill * (2 * y - 1) + rng.normal(0, 1.5, (8, n, t, c)))))).astype(np.float32)
    fast = sed_greedy_selection(frames, objective, size=6)
    slow = sed_greedy_selection(frames, lambda p: objective(p), size=6)
    assert fast.path in ("bounded", "vectorized") and slow.path == "per-candidate"
    assert fast.picks == slow.picks and fast.best_step == slow.best_step
    np.testing.assert_allclose(fast.curve, slow.curve, atol=1e-6)
    np.testing.assert_allclose(fast.weights, slow.weights)
    assert y.any() and not y.all() and objective(frames[fast.picks[0]]) == pytest.approx(fast.curve[0], abs=1e-6)


@pytest.fixture(scope="module")
def library(searched):
    from harmonia.ensembles.library import collect

    cfg, _ = searched
    return cfg, collect(cfg.tracking.uri, cfg.name, progress=False)


@pytest.mark.parametrize("metric", ["event_f1", "psds1", "frame_mAP"])
def test_selection_on_a_real_sed_library_maximizes_the_objective(library, metric):
    from harmonia.ensembles import sed
    from harmonia.ensembles.sed_selection import objective_of
    from harmonia.ensembles.sed_stage import fit_sed_selection

    _, lib = library
    frames = lib.frames["valid"]
    score = objective_of(metric, sed.reference_arrays(lib.events["valid"], lib.valid_ids, lib.classes),
                         lib.hop_seconds)
    sel, table = fit_sed_selection(lib, metric, size=4, folds=3)
    singles = [score(frames[i]) for i in range(len(frames))]
    assert sel.picks[0] == int(np.argmax(singles)) and sel.curve[0] == pytest.approx(max(singles))
    ensemble = score(sed.combine_frames(frames, sel.weights))
    assert ensemble == pytest.approx(max(sel.curve)) and ensemble >= max(singles) - 1e-12
    assert table.loc["ensemble", "valid_insample"] == pytest.approx(ensemble)
    assert table.loc["best single", "valid_insample"] == pytest.approx(max(singles))
    assert np.isfinite(table["honest"]).all() and np.isfinite(table["test"]).all()
    assert 0.0 <= table.loc["ensemble", "honest"] <= 1.0


def test_ensemble_cli_selects_by_psds1_logs_the_run_and_exports_it(library, tmp_path):
    from harmonia import tracking
    from harmonia.cli import app

    cfg, _ = library
    res = CliRunner().invoke(app, ["ensemble", "--experiment", cfg.name, "--metric", "psds1", "--size", "3",
                                   "--folds", "3", "--tracking-uri", cfg.tracking.uri], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "selection by psds1" in res.output and "best single" in res.output and "event F1" in res.output
    run_id = res.output.split("ensemble run:")[1].split()[0]
    run = tracking.client(cfg.tracking.uri).get_run(run_id)
    assert run.data.params["method"] == "sed_selection" and run.data.params["metric"] == "psds1"
    assert 0.0 <= run.data.metrics["ensemble_honest_psds1"] <= 1.0 and "test_event_f1" in run.data.metrics
    export = CliRunner().invoke(app, ["export", "--run", run_id, str(tmp_path / "bundle"), "--tracking-uri",
                                      cfg.tracking.uri])
    assert export.exit_code == 0, export.output
    wav = sorted(Path(cfg.data.root).rglob("*.wav"))[0]
    events = tmp_path / "events.tsv"
    pred = CliRunner().invoke(app, ["predict", str(tmp_path / "bundle"), str(wav), "-o", str(tmp_path / "t.tsv"),
                                    "--events", str(events)])
    assert pred.exit_code == 0, pred.output
    assert events.read_text().splitlines()[0].split("\t") == ["filename", "onset", "offset", "event_label"]
    bad = CliRunner().invoke(app, ["ensemble", "--experiment", cfg.name, "--metric", "event_f2",
                                   "--tracking-uri", cfg.tracking.uri])
    assert bad.exit_code != 0 and "by frame outputs: event_f1" in bad.output


def test_honest_sed_decisions_are_fitted_without_the_held_out_fold(library):
    from harmonia.ensembles import sed
    from harmonia.ensembles.sed_honest import honest_event_scores
    from harmonia.ensembles.stage import fit_sed
    from harmonia.featureset import frame_targets

    _, lib = library
    w = np.ones(len(lib.run_ids))
    probs = sed.combine_frames(lib.frames["valid"], w)
    ids, classes, hop, events = lib.valid_ids, lib.classes, lib.hop_seconds, lib.events["valid"]
    folds = np.arange(len(ids)) % 3
    targets = frame_targets(events, ids, classes, probs.shape[1], hop)
    estimated = {}
    for f in range(3):  # by hand: decisions from the two other folds decode this one
        rest, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        d = sed.fit_decisions(probs[rest], targets[rest], hop, classes=classes,
                              reference=sed.reference_arrays(events, [ids[i] for i in rest], classes))
        estimated.update(sed.decode(probs[held], [ids[i] for i in held], classes, d))
    want = sed.score(events, estimated, ids, classes)
    got = honest_event_scores(probs, events, ids, classes, hop, folds)
    assert got == pytest.approx(want)
    scores = fit_sed(lib, w, folds)["scores"]
    assert scores["honest_valid"] == pytest.approx(want) and "psds1" not in scores["honest_valid"]
    assert set(scores) == {"valid", "test", "honest_valid"}
    with pytest.raises(ValueError, match="one fold per clip"):
        honest_event_scores(probs, events, ids, classes, hop, folds[:-1])
