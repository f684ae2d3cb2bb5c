"""Faults a running search must survive (slow, real processes): the driver killed mid-search and
resumed with `--resume` (fault 1), and the MLflow tracking server restarting mid-search (fault 4).

Every search here runs `python -m harmonia.cli search` in a SUBPROCESS (its own local Ray, in its
own session and its own RAY_TMPDIR), so it never meets the in-process Ray of the `ray_local`
fixture. Each driver's environment carries a unique marker; whatever process still carries it at
the end of a test (raylet, GCS, workers) is killed by pid: nothing is stopped by name, and
`ray stop` is never called.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harmonia import tracking
from tests.conftest import tiny_config
from tests.test_infra import MLFLOW_SERVER, REPO, _run, _script_env, _tool

MARKER = "HARMONIA_TEST_MARKER"


# ------------------------------------------------------------------------ helpers shared with test_cluster
def write_config(base: Path, name: str, *, data: Path | None = None, tracking_uri: str | None = None,
                 space: dict | None = None, patience: int | None = None, **search) -> Path:
    """tiny_config(base, name, **search) as a YAML file; `data` shares one synthesized dataset + cache."""
    cfg = tiny_config(base, name, **search)
    if data is not None:
        cfg.data.root, cfg.features.cache_dir = str(data / "data"), str(data / "cache")
    if tracking_uri is not None:
        cfg.tracking.uri = tracking_uri
    if space:
        cfg.space.update(space)
    if patience is not None:
        cfg.train.patience = patience
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    return path


def driver_env(marker: str, ray_tmp: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's env minus any Ray/MLflow address, plus a marker that every child inherits."""
    env = _script_env()
    env.update({MARKER: marker, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                "PYTHONWARNINGS": "ignore", "COLUMNS": "200"})
    if ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp  # this driver's own Ray temp dir (and ray_current_cluster file)
    env.update(extra or {})
    return env


