"""Collect finished trial runs and their valid/test predictions from MLflow into one model library."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harmonia import tracking
from harmonia.progress import console, progress_bar
from harmonia.trainables.snapshots import INDEX_FILE, snapshot_prefix


GROUPS_FILE = "labels/groups.parquet"
"""On the search run: clip_id, split, group (which clips share a source recording) for every split."""


class LibraryError(RuntimeError):
    """No usable runs, or the runs do not agree with the labels; says which experiment and why."""


def member_key(run_id: str, epoch: int | None = None) -> str:
    """A library member: a trial run's best model (`RUN_ID`) or one of its epoch snapshots (`RUN_ID@EPOCH`)."""
    return run_id if epoch is None else f"{run_id}@{epoch}"


def member_source(key: str) -> tuple[str, str]:
    """(run id, artifact prefix of the member's `model/` and `predictions/` folders)."""
    run_id, _, epoch = key.partition("@")
    return run_id, (snapshot_prefix(int(epoch)) if epoch else "")


@dataclass
class Library:
    """M models' predictions aligned on the same clips and classes."""

    classes: list[str]
    run_ids: list[str]  # member keys (see `member_key`): a run id, or RUN_ID@EPOCH for an epoch snapshot
    run_names: list[str]
    valid_ids: list[str]
    test_ids: list[str]
    y_valid: np.ndarray  # [N, C]
    y_test: np.ndarray | None
    valid: np.ndarray  # [M, N, C]
    test: np.ndarray | None  # [M, N', C]
    skipped: dict[str, str]  # run id -> reason
    hop_seconds: float | None = None  # feature hop; set when the search logged strong labels
    events: dict[str, pd.DataFrame] | None = None  # split -> reference events
    frames: dict[str, np.ndarray] | None = None  # split -> [M, N, T, C] at hop_seconds
    # Out-of-fold predictions of cross-validated trials (train.cv_folds; ensembles/cross_validated.py):
    oof_ids: list[str] | None = None  # train ∪ valid clips
    y_oof: np.ndarray | None = None  # [N_oof, C]
    oof: np.ndarray | None = None  # [M, N_oof, C]; set only when every member logged predictions/oof.parquet
    oof_note: str = ""  # why `oof` is None
    groups: dict[str, str] | None = None  # clip id -> source group (labels/groups.parquet); None: unknown
    duplicates: dict[str, list[str]] | None = None  # kept member -> members collapsed into it (same predictions)
    n_read: int = 0  # members read before duplicates were collapsed


def _read_frames(uri: str, key: str, split: str, ids: list[str], base_hop: float, n_frames: int) -> np.ndarray:
    from harmonia.ensembles.sed import to_base_rate

    run_id, prefix = member_source(key)
    with tempfile.TemporaryDirectory() as tmp:
        z = np.load(download(uri, run_id, f"{prefix}predictions/{split}_frames.npz", tmp), allow_pickle=False)
        order = {c: i for i, c in enumerate(z["clip_id"].tolist())}
        probs = z["probs"][[order[c] for c in ids]]
        return to_base_rate(probs, float(z["hop_seconds"]), base_hop, n_frames)


def load_sed(lib: "Library", uri: str, search_run_id: str, durations: float | None = None) -> "Library":
    """Add reference events and members' frame outputs (at the feature hop) when the search logged events."""
    import json

    try:
        with tempfile.TemporaryDirectory() as tmp:
            hop = json.loads(download(uri, search_run_id, "labels/hop_seconds.json", tmp).read_text())["hop_seconds"]
        events = {s: read_table(uri, search_run_id, f"labels/{s}_events.parquet") for s in ("valid", "test")}
    except Exception:  # noqa: BLE001 - a weak-label dataset has no events: not a SED library
        return lib
    run_id, prefix = member_source(lib.run_ids[0])
    with tempfile.TemporaryDirectory() as tmp:
        z = np.load(download(uri, run_id, f"{prefix}predictions/valid_frames.npz", tmp), allow_pickle=False)
        n_frames = int(round(z["probs"].shape[1] * float(z["hop_seconds"]) / hop))
    frames = {}
    for split, ids in (("valid", lib.valid_ids), ("test", lib.test_ids)):
        if ids:
            frames[split] = np.stack([_read_frames(uri, r, split, ids, hop, n_frames) for r in lib.run_ids])
    lib.hop_seconds, lib.events, lib.frames = hop, events, frames
    return lib


download, read_table = tracking.download, tracking.read_table


def align(df: pd.DataFrame, ids: list[str], classes: list[str], what: str) -> np.ndarray:
    try:
        return tracking.predictions_array(df, ids, classes, what)
    except tracking.PredictionsError as e:
        raise LibraryError(str(e)) from e


