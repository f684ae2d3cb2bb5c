"""Epoch snapshots: a trial keeps its k best epochs as extra members; the ensemble stage can pick them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from harmonia import tracking
from harmonia.data.datasets import load_dataset
from harmonia.trainables.snapshots import INDEX_FILE, SnapshotKeeper, snapshot_prefix
from tests.conftest import tiny_config


def _state(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3,), v)}


def test_keeper_keeps_the_k_best_epochs_and_evicts_the_worst():
    keeper = SnapshotKeeper(2, sign=1)
    assert keeper.offer(1, 0.5, _state(1), None)
    assert keeper.offer(2, 0.7, _state(2), None)
    assert not keeper.offer(3, 0.4, _state(3), None)  # worse than both kept
    assert keeper.offer(4, 0.6, _state(4), None)  # evicts epoch 1
    assert keeper.epochs == [2, 4]
    assert float(keeper.kept[1].state["w"][0]) == 4.0
    assert not keeper.offer(5, float("nan"), _state(5), None)


def test_keeper_lower_is_better_and_copies_the_weights():
    keeper = SnapshotKeeper(1, sign=-1)
    live = _state(1)
    keeper.offer(1, 0.9, live, None)
    live["w"].fill_(7)  # training goes on: the snapshot must not change
    assert float(keeper.kept[0].state["w"][0]) == 1.0
    assert keeper.offer(2, 0.3, _state(2), None) and keeper.epochs == [2]
    assert not SnapshotKeeper(0).offer(1, 1.0, _state(1), None)


def test_keeper_round_trips_through_a_weights_only_checkpoint(tmp_path):
    keeper = SnapshotKeeper(2)
    keeper.offer(3, 0.8, _state(3), None)
    keeper.offer(5, 0.9, _state(5), None)
    torch.save(keeper.state_dict(), tmp_path / "s.pt")
    back = SnapshotKeeper(2)
    back.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert back.epochs == [5, 3] and [s.score for s in back.kept] == [0.9, 0.8]
    assert all(not s.logged for s in back.kept)  # logged again after a restore
    assert torch.equal(back.kept[1].state["w"], _state(3)["w"])


@pytest.fixture(scope="module")
def snapshot_search(ray_local, tmp_path_factory):
    from harmonia.search.tuner import run_search

    base = tmp_path_factory.mktemp("snap")
    cfg = tiny_config(base, "snap", num_samples=2, max_epochs=4, grace_period=4)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"snapshots": 2, "patience": 4})})
    return cfg, run_search(cfg, progress=False)


def test_trials_log_their_best_epochs_as_snapshots(snapshot_search):
    from harmonia.ensembles.library import download

    cfg, result = snapshot_search
    c = tracking.client(cfg.tracking.uri)
    for run_id in result.trials["run_id"]:
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED"
        with __import__("tempfile").TemporaryDirectory() as tmp:
            index = json.loads(download(cfg.tracking.uri, run_id, INDEX_FILE, tmp).read_text())
        assert len(index["epochs"]) == 2
        history = {int(m.step): m.value for m in c.get_metric_history(run_id, "valid_mAP")}
        best_two = sorted(history, key=lambda e: -history[e])[:2]
        assert sorted(index["epochs"]) == sorted(best_two)  # the two best valid epochs of the run's history
        assert index["best_epoch"] == best_two[0] == int(run.data.metrics["best_epoch"])
        # the best epoch is the trial's own model: not logged twice
        assert not c.list_artifacts(run_id, snapshot_prefix(index["best_epoch"]).rstrip("/"))
        for e in (e for e in index["epochs"] if e != index["best_epoch"]):
            names = {a.path for a in c.list_artifacts(run_id, snapshot_prefix(e) + "predictions")}
            assert {f"{snapshot_prefix(e)}predictions/{f}" for f in ("valid.parquet", "test.parquet")} <= names
            assert index["scores"][str(e)] == pytest.approx(history[e])


def test_snapshot_members_enter_the_library_and_the_exported_bundle(snapshot_search, tmp_path):
    from harmonia.ensembles.library import collect, member_source
    from harmonia.ensembles.predictor import EnsemblePredictor
    from harmonia.ensembles.bundle import export_bundle
    from harmonia.ensembles.stage import fit_and_log
    from harmonia.metrics import mean_average_precision

    cfg, result = snapshot_search
    plain = collect(cfg.tracking.uri, cfg.name, progress=False, snapshots=False)
    lib = collect(cfg.tracking.uri, cfg.name, progress=False)
    assert len(plain.run_ids) == 2
    snaps = [k for k in lib.run_ids if "@" in k]
    assert len(lib.run_ids) == 4 and len(snaps) == 2  # each trial: its best epoch + one more snapshot
    for k in snaps:  # a snapshot's valid predictions are its own epoch's, scored as logged per epoch
        run_id, prefix = member_source(k)
        epoch = int(k.split("@")[1])
        history = {int(m.step): m.value for m in tracking.client(cfg.tracking.uri).get_metric_history(run_id, "valid_mAP")}
        assert mean_average_precision(lib.y_valid, lib.valid[lib.run_ids.index(k)]) == pytest.approx(history[epoch], abs=1e-3)
    # An ensemble of snapshots only, exported: its members are rebuilt from the snapshots' own weights.
    idx = [lib.run_ids.index(k) for k in snaps]
    only = dataclasses.replace(lib, run_ids=snaps, run_names=[lib.run_names[i] for i in idx], valid=lib.valid[idx],
                               test=lib.test[idx], frames={s: f[idx] for s, f in (lib.frames or {}).items()} or None)
    report = fit_and_log(only, cfg.tracking.uri, cfg.name, method="selection", size=4, metric="mAP", top_k=2)
    assert report.members and all("@" in k for k, _ in report.members)
    lib = only
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path / "bundle")
    test = load_dataset(cfg.data.root).split("test")
    scores = EnsemblePredictor.load(out).predict_files(list(test["path"]))
    order = [lib.test_ids.index(cid) for cid in test["clip_id"]]
    np.testing.assert_allclose(scores[lib.classes].to_numpy(), report.fitted.predict(lib.test)[order], atol=1e-4)


def test_a_best_epoch_overtaken_later_is_logged_as_a_snapshot_then(tmp_path):
    """log_best never writes the current best epoch under snapshots/ (it is the trial's own model) and
    writes it there at the next log point once a better epoch took its place."""
    import copy

    from harmonia.featureset import prepare
    from harmonia.trainables.trial import log_best
    from harmonia.trainables.training import Trainer

    cfg = tiny_config(tmp_path, "snaplog")
    fs = prepare(cfg, progress=False)[1]
    params = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 8, "crnn.gru_size": 16, "batch_size": 16}
    trainer = Trainer(params, fs, max_epochs=3, patience=3)
    keeper = SnapshotKeeper(2)
    uri = cfg.tracking.uri
    c = tracking.client(uri)
    run_id = c.create_run(tracking.ensure_experiment(uri, "snaplog", cfg.tracking.artifacts)).info.run_id
    r = trainer.run_epoch()
    keeper.offer(1, r.metrics["valid_mAP"], trainer.model.state_dict(), trainer.last_valid)
    log_best(c, run_id, trainer, keeper)
    assert not c.list_artifacts(run_id, "snapshots/epoch_001")  # the best: logged as model/ only
    # Epoch 2 scores higher: it becomes the best, and epoch 1 a snapshot besides it.
    trainer.run_epoch()
    trainer.best_epoch, trainer.best_state, trainer.best_valid = 2, copy.deepcopy(trainer.model.state_dict()), trainer.last_valid
    keeper.offer(2, r.metrics["valid_mAP"] + 1.0, trainer.model.state_dict(), trainer.last_valid)
    log_best(c, run_id, trainer, keeper)
    assert {a.path for a in c.list_artifacts(run_id, "snapshots/epoch_001/predictions")} >= {
        "snapshots/epoch_001/predictions/valid.parquet", "snapshots/epoch_001/predictions/test.parquet"}
    assert not c.list_artifacts(run_id, "snapshots/epoch_002")
    assert all(s.logged == (s.epoch == 1) for s in keeper.kept)
