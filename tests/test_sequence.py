"""Task sequence: CRNN-CTC, best-path decoding, sequence accuracy, order recovered on synthetic data."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import fields
from math import factorial
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from safetensors.torch import load, save

from harmonia import metrics as hm
from harmonia.trainables.architectures import ARCHITECTURES, build_model
from harmonia.trainables.tasks import ctc_loss

SMALL = {"task": "sequence", "crnn_ctc.blocks": 2, "crnn_ctc.channels": 8, "crnn_ctc.gru_size": 16,
         "crnn_ctc.dropout": 0.0}


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _onehot_path(path: list[int], k: int, hi: float = 0.9) -> np.ndarray:
    """Posteriors [T, k] whose argmax per frame is `path` (blank = k - 1)."""
    p = np.full((len(path), k), (1 - hi) / (k - 1))
    p[np.arange(len(path)), path] = hi
    return p


def test_best_path_collapses_repeats_and_drops_blanks():
    b = 3  # classes 0, 1, 2 and the blank 3
    assert hm.ctc_best_path(_onehot_path([b, 0, 0, b, 1, 1, 1, b], 4)) == [0, 1]
    # a blank between two runs of the same label keeps both; without it they collapse into one
    assert hm.ctc_best_path(_onehot_path([0, 0, b, 0, 2, 2], 4)) == [0, 0, 2]
    assert hm.ctc_best_path(_onehot_path([0, 0, 0, 0, 2, 2], 4)) == [0, 2]
    assert hm.ctc_best_path(_onehot_path([b, b, b], 4)) == []
    assert hm.ctc_best_path(_onehot_path([2, 1, 0], 4)) == [2, 1, 0]  # order is kept
    # an explicit blank index: column 0 as the blank
    assert hm.ctc_best_path(_onehot_path([0, 1, 1, 0, 1], 3), blank=0) == [1, 1]
    with pytest.raises(ValueError, match="classes \\+ blank"):
        hm.ctc_best_path(np.zeros((4, 1)))


def test_decoding_from_class_posteriors_recovers_the_blank():
    full = np.stack([_onehot_path([3, 0, 3, 0, 1, 3], 4), _onehot_path([2, 2, 3, 3, 3, 3], 4)])
    classes_only = full[..., :3]  # what a CTC model's frames hold; the blank is 1 - their sum
    np.testing.assert_allclose(hm.with_blank(classes_only), full, atol=1e-12)
    assert hm.ctc_decode(classes_only) == [[0, 0, 1], [2]]


def test_sequence_accuracy_is_exact_match():
    truth = [[0, 1], [2], [1, 1, 0], []]
    assert hm.sequence_accuracy(truth, truth) == 1.0
    assert hm.sequence_accuracy(truth, [[1, 0], [2], [1, 0], []]) == 0.5  # wrong order, a lost repeat
    assert hm.sequence_accuracy(truth, [[0, 1, 1], [], [1, 1, 0], [0]]) == 0.25
    assert np.isnan(hm.sequence_accuracy([], []))
    with pytest.raises(ValueError, match="3 true sequences but 2"):
        hm.sequence_accuracy([[0], [1], [2]], [[0], [1]])
    m = hm.get_metric("seq_acc")
    assert m.greater_is_better and m.inputs == "sequences" and m(truth, truth) == 1.0
    with pytest.raises(ValueError, match="label sequences"):
        m(np.zeros((3, 2)), np.zeros((3, 2)))


def test_crnn_ctc_shapes_and_posteriors():
    assert ARCHITECTURES["crnn_ctc"].tasks == ("sequence",)
    for time_pool in (2, 4):
        m = build_model("crnn_ctc", {**SMALL, "crnn_ctc.time_pool": time_pool}, n_mels=32, n_classes=5).eval()
        x = torch.randn(3, 64, 32)
        with torch.no_grad():
            clip, frames = m(x)
            lp = m.log_probs(x)
        assert m.time_pool == time_pool and m.blank == 5
        assert lp.shape == (3, 64 // time_pool, 6) and frames.shape == (3, 64 // time_pool, 5) and clip.shape == (3, 5)
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 64 // time_pool))
        torch.testing.assert_close(frames, lp.exp()[..., :5])  # class posteriors without the blank
        torch.testing.assert_close(clip, frames.amax(1))
        assert torch.all((clip > 0) & (clip < 1))
    assert build_model("crnn_ctc", {"task": "sequence"}, 64, 3).time_pool == 4  # the default


def test_crnn_ctc_overfits_a_tiny_batch():
    m = build_model("crnn_ctc", SMALL, n_mels=32, n_classes=4)
    x = torch.randn(4, 64, 32, generator=torch.Generator().manual_seed(1))
    seq = np.array([[0, 1, -1], [2, -1, -1], [3, 3, 1], [-1, -1, -1]])  # a repeat and an empty clip
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):  # falls ~30x by step 120 (seeded)
        loss = ctc_loss(m.log_probs(x), seq)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, loss.item())


def test_crnn_ctc_round_trips_through_safetensors():
    m = build_model("crnn_ctc", SMALL, n_mels=32, n_classes=3)
    m(torch.randn(4, 64, 32))  # a train-mode pass moves the BN running stats
    m.eval()
    blob = save({k: v.contiguous() for k, v in m.state_dict().items()})
    m2 = build_model("crnn_ctc", SMALL, n_mels=32, n_classes=3).eval()
    m2.load_state_dict(load(blob))
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        (c1, f1), (c2, f2) = m(x), m2(x)
        assert torch.equal(m.log_probs(x), m2.log_probs(x))
    assert torch.equal(c1, c2) and torch.equal(f1, f2)


def test_crnn_ctc_reuses_the_crnn_blocks():
    ctc = build_model("crnn_ctc", {**SMALL, "crnn_ctc.time_pool": 2}, 32, 4)
    crnn = build_model("crnn", {"crnn.blocks": 2, "crnn.channels": 8, "crnn.gru_size": 16, "crnn.pooling": "max"}, 32, 5)
    # same conv stack and BGRU; only the dense layer's width differs (N + 1 outputs with the blank)
    shapes = {k: v.shape for k, v in ctc.state_dict().items()}
    assert shapes == {k: v.shape for k, v in crnn.state_dict().items()}


def test_space_of_crnn_ctc_builds_and_names_config_fields():
    from harmonia.spaces import define_by_run
    from harmonia.spaces.architectures import ARCHITECTURE_SPACES
    from harmonia.spaces.core import RecordingTrial, Space

    s = Space(RecordingTrial())
    ARCHITECTURE_SPACES["crnn_ctc"](s)
    assert set(s.seen) <= {f"crnn_ctc.{f.name}" for f in fields(ARCHITECTURES["crnn_ctc"].config_type)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = define_by_run({}, task="sequence")
    for _ in range(8):
        t = study.ask()
        constants = fn(t)
        params = {**t.params, **constants}
        assert params["arch"] == "crnn_ctc"  # the only architecture of task sequence
        m = build_model("crnn_ctc", {**params, "task": "sequence"}, 32, 3).eval()
        with torch.no_grad():
            assert m(torch.randn(2, 64, 32))[1].shape[2] == 3
        study.tell(t, 0.0)


def test_space_tasks_match_the_architecture_registry():
    from harmonia.spaces.architectures import ARCHITECTURE_TASKS

    assert {n: tuple(t) for n, t in ARCHITECTURE_TASKS.items()} == {n: s.tasks for n, s in ARCHITECTURES.items()}


@pytest.mark.parametrize("arch, task", [("crnn_ctc", "tagging"), ("crnn_ctc", "scene"), ("crnn", "sequence"),
                                        ("cnn8", "sequence")])
def test_architecture_and_task_that_do_not_fit_are_refused_by_name(arch, task):
    from harmonia.spaces import SpaceError, validate_overrides

    with pytest.raises(ValueError, match=f"architecture '{arch}' does not support task '{task}'"):
        build_model(arch, {"task": task}, 32, 3)
    with pytest.raises(SpaceError, match=f"space.arch: architecture '{arch}' does not support task '{task}'"):
        validate_overrides({"arch": [arch]}, task)


def test_default_space_samples_only_the_architectures_of_the_task():
    from harmonia.spaces import define_by_run

    for task, allowed in (("tagging", set(ARCHITECTURES) - {"crnn_ctc"}), ("sequence", {"crnn_ctc"})):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        fn = define_by_run({}, task=task)
        seen = set()
        for _ in range(30):
            t = study.ask()
            constants = fn(t)
            seen.add({**t.params, **constants}["arch"])
            study.tell(t, 0.0)
        assert seen <= allowed and (task == "tagging") == (len(seen) > 1)


def test_config_metric_must_belong_to_the_task():
    from harmonia.config import ConfigError, parse_config

    assert parse_config({"task": "sequence", "search": {"metric": "seq_acc"}}).search.metric == "seq_acc"
    with pytest.raises(ConfigError, match="search.metric: 'seq_acc' is not a metric of task 'tagging'"):
        parse_config({"search": {"metric": "seq_acc"}})
    with pytest.raises(ConfigError, match="ensemble.metric: 'accuracy' is not a metric of task 'sequence'"):
        parse_config({"task": "sequence", "ensemble": {"metric": "accuracy"}})


# --- CTC on the synthetic dataset's sequences ------------------------------------------------------------

SEQ_SYNTH = dict(classes=("beep", "knock", "engine"), events_per_clip=(1, 3), snr_db=(6.0, 15.0), distractors=0.0,
                 similarity=0.0, event_seconds=(0.2, 0.6))


def _n_orders(seq: list[int]) -> int:
    """Distinct orders of the labels of `seq` (a random order is right with probability 1 / this)."""
    n = factorial(len(seq))
    for k in Counter(seq).values():
        n //= factorial(k)
    return n


@pytest.fixture(scope="module")
def seq_data(tmp_path_factory):
    from harmonia.config import parse_config
    from harmonia.featureset import prepare
    from harmonia.data.synth import synthesize

    base = tmp_path_factory.mktemp("seq")
    cfg = parse_config({"task": "sequence", "search": {"metric": "seq_acc"},
                        "data": {"root": str(base / "data"), "synth": None},
                        "features": {"n_mels": 32, "hop_length": 320, "n_fft": 512, "cache_dir": str(base / "cache")}})
    synthesize(base / "data", clips=240, seconds=2.0, seed=1, **SEQ_SYNTH)
    return prepare(cfg.resolved(base), progress=False)


def test_sequence_targets_follow_the_onsets(seq_data):
    ds, fs = seq_data
    for split in ("train", "valid", "test"):
        arrays = fs.splits[split]
        table = ds.split(split)
        assert arrays.y_seq.dtype == np.int64 and arrays.y_seq.shape[0] == len(table)
        assert [[fs.classes[k] for k in s] for s in arrays.sequences()] == [list(s) for s in table["sequence"]]
    events = ds.events[ds.events["clip_id"] == ds.split("test")["clip_id"][0]]
    assert list(events.sort_values("onset")["event_label"]) == list(ds.split("test")["sequence"][0])


def test_ctc_recovers_the_order_of_events_better_than_chance(seq_data):
    """CRNN-CTC trained with the Trainer: exact sequences on test far above the most common train sequence,
    and, on the clips whose labels it finds, the order right far more often than a random order."""
    from harmonia.trainables.training import Trainer

    _, fs = seq_data
    params = {"arch": "crnn_ctc", "crnn_ctc.blocks": 3, "crnn_ctc.channels": 16, "crnn_ctc.gru_size": 64,
              "crnn_ctc.dropout": 0.0, "crnn_ctc.time_pool": 4, "lr": 1e-2, "batch_size": 8}
    trainer = Trainer(params, fs, max_epochs=20, patience=20, metric="seq_acc", seed=0, task="sequence")
    while not trainer.done:
        result = trainer.run_epoch()
    assert {"valid_seq_acc", "valid_mAP", "valid_auc", "valid_loss"} <= set(result.metrics)
    _, frames = trainer.predict("test", model=trainer.best_model())
    truth, decoded = fs.splits["test"].sequences(), hm.ctc_decode(frames)
    acc = hm.sequence_accuracy(truth, decoded)
    common = Counter(tuple(s) for s in fs.splits["train"].sequences()).most_common(1)[0][0]
    majority = np.mean([tuple(t) == common for t in truth])
    assert acc >= majority + 0.3, (acc, majority)  # measured: 0.67 vs 0.04 (48 test clips)
    found = [(t, d) for t, d in zip(truth, decoded) if len(set(t)) >= 2 and sorted(t) == sorted(d)]
    assert len(found) >= 8
    order_right = np.mean([t == d for t, d in found])
    random_order = np.mean([1 / _n_orders(t) for t, _ in found])
    assert order_right >= random_order + 0.3, (order_right, random_order)  # measured: 0.95 vs 0.42 (20 clips)


def test_trainer_refuses_a_sequence_task_without_ctc_or_sequences(seq_data):
    from harmonia.trainables.training import Trainer

    _, fs = seq_data
    with pytest.raises(ValueError, match="architecture 'crnn' does not support task 'sequence'"):
        Trainer({"arch": "crnn"}, fs, max_epochs=1, patience=1, metric="seq_acc", task="sequence")
    with pytest.raises(ValueError, match="metric 'seq_acc' is not scored for task 'tagging'"):
        Trainer({"arch": "crnn"}, fs, max_epochs=1, patience=1, metric="seq_acc", task="tagging")
    from dataclasses import replace

    weak = replace(fs, splits={**fs.splits, "train": replace(fs.splits["train"], y_seq=None)})
    with pytest.raises(ValueError, match="task 'sequence' needs ordered event sequences"):
        Trainer({"arch": "crnn_ctc"}, weak, max_epochs=1, patience=1, metric="seq_acc", task="sequence")


def test_sequence_search_end_to_end(ray_local, tmp_path):
    """One tiny search of task sequence on local Ray: FINISHED CRNN-CTC runs with seq_acc per epoch and
    predictions parquet (clip_id + one column per class), which the ensemble stage reads unchanged."""
    from harmonia import tracking
    from harmonia.config import parse_config
    from harmonia.ensembles.stage import build_ensemble
    from harmonia.search.tuner import run_search
    from tests.conftest import tiny_config

    raw = tiny_config(tmp_path, name="seq", num_samples=2, max_epochs=2).model_dump()
    raw.update(task="sequence", space={"arch": "crnn_ctc", "crnn_ctc.blocks": 2, "crnn_ctc.channels": [8],
                                       "crnn_ctc.gru_size": [16], "batch_size": [16]})
    raw["search"]["metric"] = "seq_acc"
    cfg = parse_config(raw)
    result = run_search(cfg, progress=False)
    assert len(result.trials) == 2 and (result.trials["status"] == "TERMINATED").all()
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name("seq")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert run.data.params["arch"] == "crnn_ctc"
        assert 0.0 <= run.data.metrics["valid_seq_acc"] <= 1.0
        assert len(c.get_metric_history(run.info.run_id, "valid_seq_acc")) >= 1
        for split in ("valid", "test"):
            df = pd.read_parquet(c.download_artifacts(run.info.run_id, f"predictions/{split}.parquet", str(tmp_path)))
            assert df.columns[0] == "clip_id" and len(df.columns) == 11  # 10 synthetic classes
            values = df.iloc[:, 1:].to_numpy()
            assert values.dtype == np.float32 and np.all((values >= 0) & (values <= 1))
        config = json.loads(Path(c.download_artifacts(run.info.run_id, "model/config.json", str(tmp_path))).read_text())
        assert config["params"]["task"] == "sequence"  # bundles rebuild the model for its task
    report = build_ensemble(cfg.tracking.uri, "seq", size=3, progress=False)
    assert report.members


def test_sequence_search_offers_no_augmentation_that_breaks_the_event_order():
    from harmonia.spaces import define_by_run, validate_overrides
    from harmonia.spaces.augmentations import AUGMENTATION_SPACES, SEQUENCE_BREAKING, augmentations_for
    from harmonia.spaces.core import SpaceError

    from harmonia.spaces.core import RecordingTrial

    seq, tag = RecordingTrial(), RecordingTrial()
    define_by_run({}, task="sequence")(seq)
    define_by_run({}, task="tagging")(tag)
    assert not {f"aug.{a}" for a in SEQUENCE_BREAKING} & set(seq.choices)
    assert {f"aug.{a}" for a in AUGMENTATION_SPACES} <= set(tag.choices)
    assert "aug.specaugment" in seq.choices and "aug.chunkmix" in seq.choices
    assert set(augmentations_for("sequence")) == set(AUGMENTATION_SPACES) - SEQUENCE_BREAKING
    with pytest.raises(SpaceError, match="space.aug.mixup: augmentation 'mixup' breaks the event order"):
        validate_overrides({"aug.mixup": True}, "sequence")
    validate_overrides({"aug.mixup": False}, "sequence")
    validate_overrides({"aug.mixup": True}, "tagging")
