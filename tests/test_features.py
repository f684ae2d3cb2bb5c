"""Feature kinds, the on-disk cache, precomputed waveform copies and train-only normalization,
on real WAV files written into tmp (1–2 s clips at 16 kHz, 32 mel bands)."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonia.data.audio import load_audio, write_wav
from harmonia.config import FEATURE_KIND_FIELDS, FEATURE_WIDTH_FIELD, FeatureConfig, parse_config
from harmonia.data.datasets import Dataset
from harmonia.features import (FEATURE_KINDS, FeatureCache, WaveCopy, extract, logmel, nn_filter_np,
                               wave_copies)
from harmonia.featureset import build_feature_set, frame_targets

SR = 16000
HOP = 256


def _cfg(tmp_path: Path, **kw) -> FeatureConfig:
    return FeatureConfig(sample_rate=SR, n_fft=512, hop_length=HOP, n_mels=32, cache_dir=str(tmp_path / "cache"), **kw)


def _noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _tone(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wavs(tmp_path: Path, n: int, seconds: float = 1.0) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / "audio" / f"clip{i}.wav"
        write_wav(p, _noise(seconds, i) + _tone(300 + 200 * i, seconds, 0.2), SR)
        paths.append(p)
    return paths


def _burst(seconds: float, onset: float, offset: float, freq: float = 1000.0, seed: int = 0) -> np.ndarray:
    """Quiet noise with a loud tone between onset and offset (seconds)."""
    y = _noise(seconds, seed, level=0.003)
    a, b = int(onset * SR), int(offset * SR)
    y[a:b] += _tone(freq, seconds)[a:b]
    return y


def _dataset(tmp_path: Path, audio: dict[str, tuple[str, np.ndarray]], events: list[tuple] = ()) -> Dataset:
    """A Dataset of real WAVs: audio = {clip_id: (split, waveform)}, events (clip_id, onset, offset, label)."""
    rows = []
    for clip_id, (split, y) in audio.items():
        path = tmp_path / "data" / split / f"{clip_id}.wav"
        write_wav(path, y, SR)
        tags = sorted({e[3] for e in events if e[0] == clip_id}) or ["tone"]
        rows.append((clip_id, str(path), split, len(y) / SR, tags, tags))
    clips = pd.DataFrame(rows, columns=["clip_id", "path", "split", "duration", "tags", "sequence"])
    ev = pd.DataFrame(list(events), columns=["clip_id", "onset", "offset", "event_label"])
    return Dataset(tmp_path / "data", ["tone"], clips, ev, has_strong=bool(events))


def _stamps(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.glob("*.npy")}


# --- config and registry ----------------------------------------------------------------------

def test_every_kind_is_registered_and_declared():
    kinds = set(typing.get_args(FeatureConfig.model_fields["kind"].annotation))
    assert kinds == set(FEATURE_KINDS) == set(FEATURE_KIND_FIELDS) == set(FEATURE_WIDTH_FIELD)


def test_cache_keys_of_existing_configs_do_not_change_and_kinds_differ():
    # Keys of the default config before MFCC/NNF/copies existed: the cache on disk stays valid.
    assert FeatureConfig().key() == "d0712d36f5c0d7b1"
    assert FeatureConfig(n_mels=32, hop_length=320, n_fft=512).key() == "29c7f2b92683a03a"
    assert FeatureConfig(augmented_copies={"pitch_shift_semitones": [-2, 2]}).key() == FeatureConfig().key()
    assert FeatureConfig(n_mfcc=13).key() == FeatureConfig().key()  # logmel ignores n_mfcc
    keys = {FeatureConfig(kind=k).key() for k in FEATURE_KINDS}
    assert len(keys) == len(FEATURE_KINDS)
    assert FeatureConfig(kind="mfcc", n_mfcc=13).key() != FeatureConfig(kind="mfcc").key()
    assert FeatureConfig(kind="nnf_logmel", nnf_k=5).key() != FeatureConfig(kind="nnf_logmel").key()
    assert FeatureConfig(kind="mfcc", n_mfcc=13).n_features == 13 and FeatureConfig(kind="nnf_logmel").n_features == 64


def test_augmented_copies_config_is_validated():
    cfg = parse_config({"features": {"augmented_copies": {"pitch_shift_semitones": [-2, -1, 1, 2],
                                                           "time_stretch_rates": [0.9, 1.1]}}})
    names = [c.name for c in wave_copies(cfg.features.augmented_copies)]
    assert names == ["pitch_shift-2", "pitch_shift-1", "pitch_shift+1", "pitch_shift+2",
                     "time_stretch0.9", "time_stretch1.1"]
    for bad in ({"time_stretch_rates": [0]}, {"time_stretch_rates": [1.0]}, {"pitch_shift_semitones": [0]},
                {"pitch_shift_semitones": [1, 1]}, {"pitch_stretch": [1]}):
        with pytest.raises(Exception):
            parse_config({"features": {"augmented_copies": bad}})


# --- cache ------------------------------------------------------------------------------------

def test_cache_hit_avoids_recomputation(tmp_path):
    paths = _wavs(tmp_path, 3)
    cache = FeatureCache(_cfg(tmp_path))
    first = cache.get_many(paths, workers=1, progress=False)
    stamps = _stamps(cache.dir)
    assert len(stamps) == 3
    again = cache.get_many(paths, workers=1, progress=False)
    assert _stamps(cache.dir) == stamps  # nothing rewritten
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)

    copies = [WaveCopy("pitch_shift", 1.0), WaveCopy("time_stretch", 1.25)]
    cache.get_copies(paths, copies, workers=1, progress=False)
    with_copies = _stamps(cache.dir)
    assert len(with_copies) == 9 and {k: with_copies[k] for k in stamps} == stamps
    cache.get_copies(paths, copies, workers=1, progress=False)
    assert _stamps(cache.dir) == with_copies

    mfcc_cache = FeatureCache(_cfg(tmp_path, kind="mfcc"))
    assert mfcc_cache.dir != cache.dir
    mfcc_cache.get_many(paths[:1], workers=1, progress=False)
    assert _stamps(cache.dir) == with_copies and len(_stamps(mfcc_cache.dir)) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_width"])
def test_half_written_or_corrupt_entry_is_detected_and_rebuilt(tmp_path, damage):
    paths = _wavs(tmp_path, 2)
    cfg = _cfg(tmp_path)
    cache = FeatureCache(cfg)
    cache.get_many(paths, workers=1, progress=False)
    entry = cache.entry(paths[0])
    good = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(os.urandom(len(good)))
    elif damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])  # a writer killed half-way (without the atomic rename)
    else:
        np.save(entry, np.zeros((10, cfg.n_mels + 1), np.float32))
    assert cache.load(entry) is None and not entry.exists()
    entry.write_bytes(good[: len(good) // 2])
    got = cache.get_many(paths, workers=1, progress=False)
    np.testing.assert_array_equal(got[0], extract(paths[0], cfg))
    np.testing.assert_array_equal(np.load(entry, allow_pickle=False), got[0])  # valid again


def test_copies_are_computed_in_parallel_processes_like_get_many(tmp_path):
    paths = _wavs(tmp_path, 2)
    cfg = _cfg(tmp_path)
    copies = [WaveCopy("pitch_shift", -1.0)]
    par = FeatureCache(cfg).get_copies(paths, copies, workers=2, progress=False)
    for i, p in enumerate(paths):
        np.testing.assert_allclose(par[0][i], extract(p, cfg, copies[0]), atol=1e-4)


# --- feature kinds ----------------------------------------------------------------------------

def test_mfcc_shape_and_equality_with_librosa(tmp_path):
    import librosa

    path = _wavs(tmp_path, 1)[0]
    cfg = _cfg(tmp_path, kind="mfcc", n_mfcc=13)
    got = extract(path, cfg)
    y = load_audio(path, SR)
    assert got.shape == (1 + len(y) // HOP, 13) and got.dtype == np.float32
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=13, n_fft=512, hop_length=HOP, n_mels=32, fmin=0.0, fmax=None)
    np.testing.assert_allclose(got, ref.T, rtol=1e-4, atol=1e-3)
    # The cache validates the width against n_mfcc, not n_mels.
    cache = FeatureCache(cfg)
    cached = cache.get_many([path], workers=1, progress=False)[0]
    np.testing.assert_array_equal(cached, got)
    assert cache.load(cache.entry(path)) is not None


def _nnf_brute_force(x: np.ndarray, k: int) -> np.ndarray:
    t = len(x)
    out = np.empty_like(x, dtype=np.float64)
    for i in range(t):
        sims = [float(x[i] @ x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])) for j in range(t)]
        nearest = sorted(range(t), key=lambda j: -sims[j])[:k]
        out[i] = np.median(x[nearest].astype(np.float64), axis=0)
    return out


@pytest.mark.parametrize("k", [1, 4, 5])
def test_nnf_equals_a_brute_force_reference(k):
    x = np.random.default_rng(k).standard_normal((14, 6)).astype(np.float32) - 3.0
    np.testing.assert_allclose(nn_filter_np(x, k), _nnf_brute_force(x, k), rtol=1e-6, atol=1e-6)
    # blocked similarity rows (long files) give the same result
    import torch

    from harmonia.features import nn_filter

    xt = torch.from_numpy(x)
    assert torch.equal(nn_filter(xt, k, block=3), nn_filter(xt, k))


def test_nnf_logmel_feature_is_the_filtered_logmel(tmp_path):
    path = _wavs(tmp_path, 1, seconds=0.5)[0]
    cfg = _cfg(tmp_path, kind="nnf_logmel", nnf_k=5)
    got = extract(path, cfg)
    lm = logmel(load_audio(path, SR), _cfg(tmp_path))
    assert got.shape == lm.shape
    np.testing.assert_allclose(got, _nnf_brute_force(lm, 5), rtol=1e-5, atol=1e-4)


# --- waveform copies --------------------------------------------------------------------------

def _peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=4 * len(y)))
    return float(np.fft.rfftfreq(4 * len(y), 1 / SR)[np.argmax(spec)])


@pytest.mark.parametrize("semitones", [-2.0, 1.0, 3.0])
def test_pitch_shift_moves_a_pure_tone_by_two_to_the_n_over_twelve(semitones):
    y = _tone(440.0, 1.0)
    shifted = WaveCopy("pitch_shift", semitones).apply(y, SR)
    assert len(shifted) == len(y)
    expected = 440.0 * 2 ** (semitones / 12)
    assert abs(_peak_hz(shifted) - expected) / expected < 0.02
    assert abs(_peak_hz(y) - 440.0) < 1.0


@pytest.mark.parametrize("rate", [0.8, 1.25, 2.0])
def test_time_stretch_scales_duration_by_one_over_rate(rate):
    y = _tone(440.0, 1.0)
    out = WaveCopy("time_stretch", rate).apply(y, SR)
    assert abs(len(out) - len(y) / rate) <= 0.01 * len(y) / rate
    assert abs(_peak_hz(out) - 440.0) / 440.0 < 0.02  # pitch kept


def test_time_stretched_copies_scale_event_times_and_frame_targets(tmp_path):
    audio = {
        "a": ("train", _burst(2.0, 0.5, 1.0, seed=1)),
        "b": ("train", _burst(2.0, 0.8, 1.2, seed=2)),
        "v": ("valid", _burst(2.0, 0.3, 0.6, seed=3)),
        "t": ("test", _burst(2.0, 0.3, 0.6, seed=4)),
    }
    events = [("a", 0.5, 1.0, "tone"), ("b", 0.8, 1.2, "tone"), ("v", 0.3, 0.6, "tone"), ("t", 0.3, 0.6, "tone")]
    ds = _dataset(tmp_path, audio, events)
    cfg = _cfg(tmp_path, augmented_copies={"time_stretch_rates": [2.0, 0.8], "pitch_shift_semitones": [2]})
    fs = build_feature_set(ds, cfg, progress=False, workers=1)
    train = fs.splits["train"]
    assert fs.copy_names == ["pitch_shift+2", "time_stretch2", "time_stretch0.8"]
    assert len(fs.train_copies) == 3
    hop = cfg.hop_seconds
    for copy, c in zip(wave_copies(cfg.augmented_copies), fs.train_copies):
        assert c.clip_ids == train.clip_ids and c.x.shape == train.x.shape and c.y is train.y
        for row, (_, on, off, _) in enumerate(events[:2]):
            on, off = on * copy.time_scale, off * copy.time_scale
            expect = np.zeros(fs.frames, bool)
            expect[int(np.floor(on / hop)):min(int(np.ceil(off / hop)), fs.frames)] = True
            np.testing.assert_array_equal(c.y_frames[row, :, 0].astype(bool), expect)
            # ... and the targets follow the audio: the loud frames of the copy are the active ones
            energy = (c.x[row] * fs.normalizer.std + fs.normalizer.mean).max(axis=1)  # loudest band, dB
            loud = energy > 0.5 * (energy.max() + energy.min())
            # (librosa's phase vocoder, a 2048-sample STFT, smears each edge by up to ~4 frames here)
            assert abs(np.flatnonzero(loud).mean() - np.flatnonzero(expect).mean()) <= 2, (copy.name, row)
            assert np.sum(loud != expect) <= 10, (copy.name, row)
    np.testing.assert_array_equal(fs.train_copies[0].y_frames, train.y_frames)  # pitch shift keeps times
    np.testing.assert_array_equal(
        fs.train_copies[1].y_frames,
        frame_targets(ds.events.assign(onset=ds.events.onset / 2, offset=ds.events.offset / 2),
                      train.clip_ids, fs.classes, fs.frames, hop))

    # epoch_train takes each clip from the chosen variant
    mixed = fs.epoch_train(np.array([2, 0]))
    np.testing.assert_array_equal(mixed.x[0], fs.train_copies[1].x[0])
    np.testing.assert_array_equal(mixed.x[1], train.x[1])
    np.testing.assert_array_equal(mixed.y_frames[0], fs.train_copies[1].y_frames[0])
    assert fs.epoch_train(None) is train
    with pytest.raises(ValueError):
        fs.epoch_train(np.array([4, 0]))


def test_trainer_draws_each_clip_from_the_original_and_its_copies(tmp_path):
    import torch

    from harmonia.trainables.training import Trainer

    audio = {f"tr{i}": ("train", _burst(1.0, 0.2, 0.5, freq=500 + 100 * i, seed=i)) for i in range(4)}
    audio |= {"v0": ("valid", _burst(1.0, 0.2, 0.5, seed=10)), "t0": ("test", _burst(1.0, 0.2, 0.5, seed=11))}
    ds = _dataset(tmp_path, audio)
    cfg = _cfg(tmp_path, augmented_copies={"pitch_shift_semitones": [1], "time_stretch_rates": [1.25]})
    fs = build_feature_set(ds, cfg, progress=False, workers=1)
    seen: list[np.ndarray] = []
    real = fs.epoch_train
    fs.epoch_train = lambda pick: (seen.append(pick), real(pick))[1]  # type: ignore[method-assign]
    params = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 4, "crnn.gru_size": 4, "batch_size": 2,
              "aug.waveform_copies": True}
    t = Trainer(params, fs, max_epochs=3, patience=3, seed=0, device=torch.device("cpu"))
    for _ in range(3):
        assert np.isfinite(t.train_epoch())
    picks = np.concatenate(seen)
    assert len(seen) == 3 and picks.min() >= 0 and picks.max() <= 2 and len(set(picks.tolist())) > 1
    seen.clear()
    Trainer({**params, "aug.waveform_copies": False}, fs, max_epochs=1, patience=1, seed=0,
            device=torch.device("cpu")).train_epoch()
    assert not seen


# --- normalization and widths -----------------------------------------------------------------

def test_normalization_statistics_come_from_train_only(tmp_path):
    audio = {
        "a": ("train", _burst(1.0, 0.2, 0.6, seed=1)),
        "b": ("train", _burst(1.0, 0.4, 0.9, freq=700, seed=2)),
        "v": ("valid", _burst(1.0, 0.1, 0.3, seed=3)),
        "t": ("test", _burst(1.0, 0.5, 0.7, seed=4)),
    }
    cfg = _cfg(tmp_path)
    fs1 = build_feature_set(_dataset(tmp_path, audio), cfg, progress=False, workers=1)
    # Louder, longer valid/test audio: the normalizer (and the clip length) must not move.
    audio["v"] = ("valid", _noise(1.5, 5, level=0.5))
    audio["t"] = ("test", _noise(1.7, 6, level=0.8))
    fs2 = build_feature_set(_dataset(tmp_path, audio), cfg, progress=False, workers=1)
    np.testing.assert_array_equal(fs1.normalizer.mean, fs2.normalizer.mean)
    np.testing.assert_array_equal(fs1.normalizer.std, fs2.normalizer.std)
    assert fs1.frames == fs2.frames
    np.testing.assert_array_equal(fs1.splits["train"].x, fs2.splits["train"].x)
    assert not np.allclose(fs1.splits["valid"].x, fs2.splits["valid"].x)
    # ...while changing train audio does move it.
    audio["a"] = ("train", _noise(1.0, 7, level=0.5))
    fs3 = build_feature_set(_dataset(tmp_path, audio), cfg, progress=False, workers=1)
    assert not np.allclose(fs1.normalizer.mean, fs3.normalizer.mean)


@pytest.mark.parametrize("kind,width", [("logmel", 32), ("mfcc", 13), ("nnf_logmel", 32)])
def test_feature_set_width_is_the_kind_width(tmp_path, kind, width):
    audio = {"a": ("train", _noise(0.5, 1)), "b": ("train", _noise(0.5, 2)),
             "v": ("valid", _noise(0.5, 3)), "t": ("test", _noise(0.5, 4))}
    fs = build_feature_set(_dataset(tmp_path, audio), _cfg(tmp_path, kind=kind, n_mfcc=13), progress=False, workers=1)
    assert fs.n_features == fs.n_mels == width == fs.splits["train"].x.shape[-1] == len(fs.normalizer.mean)
    assert "augmented_copies" not in fs.feature and fs.train_copies == []
    # a member's feature dict holds only what changes its features (the logmel one is as before)
    assert ("n_mfcc" in fs.feature) == (kind == "mfcc") and ("nnf_k" in fs.feature) == (kind == "nnf_logmel")
    assert FeatureConfig(**fs.feature).key() == _cfg(tmp_path, kind=kind, n_mfcc=13).key()
