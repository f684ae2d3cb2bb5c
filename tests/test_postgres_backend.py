"""infra/mlflow-server.sh with a PostgreSQL backend store: `--local-postgres` makes a throwaway PostgreSQL
(initdb in a folder, 127.0.0.1 only, a random password that is never printed), serves MLflow on it, and
`down --purge` stops both and deletes it. The slow test runs a search and the ensemble stage against that
server over HTTP and reads the runs back both through MLflow and straight from PostgreSQL.

Without PostgreSQL's server programs (initdb, pg_ctl, postgres, createdb) the tests that need them skip
and say what is missing; psycopg (the driver) comes with `pip install -e '.[test]'`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harmonia import tracking
from tests.conftest import tiny_config
from tests.test_infra import INFRA, MLFLOW_SERVER, _run, _tool


def _pg_bin_or_skip() -> str:
    tool = _tool()
    try:
        return tool.find_pg_bin()
    except tool.PgError as err:
        pytest.skip(f"PostgreSQL server programs missing: {err}")


def _cmdlines() -> list[str]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                out.append(Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


# ------------------------------------------------------------------------ fast: refusals, no server started
def test_local_postgres_refusals_name_what_is_wrong(tmp_path):
    args = ["--port", _tool().free_ports(1, start=5471)[0], "--run-dir", tmp_path / "run"]
    p = _run([MLFLOW_SERVER, "--local-postgres", "--backend", "sqlite:///x.db", *args], check=False, timeout=30)
    assert p.returncode == 1 and "--local-postgres and --backend exclude each other" in p.stderr, p.stderr

    p = _run([MLFLOW_SERVER, "--local-postgres", "--pg-bin", tmp_path / "nope", *args], check=False, timeout=30)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{tmp_path / 'nope'} (--pg-bin): no initdb, pg_ctl, postgres, createdb" in p.stderr, p.stderr
    assert "apt-get install postgresql" in p.stderr

    # a URI whose driver is not installed: refused before the server starts, password masked
    secret = "Zq8-not-printed"
    p = _run([MLFLOW_SERVER, "--backend", f"mysql+pymysql://u:{secret}@127.0.0.1:1/db", "--artifacts",
              tmp_path / "art", *args], check=False, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "needs a database driver" in out and "pymysql" in out, out
    assert secret not in out and "mysql+pymysql://u:***@127.0.0.1:1/db" in out, out
    assert not (tmp_path / "run" / "mlflow.pid").exists(), "nothing started"


def test_pg_up_refuses_a_folder_its_server_user_cannot_enter(tmp_path):
    """As root PostgreSQL runs as 'postgres' (or 'nobody'); a --pg-dir under a private folder is refused
    with the folder named, before initdb."""
    _pg_bin_or_skip()
    if os.geteuid() != 0:
        pytest.skip("only as root does the server run as another user")
    private = Path(tempfile.mkdtemp(prefix="hpgp-", dir="/tmp"))
    try:
        private.chmod(0o700)
        p = _run([sys.executable, INFRA / "infra_tool.py", "pg-up", "--dir", private / "pg"], check=False, timeout=60)
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"cannot enter {private} (mode drwx------" in p.stderr and "--pg-dir" in p.stderr, p.stderr
        assert not (private / "pg").exists(), "nothing made"
    finally:
        shutil.rmtree(private, ignore_errors=True)


# ------------------------------------------------------------------------ slow: a search on it
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_search_and_ensemble_on_an_mlflow_server_with_a_postgresql_backend(ray_local, tmp_path):
    pg_bin = _pg_bin_or_skip()
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg (the PostgreSQL driver MLflow's SQLAlchemy uses) is missing: pip install -e '.[test]'")
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from harmonia.cli import app
    from harmonia.search.tuner import run_search

    tool = _tool()
    t0 = time.monotonic()
    port = tool.free_ports(1, start=5401)[0]
    url = f"http://127.0.0.1:{port}"
    # as root PostgreSQL runs as 'postgres', which must be able to enter the run dir: not under pytest's
    # private tmp_path, a folder of its own in /tmp
    run_dir = Path(tempfile.mkdtemp(prefix="hpg-", dir="/tmp"))
    pg_dir = run_dir / "postgres"
    args = ["--port", port, "--run-dir", run_dir]
    start = [MLFLOW_SERVER, "start", "--local-postgres", "--artifacts", tmp_path / "artifacts", *args,
             "--wait", "--timeout", "150"]
    try:
        up = _run(start, timeout=240)
        print(f"\nPostgreSQL ({pg_bin}) + MLflow server up in {time.monotonic() - t0:.1f} s")
        password = (pg_dir / "pgpass").read_text().splitlines()[0].rsplit(":", 1)[1]
        assert len(password) >= 32 and (pg_dir / "pgpass").stat().st_mode & 0o077 == 0, "random, private"
        assert password not in up.stdout + up.stderr, "the password is never printed"
        assert f"tracking URI: {url}" in up.stdout and "health:       OK" in up.stdout, up.stdout
        m = re.search(r"backend:\s+postgresql\+psycopg://mlflow@127\.0\.0\.1:(\d+)/mlflow \(local PostgreSQL, pid (\d+)",
                      up.stdout)
        assert m, up.stdout
        pg_port, pg_pid = int(m.group(1)), int(m.group(2))
        mlflow_pid = int((run_dir / "mlflow.pid").read_text())
        assert tool.listeners(pg_pid) == [f"127.0.0.1:{pg_port}"], "PostgreSQL: loopback TCP only"
        assert all(a.startswith("127.0.0.1:") for a in tool.listeners(mlflow_pid)), tool.listeners(mlflow_pid)
        assert not [c for c in _cmdlines() if password in c], "the password is on no command line"
        st = _run([MLFLOW_SERVER, "status", *args], timeout=30)
        assert "health: OK" in st.stdout and f"running 127.0.0.1:{pg_port} pid {pg_pid}" in st.stdout, st.stdout

        # ---- a search whose trials log to the server over HTTP, then the ensemble stage over HTTP
        name = "pgsearch"
        cfg = tiny_config(tmp_path, name, num_samples=4, max_epochs=2, grace_period=1)
        cfg.tracking.uri = url
        t = time.monotonic()
        result = run_search(cfg, progress=False)
        assert len(result.trials) == 4 and set(result.trials["status"]) == {"TERMINATED"}, result.trials
        res = CliRunner().invoke(app, ["ensemble", "--experiment", name, "--method", "selection", "--size", "5",
                                       "--tracking-uri", url])
        assert res.exit_code == 0, res.output
        print(f"search + ensemble over HTTP: {time.monotonic() - t:.1f} s")

        c = MlflowClient(url)
        exp = c.get_experiment_by_name(name)
        runs = {r.info.run_id: r for r in c.search_runs([exp.experiment_id])}
        kinds = sorted(r.data.tags.get(tracking.KIND_TAG) for r in runs.values())
        # selection plus the two candidates every recommendation weighs: best_single and average
        assert kinds == ["ensemble"] * 3 + ["search", "trial", "trial", "trial", "trial"], kinds
        assert {r.info.status for r in runs.values()} == {"FINISHED"}, {r.info.run_name: r.info.status for r in runs.values()}
        for r in runs.values():
            assert r.info.artifact_uri.startswith("mlflow-artifacts:/"), r.info.artifact_uri
            if r.data.tags[tracking.KIND_TAG] == "trial":
                names = {a.path for a in c.list_artifacts(r.info.run_id, "predictions")}
                assert {"predictions/valid.parquet", "predictions/test.parquet"} <= names, names
        (ens,) = [r for r in runs.values() if r.data.tags[tracking.KIND_TAG] == "ensemble"
                  and r.data.tags.get("harmonia.method") == "selection"]
        assert "ensemble.json" in {a.path for a in c.list_artifacts(ens.info.run_id)}
        assert list((tmp_path / "artifacts").rglob(f"{ens.info.run_id}/artifacts/ensemble.json")), "stored by the server"

        # ---- the same runs, straight from PostgreSQL
        conn = dict(host="127.0.0.1", port=pg_port, user="mlflow", dbname="mlflow", passfile=str(pg_dir / "pgpass"),
                    connect_timeout=10)
        with psycopg.connect(**conn) as db:
            rows = db.execute("select r.run_uuid, r.status from runs r join experiments e "
                              "on e.experiment_id = r.experiment_id where e.name = %s", (name,)).fetchall()
            assert dict(rows) == {rid: r.info.status for rid, r in runs.items()}, rows
            trial_ids = [rid for rid, r in runs.items() if r.data.tags[tracking.KIND_TAG] == "trial"]
            (n_metrics,) = db.execute("select count(*) from metrics where key = 'valid_mAP' and run_uuid = any(%s)",
                                      (trial_ids,)).fetchone()
            assert n_metrics >= 4, "every trial's epochs are rows of the metrics table"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(**{**conn, "passfile": os.devnull, "password": "wrong"}).close()

        # ---- stop keeps the data, start reuses it (same password, same runs)
        stop = _run([MLFLOW_SERVER, "stop", *args], timeout=120)
        assert "MLflow server" in stop.stdout and f"PostgreSQL (pid {pg_pid}, port {pg_port}) stopped" in stop.stdout, \
            stop.stdout
        assert not _alive(pg_pid) and not _alive(mlflow_pid) and (pg_dir / "data" / "PG_VERSION").is_file()
        up = _run(start, timeout=240)
        assert password not in up.stdout + up.stderr
        assert {r.info.run_id for r in MlflowClient(url).search_runs([exp.experiment_id])} == set(runs)

        # ---- down --purge: both stopped, the throwaway database gone
        pg_pid = int(re.search(r"local PostgreSQL, pid (\d+)", up.stdout).group(1))
        mlflow_pid = int((run_dir / "mlflow.pid").read_text())
        down = _run([MLFLOW_SERVER, "down", "--purge", *args], timeout=120)
        assert f"{pg_dir} deleted" in down.stdout, down.stdout
        assert not _alive(pg_pid) and not _alive(mlflow_pid), "both servers are gone"
        assert not pg_dir.exists() and not tool.wait_http(f"{url}/health", timeout=1)
    finally:
        _run([MLFLOW_SERVER, "down", "--purge", *args], timeout=120, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"whole test: {time.monotonic() - t0:.1f} s")
