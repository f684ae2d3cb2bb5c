"""The main path on real parts: synth → Ray Tune + Optuna → MLflow → ensemble → export → predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonia import tracking
from harmonia.data.datasets import load_dataset


def _trial_runs(cfg):
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    return c, c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")


def test_search_logs_four_finished_trials_with_predictions(searched, tmp_path):
    cfg, result = searched
    c, runs = _trial_runs(cfg)
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(result.trials) == 4 and (result.trials["status"] == "TERMINATED").all()
    ds = load_dataset(cfg.data.root)
    for run in runs:
        assert run.data.tags[tracking.TRIAL_ID_TAG]
        assert run.data.params["arch"] == "crnn" and "lr" in run.data.params
        assert run.data.tags["mlflow.parentRunId"] == result.search_run_id
        history = c.get_metric_history(run.info.run_id, "valid_mAP")
        assert 1 <= len(history) <= cfg.search.max_epochs
        for split in ("valid", "test"):
            path = c.download_artifacts(run.info.run_id, f"predictions/{split}.parquet", str(tmp_path))
            df = pd.read_parquet(path)
            assert list(df.columns) == ["clip_id", *ds.classes]
            assert df["clip_id"].dtype == "string" or df["clip_id"].dtype == object
            assert sorted(df["clip_id"]) == sorted(ds.split(split)["clip_id"])
            values = df[ds.classes].to_numpy()
            assert values.dtype == np.float32 and np.all((values >= 0) & (values <= 1))
        files = {a.path for a in c.list_artifacts(run.info.run_id, "model")}
        assert files == {"model/model.safetensors", "model/config.json"}


def test_asha_stopped_trials_are_not_left_running(searched):
    cfg, _ = searched
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    assert not c.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")


@pytest.fixture(scope="module")
def ensembled(searched):
    from harmonia.ensembles.stage import build_ensemble

    cfg, _ = searched
    return cfg, build_ensemble(cfg.tracking.uri, cfg.name, method="selection", size=10, metric="mAP", top_k=3,
                               progress=False)


def test_ensemble_is_at_least_as_good_as_its_best_member_on_valid(ensembled):
    cfg, report = ensembled
    table = report.comparison
    assert table.loc["ensemble", "valid"] >= table.loc["best single", "valid"] - 1e-12
    assert np.isfinite(table.loc["ensemble", "test"])
    assert abs(sum(w for _, w in report.members) - 1.0) < 1e-6
    c = tracking.client(cfg.tracking.uri)
    run = c.get_run(report.run_id)
    assert run.data.tags[tracking.KIND_TAG] == "ensemble" and run.info.status == "FINISHED"
    assert run.data.metrics["insample_valid_mAP"] == pytest.approx(table.loc["ensemble", "valid"])
    assert run.data.metrics["honest_valid_mAP"] == pytest.approx(table.loc["ensemble", "honest"])
    assert "valid_mAP" not in run.data.metrics  # no unlabelled valid score on an ensemble run
    names = {a.path for a in c.list_artifacts(report.run_id)}
    assert {"ensemble.json", "weights.png", "comparison.csv", "per_class.csv", "curve.png", "curve.csv"} <= names


def test_export_predict_matches_registry_pyfunc_and_trial_predictions(ensembled, tmp_path):
    import mlflow

    from harmonia.ensembles.bundle import export_bundle, register_model
    from harmonia.ensembles.predictor import EnsemblePredictor

    cfg, report = ensembled
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path / "bundle")
    ref = register_model(cfg.tracking.uri, out, report.run_id, "harmonia-tiny")
    test = load_dataset(cfg.data.root).split("test")
    paths = list(test["path"])
    bundle_scores = EnsemblePredictor.load(out).predict_files(paths)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    pyfunc = mlflow.pyfunc.load_model(ref)
    registry_scores = pyfunc.predict(pd.DataFrame({"path": paths}))
    classes = report.library.classes
    np.testing.assert_allclose(bundle_scores[classes].to_numpy(), registry_scores[classes].to_numpy(), atol=1e-6)
    # The exported model reproduces what the ensemble scored on test from the trials' own predictions.
    lib = report.library
    expected = report.fitted.predict(lib.test)
    order = [lib.test_ids.index(cid) for cid in test["clip_id"]]
    np.testing.assert_allclose(bundle_scores[classes].to_numpy(), expected[order], atol=1e-4)
    tags = bundle_scores["event_labels"].str.split(",")
    assert all(set(t) - {""} <= set(classes) for t in tags)


def test_cli_ensemble_export_predict(searched, tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli import app

    cfg, _ = searched
    runner = CliRunner()
    res = runner.invoke(app, ["ensemble", "--experiment", cfg.name, "--size", "5", "--method", "all",
                                 "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 0, res.output
    assert "stacking" in res.output and "best_single" in res.output and "recommended:" in res.output
    assert "honest" in res.output and "in-sample" in res.output
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    run_id = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'ensemble'",
                           order_by=["attributes.start_time DESC"])[0].info.run_id
    out = tmp_path / "b"
    res = runner.invoke(app, ["export", str(out), "--run", run_id, "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 0, res.output
    wavs = list(load_dataset(cfg.data.root).split("test")["path"][:3])
    res = runner.invoke(app, ["predict", str(out), *wavs, "-o", str(tmp_path / "tags.tsv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "tags.tsv", sep="\t", keep_default_na=False)
    assert list(df["filename"]) == wavs
    assert df.columns[-1] == "event_labels" and len(df.columns) == 2 + len(load_dataset(cfg.data.root).classes)


def test_bundle_refuses_tampered_files_and_older_formats(ensembled, tmp_path):
    import json
    import shutil

    from harmonia.ensembles.bundle import BundleError, export_bundle, read_bundle
    from harmonia.ensembles.predictor import EnsemblePredictor

    cfg, report = ensembled
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path / "bundle")
    assert read_bundle(out).members
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    weights = next(tampered.glob("members/*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="hash mismatch"):
        EnsemblePredictor.load(tampered)
    old = tmp_path / "old"
    shutil.copytree(out, old)
    spec = json.loads((old / "ensemble.json").read_text())
    spec["format"] = "harmonia.bundle/0"
    (old / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="format 'harmonia.bundle/0' is not supported"):
        read_bundle(old)
    spec["format"] = "harmonia.bundle/1"
    spec["members"][0]["path"] = "../../etc"
    (old / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="escapes the bundle"):
        read_bundle(old)
    del spec["classes"]
    (old / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="classes"):
        read_bundle(old)


def test_permuted_test_labels_change_no_fitted_choice(ensembled):
    """Weights, thresholds and SED filters come from valid only: scrambled test labels change no choice."""
    import dataclasses

    from harmonia.ensembles.honest import RULES, Candidate, recommend
    from harmonia.ensembles.methods import METHOD_INFO, METHODS, uses_oof
    from harmonia.ensembles.stage import fit_and_log

    cfg, report = ensembled
    lib = report.library
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lib.y_test))
    events = dict(lib.events)
    ids = np.array(lib.test_ids)
    events["test"] = events["test"].assign(clip_id=events["test"]["clip_id"].map(dict(zip(ids, ids[perm]))))
    scrambled = dataclasses.replace(lib, y_test=lib.y_test[perm], events=events)
    picks = {"lib": [], "scrambled": []}
    for method in sorted(m for m in METHODS if not uses_oof(m)):  # these trials have no OOF predictions: test_cross_validation
        a = fit_and_log(lib, cfg.tracking.uri, cfg.name, method=method, size=5, metric="mAP", top_k=3)
        b = fit_and_log(scrambled, cfg.tracking.uri, cfg.name, method=method, size=5, metric="mAP", top_k=3)
        np.testing.assert_array_equal(a.fitted.weights, b.fitted.weights, err_msg=method)
        np.testing.assert_array_equal(a.thresholds, b.thresholds, err_msg=method)
        assert a.comparison.loc["ensemble", "valid"] == b.comparison.loc["ensemble", "valid"]
        assert (a.honest.score, a.honest.boot, a.honest.f1) == (b.honest.score, b.honest.boot, b.honest.f1), method
        assert a.extra["sed"]["decisions"] == b.extra["sed"]["decisions"], method  # thresholds + median filters
        picks["lib"].append(Candidate(method, METHOD_INFO[method].complexity, a.honest))
        picks["scrambled"].append(Candidate(method, METHOD_INFO[method].complexity, b.honest))
    for rule in RULES:
        assert recommend(picks["lib"], "mAP", rule) == recommend(picks["scrambled"], "mAP", rule), rule


def test_trials_table_shows_used_augmentations_and_only_params_that_differ():
    from harmonia.progress import console
    from harmonia.search.tuner import print_trials

    table = pd.DataFrame([
        {"trial_id": "a1", "status": "TERMINATED", "score": 0.71, "epochs": 12, "run_id": "r" * 32, "arch": "crnn",
         "params": {"arch": "crnn", "lr": 0.003, "batch_size": 32, "aug.mixup": True, "mixup.alpha": 0.2,
                    "aug.tid": False}},
        {"trial_id": "b2", "status": "TERMINATED", "score": 0.64, "epochs": 3, "run_id": "s" * 32, "arch": "crnn",
         "params": {"arch": "crnn", "lr": 0.001, "batch_size": 32, "aug.mixup": False, "aug.tid": True}},
    ])
    with console.capture() as cap:
        print_trials(table, "mAP")
    out = cap.get()
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3 and ("a1" in line or "b2" in line)}
    assert "lr=0.003" in lines["a1"] and "mixup" in lines["a1"] and "tid" not in lines["a1"]
    assert "lr=0.001" in lines["b2"] and "tid" in lines["b2"]
    assert "batch_size" not in out  # the same in every shown trial
