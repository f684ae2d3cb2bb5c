"""Cross-validated trials (train.cv_folds): fold split, OOF predictions, cv_selection, fold-averaging bundles."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from harmonia import tracking
from harmonia.config import ConfigError, parse_config
from harmonia.data.datasets import load_dataset
from harmonia.metrics import get_metric, mean_average_precision
from harmonia.trainables.cross_validation import (CrossValidatedTrainer, cv_member_files, fold_assignment,
                                                  load_member_model)
from tests.conftest import tiny_config

PARAMS = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 8, "crnn.gru_size": 16, "batch_size": 16, "lr": 3e-3}


def test_fold_split_covers_every_clip_once_is_stratified_and_deterministic():
    rng = np.random.default_rng(3)
    ids = [f"clip{i:03d}" for i in range(103)]
    y = (rng.random((103, 4)) < 0.3).astype(np.float32)
    fold = fold_assignment(ids, y, 5, seed=7)
    assert fold.shape == (103,) and set(fold.tolist()) == set(range(5))  # each clip in exactly one of 5 folds
    sizes = np.bincount(fold, minlength=5)
    assert sizes.sum() == 103 and sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(fold, fold_assignment(ids, y, 5, seed=7))  # deterministic
    perm = rng.permutation(103)  # the same clips in another order: each clip keeps its fold
    np.testing.assert_array_equal(fold_assignment([ids[i] for i in perm], y[perm], 5, seed=7), fold[perm])
    assert not np.array_equal(fold, fold_assignment(ids, y, 5, seed=8))
    keys = [r.tobytes() for r in y > 0.5]
    for key in set(keys):  # every label set is dealt round-robin: its clips spread evenly over the folds
        counts = np.bincount(fold[[k == key for k in keys]], minlength=5)
        assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="2 <= k <= 3"):
        fold_assignment(ids[:3], y[:3], 4, seed=0)


def test_config_refuses_cv_folds_for_scenes():
    with pytest.raises(ConfigError, match="recording location"):
        parse_config({"task": "scene", "train": {"cv_folds": 3},
                      "search": {"metric": "accuracy"}, "ensemble": {"metric": "accuracy"}})


def test_more_folds_than_clips_is_refused_before_ray_starts(tmp_path):
    import ray

    from harmonia.search.tuner import run_search

    cfg = tiny_config(tmp_path)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"cv_folds": 10_000})})
    was = ray.is_initialized()
    with pytest.raises(ConfigError, match="train.cv_folds=10000"):
        run_search(cfg, progress=False)
    assert ray.is_initialized() == was


def test_config_refuses_snapshots_with_cv_folds():
    with pytest.raises(ConfigError, match="train.cv_folds=3 with train.snapshots=2.*not supported"):
        parse_config({"train": {"cv_folds": 3, "snapshots": 2}})
    assert parse_config({"train": {"cv_folds": 3}}).train.cv_folds == 3
    assert parse_config({"train": {"cv_folds": 1, "snapshots": 2}}).train.snapshots == 2  # 1 fold = off


@pytest.fixture(scope="module")
def cv_base(tmp_path_factory):
    return tmp_path_factory.mktemp("cv")


@pytest.fixture(scope="module")
def features(cv_base):
    from harmonia.featureset import prepare

    return prepare(tiny_config(cv_base, "cv"), progress=False)[1]


@pytest.fixture(scope="module")
def trained(features):
    torch.set_num_threads(1)
    trainer = CrossValidatedTrainer(PARAMS, features, folds=3, max_epochs=2, patience=2, seed=0, split_seed=0)
    results = []
    while not trainer.done:
        results.append(trainer.run_epoch())
    return trainer, results


def test_each_fold_model_trains_without_its_fold_and_predicts_it(features, trained):
    trainer, results = trained
    train, valid = features.splits["train"], features.splits["valid"]
    pool_ids = train.clip_ids + valid.clip_ids
    assert trainer.pool.clip_ids == pool_ids
    seen = []
    for i, t in enumerate(trainer.trainers):
        fold_ids = [pool_ids[r] for r in np.flatnonzero(trainer.fold == i)]
        assert t.data.splits["valid"].clip_ids == fold_ids  # early-stops on its own fold
        assert not set(t.data.splits["train"].clip_ids) & set(fold_ids)  # never trains on it
        assert sorted(t.data.splits["train"].clip_ids + fold_ids) == sorted(pool_ids)
        seen += fold_ids
    assert sorted(seen) == sorted(pool_ids) and len(set(seen)) == len(pool_ids)
    # Every OOF row is the prediction of the fold model that did not see the clip (its best epoch).
    oof, oof_frames = trainer.best_valid
    for i, t in enumerate(trainer.trainers):
        rows = np.flatnonzero(trainer.fold == i)
        clip, frames = t.predict("valid", model=t.best_model())
        np.testing.assert_allclose(oof[rows], clip, atol=1e-6)
        np.testing.assert_allclose(oof_frames[rows], frames, atol=1e-6)
    assert [r.epoch for r in results] == [1, 2] and results[-1].done
    last = results[-1].metrics  # the reported valid_* are OOF scores over every train ∪ valid clip
    assert last["valid_mAP"] == pytest.approx(mean_average_precision(trainer.pool.y, trainer.last_valid[0]))
    assert last["best_valid_score"] == pytest.approx(mean_average_precision(trainer.pool.y, oof))
    assert {f"fold{i}_valid_mAP" for i in range(3)} <= set(results[0].metrics)


def test_checkpoint_round_trip_with_weights_only(features, trained, tmp_path):
    trainer, _ = trained
    torch.save(trainer.state_dict(), tmp_path / "state.pt")
    back = CrossValidatedTrainer(PARAMS, features, folds=3, max_epochs=2, patience=2, seed=0, split_seed=0)
    back.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (back.epoch, back.best_epoch, back.best_score, back.done) == (trainer.epoch, trainer.best_epoch,
                                                                          trainer.best_score, True)
    for k, v in trainer.best_state.items():
        assert torch.equal(back.best_state[k], v)
    np.testing.assert_allclose(back.best_valid[0], trainer.best_valid[0], atol=1e-6)  # recomputed after restore
    other = CrossValidatedTrainer(PARAMS, features, folds=3, max_epochs=2, patience=2, seed=0, split_seed=1)
    with pytest.raises(ValueError, match="fold split differs"):
        other.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))


def test_restore_with_one_fold_stopped_early_goes_on_training_the_others(features, trained, tmp_path):
    trainer, _ = trained
    fresh = CrossValidatedTrainer(PARAMS, features, folds=3, max_epochs=3, patience=2, seed=0, split_seed=0)
    fresh.run_epoch()
    state = fresh.state_dict()
    state["folds"][1]["counters"][2] = 2  # fold 1 ran out of patience: done, the others are not
    torch.save(state, tmp_path / "state.pt")
    back = CrossValidatedTrainer(PARAMS, features, folds=3, max_epochs=3, patience=2, seed=0, split_seed=0)
    back.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert back.trainers[1].done and not back.trainers[0].done
    result = back.run_epoch()  # crashed before: the stopped fold had no valid outputs after a restore
    assert result.epoch == 2 and back.trainers[1].epoch == 1 and back.trainers[0].epoch == 2
    rows = np.flatnonzero(back.fold == 1)  # its OOF rows are still its own (epoch 1) predictions
    np.testing.assert_allclose(back.last_valid[0][rows], back.trainers[1].predict("valid")[0], atol=1e-6)


def test_member_files_hold_the_folds_oof_and_averaged_test(features, trained, tmp_path):
    trainer, _ = trained
    files = cv_member_files(trainer, trainer.best_state, trainer.best_epoch, trainer.best_valid)
    assert {f"model/fold_{i}/model.safetensors" for i in range(3)} | {"model/config.json"} <= set(files)
    for name, content in files.items():  # write them as MLflow would
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content(path) if callable(content) else path.write_bytes(content)
    config = json.loads((tmp_path / "model/config.json").read_text())
    assert config["folds"] == 3 and len(config["fold_best_epochs"]) == 3
    oof = pd.read_parquet(tmp_path / "predictions/oof.parquet")
    assert list(oof["clip_id"]) == trainer.pool.clip_ids
    np.testing.assert_array_equal(oof["fold"].to_numpy(), trainer.fold)
    valid = pd.read_parquet(tmp_path / "predictions/valid.parquet")
    assert list(valid["clip_id"]) == features.splits["valid"].clip_ids
    np.testing.assert_allclose(valid[features.classes].to_numpy(),
                               oof[features.classes].to_numpy()[trainer.n_train:], atol=0)
    test = pd.read_parquet(tmp_path / "predictions/test.parquet")[features.classes].to_numpy()
    fold_tests = [t.predict("test", model=t.best_model())[0] for t in trainer.trainers]
    np.testing.assert_allclose(test, np.mean(fold_tests, axis=0), atol=1e-6)  # mean of the k fold models
    model = load_member_model(tmp_path / "model", config, features.n_features)
    with torch.no_grad():
        clip, _ = model(torch.from_numpy(features.splits["test"].x))
    np.testing.assert_allclose(clip.numpy(), test, atol=1e-5)


def test_valid_clips_in_a_fold_train_set_use_their_original_for_waveform_copies(features):
    from harmonia.trainables.cross_validation import fold_feature_sets

    train = features.splits["train"]
    fake = dataclasses.replace(features, train_copies=[dataclasses.replace(train, x=train.x + 100.0)],
                               copy_names=["fake"])
    trainer = CrossValidatedTrainer(PARAMS, fake, folds=3, max_epochs=1, patience=1)
    for i, fs in enumerate(fold_feature_sets(fake, trainer.fold, trainer.pool)):
        ids, copy = fs.splits["train"].clip_ids, fs.train_copies[0]
        from_train = np.array([c in set(train.clip_ids) for c in ids])
        assert from_train.any() and (~from_train).any()
        np.testing.assert_array_equal(copy.x[from_train], fs.splits["train"].x[from_train] + 100.0)
        np.testing.assert_array_equal(copy.x[~from_train], fs.splits["train"].x[~from_train])
        assert copy.clip_ids == ids and fs.copy_names == ["fake"]


@pytest.mark.parametrize("task, params", [
    ("sed", PARAMS),
    ("sequence", {"arch": "crnn_ctc", "crnn_ctc.blocks": 2, "crnn_ctc.channels": 8, "crnn_ctc.gru_size": 16,
                  "batch_size": 16}),
])
def test_cv_trainer_runs_the_frame_tasks(features, task, params):
    metric = "seq_acc" if task == "sequence" else "mAP"
    trainer = CrossValidatedTrainer(params, features, folds=2, max_epochs=1, patience=1, metric=metric, task=task)
    result = trainer.run_epoch()
    assert result.done and np.isfinite(result.metrics["valid_loss"]) and f"valid_{metric}" in result.metrics
    clip, frames = trainer.best_valid
    assert clip.shape == (len(trainer.pool.clip_ids), len(features.classes)) and frames.shape[0] == len(clip)


@pytest.fixture(scope="module")
def cv_search(ray_local, cv_base, features):
    from harmonia.search.tuner import run_search

    cfg = tiny_config(cv_base, "cv", num_samples=2, max_epochs=2, grace_period=2)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"cv_folds": 3, "patience": 2})})
    return cfg, run_search(cfg, progress=False)


def test_cv_trials_log_oof_valid_test_and_fold_weights(cv_search, tmp_path):
    cfg, result = cv_search
    c = tracking.client(cfg.tracking.uri)
    ds = load_dataset(cfg.data.root)
    pool = list(ds.split("train")["clip_id"]) + list(ds.split("valid")["clip_id"])
    y_pool = np.concatenate([ds.targets("train"), ds.targets("valid")])
    assert len(result.trials) == 2
    for run_id in result.trials["run_id"]:
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED"
        d = tmp_path / run_id
        oof = pd.read_parquet(c.download_artifacts(run_id, "predictions/oof.parquet", str(d)))
        assert sorted(oof["clip_id"]) == sorted(pool) and list(oof.columns) == ["clip_id", *ds.classes, "fold"]
        # the same folds in every trial: train.seed, stratified by label set
        np.testing.assert_array_equal(oof.set_index("clip_id").loc[pool, "fold"].to_numpy(),
                                      fold_assignment(pool, y_pool, 3, cfg.train.seed))
        frames = {split: pd.read_parquet(c.download_artifacts(run_id, f"predictions/{split}.parquet", str(d / split)))
                  for split in ("valid", "test")}
        for split, df in frames.items():
            assert sorted(df["clip_id"]) == sorted(ds.split(split)["clip_id"])
        valid = frames["valid"].set_index("clip_id")
        np.testing.assert_array_equal(valid[ds.classes].to_numpy(),
                                      oof.set_index("clip_id").loc[valid.index, ds.classes].to_numpy())
        files = {a.path for a in c.list_artifacts(run_id, "model")}
        assert files == {"model/config.json", "model/fold_0", "model/fold_1", "model/fold_2"}
        assert {a.path for a in c.list_artifacts(run_id, "model/fold_2")} == {"model/fold_2/model.safetensors"}
        config = json.loads(open(c.download_artifacts(run_id, "model/config.json", str(d))).read())
        assert config["folds"] == 3
        # the score Tune saw is the OOF score of what the run logged
        y = y_pool[[pool.index(i) for i in oof["clip_id"]]]
        assert run.data.metrics["best_valid_score"] == pytest.approx(
            mean_average_precision(y, oof[ds.classes].to_numpy()), abs=1e-5)


@pytest.fixture(scope="module")
def cv_ensemble(cv_search):
    from harmonia.ensembles.library import collect
    from harmonia.ensembles.stage import fit_and_log

    cfg, _ = cv_search
    lib = collect(cfg.tracking.uri, cfg.name, progress=False)
    return cfg, lib, fit_and_log(lib, cfg.tracking.uri, cfg.name, method="cv_selection", size=6, metric="mAP", top_k=2)


def test_cv_selection_is_fitted_on_oof_and_matches_or_beats_the_best_single_model(cv_ensemble):
    from harmonia.ensembles.methods import fit_method

    cfg, lib, report = cv_ensemble
    assert lib.oof is not None and lib.oof.shape[:2] == (2, len(lib.oof_ids))
    assert len(lib.oof_ids) == len(lib.valid_ids) + len(load_dataset(cfg.data.root).split("train"))
    refit = fit_method("cv_selection", lib.oof, lib.y_oof, metric="mAP", size=6)
    np.testing.assert_array_equal(report.fitted.weights, refit.weights)
    table = report.comparison
    m = get_metric("mAP")
    best_single = max(m.fn(lib.y_oof, p) for p in lib.oof)
    assert table.loc["best single", "oof"] == pytest.approx(best_single)
    assert table.loc["ensemble", "oof"] >= best_single - 1e-12
    assert table.loc["ensemble", "oof"] == pytest.approx(m.fn(lib.y_oof, report.fitted.predict(lib.oof)))
    assert np.isfinite(table.loc["ensemble", "test"]) and np.isfinite(table.loc["best single", "test"])
    run = tracking.client(cfg.tracking.uri).get_run(report.run_id)
    assert run.data.metrics["ensemble_insample_oof_mAP"] == pytest.approx(table.loc["ensemble", "oof"])
    assert run.data.metrics["ensemble_honest_valid_mAP"] == pytest.approx(table.loc["ensemble", "honest"])
    assert report.fitted.params["fitted_on"] == "oof"


def test_permuted_test_labels_change_no_cv_selection_weight(cv_ensemble):
    from harmonia.ensembles.stage import fit_and_log

    cfg, lib, report = cv_ensemble
    perm = np.random.default_rng(0).permutation(len(lib.y_test))
    scrambled = dataclasses.replace(lib, y_test=lib.y_test[perm])
    again = fit_and_log(scrambled, cfg.tracking.uri, cfg.name, method="cv_selection", size=6, metric="mAP", top_k=2)
    np.testing.assert_array_equal(report.fitted.weights, again.fitted.weights)
    np.testing.assert_array_equal(report.thresholds, again.thresholds)
    assert report.comparison.loc["ensemble", "oof"] == again.comparison.loc["ensemble", "oof"]


def test_cv_selection_without_oof_says_why(cv_ensemble):
    from harmonia.ensembles.library import LibraryError
    from harmonia.ensembles.stage import fit_and_log

    cfg, lib, _ = cv_ensemble
    plain = dataclasses.replace(lib, oof=None, oof_ids=None, y_oof=None,
                                oof_note="1 of 2 members have no usable out-of-fold predictions, e.g. t1: no oof")
    with pytest.raises(LibraryError, match="out-of-fold predictions.*1 of 2 members.*train.cv_folds >= 2"):
        fit_and_log(plain, cfg.tracking.uri, cfg.name, method="cv_selection", size=6, metric="mAP", top_k=2)


def test_exported_cv_bundle_averages_the_fold_models(cv_ensemble, tmp_path):
    from harmonia.ensembles.bundle import export_bundle, read_bundle
    from harmonia.ensembles.predictor import EnsemblePredictor

    cfg, lib, report = cv_ensemble
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path / "bundle")
    for m in read_bundle(out).members:
        assert set(m.sha256) == {"config.json", *(f"fold_{i}/model.safetensors" for i in range(3))}
    test = load_dataset(cfg.data.root).split("test")
    scores = EnsemblePredictor.load(out).predict_files(list(test["path"]))
    order = [lib.test_ids.index(cid) for cid in test["clip_id"]]
    np.testing.assert_allclose(scores[lib.classes].to_numpy(), report.fitted.predict(lib.test)[order], atol=1e-4)


def test_cli_ensemble_all_includes_cv_selection(cv_search):
    from typer.testing import CliRunner

    from harmonia.cli import app

    cfg, _ = cv_search
    runner = CliRunner()
    res = runner.invoke(app, ["ensemble", "--experiment", cfg.name, "--size", "4", "--method", "cv_selection",
                              "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 0, res.output
    assert "oof" in res.output and "best single" in res.output  # the OOF column of the comparison
    res = runner.invoke(app, ["ensemble", "--experiment", cfg.name, "--size", "4", "--method", "all",
                              "--tracking-uri", cfg.tracking.uri])
    assert res.exit_code == 0, res.output
    assert "cv_selection" in res.output and "stacking" in res.output
