"""A search per architecture with every augmentation switched on (the precomputed waveform copies too),
the feature kinds taken in turn: finished MLflow runs for each."""

from __future__ import annotations

import pytest

from harmonia import tracking
from harmonia.config import TASK_METRICS, AugmentedCopiesConfig
from tests.conftest import tiny_config


@pytest.mark.slow
def test_every_architecture_and_augmentation_trains_in_a_search(ray_local, tmp_path):
    from harmonia.search.tuner import run_search
    from harmonia.spaces.architectures import ARCHITECTURE_SPACES
    from harmonia.spaces.augmentations import AUGMENTATION_SPACES, augmentations_for
    from harmonia.trainables.architectures import ARCHITECTURES

    from harmonia.spaces.features import FEATURE_KIND_NAMES

    assert set(ARCHITECTURE_SPACES) == set(ARCHITECTURES)
    assert "chunkmix" in AUGMENTATION_SPACES
    def augs_of(task):  # every augmentation the task's search offers (sequence: none that breaks the order)
        return {f"aug.{a}": True for a in augmentations_for(task)} | {"aug.waveform_copies": True}

    kind_of = {arch: FEATURE_KIND_NAMES[i % len(FEATURE_KIND_NAMES)] for i, arch in enumerate(sorted(ARCHITECTURES))}
    for arch in sorted(ARCHITECTURES):
        cfg = tiny_config(tmp_path, name="zoo", num_samples=1, max_concurrent=1, max_epochs=1)
        task = ARCHITECTURES[arch].tasks[0]  # crnn_ctc: sequence; the others: tagging
        cfg.task, cfg.search.metric = task, TASK_METRICS[task][0]
        cfg.features.augmented_copies = AugmentedCopiesConfig(pitch_shift_semitones=[2])
        cfg.space = {"arch": arch, "batch_size": [16], "features.kind": kind_of[arch], **augs_of(task)}
        run_search(cfg, progress=False)
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name("zoo")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")
    assert {r.data.params["arch"] for r in runs if r.info.status == "FINISHED"} == set(ARCHITECTURES)
    for r in runs:
        task = ARCHITECTURES[r.data.params["arch"]].tasks[0]
        assert all(r.data.params[k] == "True" for k in augs_of(task)), r.data.params
        assert r.data.params["features.kind"] == kind_of[r.data.params["arch"]]
    assert set(kind_of.values()) == set(FEATURE_KIND_NAMES)
    assert set().union(*(augs_of(ARCHITECTURES[a].tasks[0]) for a in ARCHITECTURES)) >= {
        f"aug.{a}" for a in AUGMENTATION_SPACES}  # every augmentation ran in some trial
