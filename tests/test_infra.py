"""infra/: cluster configs checked against Ray's own schema and KubeRay's required fields, the
URI masking, and (slow) a real 2-node local Ray cluster and a real MLflow tracking server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
LOCAL_CLUSTER = INFRA / "local-cluster.sh"
MLFLOW_SERVER = INFRA / "mlflow-server.sh"

# credentials written into a URI (scheme://user:password@host) or a value that looks like a key
_URI_WITH_PASSWORD = re.compile(r"[a-z0-9+.-]+://[^\s/:@]+:[^\s/@]+@", re.I)
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY", re.I)
_AWS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


def _tool():
    return load_script(INFRA / "infra_tool.py")


def _script_env() -> dict[str, str]:
    """The test's env with this interpreter's bin dir first, so the scripts find ray/mlflow."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
              "MLFLOW_BACKEND_STORE_URI", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    return env


def _run(args, timeout=120, check=True, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       env=env or _script_env(), cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


# ------------------------------------------------------------------------ ray-cluster.yaml
def test_ray_cluster_yaml_matches_ray_schema():
    import jsonschema
    import ray

    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert schema_path.is_file(), "the installed ray ships its cluster-launcher schema here"
    schema = json.loads(schema_path.read_text())
    text = (INFRA / "ray-cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    jsonschema.validate(cfg, schema)

    # Ray's own checks, as `ray up` runs them (defaults filled in, head type among the types)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))

    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types
    assert types[head]["resources"].get("GPU", 0) == 0, "the head node type is a CPU node"
    gpu_types = [n for n, t in types.items() if n != head and t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, "a worker node type with GPU resources"
    for n in gpu_types:
        assert types[n].get("max_workers", 0) >= 1

    setup = "\n".join(cfg.get("setup_commands", []) + cfg.get("worker_setup_commands", []))
    assert re.search(r"pip install .*harmonia", setup), "setup commands install harmonia"
    assert re.search(r"pip install .*torch==", setup), "torch pinned, in its own command"
    assert setup.index("torch==") < setup.index("harmonia")

    # the shared storage every node reaches
    assert cfg["metadata"]["harmonia_storage_path"].startswith("s3://YOUR-BUCKET/harmonia")
    assert "storage_path" in text

    # token auth on every node; dashboard on loopback; token file mounted, not written inline
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cfg[key])
        assert "RAY_AUTH_MODE=token" in start, key
        assert "ray start" in start
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
    assert any("auth_token" in k for k in cfg["file_mounts"])
    assert not _URI_WITH_PASSWORD.search(text)
    assert not _AWS_KEY.search(text)
    assert not re.search(r"aws_secret_access_key|AWS_SECRET_ACCESS_KEY\s*=", text)


# ------------------------------------------------------------------------ kuberay
def _env_entries(container: dict) -> list[dict]:
    return list(container.get("env") or [])


def _containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def test_kuberay_raycluster_has_required_fields_and_no_secrets():
    text = (INFRA / "kuberay-raycluster.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    rc = next(d for d in docs if d.get("kind") == "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["metadata"]["name"]
    spec = rc["spec"]

    def check_group(group: dict, what: str):
        params = group["rayStartParams"]
        assert isinstance(params, dict), what
        # KubeRay's rayStartParams is map[string]string: numbers must be quoted
        assert all(isinstance(v, str) for v in params.values()), f"{what}: quote rayStartParams"
        containers = _containers(group["template"])
        assert containers and containers[0]["image"] and containers[0]["name"], what

    head = spec["headGroupSpec"]
    check_group(head, "headGroupSpec")
    assert head["rayStartParams"].get("dashboard-host", "127.0.0.1") == "127.0.0.1"

    groups = spec["workerGroupSpecs"]
    assert groups
    gpu_groups = []
    for g in groups:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in g, f"workerGroupSpecs[{g.get('groupName')}].{key}"
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        check_group(g, g["groupName"])
        limits = _containers(g["template"])[0].get("resources", {}).get("limits", {})
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            gpu_groups.append(g["groupName"])
    assert gpu_groups, "a worker group with an nvidia.com/gpu limit"

    # token auth: by the operator (authOptions) or by env from a Secret
    all_containers = _containers(head["template"]) + [c for g in groups for c in _containers(g["template"])]
    by_operator = (spec.get("authOptions") or {}).get("mode") == "token"
    by_env = all(any(e["name"] == "RAY_AUTH_MODE" and e.get("value") == "token" for e in _env_entries(c))
                 for c in all_containers)
    assert by_operator or by_env

    # the tracking URI comes from a Secret on every Ray container; no secret value inline
    for c in all_containers:
        env = {e["name"]: e for e in _env_entries(c)}
        assert "secretKeyRef" in env["MLFLOW_TRACKING_URI"].get("valueFrom", {}), c["name"]
        for name, e in env.items():
            if _SECRET_NAME.search(name):
                assert "value" not in e and "valueFrom" in e, f"{c['name']}: {name} given inline"
    assert not _URI_WITH_PASSWORD.search(text)
    assert not _AWS_KEY.search(text)
    assert "kind: Secret" not in text, "Secrets are created outside this file"


# ------------------------------------------------------------------------ masking (fast)
@pytest.mark.parametrize("uri,masked", [
    ("postgresql://user:s3cr3t@db.example:5432/mlflow", "postgresql://user:***@db.example:5432/mlflow"),
    ("postgresql+psycopg2://harmonia:p%40ss:w0rd@10.0.0.5/mlflow", "postgresql+psycopg2://harmonia:***@10.0.0.5/mlflow"),
    ("mysql://root:hunter2@localhost/db?charset=utf8", "mysql://root:***@localhost/db?charset=utf8"),
    ("postgresql://db.example/mlflow?user=u&password=topsecret", "postgresql://db.example/mlflow?user=u&password=***"),
    ("postgresql://user@db.example/mlflow", "postgresql://user@db.example/mlflow"),
    ("sqlite:////tmp/x/db.sqlite", "sqlite:////tmp/x/db.sqlite"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_mask_uri(uri, masked):
    assert _tool().mask_uri(uri) == masked


def test_mlflow_script_never_prints_the_password():
    secret = "s3cr3t-Pa55"
    p = _run([MLFLOW_SERVER, "--dry-run", "--backend", f"postgresql://harmonia:{secret}@db.internal:5432/mlflow",
              "--artifacts", "s3://YOUR-BUCKET/harmonia/mlartifacts", "--port", "5999"], timeout=30)
    out = p.stdout + p.stderr
    assert secret not in out
    assert "postgresql://harmonia:***@db.internal:5432/mlflow" in out
    assert "--host 127.0.0.1" in out, "binds to loopback unless told otherwise"
    assert "--artifacts-destination s3://YOUR-BUCKET/harmonia/mlartifacts" in out
    # the backend URI goes through the environment, never on mlflow's command line (ps shows it)
    assert "--backend-store-uri" not in out
    # the same through the env var
    env = _script_env()
    env["MLFLOW_BACKEND_STORE_URI"] = f"postgresql://harmonia:{secret}@db.internal/mlflow"
    p = _run([MLFLOW_SERVER, "--dry-run", "--port", "5999"], timeout=30, env=env)
    assert secret not in p.stdout + p.stderr and "harmonia:***@" in p.stdout


def test_local_cluster_script_usage_and_status_of_nothing(tmp_path):
    p = _run([LOCAL_CLUSTER, "--help"], timeout=30)
    assert "--workers" in p.stdout and "RAY_AUTH_MODE" in p.stdout
    p = _run([LOCAL_CLUSTER, "status", "--port", "6397", "--dir", tmp_path / "none"], timeout=30, check=False)
    assert p.returncode == 3 and "no local Ray cluster" in p.stdout
    assert not (tmp_path / "none").exists(), "status creates nothing"
    p = _run([LOCAL_CLUSTER, "up", "--auth", "nope"], timeout=30, check=False)
    assert p.returncode != 0 and "--auth" in p.stderr
    # beyond loopback the address is explicit and auth stays on: nothing is started otherwise
    p = _run([LOCAL_CLUSTER, "up", "--host", "192.0.2.7", "--auth", "disabled", "--dir", tmp_path / "x"],
             timeout=30, check=False)
    assert p.returncode != 0 and "--auth disabled" in p.stderr and "192.0.2.7" in p.stderr
    p = _run([LOCAL_CLUSTER, "up", "--host", "every-interface", "--dir", tmp_path / "x"], timeout=30, check=False)
    assert p.returncode != 0 and "--host must be an IPv4 address" in p.stderr
    assert not (tmp_path / "x").exists()
    assert "`--auth token` (default)" in _run([LOCAL_CLUSTER, "--help"], timeout=30).stdout


# ------------------------------------------------------------------------ local Ray cluster (slow)
_DRIVER = r"""
import json, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

ran_on = ray.get([
    where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
    for n in alive
], timeout=120)
print("RESULT " + json.dumps({"alive": [n["NodeID"] for n in alive], "ran_on": ran_on}))
ray.shutdown()
"""


def _parse_up(out: str) -> tuple[str, dict[str, str]]:
    m = re.search(r"^\s*address:\s+(\S+)", out, re.M)
    assert m, out
    env = dict(re.findall(r"^export (\w+)=(\S+)$", out, re.M))
    assert "RAY_AUTH_MODE" in env, out
    return m.group(1), env


def _cluster_procs(port: int, cluster_dir: str) -> list:
    """Live (non-zombie) processes of the cluster on `port` whose files are under `cluster_dir`."""
    return _tool().find_ray(port, cluster_dir)


def _raylets_under(cluster_dir: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2:].split()[0]
        if state != "Z" and "raylet" in cmd.split(" ")[0] and cluster_dir in cmd:
            pids.append(int(d))
    return pids


def _first_error(args, env, needle: str, timeout: float) -> str:
    """Run `args` until `needle` shows in its stderr (or it exits, or `timeout`); return stderr."""
    import threading

    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    lines: list[str] = []
    found = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                found.set()
        found.set()  # EOF: the process ended

    threading.Thread(target=pump, daemon=True).start()
    try:
        found.wait(timeout)
    finally:
        proc.kill()
        out = proc.stdout.read()
        proc.wait(timeout=30)
    assert "RESULT" not in out, "the driver got in"
    return "".join(lines)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def _free_port(start: int) -> int:
    return _tool().free_ports(1, start=start)[0]


@pytest.fixture
def cluster_dirs():
    """Short dirs under /tmp (Ray's unix socket paths must stay under ~107 characters)."""
    made = []

    def make(tag: str) -> str:
        d = tempfile.mkdtemp(prefix=f"hr{tag}-", dir="/tmp")
        made.append(d)
        return d

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_cluster_two_nodes(cluster_dirs):
    port = _free_port(6391)
    decoy_port = _free_port(port + 1)
    d, decoy_dir = cluster_dirs("a"), cluster_dirs("b")
    started = []
    try:
        t0 = time.monotonic()
        started.append((port, d))
        up = _run([LOCAL_CLUSTER, "up", "--workers", "1", "--port", port, "--cpus-per-node", "1",
                   "--object-store-mb", "256", "--dir", d], timeout=180)
        address, env = _parse_up(up.stdout)
        assert address == f"127.0.0.1:{port}"
        assert env["RAY_AUTH_MODE"] == "token", "token auth by default"
        assert Path(env["RAY_AUTH_TOKEN_PATH"]).is_file() and "NOTE" not in up.stdout
        assert len(_raylets_under(d)) == 2
        st = _run([LOCAL_CLUSTER, "status", "--port", port, "--dir", d], timeout=60)
        assert "2 node(s) running" in st.stdout

        # a driver in its own process, with the env the script printed
        drv_env = _script_env()
        drv_env.update(env)
        drv = _run([sys.executable, "-c", _DRIVER, address], timeout=180, env=drv_env)
        res = json.loads(drv.stdout.split("RESULT ", 1)[1].splitlines()[0])
        assert len(res["alive"]) == 2
        assert len(set(res["ran_on"])) == 2 and set(res["ran_on"]) == set(res["alive"])
        print(f"cluster up + driver in {time.monotonic() - t0:.1f} s")

        # every server of both nodes listens on loopback only (Ray's default is every interface)
        from tests.test_loopback import exposed

        by_process = _tool().listeners_by_process([p.pid for p in _cluster_procs(port, d)])
        names = " ".join(by_process)
        assert names.count("raylet") == 2 and "gcs_server" in names, by_process
        assert f"::ffff:127.0.0.1:{port}" in sum(by_process.values(), []), "the GCS, on loopback"
        assert exposed(by_process) == {}, f"listening beyond loopback: {by_process}"

        # another Ray on this host (a one-node cluster) must survive our `down`
        started.append((decoy_port, decoy_dir))
        decoy_up = _run([LOCAL_CLUSTER, "up", "--workers", "0", "--port", decoy_port, "--object-store-mb", "256",
                         "--auth", "disabled", "--dir", decoy_dir], timeout=120)
        assert "RAY_AUTH_MODE=disabled" in decoy_up.stdout and "NOTE" in decoy_up.stdout
        decoy = _raylets_under(decoy_dir)
        assert len(decoy) == 1

        down = _run([LOCAL_CLUSTER, "down", "--port", port, "--dir", d], timeout=120)
        assert "is down" in down.stdout
        assert _raylets_under(d) == [], "no raylet of this cluster remains"
        assert _cluster_procs(port, d) == []
        assert _raylets_under(decoy_dir) == decoy, "the other Ray is untouched"
        st = _run([LOCAL_CLUSTER, "status", "--port", port, "--dir", d], timeout=60, check=False)
        assert st.returncode == 3
    finally:
        for p, dd in started:
            _run([LOCAL_CLUSTER, "down", "--port", p, "--dir", dd], timeout=120, check=False)
    assert _raylets_under(d) == [] and _raylets_under(decoy_dir) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_cluster_token_auth(cluster_dirs):
    port = _free_port(6395)
    d = cluster_dirs("t")
    home = Path.home() / ".ray" / "auth_token"
    home_before = home.read_bytes() if home.exists() else None
    try:
        up = _run([LOCAL_CLUSTER, "up", "--workers", "1", "--port", port, "--auth", "token",
                   "--object-store-mb", "256", "--dir", d], timeout=180)
        address, env = _parse_up(up.stdout)
        assert env["RAY_AUTH_MODE"] == "token"
        token_file = Path(env["RAY_AUTH_TOKEN_PATH"])
        assert token_file.is_file() and (token_file.stat().st_mode & 0o077) == 0, "token file is private"
        assert token_file.read_text() not in up.stdout, "the token itself is never printed"

        drv_env = _script_env()
        drv_env.update(env)
        drv = _run([sys.executable, "-c", _DRIVER, address], timeout=180, env=drv_env)
        res = json.loads(drv.stdout.split("RESULT ", 1)[1].splitlines()[0])
        assert len(res["alive"]) == 2 and len(set(res["ran_on"])) == 2

        # a driver without the token is refused (Ray retries for ~20 s before giving up: stop
        # waiting once the GCS has said why)
        bad_env = _script_env()
        bad_env.update({k: v for k, v in env.items() if not k.startswith("RAY_AUTH")})  # reaches the GCS on loopback
        bad_env["RAY_AUTH_MODE"] = "disabled"
        assert "InvalidAuthToken" in _first_error(
            [sys.executable, "-c", _DRIVER, address], bad_env, "InvalidAuthToken", timeout=60)
    finally:
        _run([LOCAL_CLUSTER, "down", "--port", port, "--dir", d], timeout=120, check=False)
    assert _raylets_under(d) == []
    after = home.read_bytes() if home.exists() else None
    assert after == home_before, "~/.ray/auth_token is left alone"


# ------------------------------------------------------------------------ MLflow server (slow)
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_server_serves_runs_and_artifacts(tmp_path):
    from mlflow.tracking import MlflowClient

    tool = _tool()
    port = tool.free_ports(1, start=5123)[0]
    url = f"http://127.0.0.1:{port}"
    art, run_dir = tmp_path / "art", tmp_path / "run"
    args = ["--port", port, "--run-dir", run_dir]
    try:
        up = _run([MLFLOW_SERVER, "--backend", f"sqlite:///{tmp_path}/x/db.sqlite", "--artifacts", art,
                   *args, "--wait"], timeout=200)
        assert f"tracking URI: {url}" in up.stdout and "health:       OK" in up.stdout
        pid = int((run_dir / "mlflow.pid").read_text())
        assert (tmp_path / "x" / "db.sqlite").is_file()

        listening = tool.listeners(pid)
        assert f"127.0.0.1:{port}" in listening, listening
        assert all(a.startswith("127.0.0.1:") for a in listening), f"loopback only: {listening}"

        client = MlflowClient(tracking_uri=url)
        exp = client.create_experiment("infra-test")
        run = client.create_run(exp, run_name="trial-0")
        rid = run.info.run_id
        client.log_param(rid, "lr", "0.001")
        client.log_metric(rid, "mAP", 0.42, step=1)
        src = tmp_path / "src" / "config.json"
        src.parent.mkdir()
        src.write_text('{"hello": "world"}')
        client.log_artifact(rid, str(src), artifact_path="trial")
        client.set_terminated(rid)

        got = client.get_run(rid)
        assert got.data.metrics["mAP"] == pytest.approx(0.42) and got.data.params["lr"] == "0.001"
        assert got.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts are served over HTTP"
        assert [f.path for f in client.list_artifacts(rid, "trial")] == ["trial/config.json"]
        dst = tmp_path / "dst"
        dst.mkdir()
        local = client.download_artifacts(rid, "trial/config.json", str(dst))
        assert Path(local).read_text() == '{"hello": "world"}'
        stored = list(art.rglob("config.json"))
        assert len(stored) == 1, "the server wrote the artifact under --artifacts"

        st = _run([MLFLOW_SERVER, "status", *args], timeout=30)
        assert "health: OK" in st.stdout

        stop = _run([MLFLOW_SERVER, "stop", *args], timeout=60)
        assert "stopped" in stop.stdout
        assert not (run_dir / "mlflow.pid").exists()
        assert not tool.wait_http(f"{url}/health", timeout=2)
        assert not _alive(pid), "the server process is gone"
    finally:
        _run([MLFLOW_SERVER, "stop", *args], timeout=60, check=False)
