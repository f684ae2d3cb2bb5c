"""Dataset formats as distributed (issue 10): each layout synthesized on disk, checked, searched on;
the flat variant loads as it is; leaks and damage are reported with file and line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harmonia.cli import app
from harmonia.data.audio import write_wav
from harmonia.data.data_check import check_dataset
from harmonia.data.datasets import DatasetError, load_dataset
from harmonia.data.layouts import SynthArgs, layout_names, synthesize_layout
from harmonia.data.registry import FORMATS, ReadOptions

CLASSES = ("beep", "hum", "rain", "knock")
FAST = ("flat", "esc50")
# the files data check must name in its first line, per format
SPLIT_FILES = {
    "harmonia": ["train: metadata/train.tsv", "valid: metadata/valid.tsv", "test: metadata/test.tsv"],
    "flat": ["train: metadata/train.tsv", "metadata/train_weak.tsv, audio/", "test: metadata/test.tsv"],
    "desed": ["train: metadata/train/synthetic21_train/soundscapes.tsv", "valid: metadata/validation/validation.tsv",
              "test: metadata/eval/public.tsv", "unlabeled: metadata/train/unlabel_in_domain.tsv"],
    "fsdkaggle2018": ["train: train.csv", "valid: test_post_competition.csv usage Public",
                      "test: test_post_competition.csv usage Private"],
    "fsd50k": ["train: FSD50K.ground_truth/dev.csv split train", "test: FSD50K.ground_truth/eval.csv"],
    "esc50": ["train: meta/esc50.csv other folds", "valid: meta/esc50.csv fold 4", "test: meta/esc50.csv fold 5"],
    "urbansound8k": ["valid: metadata/UrbanSound8K.csv fold 9", "test: metadata/UrbanSound8K.csv fold 10"],
    "dcase2018_task1": ["train: meta.csv, evaluation_setup/fold1_train.csv", "test: evaluation_setup/fold1_evaluate.csv"],
}


def test_every_registered_format_has_a_layout_and_expected_files():
    assert sorted(layout_names()) == sorted(FORMATS) == sorted(SPLIT_FILES)


def _synth_and_check(out: Path, layout: str) -> str:
    args = ["data", "synth", str(out), "--layout", layout, "--clips", "40", "--seconds", "1", "--scenes", "3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["data", "check", str(out)])
    assert "no errors" in res.output and res.exit_code == 0, res.output
    return res.output.splitlines()[0]


@pytest.mark.parametrize("layout", [pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
                                    for name in SPLIT_FILES])
def test_layout_is_checked_and_searched(layout: str, ray_local, tmp_path: Path):
    """data synth --layout -> data check names the format and its split files -> a 2-trial search trains on
    it (ESC-50 with its predefined folds as CV folds) -> predictions carry the format's clip ids."""
    from harmonia import tracking
    from harmonia.config import parse_config
    from harmonia.search.tuner import run_search
    from tests.conftest import tiny_config

    root = tmp_path / "data"
    if layout == "dcase2018_task1":
        _synth_and_check(root, layout)
    else:
        synthesize_layout(root, layout, SynthArgs(clips=40, seconds=1.0, seed=1, classes=CLASSES))
    headline = check_dataset(root).headline()
    assert headline.startswith(f"format {layout} (auto-detected)"), headline
    for text in SPLIT_FILES[layout]:
        assert text in headline, (text, headline)
    raw = tiny_config(tmp_path, name=f"fmt_{layout}", num_samples=2, max_epochs=1).model_dump()
    raw["data"]["synth"] = None
    if layout == "dcase2018_task1":
        raw.update(task="scene", search={**raw["search"], "metric": "accuracy"}, ensemble={"metric": "accuracy"})
    if layout == "esc50":
        raw["train"]["cv_folds"] = "predefined"
    cfg = parse_config(raw).resolved(tmp_path)
    result = run_search(cfg, progress=False)
    assert len(result.trials) == 2 and (result.trials["status"] == "TERMINATED").all()
    ds = load_dataset(root)
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")
    run_id = runs[0].info.run_id
    for split in ("valid", "test"):
        df = pd.read_parquet(c.download_artifacts(run_id, f"predictions/{split}.parquet", str(tmp_path)))
        assert sorted(df["clip_id"]) == sorted(ds.split(split)["clip_id"])
    if layout == "esc50":
        oof = pd.read_parquet(c.download_artifacts(run_id, "predictions/oof.parquet", str(tmp_path)))
        fold_of = dict(zip(ds.clips["clip_id"], ds.clips["fold"]))
        assert {fold_of[i] for i in oof["clip_id"]} == {1, 2, 3, 4}
        for f in range(4):  # one CV fold per predefined fold of train ∪ valid
            assert len({fold_of[i] for i in oof.loc[oof["fold"] == f, "clip_id"]}) == 1


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    return synthesize_layout(tmp_path_factory.mktemp("fmt") / "flat", "flat",
                             SynthArgs(clips=20, seconds=1.0, seed=4, classes=CLASSES))


