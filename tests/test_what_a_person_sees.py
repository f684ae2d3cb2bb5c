"""What a person sees (issue 12): progress from the first file and of running trials, tables and commands
that fit 80 columns. Consoles are real rich Consoles (width 80, recorded); the files are real WAVs."""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from rich.console import Console

from harmonia.progress import Ticker


def _console() -> Console:
    return Console(width=80, record=True, color_system=None)


def _lines(console: Console) -> list[str]:
    return console.export_text().splitlines()


# ------------------------------------------------------------------------ features progress
@pytest.mark.parametrize("workers", [1, 2])
def test_features_progress_ticks_once_per_file_from_the_first(tmp_path, monkeypatch, workers):
    import harmonia.features as features
    from harmonia.config import FeatureConfig

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / "audio" / f"clip{i}.wav"
        p.parent.mkdir(exist_ok=True)
        t = np.arange(8000) / 16000
        sf.write(p, (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
                 16000)
        paths.append(p)
    cfg = FeatureConfig(n_mels=16, n_fft=512, hop_length=256, cache_dir=str(tmp_path / "cache"))
    cache = features.FeatureCache(cfg)
    events: list[tuple] = []

    def stored() -> int:
        return len(list(cache.dir.glob("*.npy")))

    @contextmanager
    def recording_bar(label, total, enabled=True):
        events.append(("open", total, stored()))
        yield Ticker(lambda n=1: events.append(("tick", n, stored())), lambda text: events.append(("note", text)))

    monkeypatch.setattr(features, "progress_bar", recording_bar)
    arrays = cache.get_many(paths, workers=workers, progress=True)
    assert len(arrays) == 5 and all(a.shape[1] == 16 for a in arrays)
    assert events[0] == ("open", 5, 0)
    ticks = [e for e in events if e[0] == "tick"]
    assert ticks == [("tick", 1, k) for k in range(1, 6)], "one tick per file, the first as soon as it is stored"
    first_tick = events.index(ticks[0])
    before = [e[1] for e in events[:first_tick] if e[0] == "note"]
    assert before and ("starting 2 worker processes" in before[0] if workers == 2 else "first file" in before[0])
    after = {e[1] for e in events[first_tick:] if e[0] == "note"}
    assert after == {p.name for p in paths}, "each file's name is shown when it is done"
    events.clear()
    cache.get_many(paths, workers=workers, progress=True)
    assert events == [], "nothing new: no bar"


def test_progress_note_has_a_line_of_its_own_at_80_columns(monkeypatch):
    import harmonia.progress as progress

    console = _console()
    monkeypatch.setattr(progress, "console", console)
    note = "2 running · 17 epochs · best valid mAP 0.4123 (#00003)"
    with progress.progress_bar("search quickstart", 20) as advance:
        advance(3)
        advance.note(note)
    lines = [line for line in _lines(console) if line.strip()]
    assert max(map(len, lines)) <= 80
    assert lines[0].startswith("search quickstart ━") and " 3/20 " in lines[0], lines
    assert lines[1] == f"  {note}", lines


# ------------------------------------------------------------------------ search progress
def _trial(n: int):
    return SimpleNamespace(trial_id=f"7f3ab_{n:05d}")


def _result(n: int, epoch: int, score: float, metric: str = "mAP", best: float | None = None) -> dict:
    """A result as Tune hands it to callbacks for a harmonia trial (trainables/trial.py reports these keys)."""
    return {f"valid_{metric}": score, "best_valid_score": score if best is None else best, "epoch": epoch,
            "mlflow_run_id": "a" * 32, "training_iteration": epoch, "trial_id": f"7f3ab_{n:05d}", "done": False,
            "time_this_iter_s": 1.5}


def test_search_progress_line_follows_results():
    from harmonia.search.callbacks import ProgressCallback

    ticks, notes = [], []
    cb = ProgressCallback(4, "mAP", Ticker(ticks.append, notes.append))
    t1, t2 = _trial(1), _trial(2)
    cb.on_trial_start(0, [], t1)
    cb.on_trial_start(0, [], t2)
    assert notes[-1] == "2 running · 0 epochs · no valid mAP yet"
    cb.on_trial_result(1, [], t1, _result(1, 1, 0.31))
    assert notes[-1] == "2 running · 1 epochs · best valid mAP 0.3100 (#00001)"
    cb.on_trial_result(2, [], t2, _result(2, 1, 0.40))
    cb.on_trial_result(3, [], t1, _result(1, 2, 0.25, best=0.31))
    assert notes[-1] == "2 running · 3 epochs · best valid mAP 0.4000 (#00002)"
    cb.on_trial_complete(4, [], t2)
    assert ticks == [1] and notes[-1] == "1 running · 3 epochs · best valid mAP 0.4000 (#00002)"
    cb.on_trial_error(5, [], t1)
    cb.on_trial_complete(6, [], t1)  # a trial is counted once
    assert ticks == [1, 1] and notes[-1] == "0 running · 3 epochs · best valid mAP 0.4000 (#00002)"
    # what Tune pickles with its experiment state leaves the live bar behind
    restored = pickle.loads(pickle.dumps(cb))
    restored.on_trial_complete(7, [], _trial(3))
    assert ticks == [1, 1] and restored.done == {t1.trial_id, t2.trial_id, "7f3ab_00003"}


def test_search_progress_best_of_a_metric_to_minimize():
    from harmonia.search.callbacks import ProgressCallback

    notes = []
    cb = ProgressCallback(2, "segment_er", Ticker(None, notes.append))
    cb.on_trial_result(1, [], _trial(1), _result(1, 1, 0.9, "segment_er"))
    cb.on_trial_result(1, [], _trial(2), _result(2, 1, 0.6, "segment_er"))
    cb.on_trial_result(1, [], _trial(1), _result(1, 2, 0.7, "segment_er"))
    assert notes[-1] == "2 running · 3 epochs · best valid segment_er 0.6000 (#00002)"


# ------------------------------------------------------------------------ 80 columns
def _trials() -> pd.DataFrame:
    rows = []
    for i, pooling in enumerate(["attention", "max", "avg", "max", "attention"]):
        rows.append({"trial_id": f"7f3ab_{i:05d}", "status": "ERROR" if i == 4 else "TERMINATED", "score": 0.41 - i / 100,
                     "epochs": 12 - i, "run_id": f"{i}" * 32, "arch": "crnn",
                     "params": {"arch": "crnn", "lr": 0.00123 * (i + 1), "dropout": 0.1 * i, "batch_size": 16 * (i + 1),
                                "crnn.pooling": pooling, "crnn.channels": 16 * (i + 1), "crnn.gru_size": 32,
                                "aug.mixup": i % 2 == 0, "mixup.alpha": 0.2, "aug.specaugment": True,
                                "aug.pitch_shift": i == 3, "features.kind": "logmel", "weight_decay": 1e-4 * i}})
    return pd.DataFrame(rows)


def test_top_trials_table_fits_80_columns(monkeypatch):
    from harmonia.search import tuner

    console = _console()
    monkeypatch.setattr(tuner, "console", console)
    tuner.print_trials(_trials(), "mAP", top=5)
    lines = _lines(console)
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    text = "\n".join(lines)
    assert "TERMINATED" not in text and "TERMINAT" not in text
    rows: dict[str, list[str]] = {}
    current = None
    for line in lines:
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) < 7:
            continue
        if cells[0]:
            current = cells[0]
            rows[current] = []
        rows[current].append(line)
    assert list(rows) == [f"{i:05d}" for i in range(5)]
    for trial, row in rows.items():
        assert len(row) <= 5, f"trial {trial} spans {len(row)} lines:\n" + "\n".join(row)
    first = [c.strip() for c in rows["00000"][0].split("│")[1:-1]]
    assert first[:5] == ["00000", "done", "0.4100", "12", "crnn"] and first[-1] == "00000000"
    assert [c.strip() for c in rows["00004"][0].split("│")[1:-1]][1] == "error"
    whole = " ".join(" ".join(c.strip() for c in line.split("│")[1:-1][5:6]) for line in rows["00001"])
    assert whole.split() == ["+specaugment", "batch_size=32", "channels=32", "pooling=max", "dropout=0.1",
                             "lr=0.00246", "weight_decay=0.0001"], "the params that differ, whole, by their full name"