def collapse_duplicates(loaded: list[tuple]) -> tuple[list[tuple], dict[str, list[str]]]:
    """Members (key, name, valid, test) with bit-identical valid and test predictions collapsed into the first:
    a search rerun with the same seed into the same experiment would otherwise weigh one model twice."""
    import hashlib

    first: dict[str, tuple] = {}
    dupes: dict[str, list[str]] = {}
    for member in loaded:
        key, name, v, t = member
        digest = hashlib.sha256(np.ascontiguousarray(v).tobytes()
                                + (b"" if t is None else np.ascontiguousarray(t).tobytes())).hexdigest()
        if digest in first:
            dupes.setdefault(first[digest][0], []).append(name)
        else:
            first[digest] = member
    return list(first.values()), dupes


def read_groups(uri: str, search_run_id: str) -> dict[str, str] | None:
    """clip id -> source group from the search run's labels/groups.parquet; None for searches that logged none."""
    try:
        g = read_table(uri, search_run_id, GROUPS_FILE)
    except Exception:  # noqa: BLE001 - searches before groups were logged
        return None
    return dict(zip(g["clip_id"].astype(str), g["group"].astype(str)))


def clip_groups(lib: "Library", ids: list[str]) -> np.ndarray | None:
    """Groups of `ids` (None when the library has none or some clip lacks one)."""
    if lib.groups is None or any(c not in lib.groups for c in ids):
        return None
    return np.asarray([lib.groups[c] for c in ids])


