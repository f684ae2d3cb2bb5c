"""Epoch snapshots: a trial's k best epochs (weights and valid outputs), logged as extra ensemble members.

`gated_crnn_attention_dcase2017.txt` §2.4 fuses the outputs of a model's best epochs. Here each kept
epoch becomes a candidate in the ensemble library instead, so the ensemble stage decides by selection
on valid whether (and with which weight) a snapshot helps. Artifacts of epoch e live under
`snapshots/epoch_{e:03d}/` with the same layout as the trial's own (`model/`, `predictions/`), and
`snapshots/index.json` names the epochs currently kept, the best one included (an evicted epoch's files
may remain logged). The best epoch's files are the trial's own `model/` and `predictions/`, so it is not
logged again under `snapshots/`: k kept epochs give k - 1 extra members.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

SNAPSHOT_ROOT = "snapshots"
INDEX_FILE = f"{SNAPSHOT_ROOT}/index.json"


def snapshot_prefix(epoch: int) -> str:
    """Artifact folder of one epoch's snapshot, ending in '/'."""
    return f"{SNAPSHOT_ROOT}/epoch_{epoch:03d}/"


@dataclass
class Snapshot:
    epoch: int
    score: float
    state: dict[str, torch.Tensor]
    valid: tuple[np.ndarray, np.ndarray] | None  # clip and frame outputs on valid; None after a restore
    logged: bool = False


class SnapshotKeeper:
    """The `k` best epochs by valid score (`sign` +1: higher is better, -1: lower); k = 0 keeps none."""

    def __init__(self, k: int, sign: int = 1):
        self.k, self.sign = k, sign
        self.kept: list[Snapshot] = []

    def offer(self, epoch: int, score: float, state: dict[str, torch.Tensor],
              valid: tuple[np.ndarray, np.ndarray] | None) -> bool:
        """Keep this epoch if it is among the k best so far (the worst kept one is evicted); True if kept."""
        if self.k <= 0 or not math.isfinite(score):
            return False
        if len(self.kept) >= self.k:
            worst = min(self.kept, key=lambda s: self.sign * s.score)
            if self.sign * score <= self.sign * worst.score:
                return False
            self.kept.remove(worst)
        self.kept.append(Snapshot(epoch, score, copy.deepcopy(state), valid))
        self.kept.sort(key=lambda s: -self.sign * s.score)
        return True

    @property
    def pending(self) -> list[Snapshot]:
        return [s for s in self.kept if not s.logged]

    @property
    def epochs(self) -> list[int]:
        return [s.epoch for s in self.kept]

    def state_dict(self) -> dict:
        """Tensors only, so a checkpoint loads with `weights_only=True`."""
        return {"epochs": torch.tensor(self.epochs, dtype=torch.long),
                "scores": torch.tensor([s.score for s in self.kept], dtype=torch.float64),
                "states": {str(s.epoch): s.state for s in self.kept}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the kept epochs; their valid outputs are recomputed and all are logged again."""
        self.kept = [Snapshot(int(e), float(sc), state["states"][str(int(e))], None)
                     for e, sc in zip(state["epochs"], state["scores"])]