def test_top_trials_table_keeps_params_of_the_same_short_name_apart(monkeypatch):
    from harmonia.search import tuner

    console = _console()
    monkeypatch.setattr(tuner, "console", console)
    table = _trials()
    for i, p in enumerate(table["params"]):
        p.update({"mixup.alpha": 0.2 + i / 10, "mixup_lp.alpha": 1.0 + i / 10})
    tuner.print_trials(table, "mAP", top=5)
    text = " ".join(console.export_text().replace("│", " ").split())
    assert "mixup.alpha=0.2 mixup_lp.alpha=1" in text and " alpha=" not in text
    assert "channels=16" in text, "a short name that is unique stays short"


def _comparison() -> pd.DataFrame:
    return pd.DataFrame({"honest": [0.4123, 0.3987], "honest_se": [0.0123, 0.0150], "valid": [0.4410, 0.4201],
                         "test": [0.4050, 0.3900], "members": [5, 1]}, index=["ensemble", "best single"])


@pytest.mark.parametrize("root", ["/tmp/q", "/home/someone/projects/harmonia-experiments/quickstart/run-2026-12-02"])
def test_quickstart_summary_prints_commands_whole_outside_the_panel(monkeypatch, root):
    from harmonia import quickstart

    console = _console()
    monkeypatch.setattr(quickstart, "console", console)
    uri = f"sqlite:///{root}/mlruns.db"
    out = Path(root) / "out" / "quickstart"
    quickstart.print_summary("quickstart", 964.2, "caruana_bagged", "mAP", _comparison(), out,
                             "models:/harmonia-quickstart/3", out / "quickstart_tags.tsv", uri)
    lines = _lines(console)
    command = f"mlflow ui --backend-store-uri {uri}"
    assert f"  {command}" in lines, "\n".join(lines)
    assert f"  {out}" in lines and f"  {out / 'quickstart_tags.tsv'}" in lines
    long = [line for line in lines if len(line) > 80]
    assert all(line.strip() in (command, str(out), str(out / "quickstart_tags.tsv")) for line in long), long
    panel_end = max(i for i, line in enumerate(lines) if line.startswith("╰"))
    assert lines.index(f"  {command}") > panel_end, "the command is below the panel"
    assert not any("mlflow ui" in line for line in lines[:panel_end + 1])
    assert any("honest valid 0.4123 ± 0.0123" in line for line in lines[:panel_end])


