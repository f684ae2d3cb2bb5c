"""Log-mel features, computed once per (feature config, file content) and cached on disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from harmonia.audio import load_audio
from harmonia.config import FeatureConfig
from harmonia.progress import progress_bar


def logmel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram [frames, n_mels] float32 of a mono waveform at cfg.sample_rate."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        power=2.0,
    )
    return librosa.power_to_db(mel, ref=1.0, top_db=None).T.astype(np.float32)


def extract(path: str | Path, cfg: FeatureConfig) -> np.ndarray:
    """Features of one audio file (no cache)."""
    return logmel(load_audio(path, cfg.sample_rate), cfg)


def file_digest(path: str | Path) -> str:
    """Content hash of a file: the cache key survives renames and works on any node."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """On-disk cache at `cache_dir/<config hash>/<file hash>.npy`; entries are written atomically."""

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self.dir = Path(cfg.cache_dir) / cfg.key()

    def entry(self, path: str | Path) -> Path:
        return self.dir / f"{file_digest(path)}.npy"

    def load(self, entry: Path) -> np.ndarray | None:
        """The cached array, or None when absent or unreadable (a half-written entry is rebuilt)."""
        if not entry.is_file():
            return None
        try:
            arr = np.load(entry, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            entry.unlink(missing_ok=True)
            return None
        if arr.ndim != 2 or arr.shape[1] != self.cfg.n_mels:
            entry.unlink(missing_ok=True)
            return None
        return arr

    def store(self, entry: Path, arr: np.ndarray) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, entry)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_many(self, paths: Sequence[str | Path], workers: int | None = None,
                 progress: bool = True) -> list[np.ndarray]:
        """Features for every path, computing the missing ones in parallel processes."""
        entries = [self.entry(p) for p in paths]
        out: list[np.ndarray | None] = [self.load(e) for e in entries]
        missing = [i for i, a in enumerate(out) if a is None]
        if missing:
            workers = workers or max(1, min(len(missing), os.cpu_count() or 1))
            with progress_bar(f"features ({len(missing)} new)", len(missing), enabled=progress) as advance:
                if workers == 1:
                    for i in missing:
                        out[i] = extract(paths[i], self.cfg)
                        self.store(entries[i], out[i])
                        advance()
                else:
                    with ProcessPoolExecutor(max_workers=workers) as pool:
                        futures = {i: pool.submit(extract, str(paths[i]), self.cfg) for i in missing}
                        for i, fut in futures.items():
                            out[i] = fut.result()
                            self.store(entries[i], out[i])
                            advance()
        return out  # type: ignore[return-value]


def stack_frames(arrays: Iterable[np.ndarray], frames: int) -> np.ndarray:
    """Crop or pad (with each clip's minimum, i.e. silence) to a fixed number of frames: [N, T, F]."""
    arrays = list(arrays)
    n_mels = arrays[0].shape[1] if arrays else 0
    out = np.empty((len(arrays), frames, n_mels), dtype=np.float32)
    for i, a in enumerate(arrays):
        t = min(frames, a.shape[0])
        out[i, :t] = a[:t]
        out[i, t:] = a.min() if a.size else 0.0
    return out


@dataclass
class Normalizer:
    """Per-mel-bin standardization; statistics come from the train split only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Normalizer":
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return cls(flat.mean(0).astype(np.float32), (flat.std(0) + 1e-5).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))
