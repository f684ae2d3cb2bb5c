"""Training on unlabelled clips (and on unverified labels), registered by name like the augmentations.

A trial switches a method on with `semi.<name>: True`; its fields are `<name>.<field>`. A method may
soften a train batch's targets (before the augmentations), adds a term to each train step's loss and
may act after the optimizer step (the mean teacher's EMA).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch
from torch import nn

from harmonia.featureset import SplitArrays
from harmonia.trainables.augmentations import Batch

if TYPE_CHECKING:
    from harmonia.trainables.training import Trainer

EPS = 1e-7


class SemiSupervised(Protocol):
    def bind(self, trainer: "Trainer") -> None: ...

    def targets(self, batch: Batch, split: SplitArrays, rows: np.ndarray) -> Batch: ...

    def loss(self, trainer: "Trainer", batch: Batch, out: tuple[torch.Tensor, ...], step: int, spe: int) -> torch.Tensor: ...

    def after_step(self, model: nn.Module) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class SemiSupervisedSpec:
    name: str
    config_type: type
    build: Callable[[object], SemiSupervised]
    tasks: tuple[str, ...]  # tasks whose model outputs (clip, frames) probabilities it can compare


SEMI_SUPERVISED: dict[str, SemiSupervisedSpec] = {}


def register_semi_supervised(name: str, config_type: type, tasks: tuple[str, ...] = ("tagging", "sed")):
    """Register `build(cfg) -> SemiSupervised`; its params are `<name>.<field>` in a trial config."""

    def deco(build):
        SEMI_SUPERVISED[name] = SemiSupervisedSpec(name, config_type, build, tasks)
        return build

    return deco


def semi_supervised_on(params: dict) -> list[str]:
    """The methods switched on in flat trial params (`semi.<name>: True`)."""
    return [name for name in SEMI_SUPERVISED if params.get(f"semi.{name}", False)]


def build_semi_supervised(params: dict, task: str) -> list[SemiSupervised]:
    """The methods switched on, built from their `<name>.<field>` params; ValueError for a task they cannot serve."""
    chosen = []
    for name in semi_supervised_on(params):
        spec = SEMI_SUPERVISED[name]
        if task not in spec.tasks:
            raise ValueError(f"semi.{name}: not available for task {task!r} (it serves: {', '.join(spec.tasks)})")
        kwargs = {f.name: params[f"{name}.{f.name}"] for f in fields(spec.config_type) if f"{name}.{f.name}" in params}
        chosen.append(spec.build(spec.config_type(**kwargs)))
    return chosen


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(−5 (1 − t)²) for t = step / length clipped to 1 (Laine & Aila 2017; the mean teacher's ramp-up)."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0) / length, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@dataclass(frozen=True)
class MeanTeacherConfig:
    ema_decay: float = 0.999  # Tarvainen & Valpola 2017 §3 (0.99 in ramp-up, 0.999 after); DESED: 0.999
    weight: float = 2.0  # the consistency cost's maximum weight (DESED baseline: 2)
    rampup_epochs: int = 5  # epochs of the sigmoid ramp-up of the weight


class MeanTeacher:
    """Tarvainen & Valpola 2017: a teacher whose weights are the EMA of the student's, and a consistency
    cost — MSE between student and teacher probabilities, clip and frame — on the labelled batch and on
    as many unlabelled clips, weighted `weight` × a sigmoid ramp-up (as the DESED baseline).

    EMA step t (0-based): α_t = min(1 − 1/(t + 1), ema_decay); θ' ← α_t θ' + (1 − α_t) θ (their code's
    warm-up of α). The teacher runs in eval mode (no dropout) with the student's batch-norm statistics.
    Predictions and checkpoints of the trial stay the student's; the teacher is kept in its state.
    """

    def __init__(self, cfg: MeanTeacherConfig):
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise ValueError(f"mean_teacher.ema_decay {cfg.ema_decay}: expected a number in [0, 1)")
        self.cfg = cfg
        self.teacher: nn.Module | None = None
        self.steps = 0

    def bind(self, trainer: "Trainer") -> None:
        self.teacher = copy.deepcopy(trainer.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def targets(self, batch, split, rows):
        return batch

    def loss(self, trainer, batch, out, step, spe):
        student = [out[:2]]
        teacher_in = [batch.x]
        drawn = trainer.unlabeled_batch(len(batch.x))
        if drawn is not None:
            u = drawn[1]
            student.append(trainer.model(u))
            teacher_in.append(u)
        with torch.no_grad():
            teacher = [self.teacher(x) for x in teacher_in]
        cost = sum(nn.functional.mse_loss(s.float(), t.float()) for so, to in zip(student, teacher)
                   for s, t in zip(so, to))
        return self.cfg.weight * sigmoid_rampup(step, self.cfg.rampup_epochs * spe) * cost

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        alpha = min(1.0 - 1.0 / (self.steps + 1), self.cfg.ema_decay)
        for tp, sp in zip(self.teacher.parameters(), model.parameters()):
            tp.mul_(alpha).add_(sp.detach(), alpha=1.0 - alpha)
        for tb, sb in zip(self.teacher.buffers(), model.buffers()):
            tb.copy_(sb)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "steps": torch.tensor(self.steps, dtype=torch.long)}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.steps = int(state["steps"])


@register_semi_supervised("mean_teacher", MeanTeacherConfig)
def build_mean_teacher(cfg: MeanTeacherConfig) -> SemiSupervised:
    return MeanTeacher(cfg)


@dataclass(frozen=True)
class PseudoLabelConfig:
    first_epochs: int = 5  # epochs of the first, clip-level pass (early stopping on its valid mAP)
    threshold: float = 0.5  # a class is a pseudo tag of an unlabelled clip where pass 1 gives at least this
    weight: float = 1.0  # the pseudo-labelled batch's loss beside the labelled batch's


class PseudoLabel:
    """Pseudo-labelling in two passes (DCASE 2018 task 4 baseline, proceedings L1370–1420): a clip-level
    model (the trial's architecture and params, task tagging) trained on the labelled clips tags the
    unlabelled ones at `threshold`; the trial's model then trains on those tags beside its labelled
    batches — for SED, every frame of an unlabelled clip carries its clip's tags, as in the baseline's
    second pass. Pass 1 runs at the first train step; its tags are kept in the trial's checkpoint.
    """

    def __init__(self, cfg: PseudoLabelConfig):
        if not 0.0 < cfg.threshold < 1.0:
            raise ValueError(f"pseudo_label.threshold {cfg.threshold}: expected a number in (0, 1)")
        self.cfg = cfg
        self.tags: torch.Tensor | None = None  # [N_unlabeled, C] float 0/1
        self.seed = 0

    def bind(self, trainer: "Trainer") -> None:
        if trainer.data.unlabeled is None or len(trainer.data.unlabeled.clip_ids) < 2:
            raise ValueError("semi.pseudo_label needs unlabelled clips: the dataset has no `unlabeled` split with "
                             "features (a search computes them when the space switches a semi.* method on)")
        self.seed = int(torch.randint(2**31 - 1, (1,), generator=trainer.gen))  # pass 1's seed, drawn first

    def first_pass(self, trainer: "Trainer") -> torch.Tensor:
        """Pass 1: train the clip-level model, tag the unlabelled clips with its best epoch."""
        params = {k: v for k, v in trainer.params.items() if not k.startswith("semi.") and k != "task"}
        first = type(trainer)(params, trainer.data, max_epochs=self.cfg.first_epochs, patience=self.cfg.first_epochs,
                              metric="mAP", device=trainer.device, task="tagging",
                              seed=self.seed)
        while not first.done:
            first.run_epoch()
        clip, _ = first.predict_features(trainer.data.unlabeled.x, first.best_model())
        return torch.from_numpy((clip >= self.cfg.threshold).astype(np.float32))

    def targets(self, batch, split, rows):
        return batch

    def loss(self, trainer, batch, out, step, spe):
        if self.tags is None:
            self.tags = self.first_pass(trainer)
        rows, u = trainer.unlabeled_batch(len(batch.x))
        clip, frames = trainer.model(u)
        y = self.tags[rows].to(clip.device)
        cost = nn.functional.binary_cross_entropy(clip.float().clamp(EPS, 1 - EPS), y)
        if trainer.strategy.frame_targets:
            cost = cost + nn.functional.binary_cross_entropy(frames.float().clamp(EPS, 1 - EPS),
                                                             y[:, None, :].expand_as(frames))
        return self.cfg.weight * cost

    def after_step(self, model: nn.Module) -> None:
        pass

    def state_dict(self) -> dict:
        return {} if self.tags is None else {"tags": self.tags}

    def load_state_dict(self, state: dict) -> None:
        self.tags = state.get("tags")


@register_semi_supervised("pseudo_label", PseudoLabelConfig)
def build_pseudo_label(cfg: PseudoLabelConfig) -> SemiSupervised:
    return PseudoLabel(cfg)


@dataclass(frozen=True)
class LabelSmoothingConfig:
    epsilon: float = 0.1  # the part of an unverified clip's target spread over all classes


class UnverifiedLabelSmoothing:
    """Label smoothing for clips whose labels nobody checked (DCASE 2018 task 2, proceedings L4445–4465):
    their clip targets become (1 − ε)·y + ε/C, the one-hot's mass moved in part to the other classes;
    verified clips keep theirs. Needs the train split's `verified` flags (FSDKaggle2018 manually_verified).
    """

    def __init__(self, cfg: LabelSmoothingConfig):
        if not 0.0 <= cfg.epsilon < 1.0:
            raise ValueError(f"label_smoothing.epsilon {cfg.epsilon}: expected a number in [0, 1)")
        self.cfg = cfg

    def bind(self, trainer: "Trainer") -> None:
        if trainer.data.splits["train"].verified is None:
            raise ValueError("semi.label_smoothing needs a verified flag per train clip (the dataset table's "
                             "`verified` column, read from FSDKaggle2018's manually_verified); this dataset has none")

    def targets(self, batch, split, rows):
        unverified = torch.from_numpy(~np.asarray(split.verified)[rows]).to(batch.y.device)
        eps = self.cfg.epsilon * unverified.to(batch.y.dtype)[:, None]
        return Batch(batch.x, (1 - eps) * batch.y + eps / batch.y.shape[1], batch.y_frames)

    def loss(self, trainer, batch, out, step, spe):
        return out[0].new_zeros(())

    def after_step(self, model: nn.Module) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@register_semi_supervised("label_smoothing", LabelSmoothingConfig, tasks=("tagging", "sed", "scene"))
def build_label_smoothing(cfg: LabelSmoothingConfig) -> SemiSupervised:
    return UnverifiedLabelSmoothing(cfg)
