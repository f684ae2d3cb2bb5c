from pathlib import Path

import optuna
import pytest

from harmonia.config import ConfigError, load_config, parse_config
from harmonia.spaces import SpaceError, define_by_run, parameter_names, validate_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_config_loads():
    cfg = load_config(ROOT / "configs/quickstart.yaml")
    assert cfg.name == "quickstart" and cfg.data.root == "data/synth"
    assert cfg.tracking.uri == "sqlite:///mlruns.db"
    from harmonia.spaces import validate_overrides

    validate_overrides(cfg.space, cfg.task, cfg.features)  # every override names a real parameter


def test_relative_paths_resolve_against_the_run_directory(tmp_path):
    cfg = parse_config({}).resolved(tmp_path)
    assert cfg.data.root == str(tmp_path / "data/synth")
    assert cfg.tracking.uri == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert cfg.search.storage_path == str(tmp_path / "ray_results")


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("search:\n  num_sample: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "search.num_sample" in str(e.value) and "num_samples" in str(e.value) and str(p) in str(e.value)


def test_wrong_type_names_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("search:\n  num_samples: many\n")
    with pytest.raises(ConfigError, match="search.num_samples"):
        load_config(p)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nsearch: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{p}:\d+"):
        load_config(p)


def _sample(overrides, n=20):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = define_by_run(overrides)
    out = []
    for _ in range(n):
        t = study.ask()
        consts = fn(t)
        out.append({**t.params, **consts})
        study.tell(t, 0.0)
    return out


def test_space_samples_conditional_augmentation_params():
    samples = _sample({"arch": "crnn"})
    assert any(s["aug.mixup"] for s in samples) and any(not s["aug.mixup"] for s in samples)
    for s in samples:
        assert ("mixup.alpha" in s) == s["aug.mixup"]
        assert ("tid.p" in s) == s["aug.tid"]
        assert 2 <= s["crnn.blocks"] <= 4


def test_overrides_fix_restrict_and_move_ranges():
    samples = _sample({"arch": "crnn", "crnn.pooling": "attention", "batch_size": [16], "lr": {"low": 1e-3, "high": 2e-3},
                       "aug.mixup": True})
    for s in samples:
        assert s["crnn.pooling"] == "attention" and s["batch_size"] == 16 and 1e-3 <= s["lr"] <= 2e-3
        assert s["aug.mixup"] is True and "mixup.alpha" in s


@pytest.mark.parametrize("overrides, match", [
    ({"crnn.blockz": 3}, "crnn.blockz.*valid:.*crnn.blocks"),
    ({"batch_size": []}, "batch_size: empty choice list"),
    ({"lr": {"low": 1e-2, "high": 1e-3}}, "lr: inverted"),
    ({"arch": ["transformer"]}, "unknown architecture 'transformer'"),
    ({"crnn.pooling": "median"}, "crnn.pooling"),
])
def test_bad_overrides_are_rejected_by_name(overrides, match):
    with pytest.raises(SpaceError, match=match):
        validate_overrides(overrides)


def test_parameter_names_cover_every_part():
    names = {n for ns in parameter_names().values() for n in ns}
    assert {"arch", "crnn.blocks", "lr", "aug.mixup", "mixup.alpha", "aug.tid", "tid.p"} <= names


def _sample_with(overrides, features, n=20):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = define_by_run(overrides, features=features)
    out = []
    for _ in range(n):
        t = study.ask()
        consts = fn(t)
        out.append({**t.params, **consts})
        study.tell(t, 0.0)
    return out


def test_feature_kind_is_sampled_from_the_space_or_is_the_configs():
    from harmonia.config import FeatureConfig

    both = _sample_with({"arch": "crnn", "features.kind": ["logmel", "mfcc"]}, FeatureConfig())
    assert {s["features.kind"] for s in both} == {"logmel", "mfcc"}
    # absent from the space: every trial takes the config's kind (and its params name it)
    assert {s["features.kind"] for s in _sample_with({"arch": "crnn"}, FeatureConfig(kind="mfcc"))} == {"mfcc"}
    assert {s["features.kind"] for s in _sample_with({"features.kind": "nnf_logmel"}, FeatureConfig())} == {"nnf_logmel"}
    assert {s["features.kind"] for s in _sample_with({"features.kind": {"choices": ["mfcc"]}}, None)} == {"mfcc"}


@pytest.mark.parametrize("kinds", ["cqt", ["logmel", "gammatone"], {"choices": ["mfcc", "cqt"]}])
def test_unknown_feature_kind_in_the_space_names_it_and_the_valid_ones(kinds):
    bad = next(k for k in ([kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list)
                           else kinds["choices"]) if k not in ("logmel", "mfcc", "nnf_logmel"))
    with pytest.raises(SpaceError, match=rf"features.kind: unknown feature kind '{bad}'; valid: logmel, mfcc, nnf_logmel"):
        validate_overrides({"features.kind": kinds})


def test_waveform_copies_are_searchable_only_when_the_config_precomputes_them():
    from harmonia.config import FeatureConfig

    none = FeatureConfig()
    copies = FeatureConfig(augmented_copies={"pitch_shift_semitones": [-1, 1], "time_stretch_rates": [1.1]})
    assert "aug.waveform_copies" in {n for ns in parameter_names().values() for n in ns}
    # no copies: the parameter is not offered (trials train on the originals)...
    assert all("aug.waveform_copies" not in s for s in _sample_with({"arch": "crnn"}, none))
    validate_overrides({"aug.waveform_copies": False}, features=none)
    # ...and forcing it on is an error that says why
    for forced in (True, [False, True], {"choices": [True]}):
        with pytest.raises(SpaceError, match="aug.waveform_copies.*features.augmented_copies is empty"):
            validate_overrides({"aug.waveform_copies": forced}, features=none)
        with pytest.raises(SpaceError, match="augmented_copies is empty"):
            _sample_with({"aug.waveform_copies": forced}, none, n=1)
    # with copies: on or off per trial, or fixed by the space
    assert {s["aug.waveform_copies"] for s in _sample_with({"arch": "crnn"}, copies)} == {False, True}
    validate_overrides({"aug.waveform_copies": True}, features=copies)
    assert {s["aug.waveform_copies"] for s in _sample_with({"aug.waveform_copies": True}, copies)} == {True}


def test_spaces_show_lists_the_feature_kind_and_waveform_copies(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli import app

    p = tmp_path / "c.yaml"
    p.write_text("features: {kind: mfcc}\nspace: {arch: crnn}\n")
    res = CliRunner().invoke(app, ["spaces", "show", str(p)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "features.kind" in res.output and "mfcc (features.kind)" in res.output
    assert "aug.waveform_copies" in res.output and "features.augmented_copies is empty" in res.output
    assert "chunkmix.p" in res.output
    p.write_text("space: {features.kind: [logmel, cqt]}\n")
    res = CliRunner().invoke(app, ["spaces", "show", str(p)], env={"COLUMNS": "200"})
    assert res.exit_code != 0 and "unknown feature kind 'cqt'" in res.output


def test_zoo_config_validates_with_two_feature_kinds_and_copies():
    cfg = load_config(ROOT / "configs/zoo.yaml")
    validate_overrides(cfg.space, cfg.task, cfg.features)
    assert cfg.space["features.kind"] == ["logmel", "mfcc"] and cfg.features.augmented_copies.n_copies == 2


def test_repeated_choices_are_offered_once():
    from harmonia.spaces import define_by_run

    from harmonia.spaces.core import RecordingTrial

    trial = RecordingTrial()
    define_by_run({"arch": "crnn", "features.kind": ["logmel", "logmel", "mfcc"], "batch_size": [16, 16, 32]})(trial)
    assert trial.choices["features.kind"] == ["logmel", "mfcc"] and trial.choices["batch_size"] == [16, 32]
