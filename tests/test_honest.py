"""Honest scores: grouped folds, held-out fit/score, the recommendation, duplicates (ensembles/honest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from harmonia.ensembles.honest import Candidate, HonestScore, clip_folds, honest_score, recommend
from harmonia.ensembles.library import collapse_duplicates
from harmonia.ensembles.methods import fit_method
from harmonia.metrics import get_metric, mean_average_precision

mAP = get_metric("mAP")


def _library(seed: int, m: int, n: int, c: int, noise: tuple[float, float] = (1.0, 3.0)):
    """Members are noisy views of y (each its own noise level); y [N, C] multi-hot."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.35).astype(np.float32)
    y[np.arange(c) % n, np.arange(c)] = 1  # every class has a positive
    level = rng.uniform(*noise, (m, 1, 1))
    p = 1 / (1 + np.exp(-((2 * y - 1)[None] + rng.normal(0, 1, (m, n, c)) * level)))
    return p.astype(np.float32), y


def test_grouped_folds_never_split_a_group_and_are_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random((90, 4)) < 0.3).astype(np.float32)
    groups = np.array([f"rec{i // 6}" for i in range(90)])  # 15 recordings of 6 clips
    folds = clip_folds(y, groups, k=5, seed=3)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1, g
    np.testing.assert_array_equal(folds, clip_folds(y, groups, k=5, seed=3))
    assert not np.array_equal(folds, clip_folds(y, groups, k=5, seed=4))  # another seed, another split
    # fewer groups than folds: as many folds as groups
    assert len(np.unique(clip_folds(y[:18], groups[:18], k=5))) == 3


def test_ungrouped_folds_are_stratified_by_label_set():
    y = np.zeros((100, 2), np.float32)
    y[:50, 0] = 1  # half the clips have class 0, none class 1 except 10
    y[90:, 1] = 1
    folds = clip_folds(y, None, k=5, seed=0)
    for f in range(5):
        assert y[folds == f, 0].sum() == 10  # 50 positives spread evenly
        assert y[folds == f, 1].sum() == 2


def test_honest_score_equals_a_hand_computed_grouped_kfold():
    preds, y = _library(1, m=6, n=40, c=3)
    groups = np.array([f"g{i // 4}" for i in range(40)])
    folds = clip_folds(y, groups, k=4, seed=0)

    def fit(rest):
        return fit_method("average", preds[:, rest], y[rest], "mAP", k="auto")

    got = honest_score(fit, preds, y, folds, "mAP", grouped=True, groups=groups)
    pooled = np.zeros(y.shape)
    for f in range(4):
        rest, held = folds != f, folds == f
        singles = [mean_average_precision(y[rest], p[rest]) for p in preds]
        order = np.argsort(-np.asarray(singles), kind="stable")
        prefix = [mean_average_precision(y[rest], preds[order[:k]][:, rest].astype(np.float64).mean(0))
                  for k in range(1, 7)]
        k = int(np.argmax(prefix)) + 1
        pooled[held] = preds[order[:k]][:, held].astype(np.float64).mean(0)
    assert got.mean == pytest.approx(mean_average_precision(y, pooled), rel=1e-12)
    # bootstrap over whole groups: each resample holds groups entirely, so its size is a multiple of 4
    from harmonia.ensembles.honest import bootstrap_indices

    idx = bootstrap_indices(40, groups, b=200, seed=0)
    assert all(len(i) % 4 == 0 and len(i) == 40 for i in idx)
    expected_boot = [mean_average_precision(y[i], pooled[i]) for i in idx]
    np.testing.assert_allclose(got.boot, expected_boot, rtol=1e-12)
    assert got.se == pytest.approx(np.std(expected_boot, ddof=1))


