"""SED metrics against their references: PSDS vs sed_scores_eval, event / segment counts vs sed_eval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter

from harmonia import psds as hp
from harmonia.sed_metrics import (EventArrays, binary_median, decode_events, event_counts, event_metrics, f_scores,
                                  frame_runs, segment_counts, segment_metrics, segment_scores)

CLASSES = ["alarm", "bell", "speech"]
HOP = 0.1
FRAMES = 100


def _case(seed: int, n: int = 8) -> tuple[dict, np.ndarray]:
    """Reference events (non-overlapping within a class) and frame scores that follow them loosely, with
    late onsets, spill into another class and noise."""
    rng = np.random.default_rng(seed)
    gt, probs = {}, []
    for i in range(n):
        p = rng.uniform(0, 0.3, (FRAMES, len(CLASSES)))
        events = []
        for k, label in enumerate(CLASSES):
            start = 0.0
            for _ in range(rng.integers(0, 3)):
                on = start + rng.uniform(0.05, 2.0)
                off = min(on + rng.uniform(0.2, 3.0), FRAMES * HOP)
                if on >= FRAMES * HOP - 0.1:
                    break
                start = off
                events.append((round(on, 2), round(off, 2), label))
                a, b = int(on / HOP), int(off / HOP)
                p[max(0, a - int(rng.integers(0, 3))):b, (k + int(rng.random() < 0.2)) % len(CLASSES)] += rng.uniform(0.1, 0.7)
        gt[f"f{i}"] = events
        probs.append(np.clip(p, 0, 1))
    return gt, np.asarray(probs)


def _sed_scores_eval_psds(gt: dict, probs: np.ndarray, name: str) -> float:
    """The reference value. sed_scores_eval 0.0.4 writes into arrays that pandas 3 hands out read-only:
    its detection curve gets copies (the only change)."""
    pytest.importorskip("sed_scores_eval")
    from sed_scores_eval import intersection_based
    from sed_scores_eval.base_modules import statistics
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    curves = statistics.onset_offset_curves
    statistics.onset_offset_curves = lambda s, t, c=None: curves(np.array(s), np.array(t), None if c is None else np.array(c))
    try:
        scores = {f: create_score_dataframe(probs[i], np.arange(FRAMES + 1) * HOP, CLASSES) for i, f in enumerate(gt)}
        sc = hp.PSDS_SCENARIOS[name]
        return intersection_based.psds(
            scores=scores, ground_truth=gt, audio_durations={f: FRAMES * HOP for f in gt}, dtc_threshold=sc.dtc,
            gtc_threshold=sc.gtc, cttc_threshold=sc.cttc, alpha_ct=sc.alpha_ct, alpha_st=sc.alpha_st,
            max_efpr=sc.max_efpr)[0]
    finally:
        statistics.onset_offset_curves = curves


def test_psds_scenarios_are_dcase_2021s():
    assert hp.PSDS_SCENARIOS["psds1"] == hp.PsdsScenario(0.7, 0.7, None, 0.0, 1.0, 100.0)
    assert hp.PSDS_SCENARIOS["psds2"] == hp.PsdsScenario(0.1, 0.1, 0.3, 0.5, 1.0, 100.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["psds1", "psds2"])
def test_psds_equals_sed_scores_eval(seed: int, name: str):
    gt, probs = _case(seed)
    ref = EventArrays.from_lists(gt, list(gt), CLASSES)
    got = hp.psds(probs, HOP, ref, None, name)
    assert 0.0 < got < 1.0
    assert got == pytest.approx(_sed_scores_eval_psds(gt, probs, name), abs=1e-12)
    # a grid of thresholds is the threshold-free sweep of the scores snapped to it
    grid = np.linspace(0.05, 0.95, 19)
    assert hp.psds(probs, HOP, ref, None, name, thresholds=grid) == pytest.approx(
        _sed_scores_eval_psds(gt, hp.on_grid(probs, grid), name), abs=1e-12)


def test_psds_of_a_perfect_and_a_silent_detector():
    gt = {"a": [(1.0, 3.0, "alarm")], "b": [(0.5, 2.0, "bell"), (4.0, 6.0, "speech")]}
    ref = EventArrays.from_lists(gt, ["a", "b"], CLASSES)
    perfect = np.zeros((2, FRAMES, 3))
    perfect[0, 10:30, 0] = perfect[1, 5:20, 1] = perfect[1, 40:60, 2] = 1.0
    assert hp.psds(perfect, HOP, ref, None, "psds1") == pytest.approx(1.0)
    assert hp.psds(perfect, HOP, ref, None, "psds2") == pytest.approx(1.0)
    assert hp.psds(np.zeros_like(perfect), HOP, ref, None, "psds1") == 0.0


def _decoded(probs: np.ndarray, files: list[str], median: int) -> dict:
    return {f: decode_events(p, HOP, CLASSES, 0.5, median) for f, p in zip(files, probs)}


@pytest.mark.parametrize("seed", [0, 3])
def test_event_and_segment_counts_equal_sed_eval(seed: int):
    gt, probs = _case(seed, n=10)
    files = list(gt)
    est = _decoded(probs + np.random.default_rng(seed).uniform(0, 0.35, probs.shape), files, 3)
    ref_a, est_a = EventArrays.from_lists(gt, files, CLASSES), EventArrays.from_lists(est, files, CLASSES)
    ev = f_scores(event_counts(ref_a, est_a, len(CLASSES)), "event")
    want = event_metrics(gt, est, files, CLASSES)
    assert ev["event_f1"] == pytest.approx(want["f_measure"], abs=1e-12) and 0 < ev["event_f1"] < 1
    assert ev["event_f1_macro"] == pytest.approx(want["f_measure_macro"], abs=1e-12)
    seg = segment_scores(segment_counts(ref_a, est_a, len(files), len(CLASSES)))
    want = segment_metrics(gt, est, files, CLASSES)
    assert seg["segment_f1"] == pytest.approx(want["f_measure"], abs=1e-12)
    assert seg["segment_er"] == pytest.approx(want["error_rate"], abs=1e-12)


def test_event_counts_match_optimally_within_the_collars():
    ref = EventArrays.from_lists({"a": [(1.0, 2.0, "alarm"), (1.15, 2.1, "alarm"), (5.0, 9.0, "bell")]}, ["a"], CLASSES)
    # both estimates fit the first reference, only the second fits the second: optimal matching finds 2;
    # the bell offset is 0.7 s late, inside max(0.2, 20 % of 4 s)
    est = EventArrays.from_lists({"a": [(1.05, 2.05, "alarm"), (1.3, 2.1, "alarm"), (5.1, 9.7, "bell")]}, ["a"], CLASSES)
    c = event_counts(ref, est, 3)
    assert c["ntp"].tolist() == [2, 1, 0] and c["nsys"].tolist() == [2, 1, 0] and c["nref"].tolist() == [2, 1, 0]


def test_binary_median_and_frame_runs_equal_scipy_and_decode_events():
    rng = np.random.default_rng(0)
    active = rng.random((4, 3, 60)) < 0.5
    for m in (1, 3, 7, 21):
        want = median_filter(active.astype(np.uint8), size=(1, 1, m), mode="nearest").astype(bool)
        assert np.array_equal(binary_median(active, m), want)
    probs = rng.random((4, 60, 3))
    runs = frame_runs(probs >= 0.5, HOP)
    decoded = _decoded(probs, ["0", "1", "2", "3"], 1)
    got = sorted(zip(runs.file.tolist(), runs.onset.tolist(), runs.offset.tolist(), runs.cls.tolist()))
    want = sorted((int(f), on, off, CLASSES.index(lab)) for f, evs in decoded.items() for on, off, lab in evs)
    assert got == want


def test_epoch_scores_of_perfect_frames_at_every_output_hop():
    import torch

    from harmonia.trainables.tasks import pool_frame_targets, sed_scores

    rng = np.random.default_rng(0)
    y = np.zeros((6, 200, 3), np.uint8)
    for i in range(6):
        for c in range(3):
            a = int(rng.integers(0, 150))
            y[i, a:a + int(rng.integers(20, 50)), c] = 1
    for pool in (1, 2, 4):  # models that pool time output frames at 1, 2, 4 feature hops
        frames = pool_frame_targets(torch.from_numpy(y).float(), 200 // pool).numpy() * 0.9 + 0.05
        got = sed_scores(y, frames, 0.02, "valid")
        assert got == pytest.approx({"valid_event_f1": 1.0, "valid_event_f1_macro": 1.0, "valid_segment_f1": 1.0,
                                     "valid_segment_f1_macro": 1.0, "valid_segment_er": 0.0, "valid_psds1": 1.0,
                                     "valid_psds2": 1.0})
        noisy = sed_scores(y, np.clip(frames + rng.normal(0, 0.3, frames.shape), 0, 1), 0.02, "valid")
        assert noisy["valid_event_f1"] < 1.0 and noisy["valid_psds1"] < 1.0