def latest_search_run(uri: str, experiment_id: str):
    c = tracking.client(uri)
    runs = tracking.retry(lambda: c.search_runs(
        [experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'search'",
        order_by=["attributes.start_time DESC"], max_results=1))
    if not runs:
        raise LibraryError(f"experiment {experiment_id}: no search run (tag {tracking.KIND_TAG}=search) holds the labels")
    return runs[0]


def finished_trials(uri: str, experiment_id: str):
    c = tracking.client(uri)
    flt = f"tags.`{tracking.KIND_TAG}` = 'trial' and attributes.status = 'FINISHED'"
    return tracking.retry(lambda: c.search_runs([experiment_id], filter_string=flt, max_results=5000,
                                                order_by=["attributes.start_time ASC"]))


def snapshot_epochs(uri: str, run_id: str) -> list[int]:
    """The epochs a trial kept as snapshots besides its best one (none when it stored no snapshots)."""
    import json

    try:
        with tempfile.TemporaryDirectory() as tmp:
            index = json.loads(download(uri, run_id, INDEX_FILE, tmp).read_text())
    except Exception:  # noqa: BLE001 - a trial run with train.snapshots = 0 has no index
        return []
    return sorted(int(e) for e in index["epochs"] if int(e) != int(index["best_epoch"]))


def collect(uri: str, experiment: str, progress: bool = True, sed: bool = True, snapshots: bool = True) -> Library:
    """Every FINISHED trial of `experiment` whose predictions match the latest search's labels, and with
    `snapshots` the epoch snapshots the trials kept (`train.snapshots`), each as a member."""
    c = tracking.client(uri)
    exp = tracking.retry(lambda: c.get_experiment_by_name(experiment))
    if exp is None:
        raise LibraryError(f"no MLflow experiment named {experiment!r} at {tracking.mask_uri(uri)}")
    search = latest_search_run(uri, exp.experiment_id)
    yv = read_table(uri, search.info.run_id, "labels/valid.parquet")
    classes = [col for col in yv.columns if col != "clip_id"]
    valid_ids = list(yv["clip_id"].astype(str))
    try:
        yt = read_table(uri, search.info.run_id, "labels/test.parquet")
        test_ids = list(yt["clip_id"].astype(str))
    except Exception:  # noqa: BLE001 - a dataset without a test split
        yt, test_ids = None, []
    runs = finished_trials(uri, exp.experiment_id)
    skipped: dict[str, str] = {}

    def load(member):
        key, _ = member
        rid, prefix = member_source(key)
        try:
            v = align(read_table(uri, rid, f"{prefix}predictions/valid.parquet"), valid_ids, classes, f"member {key} valid")
            t = (align(read_table(uri, rid, f"{prefix}predictions/test.parquet"), test_ids, classes, f"member {key} test")
                 if yt is not None else None)
        except Exception as err:  # noqa: BLE001 - one bad run must not sink the ensemble
            return key, None, None, f"{type(err).__name__}: {err}"
        if not np.isfinite(v).all() or (t is not None and not np.isfinite(t).all()):
            return key, None, None, "non-finite predictions"
        return key, v, t, None

    loaded = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        members = [(r.info.run_id, r.info.run_name or r.info.run_id[:8]) for r in runs]
        if snapshots:
            for run, epochs in zip(runs, pool.map(lambda r: snapshot_epochs(uri, r.info.run_id), runs)):
                name = run.info.run_name or run.info.run_id[:8]
                members += [(member_key(run.info.run_id, e), f"{name}@e{e}") for e in epochs]
        with progress_bar(f"collect {len(members)} members", len(members), enabled=progress) as advance:
            for (key, name), (_, v, t, why) in zip(members, pool.map(load, members)):
                advance()
                if why:
                    skipped[key] = why
                else:
                    loaded.append((key, name, v, t))
    if skipped and progress:
        short = {k: k.partition("@")[0][:8] + "".join(k.partition("@")[1:]) for k in skipped}  # run id[:8]@epoch
        console.print(f"[yellow]skipped {len(skipped)} members:[/] " + "; ".join(f"{short[k]}: {v}" for k, v in skipped.items()))
    if not loaded:
        raise LibraryError(f"experiment {experiment!r}: no finished trial run with usable predictions")
    n_read = len(loaded)
    loaded, duplicates = collapse_duplicates(loaded)
    if duplicates and progress:
        names = {k: n for k, n, _, _ in loaded}
        console.print(f"[yellow]collapsed {sum(map(len, duplicates.values()))} duplicate members[/] (same predictions "
                      "as another: the same configuration rerun): "
                      + "; ".join(f"{names[k]} kept for {', '.join(d)}" for k, d in duplicates.items()))
    if progress:
        console.print(f"library: read {n_read} members, kept {len(loaded)}")
    lib = Library(
        classes=classes,
        run_ids=[k for k, _, _, _ in loaded],
        run_names=[n for _, n, _, _ in loaded],
        valid_ids=valid_ids, test_ids=test_ids,
        y_valid=yv[classes].to_numpy(np.float32),
        y_test=None if yt is None else yt[classes].to_numpy(np.float32),
        valid=np.stack([v for _, _, v, _ in loaded]),
        test=None if yt is None else np.stack([t for _, _, _, t in loaded]),
        skipped=skipped, duplicates=duplicates, n_read=n_read,
    )
    lib.groups = read_groups(uri, search.info.run_id)
    lib = add_oof(lib, uri, search.info.run_id)  # loads predictions/oof.parquet where trials logged it
    return load_sed(lib, uri, search.info.run_id) if sed else lib


OOF_FILE = "predictions/oof.parquet"


def add_oof(lib: Library, uri: str, search_run_id: str) -> Library:
    """Set `lib.oof` / `oof_ids` / `y_oof` when the search logged train labels and every member logged
    out-of-fold predictions of all train ∪ valid clips; otherwise `lib.oof_note` says why not."""
    try:
        y_train = read_table(uri, search_run_id, "labels/train.parquet")
    except Exception:  # noqa: BLE001 - a search without cross-validated trials logs no train labels
        lib.oof_note = "the search run has no labels/train.parquet (its trials were not cross-validated)"
        return lib
    ids = list(y_train["clip_id"].astype(str)) + list(lib.valid_ids)
    y = np.concatenate([y_train[lib.classes].to_numpy(np.float32), lib.y_valid])
    c = tracking.client(uri)

    def load(key: str) -> tuple[np.ndarray | None, str]:
        run_id, prefix = member_source(key)
        names = {a.path for a in tracking.retry(lambda: c.list_artifacts(run_id, f"{prefix}predictions"))}
        if f"{prefix}{OOF_FILE}" not in names:
            return None, "no predictions/oof.parquet (trained without train.cv_folds)"
        try:
            p = align(read_table(uri, run_id, f"{prefix}{OOF_FILE}"), ids, lib.classes, f"member {key} oof")
        except Exception as err:  # noqa: BLE001 - reported in the note
            return None, f"{type(err).__name__}: {err}"
        return (p, "") if np.isfinite(p).all() else (None, "non-finite out-of-fold predictions")

    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(load, lib.run_ids))
    missing = [(name, why) for name, (p, why) in zip(lib.run_names, loaded) if p is None]
    if missing:
        lib.oof_note = (f"{len(missing)} of {len(lib.run_ids)} members have no usable out-of-fold predictions, e.g. "
                        + "; ".join(f"{n}: {w}" for n, w in missing[:3]))
        return lib
    lib.oof_ids, lib.y_oof, lib.oof = ids, y, np.stack([p for p, _ in loaded])
    return lib