def test_ensemble_methods_table_fits_80_columns_and_the_export_command_is_one_line(monkeypatch):
    """Every method of the registry, with the longest names and full run ids, fits 80 columns; the export
    command stays whole on its own line."""
    from harmonia.ensembles import tables
    from harmonia.ensembles.methods import METHODS

    console = _console()
    monkeypatch.setattr(tables, "console", console)
    setup = SimpleNamespace(describe=lambda: "5-fold x3 grouped by source", shared_sources=False)
    lib = SimpleNamespace(run_ids=[f"{i:032x}" for i in range(16)], n_read=18)
    reports = [SimpleNamespace(setup=setup, extra={}, library=lib)]
    names = sorted(METHODS)
    table = pd.DataFrame({"method": names, "honest": 0.7123, "honest_se": 0.0345, "valid_insample": 0.7456,
                          "test": 0.6789, "members": 16, "recommended": [n == "per_class_selection" for n in names],
                          "run_id": [f"{i:x}" * 32 for i in range(len(names))]})
    tables.print_methods("quickstart", "mAP", reports, table, "anchored")
    lines = _lines(console)
    assert max(map(len, lines)) <= 80, [line for line in lines if len(line) > 80]
    run_id = table.loc[table["recommended"], "run_id"].iloc[0]
    assert f"harmonia export out/quickstart --run {run_id}" in lines
    assert sum("per_class_selection *" in line for line in lines) == 1  # one row per method, never wrapped