def test_overfitting_stacking_scores_high_in_sample_low_honestly_and_is_not_recommended():
    """Unregularized stacking of 16 members on 30 valid clips: in-sample above the best single model,
    honest below it; the recommendation does not take it."""
    rng = np.random.default_rng(0)
    y = (rng.random((30, 4)) < 0.35).astype(np.float32)
    y[np.arange(4), np.arange(4)] = 1
    shared = (2 * y - 1) + rng.normal(0, 1.5, y.shape)  # near-copies: nothing real to learn from combining them
    preds = (1 / (1 + np.exp(-(shared[None] + rng.normal(0, 0.7, (16, 30, 4)))))).astype(np.float32)
    folds = clip_folds(y, None, k=5, seed=0)
    best_in = max(mAP(y, p) for p in preds)

    def fitter(name, **kw):
        return lambda rest: fit_method(name, preds[:, rest], y[rest], "mAP", **kw)

    raw = fit_method("stacking", preds, y, "mAP", shrinkage=0.0)
    assert mAP(y, raw.predict(preds)) > best_in + 0.05
    scores = {name: honest_score(fitter(name, **kw), preds, y, folds, "mAP")
              for name, kw in (("best_single", {}), ("average", {}), ("stacking", {"shrinkage": 0.0}))}
    assert scores["stacking"].mean < scores["best_single"].mean
    complexity = {"best_single": 0, "average": 1, "stacking": 6}
    chosen = recommend([Candidate(n, complexity[n], s) for n, s in scores.items()], "mAP", rule="one_se")
    assert chosen != "stacking"


def test_recommendation_prefers_the_simplest_within_one_standard_error():
    def hs(score, se):  # bootstrap replicates with that standard deviation
        return HonestScore(score, [score - se, score + se], [], False)

    s = np.sqrt(2) / 2  # replicates score +- se have standard deviation se * sqrt(2): scale them back
    cands = [Candidate("best_single", 0, hs(0.70, 0.01 * s)), Candidate("average", 1, hs(0.74, 0.01 * s)),
             Candidate("stacking", 6, hs(0.75, 0.015 * s))]
    assert recommend(cands, "mAP", rule="one_se") == "average"  # stacking best (0.75), average within its s.e.
    assert recommend(cands, "mAP", rule="best") == "stacking"
    cands[2] = Candidate("stacking", 6, hs(0.80, 0.01 * s))
    assert recommend(cands, "mAP", rule="one_se") == "stacking"  # a clear gain earns the complex method its place
    low = [Candidate("a", 0, hs(0.30, 0.01)), Candidate("b", 3, hs(0.20, 0.01))]
    assert recommend(low, "log_loss", rule="one_se") == "b"  # lower is better


def test_anchored_rule_keeps_bagged_selection_unless_clearly_beaten():
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.05, 15)  # 3 x 5 fold scores, shared fold difficulty: the paired differences count

    def hs(gain, jitter, pooled=0.70):
        return HonestScore(pooled, [pooled], list(base + gain + rng.normal(0, jitter, 15)), False, k=5)

    bagged = Candidate("bagged_selection", 3, hs(0.0, 0.0))
    # 0.02 better fold by fold, corrected s.e. about 0.01 * sqrt(1/15 + 1/4) = 0.0056
    weighted = Candidate("weighted", 4, hs(0.02, 0.01, pooled=0.69))
    assert recommend([weighted, bagged], "mAP") == "weighted"  # even with a lower pooled score
    close = Candidate("weighted", 4, hs(0.003, 0.01, pooled=0.72))  # within the corrected s.e.
    assert recommend([close, bagged], "mAP") == "bagged_selection"
    assert recommend([close, bagged], "mAP", rule="best") == "weighted"
    # a split whose test shares valid's sources: no shift to guard against, any per-fold gain displaces it
    assert recommend([close, bagged], "mAP", shared_sources=True) == "weighted"
    worse = Candidate("weighted", 4, hs(-0.003, 0.01, pooled=0.75))
    assert recommend([worse, bagged], "mAP", shared_sources=True) == "bagged_selection"
    stacking = Candidate("stacking", 6, hs(0.04, 0.01))  # of two that beat it, the larger gain
    assert recommend([weighted, stacking, bagged], "mAP") == "stacking"
    single = Candidate("best_single", 0, hs(0.03, 0.005, pooled=0.75))  # a single model does not displace it
    assert recommend([single, bagged], "mAP") == "bagged_selection"
    assert recommend([single], "mAP") == "best_single"  # no anchor among the candidates: the one_se rule
    unpaired = Candidate("weighted", 4, HonestScore(0.9, [0.9], [0.9] * 10, False))  # other folds: no comparison
    assert recommend([unpaired, bagged], "mAP") == "bagged_selection"


