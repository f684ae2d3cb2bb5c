"""Cross-validated trials (`train.cv_folds: k >= 2`): k fold models and their out-of-fold predictions.

A trial with k folds pools the clips of train ∪ valid and splits them into k folds (`fold_assignment`:
deterministic by `train.seed`, the same for every trial of a search, stratified by each clip's label
set). Fold model i is a plain `Trainer` that trains on the other folds and early-stops on fold i, so
each clip's out-of-fold (OOF) prediction comes from the one model that never trained on it. The
`CrossValidatedTrainer` advances every fold model one epoch per `run_epoch` and reports the OOF
scores as `valid_<metric>`, so Tune's scheduler and searcher work unchanged (AutoGluon's bagged
models, in harmonia's trial structure).

What a CV trial's "best" means: each fold keeps its own best epoch on its own fold (`best_state` is
the k fold models' best weights, keys `fold_<i>/<param>`), and the logged OOF predictions are those
best-epoch predictions. `best_epoch` is the last epoch at which any fold's best changed, i.e. when the
logged member last changed; `best_valid_score` is the OOF score of that member. Epoch snapshots
(`train.snapshots`) are refused with `cv_folds` (config validation): the folds stop at different
epochs, so "the model of epoch e" is not one member.

Artifacts (`cv_member_files`): `model/fold_<i>/model.safetensors` for each fold and one
`model/config.json` with `"folds": k`; `predictions/oof.parquet` (every train ∪ valid clip, one
column per class and a `fold` column), `predictions/valid.parquet` (the OOF rows of the valid clips,
so every ensemble method works on valid as before), `predictions/test.parquet` (the mean of the k
fold models), and the frame npz files of valid (OOF) and test (mean). Bundles average the fold
models' outputs (`FoldAverage`, `load_member_model`).

Details: the features stay normalized with the statistics of the train originals (as the bundle
recomputes them); precomputed waveform copies (`features.augmented_copies`) exist for train clips
only, so a valid clip in a fold's training set is drawn as its original whenever a copy is picked.
Each fold's FeatureSet holds its own copy of its rows (about k times the features of train ∪ valid),
or, for features memory-mapped above `features.memory_budget_mb`, lazy row views that copy nothing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harmonia.featureset import PAD, FeatureSet, SplitArrays, gather_rows
from harmonia.trainables.training import EpochResult, NonFiniteLossError, Trainer, pick_device, predict_batches

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FOLD_COLUMN = "fold"


def fold_assignment(clip_ids: list[str], y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index in [0, k) of each clip: clips grouped by label set (rows of `y` > 0.5; a scene's
    one-hot label), each group shuffled by `seed` and dealt round-robin, continuing the count from
    group to group, so fold sizes differ by at most one and each label set is spread over the folds.

    Depends only on (clip id, labels) pairs, `k` and `seed`: not on the order of the rows.
    """
    n = len(clip_ids)
    if len(y) != n:
        raise ValueError(f"{n} clip ids but {len(y)} label rows")
    if not 2 <= k <= n:
        raise ValueError(f"cv_folds={k} needs 2 <= k <= {n} (the clips of train ∪ valid)")
    keys = [row.tobytes() for row in (np.asarray(y) > 0.5)]
    groups: dict[bytes, list[int]] = {}
    for i in sorted(range(n), key=lambda i: str(clip_ids[i])):
        groups.setdefault(keys[i], []).append(i)
    rng = np.random.default_rng(seed)
    fold = np.empty(n, np.int64)
    start = 0
    for key in sorted(groups):
        rows = np.asarray(groups[key])[rng.permutation(len(groups[key]))]
        fold[rows] = (start + np.arange(len(rows))) % k
        start = (start + len(rows)) % k
    return fold


def predefined_folds(clip_ids: list[str], fold_of: dict[str, int]) -> np.ndarray:
    """Fold index in [0, k) of each clip from the dataset's predefined folds (`train.cv_folds: predefined`),
    the k distinct fold numbers in increasing order."""
    missing = [c for c in clip_ids if c not in fold_of]
    if missing:
        raise ValueError(f"{len(missing)} clips have no predefined fold, e.g. {missing[0]!r}")
    order = {f: i for i, f in enumerate(sorted({fold_of[c] for c in clip_ids}))}
    return np.array([order[fold_of[c]] for c in clip_ids], np.int64)


def take(split: SplitArrays, rows: np.ndarray) -> SplitArrays:
    """The rows `rows` of a split: copies, or lazy `PickedRows` views of memory-mapped features."""
    rows = np.asarray(rows, np.int64)
    pick = lambda a: gather_rows([a], np.zeros(len(rows), np.int64), rows)  # noqa: E731
    return SplitArrays([split.clip_ids[i] for i in rows], pick(split.x), split.y[rows],
                       None if split.y_frames is None else pick(split.y_frames),
                       None if split.y_seq is None else split.y_seq[rows])


