"""Learning-rate schedules: the formula per step, the rate the Trainer's optimizer steps with, the space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonia.config import FeatureConfig
from harmonia.featureset import FeatureSet, SplitArrays
from harmonia.features import Normalizer
from harmonia.trainables.schedules import LRSchedule, steps_per_epoch

PARAMS = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 4, "crnn.gru_size": 8, "lr": 4e-3, "batch_size": 8}


def tiny_feature_set(n: int = 21, frames: int = 32, classes: int = 3, seed: int = 0) -> FeatureSet:
    """Random normalized features and tags: what the optimizer's rate does not depend on."""
    cfg = FeatureConfig()
    rng = np.random.default_rng(seed)
    f = cfg.n_features

    def split(prefix: str, m: int) -> SplitArrays:
        x = rng.standard_normal((m, frames, f)).astype(np.float32)
        y = (rng.random((m, classes)) < 0.4).astype(np.float32)
        return SplitArrays([f"{prefix}{i}" for i in range(m)], x, y)

    fs = FeatureSet([f"c{k}" for k in range(classes)], cfg.identity(), Normalizer(np.zeros(f), np.ones(f)), frames)
    fs.splits = {"train": split("train", n), "valid": split("valid", 6)}
    return fs


def by_hand(kind: str, step: int, spe: int, epochs: int, warmup: int, gamma: float = 0.9, floor: float = 0.0) -> float:
    """The schedule written out: linear warm-up over warmup·spe steps, then the decay in epochs."""
    if step < warmup * spe:
        return (step + 1) / (warmup * spe)
    t = (step - warmup * spe) / spe
    if kind == "constant":
        return 1.0
    if kind == "exponential":
        return gamma ** t
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t / (epochs - warmup), 1.0)))


@pytest.mark.parametrize("kind", ["constant", "exponential", "cosine"])
@pytest.mark.parametrize("warmup", [0, 2])
def test_schedule_factor_per_step_equals_the_formula(kind, warmup):
    s = LRSchedule(kind, warmup, gamma=0.8, min_ratio=0.05)
    spe, epochs = 7, 6
    got = [s.factor(i, spe, epochs) for i in range(spe * epochs)]
    want = [by_hand(kind, i, spe, epochs, warmup, 0.8, 0.05) for i in range(spe * epochs)]
    assert got == pytest.approx(want, rel=1e-12)
    if warmup:
        assert got[0] == pytest.approx(1 / 14) and got[13] == pytest.approx(1.0)
    if kind == "cosine":
        assert got[-1] == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (spe * (epochs - warmup) - 1)
                                                                            / (spe * (epochs - warmup)))))


def test_steps_per_epoch_skips_a_last_batch_of_one():
    assert steps_per_epoch(21, 8) == 3 and steps_per_epoch(17, 8) == 2 and steps_per_epoch(16, 8) == 2


def lrs_stepped(params: dict, epochs: int) -> list[float]:
    """The rate of every optimizer step of a real Trainer over `epochs` epochs (read at `Adam.step`)."""
    from harmonia.trainables.training import Trainer

    t = Trainer(params, tiny_feature_set(), max_epochs=epochs, patience=epochs, seed=0, device=torch.device("cpu"))
    seen: list[float] = []
    t.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    for _ in range(epochs):
        t.run_epoch()
    return seen


def test_trainer_steps_with_the_scheduled_rate():
    params = {**PARAMS, "lr_schedule": "cosine", "lr_warmup_epochs": 1, "lr_cosine.min_ratio": 0.1}
    seen = lrs_stepped(params, 3)
    spe = steps_per_epoch(21, 8)
    assert len(seen) == 3 * spe
    assert seen == pytest.approx([4e-3 * by_hand("cosine", i, spe, 3, 1, floor=0.1) for i in range(3 * spe)], rel=1e-9)
    assert seen[0] < seen[spe - 1] and seen[-1] < seen[spe]


def test_default_params_keep_the_constant_rate_of_before():
    assert lrs_stepped(PARAMS, 2) == [4e-3] * (2 * steps_per_epoch(21, 8))


def test_resumed_trainer_continues_on_the_same_curve():
    from harmonia.trainables.training import Trainer

    params = {**PARAMS, "lr_schedule": "exponential", "lr_exponential.gamma": 0.5}
    a = Trainer(params, tiny_feature_set(), max_epochs=3, patience=3, seed=0, device=torch.device("cpu"))
    a.run_epoch()
    b = Trainer(params, tiny_feature_set(), max_epochs=3, patience=3, seed=0, device=torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    seen: list[float] = []
    b.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    b.run_epoch()
    spe = steps_per_epoch(21, 8)
    assert seen == pytest.approx([4e-3 * 0.5 ** (i / spe) for i in range(spe, 2 * spe)], rel=1e-9)


def test_default_space_fixes_constant_without_warmup_and_a_config_opens_it():
    from harmonia.spaces.compose import define_by_run
    from harmonia.spaces.core import RecordingTrial

    trial = RecordingTrial()
    constants = define_by_run({}, task="sed")(trial)
    assert constants["lr_schedule"] == "constant" and constants["lr_warmup_epochs"] == 0
    assert "lr_schedule" not in trial.choices and "lr_warmup_epochs" not in trial.values  # fixed, not sampled
    trial = RecordingTrial()
    define_by_run({"lr_schedule": ["cosine", "exponential"], "lr_warmup_epochs": {"low": 1, "high": 3}}, "sed")(trial)
    assert trial.choices["lr_schedule"] == ["cosine", "exponential"] and trial.values["lr_warmup_epochs"] == 1
    assert trial.values["lr_cosine.min_ratio"] == 0.0


@pytest.mark.parametrize("overrides, message", [
    ({"lr_schedule": ["cosine", "linear"]}, "space.lr_schedule: unknown schedule 'linear'"),
    ({"lr_schedule": "exponential", "lr_exponential.gamma": 1.5}, "space.lr_exponential.gamma: 1.5 is outside"),
    ({"lr_warmup_epochs": -1}, "space.lr_warmup_epochs: -1 is outside the parameter's domain: an integer >= 0"),
])
def test_bad_schedule_overrides_name_the_parameter(overrides, message):
    from harmonia.spaces.compose import validate_overrides
    from harmonia.spaces.core import SpaceError

    with pytest.raises(SpaceError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate_overrides(overrides, "sed")


def test_schedule_parameters_declare_domains_their_defaults_lie_in():
    from harmonia.spaces.core import RecordingTrial, Space
    from harmonia.spaces.schedules import SCHEDULE_SPACES, lr_schedule_space

    for fn in [lr_schedule_space, *SCHEDULE_SPACES.values()]:
        s = Space(RecordingTrial(), {"lr_warmup_epochs": {"low": 0, "high": 5}})
        fn(s)
        for name, default in s.defaults.items():
            numeric = isinstance(default, tuple) or all(isinstance(c, (int, float)) for c in default)
            assert not numeric or s.domains[name] is not None, name
