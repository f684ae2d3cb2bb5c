"""Task scene: DCASE 2018 task 1 folders (synthesized and loaded), softmax outputs, Trainer and search."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harmonia.data.data_check import check_dataset
from harmonia.data.datasets import CLIP_COLUMNS, DatasetError, load_dataset
from harmonia.data.scenes import split_by_location
from harmonia.data.synth import SCENE_PROFILES, synthesize_scenes

SCENES = tuple(SCENE_PROFILES)[:5]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    return synthesize_scenes(tmp_path_factory.mktemp("scenes") / "dcase2018", clips=240, seconds=2.0, seed=1, scenes=5)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return synthesize_scenes(tmp_path_factory.mktemp("scenes") / "small", clips=18, seconds=1.0, seed=2, scenes=3)


def _fold(root: Path, part: str) -> pd.DataFrame:
    return pd.read_csv(root / "evaluation_setup" / f"fold1_{part}.csv", sep="\t", dtype=str)


def test_synth_writes_the_dcase2018_task1_layout(scene_root: Path, small_root: Path, tmp_path: Path):
    meta = pd.read_csv(scene_root / "meta.csv", sep="\t", dtype=str)
    assert list(meta.columns) == ["filename", "scene_label", "identifier", "source_label"]
    assert len(meta) == 240 and sorted(set(meta["scene_label"])) == sorted(SCENES)
    for name, scene, ident in zip(meta["filename"], meta["scene_label"], meta["identifier"]):
        m = re.fullmatch(r"audio/([a-z_]+)-([a-z]+-\d+)-(\d+)-a\.wav", name)
        assert m and m.group(1) == scene and m.group(2) == ident and (scene_root / name).is_file()
        # dcase_util derives the identifier of a 2018 task 1 file the same way
        assert ident == "-".join(Path(name).stem.split("-")[1:-2])
    train, evaluate, test = _fold(scene_root, "train"), _fold(scene_root, "evaluate"), _fold(scene_root, "test")
    assert list(train.columns) == list(evaluate.columns) == ["filename", "scene_label"] and list(test.columns) == ["filename"]
    assert sorted([*train["filename"], *evaluate["filename"]]) == sorted(meta["filename"])
    assert list(test["filename"]) == list(evaluate["filename"])
    ident = dict(zip(meta["filename"], meta["identifier"]))
    assert not {ident[f] for f in train["filename"]} & {ident[f] for f in evaluate["filename"]}
    assert set(evaluate["scene_label"]) == set(SCENES)  # every scene has an evaluate location
    again = synthesize_scenes(tmp_path / "again", clips=18, seconds=1.0, seed=2, scenes=3)
    for rel in ["meta.csv", "evaluation_setup/fold1_train.csv", *sorted(p.relative_to(small_root).as_posix()
                                                                         for p in (small_root / "audio").glob("*.wav"))]:
        assert (again / rel).read_bytes() == (small_root / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="too few for 3 scenes"):
        synthesize_scenes(tmp_path / "tiny", clips=8, seconds=1.0, scenes=3)


def test_loader_maps_folds_to_splits_by_location(scene_root: Path):
    report = check_dataset(scene_root)
    assert report.problems == [], report.problems
    ds = load_dataset(scene_root)
    assert ds.is_scene and not ds.has_strong and ds.events.empty
    assert list(ds.clips.columns) == [*CLIP_COLUMNS, "identifier"] and ds.classes == sorted(SCENES)
    assert sorted(ds.split("test")["clip_id"]) == sorted(_fold(scene_root, "evaluate")["filename"])
    train, valid = ds.split("train"), ds.split("valid")
    assert sorted([*train["clip_id"], *valid["clip_id"]]) == sorted(_fold(scene_root, "train")["filename"])
    assert not set(train["identifier"]) & set(valid["identifier"])  # no location in both
    meta = pd.read_csv(scene_root / "meta.csv", sep="\t", dtype=str).set_index("filename")
    assert all(meta.loc[c, "identifier"] == i for c, i in zip(ds.clips["clip_id"], ds.clips["identifier"]))
    assert all(tags == [meta.loc[c, "scene_label"]] for c, tags in zip(ds.clips["clip_id"], ds.clips["tags"]))
    for scene in SCENES:  # every scene in train and valid, valid near 20 % of the scene's train-fold clips
        n_valid, n_train = (valid["tags"].str[0] == scene).sum(), (train["tags"].str[0] == scene).sum()
        assert n_train > 0 and 0.1 <= n_valid / (n_valid + n_train) <= 0.4, (scene, n_valid, n_train)
    y = ds.targets("valid")
    assert y.shape == (len(valid), len(SCENES)) and (y.sum(axis=1) == 1).all()
    assert report.summary.clips_per_split == {"train": len(train), "valid": len(valid), "test": len(ds.split("test"))}
    assert load_dataset(scene_root).clips.equals(ds.clips)  # deterministic


def test_split_by_location_keeps_locations_whole_and_is_deterministic():
    rng = np.random.default_rng(0)
    clips = [(f"f{i}", f"s{i % 3}", f"loc{i % 3}-{rng.integers(0, 5)}") for i in range(120)]
    valid = split_by_location(clips)
    assert valid == split_by_location(list(reversed(clips)))  # no dependence on the listing order
    loc_of = {name: ident for name, _, ident in clips}
    assert not {loc_of[n] for n in valid} & {loc_of[n] for n, _, _ in clips if n not in valid}
    for scene in ("s0", "s1", "s2"):
        names = [n for n, s, _ in clips if s == scene]
        share = np.mean([n in valid for n in names])
        assert 0 < share < 0.5 and any(n not in valid for n in names)
    single = [(f"g{i}", "only", "one-location") for i in range(5)]
    assert split_by_location(single) == set()  # a scene with one location stays in train


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def test_loader_errors_name_file_and_line(small_root: Path, tmp_path: Path):
    root = _copy(small_root, tmp_path)
    meta_lines = _lines(root / "meta.csv")
    first = meta_lines[1].split("\t")[0]
    missing_audio = meta_lines[2].split("\t")[0]
    (root / missing_audio).unlink()
    meta_lines.append(meta_lines[3])  # duplicate of line 4
    meta_lines.append("audio/park-x-1-0-a.wav\tpark\tx-1")  # 3 columns
    _write(root / "meta.csv", meta_lines)
    train = _lines(root / "evaluation_setup/fold1_train.csv")
    train.append("audio/unknown-file.wav\tairport")
    _write(root / "evaluation_setup/fold1_train.csv", train)
    evaluate = _lines(root / "evaluation_setup/fold1_evaluate.csv")
    name, scene = evaluate[1].split("\t")
    evaluate[1] = f"{name}\t{'bus' if scene != 'bus' else 'airport'}"
    evaluate.append(f"{first}\t{dict(l.split(chr(9))[:2] for l in meta_lines[1:5])[first]}")
    _write(root / "evaluation_setup/fold1_evaluate.csv", evaluate)
    n = len(meta_lines)
    expected = {
        ("meta.csv", 3): "audio file",  # the missing audio, at its meta.csv row
        ("meta.csv", n - 1): "duplicate row",
        ("meta.csv", n): "expected 4 tab-separated columns",
        ("evaluation_setup/fold1_train.csv", len(train)): "'audio/unknown-file.wav' is not in meta.csv",
        ("evaluation_setup/fold1_evaluate.csv", 2): "differs from meta.csv:",
        ("evaluation_setup/fold1_evaluate.csv", len(evaluate)): "is also in evaluation_setup/fold1_train.csv:",
    }
    report = check_dataset(root)
    for (file, line), text in expected.items():
        assert any(p.file == file and p.line == line and text in p.message and p.severity == "error"
                   for p in report.problems), (file, line, text, report.problems)
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    for (file, line), text in expected.items():
        assert f"{file}:{line}: " in str(err.value) and text in str(err.value)


@pytest.mark.parametrize("case, where, text", [
    ("no identifier column", ("meta.csv", 1), "lacks column(s) ['identifier']"),
    ("no meta.csv", ("meta.csv", None), "not found"),
    ("no fold1_train.csv", ("evaluation_setup/fold1_train.csv", None), "not found"),
])
def test_structural_errors_are_named(small_root: Path, tmp_path: Path, case, where, text):
    root = _copy(small_root, tmp_path)
    if case == "no identifier column":
        lines = _lines(root / "meta.csv")
        lines[0] = lines[0].replace("identifier", "location")
        _write(root / "meta.csv", lines)
    elif case == "no meta.csv":
        (root / "meta.csv").unlink()
    else:
        (root / "evaluation_setup/fold1_train.csv").unlink()
    problems = [p for p in check_dataset(root).errors if (p.file, p.line) == where and text in p.message]
    assert problems, check_dataset(root).problems
    with pytest.raises(DatasetError, match=re.escape(f"{where[0]}{'' if where[1] is None else f':{where[1]}'}: ")):
        load_dataset(root)


def test_headerless_fold_files_are_read(small_root: Path, tmp_path: Path):
    root = _copy(small_root, tmp_path)
    for part in ("train", "evaluate", "test"):
        path = root / f"evaluation_setup/fold1_{part}.csv"
        _write(path, _lines(path)[1:])
    assert check_dataset(root).problems == []
    assert load_dataset(root).clips.equals(load_dataset(small_root).clips.assign(
        path=load_dataset(root).clips["path"]))


def test_cli_synth_and_check_scene_folder(tmp_path: Path):
    from typer.testing import CliRunner

    from harmonia.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["data", "synth", str(out), "--task", "scene", "--clips", "12", "--seconds", "1",
                                   "--scenes", "2"])
    assert res.exit_code == 0, res.output
    assert (out / "meta.csv").is_file() and (out / "evaluation_setup/fold1_test.csv").is_file()
    res = CliRunner().invoke(app, ["data", "check", str(out)])
    assert res.exit_code == 0 and "no errors" in res.output, res.output
    (out / "evaluation_setup/fold1_evaluate.csv").unlink()
    res = CliRunner().invoke(app, ["data", "check", str(out)])
    assert res.exit_code == 1 and "1 errors" in res.output, res.output  # the table names the file


SMALL = {
    "crnn": {"crnn.blocks": 2, "crnn.channels": 8, "crnn.gru_size": 16},
    "gated_crnn": {"gated_crnn.channels": 8, "gated_crnn.gru_size": 16},
    "elu_crnn": {"elu_crnn.width": 0.5, "elu_crnn.gru_size": 16},
    "cnn8": {"cnn8.channels": 8},
    "multi_input_cnn": {"multi_input_cnn.width": 0.25},
}


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_scene_outputs_are_a_softmax_over_classes(arch):
    from harmonia.trainables.architectures import architectures_for, build_model

    assert sorted(SMALL) == architectures_for("scene")
    torch.manual_seed(0)
    scene = build_model(arch, {**SMALL[arch], "task": "scene"}, 32, 4).eval()
    tagging = build_model(arch, SMALL[arch], 32, 4).eval()
    tagging.load_state_dict(scene.state_dict())  # same weights: only the outputs differ
    x = torch.randn(3, 64, 32)
    with torch.no_grad():
        (c, f), (tc, _) = scene(x), tagging(x)
    torch.testing.assert_close(c.sum(1), torch.ones(3))
    torch.testing.assert_close(f.sum(2), torch.ones(f.shape[:2]))
    torch.testing.assert_close(c, torch.softmax(torch.logit(tc, eps=1e-7), 1))
    assert torch.equal(c.argmax(1), tc.argmax(1))


@pytest.fixture(scope="module")
def scene_data(scene_root: Path, tmp_path_factory):
    from harmonia.config import parse_config
    from harmonia.featureset import prepare

    base = tmp_path_factory.mktemp("scene_fs")
    cfg = parse_config({"task": "scene", "search": {"metric": "accuracy"}, "data": {"root": str(scene_root), "synth": None},
                        "features": {"n_mels": 32, "hop_length": 320, "n_fft": 512, "cache_dir": str(base / "cache")}})
    return prepare(cfg.resolved(base), progress=False)


def test_trainer_on_scenes_beats_chance(scene_data):
    from harmonia.trainables.training import Trainer

    _, fs = scene_data
    params = {"arch": "crnn", **SMALL["crnn"], "lr": 3e-3, "batch_size": 16}
    trainer = Trainer(params, fs, max_epochs=10, patience=10, metric="accuracy", seed=0, task="scene")
    while not trainer.done:
        result = trainer.run_epoch()
    assert {"valid_accuracy", "valid_log_loss", "valid_mAP", "valid_auc", "valid_loss"} <= set(result.metrics)
    assert trainer.params["task"] == "scene"
    probs, frames = trainer.predict("test", model=trainer.best_model())
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    y = fs.splits["test"].y
    acc = float((probs.argmax(1) == y.argmax(1)).mean())
    chance = float(y.mean(0).max())  # always answering the most frequent test scene
    assert acc >= chance + 0.15, (acc, chance)  # measured: 0.52 vs 0.23 on 65 test clips


def test_log_loss_as_the_metric_keeps_the_lowest(scene_data):
    from harmonia.trainables.training import Trainer

    _, fs = scene_data
    params = {"arch": "cnn8", **SMALL["cnn8"], "lr": 3e-3, "batch_size": 16}
    trainer = Trainer(params, fs, max_epochs=4, patience=4, metric="log_loss", seed=0, task="scene")
    history = []
    while not trainer.done:
        history.append(trainer.run_epoch().metrics["valid_log_loss"])
    assert trainer.best_score == pytest.approx(min(history))
    assert trainer.best_epoch == int(np.argmin(history)) + 1


def test_prepare_refuses_a_dataset_without_the_task_labels(small_root: Path, tmp_path: Path):
    from harmonia.config import parse_config
    from harmonia.featureset import prepare
    from harmonia.data.synth import synthesize

    task4 = synthesize(tmp_path / "task4", clips=20, seconds=1.0, seed=0, events_per_clip=(2, 3))
    for root, task, text in ((task4, "scene", "exactly one label per clip"),
                             (small_root, "sequence", "needs strong labels"),
                             (small_root, "sed", "needs strong labels")):
        metric = {"scene": "accuracy", "sequence": "seq_acc"}.get(task, "mAP")
        cfg = parse_config({"task": task, "search": {"metric": metric}, "data": {"root": str(root), "synth": None},
                            "features": {"cache_dir": str(tmp_path / "cache")}})
        with pytest.raises(DatasetError, match=f"task '{task}' .*{text}"):
            prepare(cfg, progress=False)


def test_scene_search_end_to_end(ray_local, tmp_path):
    """A tiny search of task scene on local Ray with log-loss as the (minimized) metric: FINISHED runs whose
    predictions are softmax probabilities per class, best trial first, and an ensemble built from them."""
    from harmonia import tracking
    from harmonia.config import parse_config
    from harmonia.ensembles.stage import build_ensemble
    from harmonia.search.tuner import run_search
    from tests.conftest import tiny_config

    raw = tiny_config(tmp_path, name="scene", num_samples=2, max_epochs=2).model_dump()
    raw["task"] = "scene"
    raw["data"]["synth"]["scenes"] = 4
    raw["search"]["metric"] = "log_loss"
    raw["ensemble"]["metric"] = "accuracy"
    cfg = parse_config(raw)
    result = run_search(cfg, progress=False)
    assert (tmp_path / "data" / "meta.csv").is_file()  # synthesized in the DCASE 2018 task 1 layout
    assert len(result.trials) == 2 and (result.trials["status"] == "TERMINATED").all()
    assert result.trials["score"].is_monotonic_increasing  # lowest log-loss first
    ds = load_dataset(cfg.data.root)
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name("scene")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert {"valid_accuracy", "valid_log_loss"} <= set(run.data.metrics)
        for split in ("valid", "test"):
            df = pd.read_parquet(c.download_artifacts(run.info.run_id, f"predictions/{split}.parquet", str(tmp_path)))
            assert list(df.columns) == ["clip_id", *ds.classes] and len(ds.classes) == 4
            assert sorted(df["clip_id"]) == sorted(ds.split(split)["clip_id"])
            np.testing.assert_allclose(df[ds.classes].to_numpy().sum(1), 1.0, atol=1e-5)
    report = build_ensemble(cfg.tracking.uri, "scene", size=3, metric="accuracy", progress=False)
    assert report.members and 0.0 <= report.comparison.loc["ensemble", "test"] <= 1.0


@pytest.mark.parametrize("name", ["sequence", "scene"])
def test_example_configs_of_the_new_tasks_validate(name):
    from harmonia.config import load_config
    from harmonia.spaces import validate_overrides

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert cfg.task == name and cfg.search.metric == {"sequence": "seq_acc", "scene": "accuracy"}[name]
    validate_overrides(cfg.space, cfg.task)