def concat(a: SplitArrays, b: SplitArrays) -> SplitArrays:
    """Rows of `a` then rows of `b` (lazy over memory-mapped features); ordered sequences padded to the longer width."""
    which = np.repeat(np.array([0, 1], np.int64), [len(a.y), len(b.y)])
    index = np.concatenate([np.arange(len(a.y)), np.arange(len(b.y))])
    y_frames = None if a.y_frames is None or b.y_frames is None else gather_rows([a.y_frames, b.y_frames], which, index)
    y_seq = None
    if a.y_seq is not None and b.y_seq is not None:
        width = max(a.y_seq.shape[1], b.y_seq.shape[1])
        pad = lambda s: np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=PAD)  # noqa: E731
        y_seq = np.concatenate([pad(a.y_seq), pad(b.y_seq)])
    return SplitArrays(list(a.clip_ids) + list(b.clip_ids), gather_rows([a.x, b.x], which, index),
                       np.concatenate([a.y, b.y]), y_frames, y_seq)


def fold_feature_sets(data: FeatureSet, fold: np.ndarray, pool: SplitArrays) -> list[FeatureSet]:
    """One FeatureSet per fold i: train = the pooled rows outside fold i, valid = fold i, test as is.
    Waveform copies of a valid clip are its original (copies are computed for train clips only)."""
    pooled_copies = [concat(c, data.splits["valid"]) for c in data.train_copies]
    out = []
    for i in range(int(fold.max()) + 1):
        inside, outside = np.flatnonzero(fold == i), np.flatnonzero(fold != i)
        splits = {"train": take(pool, outside), "valid": take(pool, inside)}
        if "test" in data.splits:
            splits["test"] = data.splits["test"]
        copies = [take(c, outside) for c in pooled_copies]
        out.append(replace(data, splits=splits, train_copies=copies, copy_names=list(data.copy_names)))
    return out


