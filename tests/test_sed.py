"""SED on the synthetic strong labels: frame loss, frame ensembles, decisions fitted on valid, events out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from harmonia.data.datasets import load_dataset


def test_pool_frame_targets_takes_the_max_over_each_window():
    from harmonia.trainables.training import pool_frame_targets

    y = torch.zeros(1, 8, 2)
    y[0, 3, 0] = 1
    y[0, 6:8, 1] = 1
    out = pool_frame_targets(y, 4)
    assert out[0, :, 0].tolist() == [0, 1, 0, 0] and out[0, :, 1].tolist() == [0, 0, 0, 1]
    assert torch.equal(pool_frame_targets(y, 8), y)


def test_sed_trainer_learns_frame_targets(searched):
    from harmonia.featureset import prepare
    from harmonia.trainables.training import Trainer

    cfg, _ = searched
    _, fs = prepare(cfg, progress=False)
    params = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 8, "crnn.gru_size": 16, "lr": 3e-3, "batch_size": 16}
    losses = []
    for task in ("tagging", "sed"):
        torch.manual_seed(0)
        t = Trainer(params, fs, max_epochs=1, patience=1, seed=0, task=task)
        losses.append(t.train_epoch())
    # The SED loss adds a frame BCE term to the same clip BCE.
    assert losses[1] > losses[0] + 0.1


@pytest.fixture(scope="module")
def sed_report(searched):
    from harmonia.ensembles.stage import build_ensemble

    cfg, _ = searched
    return cfg, build_ensemble(cfg.tracking.uri, cfg.name, size=5, progress=False)


def test_sed_decisions_fitted_on_valid_and_scored_with_sed_eval(sed_report):
    from harmonia import tracking

    cfg, report = sed_report
    sed = report.extra["sed"]
    d = sed["decisions"]
    assert len(d["thresholds"]) == len(report.library.classes) == len(d["median_frames"])
    assert all(0 < t < 1 for t in d["thresholds"]) and all(m >= 1 for m in d["median_frames"])
    for split in ("valid", "test"):
        s = sed["scores"][split]
        assert 0.0 <= s["event_f1"] <= 1.0 and s["event_er"] >= 0.0 and 0.0 <= s["segment_f1"] <= 1.0
    run = tracking.client(cfg.tracking.uri).get_run(report.run_id)
    assert run.data.metrics["test_event_f1"] == pytest.approx(sed["scores"]["test"]["event_f1"])


def test_exported_sed_bundle_writes_dcase_events(sed_report, tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli import app
    from harmonia.ensembles.bundle import export_bundle
    from harmonia.ensembles.predictor import EnsemblePredictor
    from harmonia.ensembles.sed import combine_frames
    from harmonia.features import extract

    cfg, report = sed_report
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path / "sed")
    pred = EnsemblePredictor.load(out)
    lib = report.library
    test = load_dataset(cfg.data.root).split("test")
    weights = np.zeros(len(lib.run_ids))
    for rid, w in report.members:
        weights[lib.run_ids.index(rid)] = w
    expected = combine_frames(lib.frames["test"], weights)
    for i, (cid, path) in enumerate(zip(test["clip_id"][:3], test["path"][:3])):
        got = pred.frame_scores(extract(path, pred.feature))
        j = lib.test_ids.index(cid)
        n = min(len(got), expected.shape[1])
        np.testing.assert_allclose(got[:n], expected[j, :n], atol=3e-3)  # trial frames are stored as float16
    wavs = list(test["path"][:4])
    res = CliRunner().invoke(app, ["predict", str(out), *wavs, "-o", str(tmp_path / "t.tsv"),
                                   "--events", str(tmp_path / "e.tsv")])
    assert res.exit_code == 0, res.output
    ev = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert list(ev.columns) == ["filename", "onset", "offset", "event_label"]
    assert (ev["onset"] < ev["offset"]).all() and set(ev["filename"]) <= set(wavs)
    assert set(ev["event_label"]) <= set(lib.classes)


def test_sed_ensemble_reports_psds_and_event_fitted_decisions(sed_report):
    from harmonia import tracking

    cfg, report = sed_report
    sed = report.extra["sed"]
    assert sed["decisions"]["objective"] == "event_f1" and isinstance(sed["decisions"]["at_grid_edge"], dict)
    metrics = tracking.client(cfg.tracking.uri).get_run(report.run_id).data.metrics
    for split, key in (("valid", "insample_valid"), ("test", "test")):
        s = sed["scores"][split]
        assert 0.0 <= s["psds1"] <= 1.0 and 0.0 <= s["psds2"] <= 1.0 and 0.0 <= s["event_f1_macro"] <= 1.0
        assert metrics[f"{key}_psds2"] == pytest.approx(s["psds2"]) and metrics[f"{key}_segment_er"] == pytest.approx(s["segment_er"])
    assert "valid_psds1" not in metrics  # valid scores of a fitted ensemble are labelled in-sample


def test_ensemble_command_prints_the_sed_table(searched):
    from typer.testing import CliRunner

    from harmonia.cli import app

    cfg, _ = searched
    res = CliRunner().invoke(app, ["ensemble", "--experiment", cfg.name, "--method", "average", "--size", "3",
                                   "--folds", "2", "--tracking-uri", cfg.tracking.uri], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert "sound event detection on" in out
    for col in ("event F1", "seg F1", "seg ER", "PSDS1", "PSDS2", "valid*"):
        assert col in out, col
    assert out.index("ensemble methods on") < out.index("sound event detection on")


def test_weakly_labelled_clips_train_only_their_clip_output():
    """A tagged clip without events (DESED train/weak) adds no frame loss; a strong clip's frames do count."""
    import torch

    from harmonia.trainables.augmentations import Batch
    from harmonia.trainables.tasks import SedStrategy, strong_clips

    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # weak (tag, no frames), strong, empty strong
    yf = torch.zeros(3, 8, 2)
    yf[1, 2:5, 0] = 1
    assert strong_clips(y, yf).tolist() == [False, True, True]
    frames = torch.full((3, 8, 2), 0.5, requires_grad=True)
    clip = torch.full((3, 2), 0.5, requires_grad=True)
    SedStrategy().loss((clip, frames), Batch(torch.zeros(3, 8, 4), y, yf), None, None).backward()
    assert torch.all(frames.grad[0] == 0) and torch.any(frames.grad[1] != 0) and torch.any(frames.grad[2] != 0)
    assert torch.all(clip.grad != 0)
