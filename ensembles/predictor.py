"""Run an exported bundle on audio files: features per member, weighted combination, thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pandas as pd
import torch

from harmonia.data.audio import AudioError, load_audio, load_audio_bytes
from harmonia.config import FeatureConfig
from harmonia.ensembles.bundle import Bundle, read_bundle
from harmonia.ensembles.methods import FittedEnsemble
from harmonia.features import Normalizer, features_of
from harmonia.trainables.cross_validation import load_member_model

Features = Union[np.ndarray, dict[str, np.ndarray]]
"""One file's features: a mapping feature key (`FeatureConfig.key()`) → [frames, width] array with one
entry per distinct member feature config (`EnsemblePredictor.features`), or a bare array when every
member uses the same config."""

AudioSource = Union[str, Path, bytes]
"""An audio file's path on this machine, or the bytes of an audio file (a request to a served model)."""


@dataclass
class Member:
    index: int
    weight: float
    model: torch.nn.Module
    normalizer: Normalizer
    feature_key: str = ""  # key of the member's FeatureConfig in `EnsemblePredictor.feature_configs`


class EnsemblePredictor:
    """Loads a bundle (validated and hash-checked) and scores audio files; nothing is unpickled.

    Members may use different feature kinds (a search that samples `features.kind`): each member's
    features come from its own `config.json` feature config, and each distinct config is computed
    once per file (`features`), from audio read once per sample rate.
    """

    def __init__(self, bundle: Bundle, members: list[Member], feature_configs: dict[str, FeatureConfig] | None = None):
        self.bundle, self.members = bundle, members
        self.classes = bundle.classes
        self.feature = FeatureConfig(**bundle.feature)  # the first member's (what one-kind callers pass)
        self.feature_configs = feature_configs or {self.feature.key(): self.feature}
        for m in members:
            m.feature_key = m.feature_key or self.feature.key()
        self.fitted = FittedEnsemble.from_dict(bundle.fitted)
        self.thresholds = np.asarray(bundle.thresholds, np.float32)

    @classmethod
    def load(cls, path: str | Path) -> "EnsemblePredictor":
        path = Path(path)
        bundle = read_bundle(path)
        members, configs = [], {}
        for m in bundle.members:
            cfg = json.loads((path / m.path / "config.json").read_text())
            feature = FeatureConfig(**cfg["feature"])  # the kind this member was trained on
            configs.setdefault(feature.key(), feature)
            # one model, or a cross-validated member's k fold models averaged (trainables/cross_validation.py)
            model = load_member_model(path / m.path, cfg, feature.n_features)
            members.append(Member(m.index, m.weight, model.eval(), Normalizer.from_dict(cfg["normalization"]),
                                  feature.key()))
        return cls(bundle, members, configs)

    def features(self, path: AudioSource, name: str = "audio bytes") -> dict[str, np.ndarray]:
        """Features of one file (or the bytes of one, which errors call `name`) for every distinct member
        feature config (each computed once)."""
        audio: dict[int, np.ndarray] = {}
        out = {}
        for key, cfg in self.feature_configs.items():
            if cfg.sample_rate not in audio:
                audio[cfg.sample_rate] = load_audio_bytes(bytes(path), cfg.sample_rate, name) \
                    if isinstance(path, (bytes, bytearray)) else load_audio(path, cfg.sample_rate)
            out[key] = features_of(audio[cfg.sample_rate], cfg)
        return out

    def _input(self, m: Member, f: Features) -> np.ndarray:
        """Member `m`'s features from one file's `f`."""
        if isinstance(f, dict):
            return f[m.feature_key]
        if len(self.feature_configs) > 1:
            raise ValueError("the bundle's members use several feature configs: pass the mapping that "
                             "`features(path)` returns, not one array")
        return f

    @torch.no_grad()
    def member_scores(self, features: Sequence[Features]) -> np.ndarray:
        """[library_size, N, C] clip scores; library members outside the bundle (weight 0) stay zero."""
        out = np.zeros((self.bundle.library_size, len(features), len(self.classes)), np.float32)
        for m in self.members:
            for j, f in enumerate(features):
                clip, _ = m.model(torch.from_numpy(m.normalizer(self._input(m, f)))[None])
                out[m.index, j] = clip[0].numpy()
        return out

    def predict_features(self, features: Sequence[Features]) -> np.ndarray:
        return self.fitted.predict(self.member_scores(features)).astype(np.float32)

    def predict_files(self, paths: Sequence[str | Path]) -> pd.DataFrame:
        """`filename`, one score column per class, and `event_labels` (tags above each class threshold)."""
        feats = [self.features(p) for p in paths]
        return self._rows(paths, feats)

    def predict_readable(self, paths: Sequence[str | Path]) -> tuple[pd.DataFrame, dict[str, str]]:
        """`predict_files` of the files that can be read, and file → reason for each one that cannot."""
        good, feats, bad = [], [], {}
        for p in paths:
            try:
                feats.append(self.features(p))
                good.append(p)
            except AudioError as err:
                bad[str(p)] = err.reason
        return self._rows(good, feats), bad

    def predict_sources(self, sources: Sequence[AudioSource],
                        names: Sequence[str]) -> tuple[pd.DataFrame, dict[int, str]]:
        """`predict_readable` of paths or audio bytes, `filename` = `names[i]`; unreadable: index → reason."""
        good, feats, bad = [], [], {}
        for i, (src, name) in enumerate(zip(sources, names)):
            try:
                feats.append(self.features(src, name))
                good.append(name)
            except AudioError as err:
                bad[i] = err.reason
        return self._rows(good, feats), bad

    def _rows(self, paths: Sequence[str | Path], feats: Sequence[Features]) -> pd.DataFrame:
        scores = self.predict_features(feats) if len(feats) else np.zeros((0, len(self.classes)), np.float32)
        df = pd.DataFrame(scores, columns=self.classes)
        df.insert(0, "filename", [str(p) for p in paths])
        df["event_labels"] = [",".join(c for c, s, t in zip(self.classes, row, self.thresholds) if s >= t)
                              for row in scores]
        return df

    @torch.no_grad()
    def frame_scores(self, features: Features) -> np.ndarray:
        """[T, C] frame probabilities of one file at the SED hop: members weighted as in the ensemble."""
        from harmonia.ensembles.sed import to_base_rate

        total, out = 0.0, None
        for m in self.members:
            x = self._input(m, features)
            _, frames = m.model(torch.from_numpy(m.normalizer(x))[None])
            hop = self.feature_configs[m.feature_key].hop_seconds * max(1, x.shape[0] // max(1, frames.shape[1]))
            up = to_base_rate(frames.numpy(), hop, self.bundle.sed["hop_seconds"], x.shape[0])[0]
            out = up * m.weight if out is None else out + up * m.weight
            total += m.weight
        return out / total

    def predict_events(self, paths: Sequence[str | Path]) -> pd.DataFrame:
        """DCASE event list `filename onset offset event_label` with the thresholds and median filters
        fitted on valid; needs a bundle exported from a SED ensemble."""
        from harmonia.ensembles.sed import SedDecisions
        from harmonia.metrics import decode_events

        if not self.bundle.sed:
            raise ValueError("this bundle has no SED decisions (its ensemble was built from weak labels only)")
        d = SedDecisions.from_dict(self.bundle.sed)
        rows = []
        for p in paths:
            probs = self.frame_scores(self.features(p))
            for on, off, lab in decode_events(probs, d.hop_seconds, self.classes, d.thresholds, d.median_frames):
                rows.append({"filename": str(p), "onset": round(on, 3), "offset": round(off, 3), "event_label": lab})
        return pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label"])
