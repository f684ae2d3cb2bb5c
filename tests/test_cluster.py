"""A search on a real multi-node Ray cluster (slow): a head and a worker node on loopback started by
infra/local-cluster.sh (1 CPU each), an MLflow server with served artifacts started by
infra/mlflow-server.sh, `harmonia search --address HOST:PORT` in a subprocess, then ensemble, export
and predict against the server over HTTP. Also (fault 2) the worker node dying mid-search.

The driver always runs in a SUBPROCESS with the env of the cluster's driver.env, so it never meets
the in-process Ray of the `ray_local` fixture. The cluster and the server are stopped by the scripts
(their own processes only, found by temp dir / pid file); `ray stop` is never called.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from harmonia import tracking
from tests.test_infra import LOCAL_CLUSTER, REPO, _parse_up, _run, _tool
from tests.test_resume import (MlflowServer, driver_env, history, kill_marked, kill_session, start_driver,
                               store_ready, tail, trial_runs, wait_driver, write_config)
from tests.test_resume import shared_data  # noqa: F401 - a module-scoped fixture, one dataset per module

# Two trials at a time, 1 CPU each, on two 1-CPU nodes: the two must run on different nodes.
CONCURRENT = 2
# ~0.7 s per epoch (tiny_config's CRNN takes ~0.1 s): trials overlap long enough to spread.
SLOW_SPACE = {"crnn.blocks": 3, "crnn.channels": [64], "crnn.gru_size": [64]}

_NODES = r"""
import json, ray
from harmonia.search.cluster import connect
connect("auto")   # what `harmonia search --address auto` calls; RAY_ADDRESS names the cluster
ctx = ray.get_runtime_context()
print("RESULT " + json.dumps({
    "gcs": ctx.gcs_address,
    "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
    "sockets": {n["NodeID"]: n["RayletSocketName"] for n in ray.nodes() if n["Alive"]},
    "cpus": ray.cluster_resources().get("CPU"),
}))
ray.shutdown()
"""


class Cluster:
    """infra/local-cluster.sh: a head + `workers` worker nodes, 1 CPU each, on a free port and a short dir."""

    def __init__(self, workers: int = 1):
        self.port = _tool().free_ports(1, start=6411)[0]
        self.dir = tempfile.mkdtemp(prefix="hrc-", dir="/tmp")  # Ray's socket paths stay short
        self.workers = workers
        self.args = ["--port", self.port, "--dir", self.dir]
        self.address, self.env = "", {}

    def up(self) -> None:
        t = time.monotonic()
        out = _run([LOCAL_CLUSTER, "up", "--workers", self.workers, "--cpus-per-node", "1",
                    "--object-store-mb", "256", *self.args], timeout=240)
        self.address, self.env = _parse_up(out.stdout)
        assert self.address == f"127.0.0.1:{self.port}", out.stdout
        print(f"\ncluster up in {time.monotonic() - t:.1f} s at {self.address}")

    def down(self) -> None:
        _run([LOCAL_CLUSTER, "down", *self.args], timeout=120, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def raylets(self) -> dict[int, int]:
        """{node index (0 = head): raylet pid} of this cluster's live raylets, from their temp dirs."""
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2:].split()[0] == "Z" or not cmd[0].endswith(b"/raylet"):
                continue
            line = b" ".join(cmd).decode(errors="replace")
            for i in range(self.workers + 1):
                if f"{self.dir}/n{i}/" in line:
                    out[i] = int(d)
        return out

    def node_id(self, info: dict, index: int) -> str:
        """The id of node `index` (0 = head): the node whose raylet socket lies in its temp dir."""
        ids = [i for i, sock in info["sockets"].items() if sock.startswith(f"{self.dir}/n{index}/")]
        assert len(ids) == 1, info
        return ids[0]

    def nodes(self, marker: str) -> dict:
        """Alive node ids, GCS address and CPUs, from `connect("auto")` in a subprocess with RAY_ADDRESS."""
        env = driver_env(marker, extra={**self.env, "RAY_ADDRESS": self.address})
        p = _run([sys.executable, "-c", _NODES], timeout=120, env=env)
        return json.loads(p.stdout.split("RESULT ", 1)[1].splitlines()[0])


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node (1 CPU each), shared by the tests of this module; the last test
    (fault 2) kills the worker node."""
    c = Cluster(workers=1)
    try:
        c.up()
        yield c
    finally:
        c.down()
    assert not c.raylets(), "the cluster's raylets are gone"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _search(args: list, cluster: Cluster, log: Path, timeout: float = 300) -> None:
    marker = uuid.uuid4().hex
    proc = start_driver(["search", *args, "--address", cluster.address],
                        driver_env(marker, extra=cluster.env), log)
    try:
        wait_driver(proc, log, timeout)
    finally:
        kill_session(proc)
        kill_marked(marker)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_search_on_two_node_cluster_with_tracking_server(cluster, server, shared_data, tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli import app
    from harmonia.data.datasets import load_dataset

    assert set(cluster.raylets()) == {0, 1}, "runs before the fault-2 test, which kills the worker node"
    t0 = time.monotonic()
    name = "cluster"
    config = write_config(tmp_path, name, data=shared_data, tracking_uri=server.url, space=SLOW_SPACE,
                          num_samples=4, max_concurrent=CONCURRENT, max_epochs=3, grace_period=2)
    marker = uuid.uuid4().hex

    # `--address auto` + RAY_ADDRESS joins this cluster: both nodes, 2 CPUs, its GCS
    info = cluster.nodes(marker)
    assert info["gcs"].endswith(f":{cluster.port}") and len(info["nodes"]) == 2 and info["cpus"] == 2, info

    # `--address ray://HOST:PORT` is taken by the CLI: it goes on to connect (and fails fast and
    # cleanly here: the minimal ray[tune] install serves no Ray Client)
    free = _tool().free_ports(1)[0]
    env = driver_env(marker, extra=cluster.env)
    p = subprocess.run([sys.executable, "-m", "harmonia.cli", "search", str(config), "--address",
                        f"ray://127.0.0.1:{free}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 2 and f"127.0.0.1:{free} is not reachable" in out and "expected" not in out, out
    assert not (tmp_path / "ray_results").exists(), "nothing started"

    # ---- the search: a subprocess driver on the cluster, trials logging to the server over HTTP
    t = time.monotonic()
    _search([config], cluster, tmp_path / "search.log")
    print(f"search on the cluster: {time.monotonic() - t:.1f} s")

    c = tracking.client(server.url)
    runs = trial_runs(c, name)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, \
        {r.info.run_name: r.info.status for r in runs}
    on = {r.data.tags[tracking.NODE_TAG] for r in runs}
    assert on == set(info["nodes"]), f"trials ran on {on}, the cluster's nodes are {info['nodes']}"
    for r in runs:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/"), r.info.artifact_uri
        stored = {f.relative_to(next(server.artifacts.rglob(r.info.run_id))).as_posix()
                  for f in server.artifacts.rglob(f"{r.info.run_id}/**/*") if f.is_file()}
        assert {"artifacts/model/model.safetensors", "artifacts/predictions/valid.parquet",
                "artifacts/predictions/test.parquet"} <= stored, stored
        assert 1 <= len(history(c, r.info.run_id)) <= 3

    # ---- ensemble (downloads every trial's predictions over HTTP), export, predict
    runner = CliRunner()
    res = runner.invoke(app, ["ensemble", "--experiment", name, "--method", "selection", "--size", "5",
                              "--tracking-uri", server.url])
    assert res.exit_code == 0, res.output
    exp = c.get_experiment_by_name(name)
    ens = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'ensemble'",
                        order_by=["attributes.start_time DESC"])
    # selection plus the two candidates every recommendation weighs (best_single, average)
    assert sorted(r.data.tags["harmonia.method"] for r in ens) == ["average", "best_single", "selection"]
    assert all(r.info.status == "FINISHED" for r in ens), [(r.info.run_name, r.info.status) for r in ens]
    ens = [r for r in ens if r.data.tags["harmonia.method"] == "selection"]
    assert any(server.artifacts.rglob(f"{ens[0].info.run_id}/artifacts/ensemble.json")), "stored by the server"
    out_dir = tmp_path / "bundle"
    res = runner.invoke(app, ["export", str(out_dir), "--run", ens[0].info.run_id, "--tracking-uri", server.url])
    assert res.exit_code == 0, res.output
    wav = str(load_dataset(shared_data / "data").split("test")["path"].iloc[0])
    res = runner.invoke(app, ["predict", str(out_dir), wav, "-o", str(tmp_path / "x.tsv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "x.tsv", sep="\t", keep_default_na=False)
    assert list(df["filename"]) == [wav] and df.columns[-1] == "event_labels"
    print(f"whole test: {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_worker_node_dies_mid_search_and_trials_retry_from_checkpoints(cluster, shared_data, tmp_path):
    """Fault 2: SIGKILL of the worker node's raylet while a trial runs there; Tune retries that trial
    (FailureConfig max_failures=1) from its last checkpoint on the node that is left."""
    from mlflow.tracking import MlflowClient

    name, epochs = "nodeloss", 4
    config = write_config(tmp_path, name, data=shared_data, space=SLOW_SPACE, patience=epochs, num_samples=4,
                          max_concurrent=CONCURRENT, max_epochs=epochs, grace_period=epochs)
    info = cluster.nodes(uuid.uuid4().hex)
    worker_node = cluster.node_id(info, 1)
    raylets = cluster.raylets()
    assert set(raylets) == {0, 1}, raylets
    db = tmp_path / "mlruns.db"
    marker = uuid.uuid4().hex
    log = tmp_path / "search.log"
    proc = start_driver(["search", config, "--address", cluster.address], driver_env(marker, extra=cluster.env), log)
    try:
        c, victim = None, None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and victim is None:
            assert proc.poll() is None, f"the search ended before the node was killed:\n{tail(log)}"
            if c is None and store_ready(db, name):
                c = MlflowClient(f"sqlite:///{db}")
            if c is not None:
                try:
                    runs = trial_runs(c, name)
                except Exception:  # noqa: BLE001 - locked store
                    runs = []
                # a trial on the worker node between its first and its last epoch
                for r in runs:
                    n = len(history(c, r.info.run_id))
                    if r.info.status == "RUNNING" and 1 <= n < epochs and \
                            r.data.tags[tracking.NODE_TAG] == worker_node:
                        victim = (r, n)
            time.sleep(0.3)
        assert victim is not None, f"no trial ran on the worker node:\n{tail(log)}"
        os.kill(raylets[1], signal.SIGKILL)
        killed_at = time.time()
        print(f"\nkilled the worker node's raylet (pid {raylets[1]}) during epoch {victim[1] + 1} of "
              f"{victim[0].info.run_name}")
        wait_driver(proc, log, timeout=300)
    finally:
        kill_session(proc)
        kill_marked(marker)

    runs = trial_runs(c, name)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, \
        {r.info.run_name: r.info.status for r in runs}
    r, n = victim
    steps = [m.step for m in history(c, r.info.run_id)]
    assert sorted(set(steps)) == list(range(1, epochs + 1)), steps
    assert steps.count(1) == 1, f"the retried trial restarted from epoch 1: {steps}"
    late = [m for m in history(c, r.info.run_id) if m.timestamp / 1000 > killed_at]
    assert late and late[0].step > 1, "the retry went on from a checkpoint"