def split_state(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """`fold_<i>/<param>` keys → one state dict per fold, in fold order."""
    folds: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        head, sep, name = key.partition("/")
        if not sep or not head.startswith("fold_"):
            raise ValueError(f"not the state of a cross-validated trial (key {key!r}; expected fold_<i>/<param>)")
        folds.setdefault(int(head[5:]), {})[name] = value
    return [folds[i] for i in sorted(folds)]


class FoldAverage(nn.Module):
    """The k fold models of a CV trial as one model: the mean of their clip and frame outputs."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.folds = nn.ModuleList(models)
        self.time_pool = getattr(models[0], "time_pool", 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x) for m in self.folds]
        return torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)


class CrossValidatedTrainer:
    """k `Trainer`s, one per fold of train ∪ valid, behind the interface `harmonia_trial` uses.

    `data.splits["valid"]` and `"train"` are pooled (`self.pool`, train rows then valid rows) and split
    by `fold_assignment(..., folds, split_seed)`; fold i trains with seed `seed + i`. Exposes `run_epoch`
    (an `EpochResult` whose `valid_*` metrics are OOF scores), `done`, `epoch`, `best_epoch`,
    `best_score`, `best_state`, `best_valid` / `last_valid` (OOF clip and frame outputs over
    `self.pool`), `predict`, `model_with`, `best_model`, `state_dict` / `load_state_dict` (tensors only),
    `params`, `data`, `model` (fold 0's, for its architecture), `sign`, `metric`, `folds`.
    """

    def __init__(self, params: dict, data: FeatureSet, *, folds: int, max_epochs: int, patience: int,
                 metric: str = "mAP", seed: int = 0, split_seed: int = 0, device: torch.device | None = None,
                 task: str = "tagging", fold_of: dict[str, int] | None = None):
        if folds < 2:
            raise ValueError(f"cv_folds={folds}: a cross-validated trial needs at least 2 folds")
        if "valid" not in data.splits:
            raise ValueError("a cross-validated trial pools train and valid: the dataset has no valid split")
        self.data, self.folds, self.task, self.split_seed = data, folds, task, split_seed
        self.pool = concat(data.splits["train"], data.splits["valid"])
        self.n_train = len(data.splits["train"].clip_ids)
        self.fold = (fold_assignment(self.pool.clip_ids, self.pool.y, folds, split_seed) if fold_of is None
                     else predefined_folds(self.pool.clip_ids, fold_of))
        device = device or pick_device()
        self.trainers = [Trainer(params, fs, max_epochs=max_epochs, patience=patience, metric=metric,
                                 seed=seed + i, device=device, task=task)
                         for i, fs in enumerate(fold_feature_sets(data, self.fold, self.pool))]
        first = self.trainers[0]
        self.params, self.strategy, self.sign, self.metric = first.params, first.strategy, first.sign, metric
        self.max_epochs, self.patience, self.device, self.amp = max_epochs, patience, device, first.amp
        self.epoch, self.best_epoch = 0, 0
        self.best_score = -self.sign * math.inf
        self.last_valid: tuple[np.ndarray, np.ndarray] | None = None

    # -- what harmonia_trial reads --------------------------------------------------------------
    @property
    def done(self) -> bool:
        return all(t.done for t in self.trainers)

    @property
    def model(self) -> nn.Module:
        """Fold 0's current model (every fold has the same architecture)."""
        return self.trainers[0].model

    @property
    def best_state(self) -> dict[str, torch.Tensor]:
        """Every fold's best-epoch weights, keys `fold_<i>/<param>` (`split_state` undoes it)."""
        return {f"fold_{i}/{k}": v for i, t in enumerate(self.trainers) for k, v in t.best_state.items()}

    @property
    def fold_rows(self) -> list[np.ndarray]:
        """Rows of `self.pool` in fold i (the order of fold i's valid split)."""
        return [np.flatnonzero(self.fold == i) for i in range(self.folds)]

    @property
    def best_valid(self) -> tuple[np.ndarray, np.ndarray]:
        """OOF clip [N, C] and frame [N, T', C] outputs over `self.pool` of each fold's best epoch
        (recomputed for a fold restored from a checkpoint)."""
        for t in self.trainers:
            if t.best_valid is None:
                t.best_valid = t.predict("valid", model=t.best_model())
        return self._assemble([t.best_valid for t in self.trainers])

    def _assemble(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Per-fold (clip, frames) outputs on each fold's own rows → arrays over all pooled rows."""
        clip = np.zeros((len(self.pool.clip_ids), *parts[0][0].shape[1:]), np.float32)
        frames = np.zeros((len(self.pool.clip_ids), *parts[0][1].shape[1:]), np.float32)
        for rows, (c, f) in zip(self.fold_rows, parts):
            clip[rows], frames[rows] = c, f
        return clip, frames

    def oof_outputs(self, models: list[nn.Module]) -> tuple[np.ndarray, np.ndarray]:
        """OOF outputs over `self.pool` of the given fold models (model i on fold i's rows only)."""
        return self._assemble([t.predict("valid", model=m) for t, m in zip(self.trainers, models)])

    def run_epoch(self) -> EpochResult:
        """One epoch of every fold model that has not stopped; scores are those of the OOF outputs."""
        losses, improved, fold_metrics = [], False, {}
        for i, t in enumerate(self.trainers):
            if t.done:
                continue
            r = t.run_epoch()
            losses.append(r.metrics["train_loss"])
            improved |= r.improved
            fold_metrics[f"fold{i}_valid_{self.metric}"] = r.metrics[f"valid_{self.metric}"]
        self.epoch += 1
        for i, t in enumerate(self.trainers):
            fold_metrics[f"fold{i}_best_epoch"] = float(t.best_epoch)
        self.last_valid = self._assemble([t.last_valid for t in self.trainers])
        metrics = {"train_loss": float(np.mean(losses)) if losses else float("nan"),
                   **self.strategy.evaluate(self.pool, *self.last_valid, "valid", hop_seconds=self.data.hop_seconds)}
        if not math.isfinite(metrics["valid_loss"]):
            raise NonFiniteLossError(f"out-of-fold valid loss became {metrics['valid_loss']} at epoch {self.epoch}")
        if improved:  # some fold's best changed: the logged member changes
            self.best_epoch = self.epoch
            best = self.strategy.evaluate(self.pool, *self.best_valid, "valid", hop_seconds=self.data.hop_seconds)
            self.best_score = best[f"valid_{self.metric}"]
        metrics.update(fold_metrics, best_valid_score=self.best_score, best_epoch=float(self.best_epoch))
        return EpochResult(self.epoch, metrics, improved, self.done)

    def predict(self, split: str, batch_size: int = 64, model: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Clip and frame outputs on `self.data.splits[split]` of `model`, by default the mean of the
        fold models' current weights (`FoldAverage`)."""
        model = model or FoldAverage([t.model for t in self.trainers])
        return predict_batches(model, self.data.splits[split].x, self.device, self.amp, batch_size)

    def fold_models(self, state: dict[str, torch.Tensor]) -> list[nn.Module]:
        parts = split_state(state)
        if len(parts) != self.folds:
            raise ValueError(f"state holds {len(parts)} folds, this trial has {self.folds}")
        return [t.model_with(s) for t, s in zip(self.trainers, parts)]

    def model_with(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The fold models with the given (`fold_<i>/...`) weights as one averaging model, in eval mode."""
        return FoldAverage(self.fold_models(state)).eval()

    def best_model(self) -> nn.Module:
        return self.model_with(self.best_state)

    def state_dict(self) -> dict:
        """Tensors only (lists and dicts of them), so a checkpoint loads with `weights_only=True`."""
        return {"folds": [t.state_dict() for t in self.trainers],
                "fold_of_clip": torch.from_numpy(self.fold.copy()),
                "counters": torch.tensor([self.epoch, self.best_epoch], dtype=torch.long),
                "best_score": torch.tensor(self.best_score, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        if not np.array_equal(state["fold_of_clip"].numpy(), self.fold):
            raise ValueError("the checkpoint's fold split differs from this trial's (other clips, labels or seed)")
        for t, s in zip(self.trainers, state["folds"], strict=True):
            t.load_state_dict(s)
            if t.done:  # a stopped fold is not run again, but its outputs still make up the OOF ones
                t.last_valid = t.predict("valid")
        self.epoch, self.best_epoch = (int(v) for v in state["counters"])
        self.best_score = float(state["best_score"])


def trainer_factory(cv_folds: int, split_seed: int, fold_of: dict[str, int] | None = None):
    """What `harmonia_trial` constructs: `Trainer`, or `CrossValidatedTrainer` with k >= 2 folds split
    by `split_seed` (train.seed: the same folds for every trial of a search), or with the dataset's
    predefined folds `fold_of` (clip id -> fold) when given."""
    if fold_of:
        return functools.partial(CrossValidatedTrainer, folds=len(set(fold_of.values())), split_seed=split_seed,
                                 fold_of=fold_of)
    if cv_folds >= 2:
        return functools.partial(CrossValidatedTrainer, folds=cv_folds, split_seed=split_seed)
    return Trainer


def member_weight_files(config: dict) -> list[str]:
    """Weight files of a member's `model/` folder, from its config.json: one, or one per fold."""
    k = int(config.get("folds") or 0)
    return [f"fold_{i}/{WEIGHTS_FILE}" for i in range(k)] if k >= 2 else [WEIGHTS_FILE]


def load_member_model(folder: str | Path, config: dict, n_features: int) -> nn.Module:
    """A member's model from its folder (config.json + weights), in eval mode; a cross-validated
    member's k fold models come back as one `FoldAverage`."""
    from safetensors.torch import load_file

    from harmonia.trainables.architectures import build_model

    models = []
    for f in member_weight_files(config):
        model = build_model(config["params"]["arch"], config["params"], n_features, len(config["classes"]))
        model.load_state_dict(load_file(str(Path(folder) / f)))
        models.append(model.eval())
    return models[0] if len(models) == 1 else FoldAverage(models).eval()


def cv_member_files(trainer: CrossValidatedTrainer, state: dict[str, torch.Tensor], epoch: int,
                    valid: tuple[np.ndarray, np.ndarray] | None, prefix: str = "") -> dict:
    """The artifacts of a cross-validated trial (see the module docstring) for fold weights `state`;
    `valid` are the OOF outputs over `trainer.pool`, recomputed when not given (after a restore)."""
    from harmonia import tracking
    from harmonia.trainables.artifacts import member_config, parquet_writer, prediction_files, weights_bytes

    data, pool = trainer.data, trainer.pool
    models = trainer.fold_models(state)
    oof_probs, oof_frames = valid if valid is not None else trainer.oof_outputs(models)
    hop = data.hop_seconds * getattr(trainer.model, "time_pool", 1)
    config = {**member_config(trainer.params, data, epoch), "folds": trainer.folds,
              "fold_best_epochs": [t.best_epoch for t in trainer.trainers], "cv_seed": trainer.split_seed}
    files = {f"{prefix}model/fold_{i}/{WEIGHTS_FILE}": weights_bytes(s) for i, s in enumerate(split_state(state))}
    files[f"{prefix}model/{CONFIG_FILE}"] = tracking.json_bytes(config)
    oof = tracking.predictions_frame(pool.clip_ids, oof_probs, data.classes)
    oof[FOLD_COLUMN] = trainer.fold.astype(np.int32)
    files[f"{prefix}predictions/oof.parquet"] = parquet_writer(oof)
    valid_rows = slice(trainer.n_train, len(pool.clip_ids))
    files.update(prediction_files(prefix, "valid", pool.clip_ids[valid_rows], oof_probs[valid_rows],
                                  oof_frames[valid_rows], data.classes, hop))
    if "test" in data.splits:
        test_probs, test_frames = trainer.predict("test", model=FoldAverage(models).eval())
        files.update(prediction_files(prefix, "test", data.splits["test"].clip_ids, test_probs, test_frames,
                                      data.classes, hop))
    return files