def test_flat_folder_loads_without_reshuffling(flat: Path):
    ds = load_dataset(flat)
    assert ds.format == "flat" and sorted(os.listdir(flat / "audio")) == sorted(ds.clips["clip_id"])
    for split in ("train", "valid", "test"):
        weak = pd.read_csv(flat / "metadata" / f"{split}_weak.tsv", sep="\t", dtype=str)
        part = ds.split(split)
        assert list(part["clip_id"]) == sorted(weak["filename"])  # each clip in the split its file names
        assert dict(zip(part["clip_id"], part["tags"])) == {f: sorted(t.split(",")) for f, t in
                                                            zip(weak["filename"], weak["event_labels"])}
        assert dict(zip(part["clip_id"], part["group"])) == dict(zip(weak["filename"], weak["group"]))
        assert all(p == str((flat / "audio" / c).absolute()) for c, p in zip(part["clip_id"], part["path"]))


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy", symlinks=True))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _append(path: Path, row: str) -> int:
    lines = _lines(path)
    path.write_text("\n".join([*lines, row]) + "\n")
    return len(lines) + 1


def _where(root: Path, text: str, severity: str = "error") -> list[tuple[str, int | None]]:
    return [(p.file, p.line) for p in check_dataset(root).problems if text in p.message and p.severity == severity]


def test_same_filename_in_two_splits_is_an_error(tmp_path: Path):
    root = synthesize_layout(tmp_path / "h", "harmonia", SynthArgs(clips=20, seconds=1.0, seed=4, classes=CLASSES))
    name = _lines(root / "metadata" / "train_weak.tsv")[1].split("\t")[0]
    shutil.copy(root / "audio" / "train" / name, root / "audio" / "test" / name)
    line = _append(root / "metadata" / "test_weak.tsv", f"{name}\tbeep")
    assert ("metadata/test_weak.tsv", line) in _where(root, f"same filename '{name}' in splits train")
    assert ("metadata/test_weak.tsv", line) in _where(root, "has the same content as")
    with pytest.raises(DatasetError, match=f"metadata/test_weak.tsv:{line}: same filename"):
        load_dataset(root)


def test_same_audio_content_under_another_name_is_an_error(flat: Path, tmp_path: Path):
    root = _copy(flat, tmp_path)
    name = _lines(root / "metadata" / "valid_weak.tsv")[1].split("\t")[0]
    shutil.copy(root / "audio" / name, root / "audio" / "renamed.wav")
    line = _append(root / "metadata" / "test_weak.tsv", "renamed.wav\tbeep\tnew")
    _append(root / "metadata" / "durations.tsv", "renamed.wav\t1.000")
    (problem,) = [p for p in check_dataset(root).errors if "same content" in p.message]
    assert (problem.file, problem.line) == ("metadata/test_weak.tsv", line)
    assert f"audio/{name} (valid, listed at metadata/valid.tsv:2)" in problem.message


