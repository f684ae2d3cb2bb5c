"""`harmonia search --address ray://HOST:PORT` through the Ray Client (slow, real processes).

A head node with token auth and a Ray Client server on loopback (infra/local-cluster.sh, which picks the
client-server port free and prints `ray client: ray://127.0.0.1:PORT`), then `harmonia search` in a
SUBPROCESS that reaches it only through that port: Tune's driver loop runs in an actor on the head, the
trials on the cluster, and the runs land in MLflow with their predictions. A `storage_path` that the head
does not share with the driver is refused before anything starts. The cluster is stopped by the script
(its own processes only, the client servers included), whatever happens.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from harmonia import tracking
from tests.test_infra import LOCAL_CLUSTER, REPO, _parse_up, _run, _tool
from tests.test_resume import driver_env, kill_marked, kill_session, start_driver, tail, trial_runs, wait_driver, write_config
from tests.test_resume import shared_data  # noqa: F401 - a module-scoped fixture: one dataset per module

_NODE_IDS = r"""
import json, sys
from ray._raylet import GcsClient   # what `ray status` uses; no driver, no ray.init
from ray.core.generated.gcs_pb2 import GcsNodeInfo
infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print("RESULT " + json.dumps([n.node_id.hex() for n in infos if n.state == GcsNodeInfo.GcsNodeState.ALIVE]))
"""


def _unshare_works() -> str | None:
    """None when this process may give a command a private mount namespace (root, CAP_SYS_ADMIN), else why not."""
    if not shutil.which("unshare"):
        return "no `unshare` program"
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    return None if p.returncode == 0 else f"`unshare --mount` refused here: {p.stderr.strip()}"


def test_down_finds_the_ray_client_servers_by_their_gcs_address():
    """`ray start` detaches the Ray Client server (proxy and per-driver specific servers) from the raylet;
    their command lines name neither the temp dir nor `--gcs-address`, only `--address=IP:GCS_PORT`."""
    tool = _tool()
    proxy = ["/venv/bin/python3", "-m", "ray.util.client.server", "--address=192.0.2.2:6431", "--host=192.0.2.2",
             "--port=41535", "--mode=proxy"]
    specific = ["/venv/bin/python3", "-m", "ray.util.client.server", "--address=192.0.2.2:6431", "--host=127.0.0.1",
                "--port=23004", "--mode=specific-server"]
    for cmd in (proxy, specific):
        assert tool._matches(cmd, 6431, "/tmp/hrk-x")
        assert not tool._matches(cmd, 6379, "/tmp/hrk-x"), "another cluster's port"
    assert not tool._matches(["harmonia", "search", "c.yaml", "--address", "127.0.0.1:6431"], 6379, "/tmp/hrk-x")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_search_through_the_ray_client(shared_data, tmp_path):  # noqa: F811 - the fixture imported above
    from mlflow.tracking import MlflowClient

    t0 = time.monotonic()
    port = _tool().free_ports(1, start=6431)[0]
    cluster_dir = tempfile.mkdtemp(prefix="hrk-", dir="/tmp")  # Ray's socket paths stay short
    args = ["--port", port, "--dir", cluster_dir]
    markers: list[str] = []
    try:
        up = _run([LOCAL_CLUSTER, "up", "--workers", "0", "--cpus-per-node", "2", "--auth", "token",
                   "--object-store-mb", "256", *args], timeout=180)
        address, env = _parse_up(up.stdout)
        m = re.search(r"^\s*ray client:\s+(ray://127\.0\.0\.1:(\d+))$", up.stdout, re.M)
        assert m, f"the head serves the Ray Client (grpcio is a dependency):\n{up.stdout}"
        client_address, client_port = m.group(1), int(m.group(2))
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"], env
        servers = [p for p in _tool().find_ray(port, cluster_dir) if "ray.util.client.server" in " ".join(p.cmdline)]
        assert servers and all(f"--port={client_port}" in " ".join(p.cmdline) for p in servers), \
            "`down` finds the client server as one of this cluster's processes"
        print(f"\nhead with a Ray Client server up in {time.monotonic() - t0:.1f} s at {client_address}")

        ids = _run([sys.executable, "-c", _NODE_IDS, address], timeout=60, env={**driver_env("ids"), **env})
        head_node = json.loads(ids.stdout.split("RESULT ", 1)[1].splitlines()[0])
        assert len(head_node) == 1, head_node

        # ---- the search: a driver that reaches the cluster only through ray://
        name, samples = "viaclient", 4
        config = write_config(tmp_path, name, data=shared_data, num_samples=samples, max_concurrent=2,
                              max_epochs=2, grace_period=1)
        markers.append(uuid.uuid4().hex)
        log = tmp_path / "search.log"
        t = time.monotonic()
        proc = start_driver(["search", config, "--address", client_address], driver_env(markers[-1], extra=env), log)
        try:
            wait_driver(proc, log, timeout=300)
        finally:
            kill_session(proc)
        print(f"search through the Ray Client: {time.monotonic() - t:.1f} s")
        out = log.read_text(errors="replace")
        assert "Ray Client: Tune's driver loop runs on the cluster's head" in " ".join(out.split()), tail(log)
        # Tune's callbacks ran on the head; the counter they bumped there moved the bar here
        bars = re.findall(rf"search {name}\b.*?(\d+)/{samples}\b", out)
        assert bars and bars[-1] == str(samples), f"the progress bar ended at {bars[-1:]} of {samples}:\n{tail(log)}"
        # ... and the line they noted there (running trials, epochs, the best so far) was shown here
        assert re.search(r"\d+ running · [1-9]\d* epochs · best valid mAP \d\.\d{4} \(#\w+\)", out), tail(log)

        c = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
        runs = trial_runs(c, name)
        assert len(runs) == samples, [r.info.run_name for r in runs]
        assert {r.info.status for r in runs} == {"FINISHED"}, {r.info.run_name: r.info.status for r in runs}
        assert {r.data.tags[tracking.NODE_TAG] for r in runs} == set(head_node), "every trial ran on the head node"
        for r in runs:
            names = {a.path for a in c.list_artifacts(r.info.run_id, "predictions")}
            assert {"predictions/valid.parquet", "predictions/test.parquet"} <= names, (r.info.run_name, names)
            assert c.get_metric_history(r.info.run_id, "valid_mAP"), r.info.run_name
        exp = c.get_experiment_by_name(name)
        search = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'search'")
        assert [r.info.status for r in search] == ["FINISHED"] and "best_valid_mAP" in search[0].data.metrics
        # Tune's driver actor on the head wrote the experiment state where this driver wrote its own state
        exp_dir = tmp_path / "ray_results" / name
        assert (exp_dir / "harmonia_search.json").is_file() and list(exp_dir.glob("experiment_state-*.json"))
        assert not list(exp_dir.glob(".harmonia-client-check-*")), "the storage check cleans up its marker"

        # ---- a storage_path the head does not see: the driver writes it in a mount namespace of its own
        why_not = _unshare_works()
        if why_not:
            print(f"NOT CHECKED: a storage_path not shared with the head ({why_not})")
        else:
            private = tmp_path / "private"
            private.mkdir()
            config = write_config(tmp_path, "unshared", data=shared_data, storage_path=str(private / "ray_results"))
            markers.append(uuid.uuid4().hex)
            p = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"',
                 str(private), sys.executable, "-m", "harmonia.cli", "search", str(config), "--address", client_address],
                cwd=REPO, env=driver_env(markers[-1], extra=env), capture_output=True, text=True, timeout=180)
            said = " ".join((p.stdout + p.stderr).split())
            assert p.returncode == 2, f"exit {p.returncode}: {said[-3000:]}"
            assert f"search.storage_path {private / 'ray_results'}: the Ray cluster's head does not see" in said, said
            assert "s3://" in said, "the error says what would work"
            assert not (private / "ray_results").exists(), "nothing reached the host's folder"
            assert c.get_experiment_by_name("unshared") is None, "refused before any MLflow run or trial"
    finally:
        for marker in markers:
            kill_marked(marker)
        down = _run([LOCAL_CLUSTER, "down", *args], timeout=120, check=False)
        left = _tool().find_ray(port, cluster_dir)
        shutil.rmtree(cluster_dir, ignore_errors=True)
    assert "is down" in down.stdout, down.stdout + down.stderr
    assert not left, f"processes of the cluster left after down: {[(p.pid, ' '.join(p.cmdline)[:100]) for p in left]}"
    print(f"whole test: {time.monotonic() - t0:.1f} s")