def test_fold_difference_is_the_corrected_resampled_t_statistic():
    from harmonia.ensembles.honest import fold_difference

    a = HonestScore(0.0, [], [0.7, 0.8, 0.6, 0.9, float("nan")], False, k=5)
    b = HonestScore(0.0, [], [0.6, 0.8, 0.5, 0.7, 0.4], False, k=5)
    d = np.array([0.1, 0.0, 0.1, 0.2])  # the NaN fold left out
    mean, se = fold_difference(a, b)
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) * np.sqrt(1 / 4 + 1 / 4))
    assert np.isnan(fold_difference(a, HonestScore(0.0, [], [0.5] * 3, False))[0])


def test_shrunk_stacking_chooses_its_strength_on_inner_folds():
    preds, y = _library(3, m=12, n=40, c=3, noise=(2.0, 3.5))
    f = fit_method("stacking", preds, y, "mAP")
    assert f.params["shrinkage_chosen_by"] == "inner cross-validation"
    assert f.params["shrinkage"] in f.params["lambdas"] and len(f.params["inner_scores"]) == len(f.params["lambdas"])
    strong = fit_method("stacking", preds, y, "mAP", shrinkage=1e6)
    coef = np.asarray(strong.params["coef"])
    np.testing.assert_allclose(coef, 1.0 / len(preds), atol=1e-3)  # the strongest shrinkage is the mean logit


def test_bagged_selection_chooses_its_steps_on_held_out_folds():
    preds, y = _library(4, m=10, n=60, c=3)
    f = fit_method("bagged_selection", preds, y, "mAP", size=8, bags=4)
    assert f.params["steps_chosen_by"] == "inner cross-validation"
    curve = np.asarray(f.curve)
    assert len(curve) == 9 and f.params["steps"] == int(np.flatnonzero(curve >= curve.max() - 1e-12)[0])
    assert np.asarray(f.weights).sum() == pytest.approx(1.0)


def test_duplicate_members_are_collapsed_and_named():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 2)), rng.random((5, 2))
    loaded = [("r1", "t1", a, b), ("r2", "t2", a.copy(), b.copy()), ("r3", "t3", b, a), ("r4", "t4", a.copy(), b.copy())]
    kept, dupes = collapse_duplicates(loaded)
    assert [k for k, *_ in kept] == ["r1", "r3"]
    assert dupes == {"r1": ["t2", "t4"]}


