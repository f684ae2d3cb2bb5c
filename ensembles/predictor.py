"""Run an exported bundle on audio files: features per member, weighted combination, thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from harmonia.config import FeatureConfig
from harmonia.ensembles.bundle import Bundle, read_bundle
from harmonia.ensembles.methods import FittedEnsemble
from harmonia.features import Normalizer, extract
from harmonia.trainables.architectures import build_model


@dataclass
class Member:
    index: int
    model: torch.nn.Module
    normalizer: Normalizer


class EnsemblePredictor:
    """Loads a bundle (validated and hash-checked) and scores audio files; nothing is unpickled."""

    def __init__(self, bundle: Bundle, members: list[Member]):
        self.bundle, self.members = bundle, members
        self.classes = bundle.classes
        self.feature = FeatureConfig(**bundle.feature)
        self.fitted = FittedEnsemble.from_dict(bundle.fitted)
        self.thresholds = np.asarray(bundle.thresholds, np.float32)

    @classmethod
    def load(cls, path: str | Path) -> "EnsemblePredictor":
        path = Path(path)
        bundle = read_bundle(path)
        members = []
        for m in bundle.members:
            cfg = json.loads((path / m.path / "config.json").read_text())
            model = build_model(cfg["params"]["arch"], cfg["params"], cfg["feature"]["n_mels"], len(cfg["classes"]))
            model.load_state_dict(load_file(str(path / m.path / "model.safetensors")))
            members.append(Member(m.index, model.eval(), Normalizer.from_dict(cfg["normalization"])))
        return cls(bundle, members)

    @torch.no_grad()
    def member_scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """[library_size, N, C] clip scores; library members outside the bundle (weight 0) stay zero."""
        out = np.zeros((self.bundle.library_size, len(features), len(self.classes)), np.float32)
        for m in self.members:
            for j, f in enumerate(features):
                clip, _ = m.model(torch.from_numpy(m.normalizer(f))[None])
                out[m.index, j] = clip[0].numpy()
        return out

    def predict_features(self, features: Sequence[np.ndarray]) -> np.ndarray:
        return self.fitted.predict(self.member_scores(features)).astype(np.float32)

    def predict_files(self, paths: Sequence[str | Path]) -> pd.DataFrame:
        """`filename`, one score column per class, and `event_labels` (tags above each class threshold)."""
        feats = [extract(p, self.feature) for p in paths]
        scores = self.predict_features(feats)
        df = pd.DataFrame(scores, columns=self.classes)
        df.insert(0, "filename", [str(p) for p in paths])
        df["event_labels"] = [",".join(c for c, s, t in zip(self.classes, row, self.thresholds) if s >= t)
                              for row in scores]
        return df
