"""Features (log-mel, MFCC, NNF log-mel) and waveform-augmented copies, computed once per
(feature config, file content, copy) and cached on disk."""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Sequence

import numpy as np

from harmonia.cache_entry import entry_shape, read_entry, report_rebuilt, write_entry
from harmonia.data.audio import load_audio
from harmonia.config import AugmentedCopiesConfig, FeatureConfig
from harmonia.progress import progress_bar

if TYPE_CHECKING:
    import torch

FeatureFn = Callable[[np.ndarray, FeatureConfig], np.ndarray]

FEATURE_KINDS: dict[str, FeatureFn] = {}
"""`FeatureConfig.kind` → `fn(waveform, cfg) -> [frames, cfg.n_features] float32`."""


def register_feature_kind(name: str) -> Callable[[FeatureFn], FeatureFn]:
    """Register a feature kind; `name` must also be one of `FeatureConfig.kind`'s literals, and a kind
    with parameters of its own lists them in `config.FEATURE_KIND_FIELDS` (and its width in
    `config.FEATURE_WIDTH_FIELD`)."""

    def deco(fn: FeatureFn) -> FeatureFn:
        FEATURE_KINDS[name] = fn
        return fn

    return deco


@register_feature_kind("logmel")
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


@register_feature_kind("mfcc")
def mfcc(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """MFCC [frames, n_mfcc] float32: DCT-II (orthonormal) of the log-mel in dB (`logmel`), as
    `librosa.feature.mfcc(S=log-mel dB)`; the log-mel + MFCC pair of gated_crnn_attention_dcase2017.txt."""
    import librosa

    c = librosa.feature.mfcc(S=logmel(y, cfg).T, n_mfcc=cfg.n_mfcc)
    return np.ascontiguousarray(c.T, dtype=np.float32)


def nn_filter(x: "torch.Tensor", k: int, metric: Literal["cosine", "euclidean"] = "cosine",
              block: int = 2048) -> "torch.Tensor":
    """Nearest-neighbour filter: each frame becomes the element-wise median of its k most similar frames.

    x [B, T, F] → [B, T, F] (also [T, F] → [T, F]). Similarity between frames is cosine (REPET-SIM
    style, the default) or negative euclidean distance; the frame itself is one of its k neighbours
    (its similarity to itself is maximal), so a frame that occurs k or more times in a clip is
    returned unchanged. For even k the median is the mean of the two middle values (as numpy's).
    k is capped at T. Vectorized: a [B, rows, T] similarity block (rows ≤ `block`, so long files
    need no T×T matrix), top-k, gather, sort.

    Steps 1–3 of dcase2018_workshop_proceedings.txt L2691–2716 (§2.2). The paper filters mel
    energies before the log and reports euclidean better than cosine with k = 5 (L2717–2721); the
    MI-CNN applies it to its normalized log-mel input, the `nnf_logmel` feature to the log-mel in dB.
    """
    import torch

    if k < 1:
        raise ValueError(f"nn_filter: k must be ≥ 1, got {k}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"nn_filter: metric must be 'cosine' or 'euclidean', got {metric!r}")
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    b, t, _ = x.shape
    k = min(k, t)
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8) if metric == "cosine" else x
    batch = torch.arange(b, device=x.device)[:, None, None]
    outs = []
    for start in range(0, t, block):
        q = xn[:, start:start + block]
        sim = q @ xn.transpose(1, 2) if metric == "cosine" else -torch.cdist(q, xn)  # [B, rows, T]
        idx = sim.topk(k, dim=-1).indices  # [B, rows, k]
        s = x[batch, idx].sort(dim=2).values  # [B, rows, k, F]
        outs.append(s[:, :, k // 2] if k % 2 else 0.5 * (s[:, :, k // 2 - 1] + s[:, :, k // 2]))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out.squeeze(0) if squeeze else out


def nn_filter_np(x: np.ndarray, k: int, metric: Literal["cosine", "euclidean"] = "cosine") -> np.ndarray:
    """`nn_filter` on a numpy array [T, F] or [B, T, F]; float32 out."""
    import torch

    return nn_filter(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), k, metric).numpy()


@register_feature_kind("nnf_logmel")
def nnf_logmel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel [frames, n_mels] with every frame replaced by the median of its `nnf_k` most
    cosine-similar frames (REPET-SIM nearest-neighbour filter, `nn_filter`)."""
    return nn_filter_np(logmel(y, cfg), cfg.nnf_k)


WaveFn = Callable[[np.ndarray, int, float], np.ndarray]

WAVEFORM_AUGMENTATIONS: dict[str, WaveFn] = {}
"""Waveform augmentation name → `fn(y, sample_rate, value) -> y'`, for the precomputed copies."""


def register_waveform_augmentation(name: str) -> Callable[[WaveFn], WaveFn]:
    def deco(fn: WaveFn) -> WaveFn:
        WAVEFORM_AUGMENTATIONS[name] = fn
        return fn

    return deco


@register_waveform_augmentation("pitch_shift")
def pitch_shift(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Every frequency × 2^(semitones/12), same duration (librosa: phase vocoder + resampling)."""
    import librosa

    return librosa.effects.pitch_shift(y, sr=sr, n_steps=semitones).astype(np.float32)


@register_waveform_augmentation("time_stretch")
def time_stretch(y: np.ndarray, sr: int, rate: float) -> np.ndarray:
    """Duration / rate, same pitch (librosa phase vocoder); rate > 1 is faster."""
    import librosa

    return librosa.effects.time_stretch(y, rate=rate).astype(np.float32)


@dataclass(frozen=True)
class WaveCopy:
    """One precomputed waveform-augmented copy of every train clip: `augmentation(y, sr, value)`."""

    augmentation: str
    value: float

    @property
    def name(self) -> str:
        """Part of the cache file name, e.g. `pitch_shift+2`, `time_stretch0.9`."""
        return f"{self.augmentation}{self.value:+g}" if self.augmentation == "pitch_shift" \
            else f"{self.augmentation}{self.value:g}"

    @property
    def time_scale(self) -> float:
        """Factor on event times and duration in the copy (1 / rate for a time stretch)."""
        return 1.0 / self.value if self.augmentation == "time_stretch" else 1.0

    def apply(self, y: np.ndarray, sr: int) -> np.ndarray:
        return WAVEFORM_AUGMENTATIONS[self.augmentation](y, sr, self.value)


def wave_copies(cfg: AugmentedCopiesConfig) -> list[WaveCopy]:
    """The copies a config asks for: one per semitone value, then one per stretch rate."""
    return [WaveCopy("pitch_shift", float(s)) for s in cfg.pitch_shift_semitones] + \
        [WaveCopy("time_stretch", float(r)) for r in cfg.time_stretch_rates]


def features_of(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features of a waveform at cfg.sample_rate, dispatched on `cfg.kind` through FEATURE_KINDS."""
    try:
        fn = FEATURE_KINDS[cfg.kind]
    except KeyError:
        raise ValueError(f"unknown feature kind {cfg.kind!r}; registered: {', '.join(sorted(FEATURE_KINDS))}") from None
    return fn(y, cfg)


def extract(path: str | Path, cfg: FeatureConfig, copy: WaveCopy | None = None) -> np.ndarray:
    """Features of one audio file, or of one waveform-augmented copy of it (no cache)."""
    y = load_audio(path, cfg.sample_rate)
    return features_of(y if copy is None else copy.apply(y, cfg.sample_rate), cfg)


def _extract_variants(path: str, cfg: FeatureConfig, variants: tuple[WaveCopy | None, ...]) -> list[np.ndarray]:
    """Features of several variants of one file (None = the original), reading the audio once."""
    y = load_audio(path, cfg.sample_rate)
    return [features_of(y if v is None else v.apply(y, cfg.sample_rate), cfg) for v in variants]


def _one_thread_per_worker() -> None:
    """Process-pool initializer: one BLAS/OpenMP/torch thread per worker process. With the default
    (a thread per core in every worker) the processes oversubscribe the cores: precomputing the
    copies of benchmarks/waveform_augmentation.py took 3.7× longer on 2 cores."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # libraries this worker loads later
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # libraries already loaded (inherited through fork)
    except ImportError:  # pragma: no cover (a dependency of scikit-learn)
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def file_digest(path: str | Path) -> str:
    """Content hash of a file: the cache key survives renames and works on any node."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """On-disk cache at `cache_dir/<config hash>/<file hash>.npy`, the augmented copies next to it as
    `<file hash>.<copy name>.npy`; entries are written atomically with a checksum (`harmonia.cache_entry`);
    unreadable, altered and unchecked ones are rebuilt, the last two reported on the console."""

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self.dir = Path(cfg.cache_dir) / cfg.key()
        self.sources: dict[Path, tuple[str, WaveCopy | None]] = {}  # entry → (audio file, variant) it holds

    def entry(self, path: str | Path, copy: WaveCopy | None = None, digest: str | None = None) -> Path:
        digest = digest or file_digest(path)
        return self.dir / (f"{digest}.npy" if copy is None else f"{digest}.{copy.name}.npy")

    def load(self, entry: Path) -> np.ndarray | None:
        """The cached array whose checksum matches, or None when absent or rejected (then removed)."""
        return self._probe(entry, read_entry)[0]

    def store(self, entry: Path, arr: np.ndarray) -> None:
        write_entry(entry, arr)

    def _probe(self, entry: Path, read) -> tuple:
        """(value, problem) of `read(entry)`; an entry with a problem is removed so that it is rebuilt."""
        if not entry.is_file():
            return None, None
        value, problem = read(entry, self.cfg.n_features)
        if problem is not None:
            entry.unlink(missing_ok=True)
        return value, problem

    def reread(self, entry: Path) -> np.ndarray:
        """The array of an entry filled by `fill`, checked again as it is read; one that fails (altered
        since) is rebuilt from its audio file and reported."""
        arr, problem = self._probe(entry, read_entry)
        if arr is not None:
            return arr
        path, variant = self.sources[entry]
        report_rebuilt([(entry, path, problem or "unreadable")])
        arr = _extract_variants(path, self.cfg, (variant,))[0]
        self.store(entry, arr)
        return arr

    def get_many(self, paths: Sequence[str | Path], workers: int | None = None,
                 progress: bool = True) -> list[np.ndarray]:
        """Features for every path, computing the missing ones in parallel processes."""
        return [row[0] for row in self._get(paths, (None,), workers, progress, "features")[1]]

    def get_copies(self, paths: Sequence[str | Path], copies: Sequence[WaveCopy], workers: int | None = None,
                   progress: bool = True) -> list[list[np.ndarray]]:
        """`out[j][i]`: features of copy j of path i; missing ones computed in parallel processes
        (one task per file: its audio is read once for all of its missing copies)."""
        rows = self._get(paths, tuple(copies), workers, progress, "augmented copies")[1]
        return [[row[j] for row in rows] for j in range(len(copies))]

    def fill(self, paths: Sequence[str | Path], variants: Sequence[WaveCopy | None] = (None,),
             workers: int | None = None, progress: bool = True) -> tuple[list[list[Path]], list[list[tuple]]]:
        """Entries `[i][j]` (path i, variant j; None = the original) and their array shapes, computing
        the missing ones; reads only .npy headers and keeps no arrays (datasets larger than memory)."""
        return self._get(paths, tuple(variants), workers, progress, "features", keep=False)

    def shape_of(self, entry: Path) -> tuple | None:
        """The shape of a complete, well-formed, checksummed entry from its header and trailer, or None (a
        bad one is removed); its values are checked when read (`reread`)."""
        return self._probe(entry, entry_shape)[0]

    def _get(self, paths: Sequence[str | Path], variants: tuple[WaveCopy | None, ...], workers: int | None,
             progress: bool, label: str, keep: bool = True) -> tuple[list[list[Path]], list[list]]:
        """(entries, arrays) — or (entries, shapes) without `keep` — of every (path, variant)."""
        read = read_entry if keep else entry_shape
        entries = [[self.entry(p, v, d) for v in variants] for p, d in ((p, file_digest(p)) for p in paths)]
        self.sources.update({e: (str(p), v) for p, row in zip(paths, entries) for e, v in zip(row, variants)})
        probed = [[self._probe(e, read) for e in row] for row in entries]
        out: list[list] = [[value for value, _ in row] for row in probed]
        report_rebuilt([(e, p, problem) for p, row, prow in zip(paths, entries, probed)
                        for e, (_, problem) in zip(row, prow) if problem is not None])
        todo = [(i, tuple(j for j, a in enumerate(row) if a is None)) for i, row in enumerate(out)]
        todo = [(i, js) for i, js in todo if js]
        if todo:
            n_new = sum(len(js) for _, js in todo)
            workers = workers or max(1, min(len(todo), os.cpu_count() or 1))
            with progress_bar(f"{label} ({n_new} new)", len(todo), enabled=progress) as advance:

                def finish(i: int, js: tuple[int, ...], arrays: list[np.ndarray]) -> None:
                    for j, a in zip(js, arrays):
                        out[i][j] = a if keep else a.shape
                        self.store(entries[i][j], a)
                    advance()
                    advance.note(Path(paths[i]).name)

                # Shown until the first file is done: the pool's start and the first file's imports and JIT.
                advance.note(f"starting {workers} worker processes (the first file also loads the audio libraries)"
                             if workers > 1 else "first file (it also loads the audio libraries)")
                if workers == 1:
                    for i, js in todo:
                        finish(i, js, _extract_variants(str(paths[i]), self.cfg, tuple(variants[j] for j in js)))
                else:
                    with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread_per_worker) as pool:
                        futures = {pool.submit(_extract_variants, str(paths[i]), self.cfg,
                                               tuple(variants[j] for j in js)): (i, js) for i, js in todo}
                        for fut in as_completed(futures):  # a tick per file as each is done, in any order
                            i, js = futures.pop(fut)  # drop the result: keep=False holds no arrays
                            finish(i, js, fut.result())
        return entries, out


def stack_frames(arrays: Iterable[np.ndarray], frames: int, out: np.ndarray | None = None) -> np.ndarray:
    """Crop or pad (with each clip's minimum, i.e. silence) to a fixed number of frames: [N, T, F],
    written into `out` when given (rows of a memory-mapped file)."""
    arrays = list(arrays)
    n_mels = arrays[0].shape[1] if arrays else 0
    out = np.empty((len(arrays), frames, n_mels), dtype=np.float32) if out is None else out
    for i, a in enumerate(arrays):
        t = min(frames, a.shape[0])
        out[i, :t] = a[:t]
        out[i, t:] = a.min() if a.size else 0.0
    return out


def row_chunks(n: int, row_size: int, chunk_elements: int = 1 << 22) -> list[slice]:
    """Slices of about `chunk_elements` values over n rows of `row_size` values each: what streaming
    passes over a (memory-mapped) [N, T, F] array read at a time."""
    step = max(1, chunk_elements // max(row_size, 1))
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


@dataclass
class Normalizer:
    """Per-feature (mel bin or MFCC) standardization; statistics come from the train split only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Normalizer":
        """Mean and std over every frame of x [N, T, F], two passes in float64 over `row_chunks`, so a
        memory-mapped x is never read whole and in-memory and memory-mapped x give the same bits."""
        f = x.shape[-1]
        row = int(np.prod(x.shape[1:-1], dtype=np.int64))
        chunks = row_chunks(len(x), row * f)
        count = max(len(x) * row, 1)
        total = sum((np.asarray(x[c], np.float64).reshape(-1, f).sum(0) for c in chunks), np.zeros(f))
        mean = total / count
        sq = sum((np.square(np.asarray(x[c], np.float64).reshape(-1, f) - mean).sum(0) for c in chunks), np.zeros(f))
        return cls(mean.astype(np.float32), (np.sqrt(sq / count) + 1e-5).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))