def _tracked_library(tmp_path, members: np.ndarray, test: np.ndarray, yv: np.ndarray, yt: np.ndarray,
                     groups: list[str], test_groups: list[str] | None = None) -> str:
    """A real SQLite MLflow store holding a search run (labels + groups) and one FINISHED trial run per member."""
    import pandas as pd

    from harmonia import tracking

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    exp = tracking.ensure_experiment(uri, "lib", str(tmp_path / "artifacts"))
    c = tracking.client(uri)
    classes = [f"c{i}" for i in range(yv.shape[1])]
    vid, tid = [f"v{i}" for i in range(len(yv))], [f"t{i}" for i in range(len(yt))]

    def parquet(df):
        return lambda p: df.to_parquet(p, index=False)

    search = c.create_run(exp, tags={tracking.KIND_TAG: "search"}).info.run_id
    g = pd.DataFrame({"clip_id": vid + tid, "split": ["valid"] * len(vid) + ["test"] * len(tid),
                      "group": groups + (test_groups or [f"test-{i}" for i in range(len(tid))])})
    tracking.log_files(c, search, {"labels/valid.parquet": parquet(tracking.predictions_frame(vid, yv, classes)),
                                   "labels/test.parquet": parquet(tracking.predictions_frame(tid, yt, classes)),
                                   "labels/groups.parquet": parquet(g)})
    c.set_terminated(search, "FINISHED")
    for i, (pv, pt) in enumerate(zip(members, test)):
        run = c.create_run(exp, run_name=f"trial{i}", tags={tracking.KIND_TAG: "trial"}).info.run_id
        tracking.log_files(c, run, {"predictions/valid.parquet": parquet(tracking.predictions_frame(vid, pv, classes)),
                                    "predictions/test.parquet": parquet(tracking.predictions_frame(tid, pt, classes))})
        c.set_terminated(run, "FINISHED")
    return uri


def test_tracked_library_collapses_duplicates_uses_groups_and_recommends(tmp_path):
    """`harmonia ensemble` on a real MLflow store: a rerun trial (same predictions) is collapsed and named,
    the folds are grouped by the logged sources, one run is tagged recommended, comparison.csv is labelled."""
    import pandas as pd
    from typer.testing import CliRunner

    from harmonia import tracking
    from harmonia.cli import app
    from harmonia.ensembles.library import collect
    from harmonia.ensembles.stage import RECOMMENDED_TAG, honest_setup

    preds, y = _library(5, m=6, n=80, c=3)
    pv, pt, yv, yt = preds[:, :48], preds[:, 48:], y[:48], y[48:]
    pv = np.concatenate([pv, pv[2:3]])  # trial6 is trial2 rerun with the same seed
    pt = np.concatenate([pt, pt[2:3]])
    groups = [f"rec{i // 4}" for i in range(48)]
    uri = _tracked_library(tmp_path, pv, pt, yv, yt, groups)
    lib = collect(uri, "lib", progress=False, sed=False)
    assert lib.n_read == 7 and len(lib.run_ids) == 6
    assert list(lib.duplicates.values()) == [["trial6"]]
    setup = honest_setup(lib)
    assert setup.grouped and "grouped" in setup.describe() and not setup.shared_sources
    assert len(setup.folds) == 3 and not np.array_equal(setup.folds[0], setup.folds[1])  # repeats differ
    for folds in setup.folds:
        for g in set(groups):
            assert len({folds[i] for i, gi in enumerate(groups) if gi == g}) == 1

    res = CliRunner().invoke(app, ["ensemble", "-e", "lib", "--method", "average,stacking", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert "read 7 members, kept 6" in res.output and "trial6" in res.output and "recommended:" in res.output
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name("lib").experiment_id],
                         filter_string=f"tags.`{tracking.KIND_TAG}` = 'ensemble'")
    assert sorted(r.data.tags["harmonia.method"] for r in runs) == ["average", "best_single", "stacking"]
    chosen = [r for r in runs if r.data.tags[RECOMMENDED_TAG] == "true"]
    assert len(chosen) == 1 and chosen[0].info.run_name.endswith("-recommended")
    assert chosen[0].info.run_name.split("-")[1] in res.output.split("recommended:")[1]
    table = pd.read_csv(c.download_artifacts(chosen[0].info.run_id, "comparison.csv", str(tmp_path)))
    assert {"honest_valid", "honest_valid_se", "insample_valid", "test"} <= set(table.columns)
    m = chosen[0].data.metrics
    assert {"honest_valid_mAP", "honest_valid_mAP_se", "insample_valid_mAP", "test_mAP"} <= set(m)


