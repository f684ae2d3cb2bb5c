"""The training loop a trial runs: plain PyTorch over a FeatureSet, one `run_epoch` at a time."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harmonia.featureset import FeatureSet
from harmonia.metrics import get_metric
from harmonia.trainables.architectures import build_model
from harmonia.trainables.augmentations import Batch, balanced_sampling_weights, build_augmentations
from harmonia.trainables.schedules import schedule_from_params, steps_per_epoch
from harmonia.trainables.semi_supervised import build_semi_supervised, semi_supervised_on
from harmonia.trainables.tasks import get_strategy, pool_frame_targets, tag_scores  # noqa: F401  (re-export)

class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the trial fails with this reason."""


@dataclass
class EpochResult:
    epoch: int
    metrics: dict[str, float]
    improved: bool
    done: bool


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rows_tensor(x, rows) -> torch.Tensor:
    """Rows of an in-memory, memory-mapped (read-only, copied) or `PickedRows` array as a tensor:
    only those rows are read, so features larger than memory are read batch by batch."""
    part = x[rows]
    return torch.from_numpy(part if part.flags.writeable else np.array(part))


@torch.no_grad()
def predict_batches(model: nn.Module, x: np.ndarray, device: torch.device, amp: bool,
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Clip [N, C] and frame [N, T', C] outputs of `model` in eval mode over features [N, T, F], by batches."""
    model.eval()
    clips, frames = [], []
    for start in range(0, len(x), batch_size):
        with torch.autocast(device.type, enabled=amp):
            c, f = model(rows_tensor(x, slice(start, start + batch_size)).to(device))
        clips.append(c.float().cpu())
        frames.append(f.float().cpu())
    return torch.cat(clips).numpy(), torch.cat(frames).numpy()


def evaluate(y: np.ndarray, probs: np.ndarray, prefix: str) -> dict[str, float]:
    """Clip-level tag scores of one split: mAP, macro ROC AUC, micro F1 at 0.5, BCE loss."""
    return tag_scores(y, probs, prefix)


class Trainer:
    """Adam on the task's loss, early stopping on a valid metric; state round-trips for checkpoints.

    `params` are a trial's flat params: `arch`, `lr`, `batch_size`, `<arch>.<field>`, `aug.<name>`, ...
    The task's strategy (`harmonia.trainables.tasks.TASK_STRATEGIES`) gives the loss (BCE for tagging,
    + frame BCE for sed, CTC for sequence, cross-entropy for scene) and the valid scores. `self.params`
    records the task with the params, so a saved model is rebuilt with the same outputs.
    """

    def __init__(self, params: dict, data: FeatureSet, *, max_epochs: int, patience: int,
                 metric: str = "mAP", seed: int = 0, device: torch.device | None = None, task: str = "tagging"):
        self.strategy = get_strategy(task)
        if metric not in self.strategy.metrics:
            raise ValueError(f"metric {metric!r} is not scored for task {task!r}; valid: {', '.join(self.strategy.metrics)}")
        self.strategy.check(data)
        self.params, self.data, self.task = {**params, "task": task}, data, task
        self.max_epochs, self.patience, self.metric = max_epochs, patience, metric
        self.sign = get_metric(metric).sign()  # +1: higher is better; -1 (log_loss): lower is better
        self.device = device or pick_device()
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.model = build_model(params["arch"], self.params, data.n_features, len(data.classes)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(params.get("lr", 1e-3)),
                                          weight_decay=float(params.get("weight_decay", 0.0)))
        self.base_lr, self.schedule = float(params.get("lr", 1e-3)), schedule_from_params(params)
        self.augmentations = build_augmentations({**params, **self.strategy.augmentation_params})
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch = 0
        self.best_score = -self.sign * math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = copy.deepcopy(self.model.state_dict())
        self.bad_epochs = 0
        self.last_valid: tuple[np.ndarray, np.ndarray] | None = None
        self.best_valid: tuple[np.ndarray, np.ndarray] | None = None
        self.semi = build_semi_supervised(params, task)  # after the model: a mean teacher copies it
        for method in self.semi:
            method.bind(self)

    @property
    def done(self) -> bool:
        return self.epoch >= self.max_epochs or self.bad_epochs >= self.patience

    def train_epoch(self) -> float:
        split = self.data.splits["train"]
        if self.params.get("aug.waveform_copies", False) and self.data.train_copies:
            # each clip drawn uniformly from {original, its precomputed waveform copies}: FeatureSet.epoch_train
            pick = torch.randint(len(self.data.train_copies) + 1, (len(split.y),), generator=self.gen)
            split = self.data.epoch_train(pick.numpy())
        n, bs = len(split.y), int(self.params.get("batch_size", 32))
        if self.params.get("balanced_batches", False):
            weights = balanced_sampling_weights(split.y)
            order = torch.multinomial(weights, n, replacement=True, generator=self.gen)
        else:
            order = torch.randperm(n, generator=self.gen)
        self.model.train()
        total, count = 0.0, 0
        spe = steps_per_epoch(n, bs)
        for step, start in enumerate(range(0, n, bs)):
            idx = order[start:start + bs]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            self.set_lr(self.epoch * spe + step, spe)
            rows = idx.numpy()  # each batch reads its rows only (features may be memory-mapped)
            yf = rows_tensor(split.y_frames, rows).float() if self.strategy.frame_targets else None
            batch = Batch(rows_tensor(split.x, rows), torch.from_numpy(split.y[rows]), yf)
            for method in self.semi:
                batch = method.targets(batch, split, rows)
            for aug in self.augmentations:
                batch = aug(batch, self.gen)
            batch = Batch(batch.x.to(self.device), batch.y.to(self.device),
                          None if batch.y_frames is None else batch.y_frames.to(self.device))
            with torch.autocast(self.device.type, enabled=self.amp):
                out = self.strategy.forward(self.model, batch.x)
            if not torch.isfinite(out[0]).all():
                raise NonFiniteLossError(f"model outputs became NaN/inf at epoch {self.epoch + 1} (loss undefined)")
            loss = self.strategy.loss(out, batch, split, rows)
            for method in self.semi:
                loss = loss + method.loss(self, batch, out, self.epoch * spe + step, spe)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"training loss became {loss.item()} at epoch {self.epoch + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for method in self.semi:
                method.after_step(self.model)
            total += loss.item() * len(idx)
            count += len(idx)
        return total / max(count, 1)

    def unlabeled_batch(self, n: int) -> tuple[np.ndarray, torch.Tensor] | None:
        """Rows and features (on the device) of `n` unlabelled clips drawn with the trial's generator; None without any."""
        u = self.data.unlabeled
        if u is None or len(u.clip_ids) < 2:
            return None
        rows = torch.randint(len(u.clip_ids), (n,), generator=self.gen).numpy()
        return rows, rows_tensor(u.x, rows).to(self.device)

    def set_lr(self, step: int, spe: int) -> None:
        """The schedule's rate for optimizer step `step` of the trial (`spe` steps an epoch)."""
        lr = self.base_lr * self.schedule.factor(step, spe, self.max_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def predict(self, split: str, batch_size: int = 64, model: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Clip [N, C] and frame [N, T', C] probabilities of a split with the current (or given) weights."""
        return self.predict_features(self.data.splits[split].x, model, batch_size)

    def predict_features(self, x, model: nn.Module | None = None, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Clip and frame probabilities of features [N, T, F] (e.g. the unlabelled clips')."""
        return predict_batches(model or self.model, x, self.device, self.amp, batch_size)

    def run_epoch(self) -> EpochResult:
        train_loss = self.train_epoch()
        self.epoch += 1
        probs, frames = self.predict("valid")
        self.last_valid = (probs, frames)
        metrics = {"train_loss": train_loss, **self.strategy.evaluate(self.data.splits["valid"], probs, frames, "valid",
                                                                    hop_seconds=self.data.hop_seconds)}
        if not math.isfinite(metrics["valid_loss"]):
            raise NonFiniteLossError(f"valid loss became {metrics['valid_loss']} at epoch {self.epoch}")
        score = metrics[f"valid_{self.metric}"]
        improved = self.sign * (score - self.best_score) > 0
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_valid = self.last_valid
        else:
            self.bad_epochs += 1
        metrics.update(best_valid_score=self.best_score, best_epoch=float(self.best_epoch))
        return EpochResult(self.epoch, metrics, improved, self.done)

    def best_model(self) -> nn.Module:
        """A copy of the model with the weights of the best valid epoch."""
        return self.model_with(self.best_state)

    def model_with(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """A copy of the model with the given weights (the best epoch's, a snapshot's), in eval mode."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(state)
        return model.eval()

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state,
            "rng": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "counters": torch.tensor([self.epoch, self.best_epoch, self.bad_epochs], dtype=torch.long),
            "best_score": torch.tensor(self.best_score, dtype=torch.float64),
            **({"semi": {name: m.state_dict() for name, m in zip(semi_supervised_on(self.params), self.semi)}}
               if self.semi else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_state = state["best_state"]
        self.gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.best_epoch, self.bad_epochs = (int(v) for v in state["counters"])
        self.best_score = float(state["best_score"])
        for name, method in zip(semi_supervised_on(self.params), self.semi):
            method.load_state_dict(state["semi"][name])
