"""Issue 12: a feature-cache entry whose values were altered (still a valid .npy) is detected on load by
its checksum, rebuilt (the values of a fresh extraction) and reported with the entry and its audio file;
the same for the memory-mapped consolidated files. Real WAVs on disk, real extraction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harmonia.cache_entry import TRAILER_SIZE
from harmonia.feature_store import build_mapped_feature_set, scan_cache
from harmonia.features import FeatureCache, extract
from harmonia.featureset import build_feature_set

from tests.test_memmap_features import assert_same_split, clip_audio, feature_config, make_dataset


def _wavs(root, n: int) -> list:
    from harmonia.data.audio import write_wav

    paths = [root / "audio" / f"clip{i}.wav" for i in range(n)]
    for i, p in enumerate(paths):
        write_wav(p, clip_audio(1.0, [(0.2, 0.6, "low" if i % 2 else "high")], seed=i), 16000)
    return paths


def _says(output: str, expected: str) -> bool:
    return "".join(expected.split()) in "".join(output.split())


def _alter_in_place(entry, delta: float = 0.5) -> None:
    """Add `delta` to one value, keeping the .npy header and the old checksum trailer: a valid .npy."""
    body = bytearray(entry.read_bytes())
    arr = np.load(entry)
    value = np.frombuffer(body, np.float32, 1, len(body) - TRAILER_SIZE - 4)
    body[len(body) - TRAILER_SIZE - 4:len(body) - TRAILER_SIZE] = (value + delta).tobytes()
    entry.write_bytes(bytes(body))
    altered = np.load(entry)
    assert altered.shape == arr.shape and np.abs(altered - arr).max() == np.float32(delta)


def test_altered_entry_is_detected_rebuilt_and_reported(tmp_path, capfd):
    paths = _wavs(tmp_path, 2)
    cfg = feature_config(tmp_path)
    cache = FeatureCache(cfg)
    cache.get_many(paths, workers=1, progress=False)
    fresh = [extract(p, cfg) for p in paths]
    altered, rewritten = cache.entry(paths[0]), cache.entry(paths[1])
    _alter_in_place(altered)
    np.save(rewritten, np.load(rewritten) * 1.5)  # a plain np.save: a valid .npy without the checksum
    capfd.readouterr()
    got = cache.get_many(paths, workers=1, progress=False)
    err = capfd.readouterr().err
    for a, b in zip(got, fresh):
        np.testing.assert_array_equal(a, b)
    assert _says(err, f"feature cache: {altered} (features of {paths[0]}) failed its checksum"), err
    assert _says(err, f"feature cache: {rewritten} (features of {paths[1]}) has no checksum"), err
    assert err.count("; rebuilt") == 2, err
    for e, a in ((altered, fresh[0]), (rewritten, fresh[1])):  # rebuilt on disk, checksummed again
        np.testing.assert_array_equal(cache.load(e), a)
    cache.get_many(paths, workers=1, progress=False)
    assert "feature cache:" not in capfd.readouterr().err


def test_consolidated_files_and_the_entries_they_stack_are_checked(tmp_path, capfd):
    ds = make_dataset(tmp_path, n_train=4, n_other=2)
    cfg = feature_config(tmp_path)
    expected = build_feature_set(ds, cfg, progress=False, workers=1)
    # an entry altered after the scan (headers only) is caught as it is stacked, and rebuilt
    scan = scan_cache(ds, cfg, workers=1, progress=False)
    entry, clip = scan.entries["train"][1], ds.clips.set_index("clip_id").loc[scan.ids_of["train"][1], "path"]
    _alter_in_place(entry)
    capfd.readouterr()
    handle = build_mapped_feature_set(ds, cfg, scan, progress=False, workers=1)
    err = capfd.readouterr().err
    assert _says(err, f"feature cache: {entry} (features of {clip}) failed its checksum"), err
    for split in expected.splits:
        assert_same_split(expected.splits[split], handle.open().splits[split])
    # a consolidated file altered in place is caught before a search reuses the folder, and rebuilt
    stamps = {e: e.stat().st_mtime_ns for rows in scan.entries.values() for e in rows}
    x = np.load(f"{handle.root}/valid.x.npy", mmap_mode="r+")
    x[0, 0, 0] += 1.0
    x.flush()
    del x
    again = build_mapped_feature_set(ds, cfg, progress=False, workers=1)
    err = capfd.readouterr().err
    assert again.key == handle.key
    assert {e: e.stat().st_mtime_ns for e in stamps} == stamps  # the entries' scan reads headers: none rebuilt
    assert _says(err, f"feature cache: {handle.root} failed its checksums (valid.x.npy)"), err
    for split in expected.splits:
        assert_same_split(expected.splits[split], again.open().splits[split])
    build_mapped_feature_set(ds, cfg, progress=False, workers=1)
    assert "feature cache:" not in capfd.readouterr().err
    # a folder written before the checksums (no "checksums" in meta.json) is rebuilt, not adopted
    meta_file = Path(again.root) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "checksums"}))
    build_mapped_feature_set(ds, cfg, progress=False, workers=1)
    assert _says(capfd.readouterr().err, f"feature cache: {again.root} has no checksums")
    assert json.loads(meta_file.read_text())["checksums"] == meta["checksums"]