def test_folds_follow_the_split_grouped_unless_test_shares_valid_sources():
    """`auto` holds out whole sources when the split keeps test's sources apart from valid's, stratifies clips
    when most test clips come from valid's sources; `source` and `clip` force either."""
    from harmonia.ensembles.honest import folds_by_source, split_mixes_sources

    gv = np.array([f"rec{i // 4}" for i in range(40)])  # 10 recordings of 4 clips
    apart, shared = np.array([f"new{i}" for i in range(20)]), np.array([f"rec{i % 10}" for i in range(20)])
    few = np.r_[shared[:10], apart[:10]]  # exactly half from valid's recordings: not most
    assert not split_mixes_sources(gv, apart) and split_mixes_sources(gv, shared)
    assert not split_mixes_sources(gv, few) and split_mixes_sources(gv, np.r_[shared[:11], apart[:9]])
    assert not split_mixes_sources(gv, None) and not split_mixes_sources(np.arange(40).astype(str), shared)
    assert folds_by_source(gv, apart) and not folds_by_source(gv, shared)
    assert folds_by_source(gv, shared, "source") and not folds_by_source(gv, apart, "clip")
    assert not folds_by_source(None, apart, "source")  # no groups: nothing to hold out
    with pytest.raises(ValueError, match="grouping: unknown 'recording'; valid: auto, source, clip"):
        folds_by_source(gv, apart, "recording")


def test_split_that_mixes_sources_gets_stratified_folds_end_to_end(tmp_path):
    """A tracked library whose test clips come from valid's recordings: the stage stratifies (and says why),
    `--grouping source` holds out recordings anyway, and the choice is logged with the run."""
    from typer.testing import CliRunner

    from harmonia import tracking
    from harmonia.cli import app
    from harmonia.ensembles.library import collect
    from harmonia.ensembles.stage import honest_setup

    preds, y = _library(6, m=4, n=80, c=3)
    groups = [f"rec{i // 4}" for i in range(48)]
    uri = _tracked_library(tmp_path, preds[:, :48], preds[:, 48:], y[:48], y[48:], groups,
                           test_groups=[f"rec{i % 12}" for i in range(32)])
    lib = collect(uri, "lib", progress=False, sed=False)
    auto, source = honest_setup(lib), honest_setup(lib, grouping="source")
    assert not auto.grouped and auto.groups(lib, lib.valid_ids) is None
    assert auto.shared_sources and source.shared_sources  # a property of the split, whatever the folds
    assert auto.describe() == "5-fold x3 stratified by label set (most test clips share a source with valid clips)"
    assert source.grouped and list(source.groups(lib, lib.valid_ids)) == groups
    assert any(len({f[i] for i, g in enumerate(groups) if g == "rec0"}) > 1 for f in auto.folds)  # rec0 split
    for f in source.folds:
        assert all(len({f[i] for i, g in enumerate(groups) if g == r}) == 1 for r in set(groups))

    runner = CliRunner()
    bad = runner.invoke(app, ["ensemble", "-e", "lib", "--grouping", "take", "--tracking-uri", uri])
    assert bad.exit_code == 2 and "--grouping: unknown 'take'; valid: auto, source, clip" in bad.output
    res = runner.invoke(app, ["ensemble", "-e", "lib", "--method", "bagged_selection", "--grouping", "source",
                              "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert "the split draws test from valid's sources" in " ".join(res.output.split())  # the rule says so
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name("lib").experiment_id],
                         filter_string=f"tags.`{tracking.KIND_TAG}` = 'ensemble'")
    assert {r.data.params["honest_folds"] for r in runs} == {"5-fold x3 grouped by source"}


