"""Semi-supervised trainables: the mean teacher's EMA and consistency cost, unlabelled features."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from tests.test_lr_schedule import PARAMS, tiny_feature_set

MT = {**PARAMS, "semi.mean_teacher": True, "mean_teacher.ema_decay": 0.9, "mean_teacher.weight": 1.0,
      "mean_teacher.rampup_epochs": 1}


def with_unlabeled(fs, n: int = 10, seed: int = 1):
    from harmonia.featureset import SplitArrays

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, fs.frames, fs.n_features)).astype(np.float32)
    fs.unlabeled = SplitArrays([f"u{i}" for i in range(n)], x, np.zeros((n, len(fs.classes)), np.float32))
    return fs


def trainer(params: dict, fs=None, epochs: int = 2):
    from harmonia.trainables.training import Trainer

    return Trainer(params, fs or with_unlabeled(tiny_feature_set()), max_epochs=epochs, patience=epochs, seed=0,
                   device=torch.device("cpu"))


def test_teacher_weights_are_the_ema_of_the_student_weights():
    t = trainer(MT)
    (mt,) = t.semi
    expected = [p.detach().clone() for p in t.model.parameters()]  # θ'_0 = θ_0
    step = 0

    def after_step(opt, args, kwargs):  # the student's weights right after each optimizer step
        nonlocal step
        alpha = min(1 - 1 / (step + 1), 0.9)
        for e, p in zip(expected, t.model.parameters()):
            e.mul_(alpha).add_((1 - alpha) * p.detach())
        step += 1

    t.optimizer.register_step_post_hook(after_step)
    t.run_epoch()
    t.run_epoch()
    assert step == mt.steps == 6  # 2 epochs × 3 steps of 21 clips at batch 8
    for e, tp, sp in zip(expected, mt.teacher.parameters(), t.model.parameters()):
        torch.testing.assert_close(tp, e, rtol=1e-5, atol=1e-7)
        assert not torch.equal(tp, sp)  # the teacher lags behind the student
    for tb, sb in zip(mt.teacher.buffers(), t.model.buffers()):
        assert torch.equal(tb, sb)  # batch-norm statistics are the student's


def test_consistency_cost_is_the_ramped_mse_of_student_and_teacher_probabilities():
    from harmonia.trainables.augmentations import Batch
    from harmonia.trainables.semi_supervised import sigmoid_rampup

    t = trainer({**MT, "crnn.dropout": 0.0})  # the student's two forward passes then see the same network
    (mt,) = t.semi
    with torch.no_grad():  # a teacher that differs from the student
        for p in mt.teacher.parameters():
            p.add_(0.05)
    t.model.train()
    x = torch.from_numpy(t.data.splits["train"].x[:4])
    out = t.model(x)
    gen_state = t.gen.get_state()
    cost = mt.loss(t, Batch(x, torch.zeros(4, 3)), out, step=1, spe=3)
    t.gen.set_state(gen_state)
    rows, u = t.unlabeled_batch(4)
    with torch.no_grad():
        tl, tu = mt.teacher(x), mt.teacher(u)
    su = t.model(u)
    mse = sum(torch.mean((a - b) ** 2) for so, to in ((out, tl), (su, tu)) for a, b in zip(so, to))
    assert sigmoid_rampup(1, 3) == pytest.approx(math.exp(-5 * (2 / 3) ** 2))
    assert cost.item() == pytest.approx(sigmoid_rampup(1, 3) * mse.item(), rel=1e-4)
    assert cost.item() > 0 and cost.requires_grad


def test_mean_teacher_state_round_trips_in_the_trainer_checkpoint():
    a = trainer(MT)
    a.run_epoch()
    b = trainer(MT)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for x, y in zip(a.semi[0].teacher.parameters(), b.semi[0].teacher.parameters()):
        assert torch.equal(x, y)
    assert b.semi[0].steps == a.semi[0].steps == 3


def test_mean_teacher_for_a_task_it_cannot_compare_is_refused():
    from harmonia.trainables.semi_supervised import build_semi_supervised

    with pytest.raises(ValueError, match="semi.mean_teacher: not available for task 'sequence'"):
        build_semi_supervised(MT, "sequence")


def test_pseudo_labels_are_the_first_pass_clip_model_tags_and_the_second_model_trains_on_them():
    from harmonia.trainables.training import Trainer

    params = {**PARAMS, "semi.pseudo_label": True, "pseudo_label.first_epochs": 2, "pseudo_label.threshold": 0.4}
    fs = with_unlabeled(tiny_feature_set())
    t = trainer(params, fs, epochs=1)
    (pl,) = t.semi
    assert pl.tags is None  # pass 1 runs at the first train step
    t.run_epoch()
    seed = int(torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(0)))
    first = Trainer(PARAMS, fs, max_epochs=2, patience=2, seed=seed, device=torch.device("cpu"), task="tagging")
    first.run_epoch()
    first.run_epoch()
    clip, _ = first.predict_features(fs.unlabeled.x, first.best_model())
    assert torch.equal(pl.tags, torch.from_numpy((clip >= 0.4).astype(np.float32)))
    assert 0 < pl.tags.sum() < pl.tags.numel()  # some tags on, some off: the check can fail
    resumed = trainer(params, fs, epochs=1)
    resumed.load_state_dict(t.state_dict())
    assert torch.equal(resumed.semi[0].tags, pl.tags)


def test_pseudo_labelling_without_unlabelled_clips_is_an_error():
    with pytest.raises(ValueError, match="semi.pseudo_label needs unlabelled clips"):
        trainer({**PARAMS, "semi.pseudo_label": True}, tiny_feature_set())


def test_unlabeled_clips_get_features_only_when_asked(tmp_path):
    from harmonia.config import FeatureConfig
    from harmonia.data.datasets import load_dataset
    from harmonia.data.layouts import SynthArgs, synthesize_layout
    from harmonia.featureset import build_feature_set

    root = synthesize_layout(tmp_path / "d", "desed", SynthArgs(clips=24, seconds=1.0, seed=2,
                                                                classes=("beep", "hum", "rain", "knock")))
    ds = load_dataset(root)
    cfg = FeatureConfig(cache_dir=str(tmp_path / "cache"))
    plain = build_feature_set(ds, cfg, progress=False)
    assert plain.unlabeled is None
    fs = build_feature_set(ds, cfg, progress=False, unlabeled=True)
    assert fs.unlabeled.clip_ids == list(ds.split("unlabeled")["clip_id"]) and len(fs.unlabeled.clip_ids) == 4
    assert fs.unlabeled.x.shape == (4, fs.frames, fs.n_features) and not fs.unlabeled.y.any()
    np.testing.assert_array_equal(fs.splits["train"].x, plain.splits["train"].x)  # the labelled path is unchanged
    assert fs.normalizer.mean.tolist() == plain.normalizer.mean.tolist()  # statistics from train only


def test_unverified_clips_get_smoothed_targets_and_verified_ones_keep_theirs():
    from harmonia.trainables.augmentations import Batch

    fs = tiny_feature_set()
    train = fs.splits["train"]
    train.verified = np.arange(len(train.y)) % 2 == 0  # odd rows unverified
    t = trainer({**PARAMS, "semi.label_smoothing": True, "label_smoothing.epsilon": 0.2}, fs)
    rows = np.array([0, 1, 2, 3])
    y = torch.from_numpy(train.y[rows])
    out = t.semi[0].targets(Batch(torch.zeros(4, 1, 1), y), train, rows)
    expected = y.clone()
    expected[[1, 3]] = 0.8 * y[[1, 3]] + 0.2 / 3
    torch.testing.assert_close(out.y, expected)
    assert not torch.equal(out.y, y)


def test_fsdkaggle2018_reader_carries_manually_verified_and_names_a_bad_value(tmp_path):
    from harmonia.data.datasets import DatasetError, load_dataset
    from harmonia.data.layouts import SynthArgs, synthesize_layout
    from harmonia.featureset import verified_flags

    root = synthesize_layout(tmp_path / "fsd", "fsdkaggle2018", SynthArgs(clips=24, seconds=1.0, seed=3,
                                                                          classes=("beep", "hum", "rain", "knock")))
    lines = (root / "train.csv").read_text().splitlines()
    cols = lines[0].split(",")
    k = cols.index("manually_verified")
    rows = [line.split(",") for line in lines[1:]]
    for i, r in enumerate(rows):
        r[k] = "0" if i % 3 == 0 else "1"
    (root / "train.csv").write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    ds = load_dataset(root)
    flags = verified_flags(ds, "train")
    by_name = {r[cols.index("fname")]: r[k] == "1" for r in rows}
    assert flags.tolist() == [by_name[p.split("/")[-1]] for p in ds.split("train")["path"]]
    assert not flags.all() and flags.any() and verified_flags(ds, "valid").all()
    rows[1][k] = "yes"
    (root / "train.csv").write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    with pytest.raises(DatasetError, match=r"train\.csv:3: manually_verified 'yes': expected 0 or 1"):
        load_dataset(root)


def test_label_smoothing_without_verified_flags_is_an_error():
    with pytest.raises(ValueError, match="semi.label_smoothing needs a verified flag per train clip"):
        trainer({**PARAMS, "semi.label_smoothing": True}, tiny_feature_set())


def test_semi_supervised_methods_are_off_unless_the_config_names_them():
    from harmonia.spaces.compose import define_by_run, validate_overrides
    from harmonia.spaces.core import RecordingTrial, SpaceError
    from harmonia.spaces.semi_supervised import semi_supervised_requested

    trial = RecordingTrial()
    constants = define_by_run({}, task="sed")(trial)
    assert {k: v for k, v in constants.items() if k.startswith("semi.")} == {
        "semi.mean_teacher": False, "semi.pseudo_label": False, "semi.label_smoothing": False}
    assert not any(k.startswith(("semi.", "mean_teacher.")) for k in trial.values)
    trial = RecordingTrial()
    define_by_run({"semi.mean_teacher": [True, False]}, task="sed")(trial)
    assert trial.choices["semi.mean_teacher"] == [True, False] and trial.values["mean_teacher.ema_decay"] == 0.99
    assert semi_supervised_requested({"semi.mean_teacher": [True, False]})
    assert not semi_supervised_requested({"semi.label_smoothing": True})  # needs no unlabelled features
    with pytest.raises(SpaceError, match="space.semi.pseudo_label: serves tasks tagging, sed, not 'sequence'"):
        validate_overrides({"semi.pseudo_label": True}, "sequence")
    with pytest.raises(SpaceError, match=r"space.mean_teacher.ema_decay: 1.0 is outside the parameter's domain"):
        validate_overrides({"semi.mean_teacher": True, "mean_teacher.ema_decay": 1.0}, "sed")


def test_every_semi_supervised_space_names_fields_of_its_trainable():
    from dataclasses import fields

    from harmonia.spaces.core import RecordingTrial, Space
    from harmonia.spaces.semi_supervised import SEMI_SUPERVISED_SPACES, SEMI_SUPERVISED_TASKS
    from harmonia.trainables.semi_supervised import SEMI_SUPERVISED

    assert set(SEMI_SUPERVISED_SPACES) == set(SEMI_SUPERVISED) == set(SEMI_SUPERVISED_TASKS)
    for name, fn in SEMI_SUPERVISED_SPACES.items():
        s = Space(RecordingTrial())
        fn(s)
        assert s.seen and set(s.seen) <= {f"{name}.{f.name}" for f in fields(SEMI_SUPERVISED[name].config_type)}
        assert SEMI_SUPERVISED_TASKS[name] == SEMI_SUPERVISED[name].tasks
        for n in s.seen:
            assert s.domains[n] is not None and s.domains[n].contains(s.defaults[n][0]), n


@pytest.mark.slow
def test_search_with_a_mean_teacher_trains_on_the_unlabeled_split(ray_local, tmp_path):
    from harmonia import tracking
    from harmonia.data.layouts import SynthArgs, synthesize_layout
    from harmonia.search.tuner import run_search
    from tests.conftest import tiny_config

    synthesize_layout(tmp_path / "data", "desed", SynthArgs(clips=48, seconds=2.0, seed=1,
                                                            classes=("beep", "hum", "rain", "knock")))
    cfg = tiny_config(tmp_path, name="ssl", num_samples=2, max_epochs=2)
    cfg.space.update({"semi.mean_teacher": True, "mean_teacher.rampup_epochs": 1})
    result = run_search(cfg, progress=False)
    assert (result.trials["status"] == "TERMINATED").all(), result.trials
    c = tracking.client(cfg.tracking.uri)
    runs = [c.get_run(r) for r in result.trials["run_id"]]
    assert all(r.data.params["semi.mean_teacher"] == "True" for r in runs)
    assert all(r.data.params["lr_schedule"] == "constant" for r in runs)
    assert all(0.0 <= r.data.metrics["valid_mAP"] <= 1.0 for r in runs)
    from harmonia.feature_store import load_feature_sets
    from harmonia.featureset import load_data
    from harmonia.spaces.semi_supervised import semi_supervised_requested

    assert semi_supervised_requested(cfg.space)  # what the search passes to load_feature_sets
    ds = load_data(cfg, progress=False)
    (fs,) = load_feature_sets(ds, cfg.features, ["logmel"], progress=False, unlabeled=True).values()
    assert fs.unlabeled.clip_ids == list(ds.split("unlabeled")["clip_id"]) and len(fs.unlabeled.clip_ids) >= 2
    assert all("unlabel_in_domain" in c for c in fs.unlabeled.clip_ids)