def test_wav_shorter_than_a_frame_and_wrong_duration_are_errors(flat: Path, tmp_path: Path):
    root = _copy(flat, tmp_path)
    short = _lines(root / "metadata" / "train.tsv")[1].split("\t")[0]
    other = next(r.split("\t")[0] for r in _lines(root / "metadata" / "train_weak.tsv")[1:] if not r.startswith(short))
    write_wav(root / "audio" / short, np.zeros(1, np.float32), 16000)  # durations.tsv still says 1 s
    durations = _lines(root / "metadata" / "durations.tsv")
    line = next(i for i, row in enumerate(durations, 1) if row.startswith(other + "\t"))
    durations[line - 1] = f"{other}\t4.000"
    (root / "metadata" / "durations.tsv").write_text("\n".join(durations) + "\n")
    assert ("metadata/train.tsv", 2) in _where(root, "has 1 sample(s) (0.0001 s), shorter than one feature frame")
    assert ("metadata/durations.tsv", line) in _where(root, "duration 4.000 s differs from the audio (1.000 s)")
    ds = load_dataset(root, strict=False)
    assert short not in set(ds.clips["clip_id"])
    assert ds.clips.set_index("clip_id").loc[other, "duration"] == pytest.approx(1.0)  # the audio is the truth


def test_symlink_leaving_the_root_is_an_error(flat: Path, tmp_path: Path):
    root = _copy(flat, tmp_path)
    name = _lines(root / "metadata" / "test.tsv")[1].split("\t")[0]
    outside = tmp_path / "elsewhere.wav"
    shutil.move(root / "audio" / name, outside)
    (root / "audio" / name).symlink_to(outside)
    assert ("metadata/test.tsv", 2) in _where(root, "is a symlink that leaves the dataset root")
    inside = root / "audio" / "inside.wav"
    shutil.move(outside, inside)
    (root / "audio" / name).unlink()
    (root / "audio" / name).symlink_to(inside)  # a link within the root is fine
    assert not _where(root, "symlink")


def test_groups_must_agree_and_valid_test_sharing_is_a_warning(flat: Path, tmp_path: Path):
    root = _copy(flat, tmp_path)
    strong = _lines(root / "metadata" / "train.tsv")
    strong[0] += "\tgroup"
    name = strong[1].split("\t")[0]
    strong[1:] = [row + ("\tother" if row.startswith(name + "\t") else "\t") for row in strong[1:]]
    (root / "metadata" / "train.tsv").write_text("\n".join(strong) + "\n")
    weak_line = next(i for i, r in enumerate(_lines(root / "metadata" / "train_weak.tsv"), 1) if r.startswith(name))
    found = _where(root, "differs from 'other' at metadata/train.tsv:2")
    assert found == [("metadata/train_weak.tsv", weak_line)]
    root2 = _copy(flat, tmp_path / "b")
    valid = _lines(root2 / "metadata" / "valid_weak.tsv")
    test = _lines(root2 / "metadata" / "test_weak.tsv")
    shared = valid[1].split("\t")[2]
    test[2] = "\t".join([*test[2].split("\t")[:2], shared])
    (root2 / "metadata" / "test_weak.tsv").write_text("\n".join(test) + "\n")
    (problem,) = [p for p in check_dataset(root2).warnings if "valid and test share" in p.message]
    assert (problem.file, problem.line) == ("metadata/test_weak.tsv", 3) and repr(shared) in problem.message
    assert load_dataset(root2).clips.set_index("clip_id").loc[test[2].split("\t")[0], "group"] == shared