def test_methods_table_carries_the_per_fold_gains_the_anchored_rule_read(tmp_path):
    """build_ensembles' table holds each method's per-fold gain over bagged selection (0 for itself), the
    recommendation is the largest gain beyond its corrected s.e. (else bagged selection), and the CLI prints it."""
    from typer.testing import CliRunner

    from harmonia.cli import app
    from harmonia.ensembles.honest import fold_difference
    from harmonia.ensembles.stage import build_ensembles

    preds, y = _library(7, m=6, n=100, c=3)
    uri = _tracked_library(tmp_path, preds[:, :60], preds[:, 60:], y[:60], y[60:], [f"rec{i // 3}" for i in range(60)])
    reports, table = build_ensembles(uri, "lib", methods=["bagged_selection", "stacking"], progress=False)
    by = table.set_index("method")
    honest = {r.method: r.honest for r in reports}
    assert by.loc["bagged_selection", "fold_gain"] == 0.0
    for name in ("best_single", "average", "stacking"):
        mean, se = fold_difference(honest[name], honest["bagged_selection"])
        assert by.loc[name, "fold_gain"] == pytest.approx(mean) and by.loc[name, "fold_gain_se"] == pytest.approx(se)
    clear = by[(by.index != "best_single") & (by["fold_gain"] > by["fold_gain_se"])]
    expected = clear["fold_gain"].idxmax() if len(clear) else "bagged_selection"
    assert by.index[by["recommended"]].tolist() == [expected]
    res = CliRunner().invoke(app, ["ensemble", "-e", "lib", "--method", "bagged_selection,stacking", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    line = " ".join(res.output.split("per-fold gain over bagged_selection")[1].split())
    assert f"stacking {by.loc['stacking', 'fold_gain']:+.3f}±{by.loc['stacking', 'fold_gain_se']:.3f}" in line


@pytest.mark.slow  # about a minute: every selection of the honest folds starts its two Ray actors
def test_ensemble_shards_a_library_too_large_for_the_process(tmp_path, ray_local, monkeypatch):
    """`harmonia ensemble` refuses a library over the in-process memory limit with a line naming --shards;
    with --shards 2 its selections run on two Ray workers (class blocks) and log what in-process ones do."""
    from typer.testing import CliRunner

    from harmonia import tracking
    from harmonia.cli import app
    from harmonia.ensembles.selection import MEMORY_ENV, ensemble_selection, sharding

    preds, y = _library(7, m=5, n=60, c=3)
    uri = _tracked_library(tmp_path, preds[:, :40], preds[:, 40:], y[:40], y[40:], [f"rec{i // 4}" for i in range(40)])
    args = ["ensemble", "-e", "lib", "--method", "selection", "--size", "4", "--folds", "2", "--tracking-uri", uri]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--address", "auto"])
    assert res.exit_code != 0 and "needs --shards" in res.output
    res = runner.invoke(app, args)  # in-process first (the memory limit is half the RAM)
    assert res.exit_code == 0, res.output

    monkeypatch.setenv(MEMORY_ENV, "0.0001")  # about 100 bytes: every selection library is too large here
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and "--shards W" in res.output and "Traceback" not in res.output
    with sharding(2):  # the switch itself: too large here, so sharded, with the in-process picks
        sharded = ensemble_selection(preds, y, size=4, metric="mAP")
    monkeypatch.delenv(MEMORY_ENV)
    assert sharded.path == "sharded-bounded"
    assert sharded.picks == ensemble_selection(preds, y, size=4, metric="mAP").picks
    monkeypatch.setenv(MEMORY_ENV, "0.0001")
    res = runner.invoke(app, [*args, "--shards", "2"])
    assert res.exit_code == 0, res.output

    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name("lib").experiment_id],
                         filter_string=f"tags.`{tracking.KIND_TAG}` = 'ensemble' and tags.`harmonia.method` = 'selection'")
    assert len(runs) == 2
    first, second = (r.data for r in runs)
    assert first.metrics.keys() == second.metrics.keys() and first.metrics
    for key, value in first.metrics.items():
        assert second.metrics[key] == pytest.approx(value, abs=1e-12), key
