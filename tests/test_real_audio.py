"""benchmarks/real_audio.py: source-disjoint splits of real Debian recordings, a group per clip, valid WAVs.

Needs `apt-get download` to reach a Debian mirror (or the packages already in the cache); skips otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_audio.py"
SPLITS = ("train", "valid", "test")


def _module():
    return load_script(SCRIPT)


ra = _module()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get / dpkg-deb not available: not a Debian system")
    out = tmp_path_factory.mktemp("real") / "set"
    try:
        record = ra.build(out, clips=20, seed=5, task="sed")
    except ra.DownloadError as err:
        pytest.skip(f"Debian sound packages not downloadable here (no network or mirror?): {err}")
    return out, record


def test_licence_from_dep5_and_free_text():
    dep5 = ("Files: *\nCopyright: A\nLicense: GPL-2+\n\nFiles: stereo/bell.oga stereo/complete.oga\n"
            "Copyright: B\nLicense: CC-BY-3.0\n\nFiles: debian/*\nLicense: GPL-2\n")
    assert ra.licence_of(dep5, "usr/share/sounds/freedesktop/stereo/bell.oga") == "CC-BY-3.0"
    assert ra.licence_of(dep5, "usr/share/sounds/freedesktop/stereo/message.oga") == "GPL-2+"
    free = "These files are distributed under the Creative Commons Attribution-ShareAlike\n3.0 license"
    assert ra.licence_of(free, "moh/x.wav") == "CC-BY-SA-3.0"


def test_source_recordings_never_shared_between_splits(built):
    _, record = built
    recs = record["recordings"]
    assert record["classes"] == list(ra.CLASS_SOURCES) and len(record["classes"]) == 7
    for label in record["classes"]:
        ids = [{r["id"] for r in recs if r["label"] == label and r["split"] == s} for s in SPLITS]
        assert all(ids), (label, ids)  # every split has its own recordings
        assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2], label
        by_path: dict[str, list[dict]] = {}
        for r in (r for r in recs if r["label"] == label):
            by_path.setdefault(r["path"], []).append(r)
        for parts in by_path.values():  # a file in several splits only as disjoint time regions
            assert len({p["split"] for p in parts}) == len(parts)
            if len(parts) > 1:
                spans = sorted(tuple(p["region"]) for p in parts)
                assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    assert set(record["packages"]) == {"asterisk-core-sounds-en-wav", "asterisk-moh-opsound-wav",
                                       "sound-theme-freedesktop", "heroes-sound-effects"}
    assert all(p["version"] and p["licences"] for p in record["packages"].values())


def test_every_clip_has_a_group_of_its_own_split(built):
    out, record = built
    split_of = {r["id"]: r["split"] for r in record["recordings"]}
    for split in SPLITS:
        weak = pd.read_csv(out / "metadata" / f"{split}_weak.tsv", sep="\t", dtype=str, keep_default_na=False)
        strong = pd.read_csv(out / "metadata" / f"{split}.tsv", sep="\t", dtype=str, keep_default_na=False)
        wavs = {p.name for p in (out / "audio" / split).glob("*.wav")}
        assert set(weak["filename"]) == wavs == set(strong["filename"])  # event-less clips have an empty row
        groups = weak.set_index("filename")["group"]
        assert (strong["group"] == strong["filename"].map(groups)).all()
        for group in groups:
            assert split_of.get(group) == split or group.startswith(f"{split}-bg-"), (split, group)
    assert len(record["groups"]) == 20


def test_clips_are_valid_16k_mono_wavs(built):
    out, _ = built
    wavs = sorted((out / "audio").rglob("*.wav"))
    assert len(wavs) == 20 and (out / "SOURCES.md").is_file()
    for wav in wavs:
        info = sf.info(wav)
        assert (info.format, info.subtype, info.channels, info.samplerate, info.frames) == (
            "WAV", "PCM_16", 1, 16000, 64000)
        y, _ = sf.read(wav)
        assert 0.0 < np.abs(y).max() <= 0.95 + 1e-4
    durations = pd.read_csv(out / "metadata" / "durations.tsv", sep="\t")
    assert len(durations) == 20 and np.allclose(durations["duration"], 4.0)


def test_same_seed_same_bytes(built, tmp_path: Path):
    out, record = built
    again = ra.build(tmp_path / "again", clips=20, seed=5, task="sed")
    assert json.dumps(again, sort_keys=True) == json.dumps(record, sort_keys=True)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    with pytest.raises(ValueError, match="already holds"):
        ra.build(out, clips=20, seed=5, task="sed")


def test_a_class_subset_keeps_each_class_recordings_and_split(built, tmp_path: Path):
    _, full = built
    record = ra.build(tmp_path / "subset", clips=20, seed=5, task="sed", classes=("clock", "music"))
    assert record["classes"] == ["music", "clock"]  # CLASS_SOURCES order
    assert (tmp_path / "subset" / "metadata" / "classes.txt").read_text().split() == ["music", "clock"]
    labels = set()
    for split in SPLITS:
        strong = pd.read_csv(tmp_path / "subset" / "metadata" / f"{split}.tsv", sep="\t", dtype=str, keep_default_na=False)
        labels |= set(strong["event_label"]) - {""}
    assert labels == {"music", "clock"}
    assert record["recordings"] == [r for r in full["recordings"] if r["label"] in ("music", "clock")]
    assert set(record["packages"]) == {"asterisk-moh-opsound-wav", "heroes-sound-effects"}
    assert "--classes music,clock" in (tmp_path / "subset" / "SOURCES.md").read_text()
    with pytest.raises(ValueError, match="unknown bird; valid: speech, music"):
        ra.build(tmp_path / "bad", clips=20, seed=5, task="sed", classes=("clock", "bird"))
