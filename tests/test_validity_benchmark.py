"""benchmarks/ensemble_validity.py: grouped resplits keep every source group on one side, and the rules
re-applied to saved per-resample results pick what the full run picked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ensemble_validity.py"
FIXTURE = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "synth_shift_300.npz"


def _validity():
    return load_script(SCRIPT)


def test_grouped_split_keeps_groups_whole_and_sizes_close():
    ev = _validity()
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(30)], rng.integers(1, 8, 30))
    for seed in range(20):
        a, b = ev.grouped_split(groups, len(groups) // 2, np.random.default_rng(seed))
        assert len(a) + len(b) == len(groups) and not set(a) & set(b)
        assert not set(groups[a]) & set(groups[b])
        assert abs(len(a) - len(groups) // 2) <= 4  # within half the largest group (7)
    splits = {tuple(ev.grouped_split(groups, len(groups) // 2, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(splits) > 15  # random, not one fixed assignment


def test_rules_reapplied_to_saved_results_match_the_run(tmp_path: Path):
    ev = _validity()
    lib = dict(np.load(FIXTURE, allow_pickle=False))
    lib = {k: (v[:6] if k in ("valid", "test") else v) for k, v in lib.items()}  # 6 members: seconds, not minutes
    job = next(ev.resamples(lib, "grouped resplit", 1, seed=3))
    result = json.loads(json.dumps(ev.evaluate((*job, "mAP"))))  # as --dump writes it
    again = ev.repick(result, "mAP")
    assert again["picks"] == result["picks"]
    assert set(result["picks"]) >= set(ev.RULES)
    assert all(np.isfinite(m["honest"]) and len(m["score"]["boot"]) > 10 for m in result["methods"].values())


def test_honest_folds_follow_each_scheme_grouped_only_where_test_sources_stay_apart():
    """shift kept and grouped resplits keep test's recordings apart from valid's: grouped folds; a random
    clip-level resplit (shift removed) mixes them: stratified folds, as the stage would choose for such a split."""
    from harmonia.ensembles.stage import honest_setup

    ev = _validity()
    lib = dict(np.load(FIXTURE, allow_pickle=False))
    for scheme, grouped in (("shift kept", True), ("grouped resplit", True), ("shift removed", False)):
        for job in ev.resamples(lib, scheme, 3, seed=1):
            setup = honest_setup(ev.library_of(*job), repeats=1)
            assert setup.grouped is grouped and setup.shared_sources is not grouped, scheme