def test_short_clip_and_missing_class_are_warnings(flat: Path, tmp_path: Path):
    root = _copy(flat, tmp_path)
    name = _lines(root / "metadata" / "valid.tsv")[1].split("\t")[0]
    write_wav(root / "audio" / name, np.zeros(4000, np.float32), 16000)
    durations = [r.replace(f"{name}\t1.000", f"{name}\t0.250") for r in _lines(root / "metadata" / "durations.tsv")]
    (root / "metadata" / "durations.tsv").write_text("\n".join(durations) + "\n")
    assert ("metadata/valid.tsv", 2) in _where(root, "lasts 0.250 s, less than half the clip length (1.000 s)",
                                                    "warning")
    with (root / "metadata" / "classes.txt").open("a") as fh:
        fh.write("siren\n")
    where = _where(root, "class 'siren' has no positive clip in train", "warning")
    assert where == [("metadata/classes.txt", len(CLASSES) + 1)]
    assert ("metadata/classes.txt", len(CLASSES) + 1) in _where(root, "class 'siren' has no positive clip in valid",
                                                                "warning")


def test_no_format_matches_and_truncated_digest(tmp_path: Path):
    (tmp_path / "junk").mkdir()
    report = check_dataset(tmp_path / "junk")
    assert sorted(p.file for p in report.errors) == sorted(FORMATS)  # one short message per format
    assert all("looked for" in p.message and "missing" in p.message for p in report.errors)
    root = synthesize_layout(tmp_path / "h", "harmonia", SynthArgs(clips=20, seconds=1.0, seed=4, classes=CLASSES))
    shutil.rmtree(root / "audio" / "train")
    (root / "audio" / "train").mkdir()
    rows = [f"clip_{i:04d}.wav\tbeep" for i in range(250)]
    (root / "metadata" / "train_weak.tsv").write_text("\n".join(["filename\tevent_labels", *rows]) + "\n")
    (root / "metadata" / "train.tsv").unlink()
    report = check_dataset(root)
    kinds = {kind: n for kind, n, _ in report.kinds()}
    assert kinds["error: audio file … not found"] == 250
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    report.render(Console(file=buf, width=200))
    out = buf.getvalue().splitlines()
    assert out[0].startswith("format harmonia (auto-detected) · train: metadata/train_weak.tsv")
    digest = next(i for i, line in enumerate(out) if "problems of" in line)
    assert "250 × metadata/train_weak.tsv:2: error: audio file audio/train/clip_0000.wav not found" in out[digest + 1]


def test_configured_format_and_split_overrides(tmp_path: Path):
    root = synthesize_layout(tmp_path / "d", "desed", SynthArgs(clips=24, seconds=1.0, seed=2, classes=CLASSES))
    ds = load_dataset(root)
    assert ds.format == "desed" and set(ds.clips["split"]) == {"train", "valid", "test", "unlabeled"}
    unlabeled = ds.split("unlabeled")
    assert all(t == [] for t in unlabeled["tags"]) and len(unlabeled) == 4
    assert all(cid.startswith("train/unlabel_in_domain/Y") for cid in unlabeled["clip_id"])
    assert all(len(g) == 11 for g in unlabeled["group"])  # the YouTube id
    from harmonia.featureset import split_ids

    assert set(split_ids(ds)) == {"train", "valid", "test"}
    # the synthetic validation soundscapes are also valid by default; map eval/public to none and take
    # test from another file instead
    options = ReadOptions(format="desed", subsets={"eval/*": "none"})
    assert "test" not in set(load_dataset(root, options=options).clips["split"])
    from harmonia.data.registry import Source

    swap = ReadOptions(splits={"test": (Source("metadata/validation/validation.tsv", "audio/validation/validation"),),
                               "valid": (Source("metadata/eval/public.tsv", "audio/eval/public"),)})
    swapped = load_dataset(root, options=swap)
    assert sorted(swapped.split("test")["clip_id"]) == sorted(ds.split("valid")["clip_id"])
    with pytest.raises(DatasetError, match="data.format: unknown format 'nope'"):
        load_dataset(root, options=ReadOptions(format="nope"))
    with pytest.raises(DatasetError, match="format 'esc50' reads its splits"):
        load_dataset(root, options=ReadOptions(format="esc50", splits=swap.splits))