def start_driver(args: list, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m harmonia.cli ARGS` in its own session (process group = its pid), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "harmonia.cli", *map(str, args)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def tail(log: Path, n: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_driver(proc: subprocess.Popen, log: Path, timeout: float) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"driver still running after {timeout:.0f} s; log tail:\n{tail(log)}") from None
    assert rc == 0, f"driver exited {rc}; log tail:\n{tail(log)}"


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries MARKER=marker (the driver and all it started)."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if needle not in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                continue
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2:].split()[0] != "Z":
            pids.append(int(d))
    return pids


def describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
            out.append(f"{pid} pgid={os.getpgid(pid)} sid={os.getsid(pid)} {cmd}")
        except OSError:
            pass
    return out


def kill_marked(marker: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process carrying the marker, by pid; returns those that were still alive."""
    left = marked_pids(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid`: a driver started with start_new_session=True and everything it
    started. Ray puts each worker in a process group of its own (same session), so the driver's process
    group alone does not hold the processes that run the trials."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(d))
    return pids


def kill_session(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGKILL the driver's process group (driver, GCS, raylet, ...) and, by pid, the rest of its session
    (the Ray workers); return once none of them is alive."""
    members = session_pids(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while session_pids(proc.pid) and time.monotonic() < deadline:
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def trial_runs(c, experiment: str) -> list:
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")


def store_ready(db: Path, experiment: str) -> bool:
    """The driver has made the SQLite store (migrations done) and its experiment: a client may open it.

    Opening an MlflowClient on a store that another process is still migrating races its migration.
    """
    import sqlite3

    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return bool(con.execute("select 1 from experiments where name = ?", (experiment,)).fetchall())
    except sqlite3.Error:
        return False


def history(c, run_id: str, key: str = "valid_mAP") -> list:
    return sorted(c.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    """One synthesized dataset (60 clips of 2 s) and feature cache for every search of the module."""
    from harmonia.data.synth import synthesize

    base = tmp_path_factory.mktemp("data")
    synthesize(base / "data", clips=60, seconds=2.0, seed=1, progress=False)
    return base


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR of the driver's own (Ray's socket paths must stay under ~107 characters)."""
    d = tempfile.mkdtemp(prefix="hrz-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------ fault 1: driver killed, --resume
MAX_EPOCHS = 5
# A wider CRNN than tiny_config's: ~0.7 s per epoch instead of ~0.1 s, so that the driver can be
# killed while a trial is between its first and its last epoch.
SLOW_SPACE = {"crnn.blocks": 3, "crnn.channels": [64], "crnn.gru_size": [64]}


def _mlflow_state(c, experiment: str) -> dict[str, dict]:
    out = {}
    for r in trial_runs(c, experiment):
        h = history(c, r.info.run_id)
        out[r.data.tags[tracking.TRIAL_ID_TAG]] = {
            "run_id": r.info.run_id, "status": r.info.status, "end_time": r.info.end_time,
            "steps": [m.step for m in h], "history": [(m.step, m.timestamp, m.value) for m in h],
        }
    return out


def tune_snapshot(experiment_dir: Path) -> dict[str, tuple[str, int]]:
    """{trial_id: (status, last reported epoch)} from Tune's newest experiment state in storage_path:
    what `Tuner.restore` will start from. Every report of a trial carries its checkpoint, so a trial
    recorded at epoch k resumes after epoch k."""
    import json

    files = sorted(experiment_dir.glob("experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except (OSError, ValueError):
        return {}  # being written
    out = {}
    for trial_json, runtime_json in state["trial_data"]:
        trial = json.loads(trial_json)
        last = json.loads(runtime_json).get("last_result") or {}
        out[trial["trial_id"]] = (trial["status"], int(last.get("epoch") or 0))
    return out


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_killed_driver_resumes_without_rerunning_or_duplicating_trials(shared_data, tmp_path, ray_tmp):
    """Fault 1: SIGKILL of the driver's whole session (driver, its local Ray: GCS, raylet, workers)
    while trial 2 of 4 is mid-way, then `harmonia search CONFIG --resume`."""
    from mlflow.tracking import MlflowClient

    name = "resume"
    config = write_config(tmp_path, name, data=shared_data, space=SLOW_SPACE, patience=MAX_EPOCHS,
                          num_samples=4, max_concurrent=1, max_epochs=MAX_EPOCHS, grace_period=MAX_EPOCHS)
    db, exp_dir = tmp_path / "mlruns.db", tmp_path / "ray_results" / name
    marker = uuid.uuid4().hex
    env = driver_env(marker, ray_tmp)
    log = tmp_path / "driver.log"
    t0 = time.monotonic()
    proc = start_driver(["search", config], env, log)
    try:
        # ---- wait for: a trial FINISHED, and another RUNNING between its first and its last epoch
        # whose checkpoint Tune's saved experiment state already records (a kill before Tune has
        # saved any state of a trial leaves nothing to resume it from)
        c, killed = None, False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the search ended before it could be interrupted:\n{tail(log)}"
            if c is None and store_ready(db, name):
                c = MlflowClient(f"sqlite:///{db}")
            if c is not None:
                try:
                    state = _mlflow_state(c, name)
                except Exception:  # noqa: BLE001 - a locked store: ask again
                    state = {}
                snap = tune_snapshot(exp_dir) if state else {}
                finished = [t for t, s in state.items()
                            if s["status"] == "FINISHED" and snap.get(t, ("",))[0] == "TERMINATED"]
                running = [t for t, s in state.items() if s["status"] == "RUNNING"
                           and 1 <= len(s["steps"]) < MAX_EPOCHS and snap.get(t, ("", 0))[1] >= 1]
                if finished and running:
                    kill_session(proc)
                    killed = True
                    break
            time.sleep(0.2)
        assert killed, f"no moment with a finished and a running trial:\n{tail(log)}"
        killed_at = time.monotonic() - t0
        # the session kill took the driver's Ray down with it: nothing that carries its env is left
        survivors = describe(marked_pids(marker))
        assert not survivors, f"processes of the killed driver survived: {survivors}"
        assert (Path(ray_tmp) / "ray").is_dir(), "the driver's Ray used its own RAY_TMPDIR"

        before = _mlflow_state(c, name)  # nothing moves any more
        snap = tune_snapshot(exp_dir)
        done_before = {t: s for t, s in before.items() if s["status"] == "FINISHED"}
        interrupted = {t: s for t, s in before.items() if s["status"] == "RUNNING"}
        assert done_before and len(interrupted) == 1, before
        (tid, s), = interrupted.items()
        saved_epoch = snap[tid][1]
        print(f"\nkilled after {killed_at:.1f} s: finished {[(t, x['steps']) for t, x in done_before.items()]}, "
              f"running {tid} {s['steps']} (Tune state at epoch {saved_epoch})")

        # ---- resume
        t1 = time.monotonic()
        proc = start_driver(["search", config, "--resume"], env, log)
        wait_driver(proc, log, timeout=240)
        print(f"resumed search took {time.monotonic() - t1:.1f} s")
    finally:
        kill_session(proc)
        kill_marked(marker)

    c = MlflowClient(f"sqlite:///{db}")
    after = _mlflow_state(c, name)
    assert len(after) == 4, f"exactly one run per trial, no duplicates: {sorted(after)}"
    assert len({x["run_id"] for x in after.values()}) == 4
    assert {x["status"] for x in after.values()} == {"FINISHED"}, {t: x["status"] for t, x in after.items()}
    exp = c.get_experiment_by_name(name)
    assert not c.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert set(before) <= set(after), "the runs of before the kill are runs of after"

    # the trials finished before the kill were not rerun: same run, same history, same end time
    for t, x in done_before.items():
        assert after[t]["run_id"] == x["run_id"]
        assert after[t]["history"] == x["history"], f"trial {t} was rerun"
        assert after[t]["end_time"] == x["end_time"], f"trial {t} was touched again"
        assert after[t]["steps"] == list(range(1, MAX_EPOCHS + 1))

    # the interrupted trial went on from its checkpoint, in the same run
    a = after[tid]
    assert a["run_id"] == s["run_id"], "the resumed trial continues its MLflow run"
    assert sorted(set(a["steps"])) == list(range(1, MAX_EPOCHS + 1)), f"every epoch, no gap: {a['steps']}"
    assert a["history"][:len(s["history"])] == s["history"], "what was logged before the kill stays"
    resumed = [step for step, *_ in a["history"][len(s["history"]):]]
    assert resumed == list(range(saved_epoch + 1, MAX_EPOCHS + 1)), \
        f"after the resume it trained epochs {resumed}; its checkpoint was epoch {saved_epoch}"
    assert a["steps"].count(1) == 1, f"restarted from epoch 1: {a['steps']}"
    # only epochs logged after the last checkpoint Tune had saved (in flight at the kill) appear twice
    twice = sorted({st for st in a["steps"] if a["steps"].count(st) > 1})
    assert all(st > saved_epoch for st in twice), twice


# ------------------------------------------------------------------------ fault 4: tracking server restarts
class MlflowServer:
    """infra/mlflow-server.sh on a free port: SQLite backend and served artifacts under `base`."""

    def __init__(self, base: Path):
        self.port = _tool().free_ports(1, start=5301)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{base}/server/mlflow.db"
        self.artifacts = base / "server" / "artifacts"
        self.args = ["--port", self.port, "--run-dir", base / "server" / "run"]

    def start(self) -> None:
        _run([MLFLOW_SERVER, "--backend", self.backend, "--artifacts", self.artifacts, *self.args, "--wait",
              "--timeout", "150"], timeout=200)

    def stop(self) -> None:
        _run([MLFLOW_SERVER, "stop", *self.args], timeout=60, check=False)


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_search_survives_tracking_server_restart(shared_data, tmp_path, ray_tmp, mlflow_server):
    """Fault 4: the MLflow server is stopped once the first epoch metrics are in, stays down ~5 s and
    comes back on the same port and backend; the search finishes and every trial's history is whole."""
    from mlflow.tracking import MlflowClient

    name, epochs = "outage", 3
    config = write_config(tmp_path, name, data=shared_data, tracking_uri=mlflow_server.url, space=SLOW_SPACE,
                          patience=epochs, num_samples=4, max_concurrent=2, max_epochs=epochs, grace_period=epochs)
    marker = uuid.uuid4().hex
    log = tmp_path / "driver.log"
    c = MlflowClient(mlflow_server.url)
    proc = start_driver(["search", config], driver_env(marker, ray_tmp), log)
    try:
        deadline = time.monotonic() + 240
        first = None
        while time.monotonic() < deadline and first is None:
            assert proc.poll() is None, f"the search ended before the outage:\n{tail(log)}"
            runs = trial_runs(c, name)
            first = next((r for r in runs if c.get_metric_history(r.info.run_id, "valid_mAP")), None)
            time.sleep(0.3)
        assert first is not None, f"no epoch metric within 240 s:\n{tail(log)}"

        down_at = time.time()
        mlflow_server.stop()
        assert not _tool().wait_http(f"{mlflow_server.url}/health", timeout=1), "the server is down"
        time.sleep(5)
        mlflow_server.start()
        up_at = time.time()
        assert proc.poll() is None, f"the search did not outlive the outage:\n{tail(log)}"
        print(f"\ntracking server down for {up_at - down_at:.1f} s (stop, 5 s, start until /health)")

        t = time.monotonic()
        wait_driver(proc, log, timeout=300)
        print(f"search finished {time.monotonic() - t:.1f} s after the server came back")
    finally:
        kill_session(proc)
        kill_marked(marker)

    runs = trial_runs(c, name)
    assert len(runs) == 4, [r.info.run_id for r in runs]
    assert {r.info.status for r in runs} == {"FINISHED"}, {r.info.run_name: r.info.status for r in runs}
    exp = c.get_experiment_by_name(name)
    search = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'search'")
    assert [r.info.status for r in search] == ["FINISHED"]
    spanning = 0
    for r in runs:
        for key in ("valid_mAP", "train_loss"):
            steps = sorted(m.step for m in c.get_metric_history(r.info.run_id, key))
            assert steps == list(range(1, epochs + 1)), f"{r.info.run_name} {key}: steps {steps}"
        stamps = [m.timestamp / 1000 for m in c.get_metric_history(r.info.run_id, "valid_mAP")]
        spanning += min(stamps) < down_at < max(stamps)
        names = {a.path for a in c.list_artifacts(r.info.run_id, "predictions")}
        assert {"predictions/valid.parquet", "predictions/test.parquet"} <= names, names
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")
    assert spanning, "a trial logged epochs both before the server went down and after: it lived through the outage"
