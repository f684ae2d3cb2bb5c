#!/usr/bin/env python3
"""Small helpers for the infra/ shell scripts (Python stdlib only, Linux /proc).

Subcommands:
  mask-uri URI                 print URI with any password replaced by ***
  free-ports N [--start P]     print N distinct TCP ports that are free now
  free-range SIZE START        print the first port >= START of SIZE consecutive free ports
  find-ray --port P --dir D    list pids of Ray processes of the local cluster on GCS port P
                               whose files live under D (and their descendants)
  kill-ray --port P --dir D [--grace S]
                               stop exactly those processes: SIGTERM raylets first,
                               then the rest, SIGKILL what is left after S seconds
  wait-http URL [--timeout S] [--any-status]
                               poll URL until it answers HTTP 200 (or any HTTP status)
  listeners PID                print "addr:port" of TCP sockets listened on by PID and its children
  alive-nodes ADDRESS          print how many nodes the Ray GCS at ADDRESS has alive (imports ray)
  ray-start-loopback ARGS...   `ray start ARGS` for a node whose address is 127.0.0.1 (imports ray)
  pg-bin [--pg-bin DIR]        print the folder of the PostgreSQL server programs (initdb, pg_ctl,
                               postgres, createdb), or say what is missing and exit 1
  pg-up --dir D [--port P] [--pg-bin DIR]
                               a throwaway PostgreSQL in D: initdb on first use (role and database
                               `mlflow`, a random password kept in D/pgpass, mode 600, never printed),
                               started on 127.0.0.1 only (no unix socket), on P or a free port; prints
                               PG_URI=postgresql+psycopg://mlflow@127.0.0.1:PORT/mlflow (no password),
                               PGPASSFILE=D/pgpass and PG_PID=...
  pg-down --dir D [--purge]    stop that PostgreSQL (pg_ctl stop -m fast, SIGKILL after 30 s);
                               --purge then deletes D (only a folder that pg-up made)
  pg-status --dir D            "running PORT PID" or "stopped" (exit 3)

Nothing here kills by process name: only processes whose command line names this
cluster's temp dir or its GCS port are touched, so another Ray on the same host
(e.g. one on the default port 6379) is left alone.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit


# --------------------------------------------------------------------------- masking
def mask_uri(uri: str) -> str:
    """Replace the password of `scheme://user:password@host/...` with `***`.

    Also masks `password=`/`pwd=` query parameters. A URI without credentials is
    returned unchanged; a bare `user@host` keeps the user name.
    """
    if not uri:
        return uri
    out = uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        parts = None
    if parts is not None and parts.netloc and "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            userinfo = f"{user}:***"
        out = urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}"))
    elif "://" in uri and "@" in uri:
        # urlsplit refused it (e.g. odd characters): mask by pattern instead
        out = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", uri)
    out = re.sub(r"(?i)([?&](?:password|pwd|passwd)=)[^&#]*", r"\1***", out)
    return out


# --------------------------------------------------------------------------- ports
def _port_free(port: int) -> bool:
    # Ray's gRPC servers bind the wildcard address: test that, not just loopback.
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1")):
        s = socket.socket(family, socket.SOCK_STREAM)
        # like the servers themselves: a port with only TIME_WAIT connections is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
            s.listen(1)
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_ports(n: int, start: int = 0, exclude: set[int] | None = None) -> list[int]:
    exclude = set(exclude or ())
    got: list[int] = []
    if start:
        p = start
        while len(got) < n and p < 65535:
            if p not in exclude and _port_free(p):
                got.append(p)
            p += 1
        return got
    while len(got) < n:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in exclude and p not in got and _port_free(p):
            got.append(p)
    return got


def free_range(size: int, start: int) -> int:
    p = start
    while p + size < 65535:
        bad = next((q for q in range(p, p + size) if not _port_free(q)), None)
        if bad is None:
            return p
        p = bad + 1
    raise SystemExit("no free port range found")


# --------------------------------------------------------------------------- processes (Linux /proc)
class Proc:
    """A process read from /proc (no psutil: it is not a dependency of the project)."""

    def __init__(self, pid: int):
        self.pid = pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            self.cmdline = [c.decode(errors="replace") for c in f.read().split(b"\0") if c]
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        # comm is in parentheses and may contain spaces
        self.name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        self.state = fields[0]
        self.ppid = int(fields[1])
        self.start = fields[19]  # starttime: with pid, identifies the process

    def alive(self) -> bool:
        try:
            return Proc(self.pid).start == self.start and Proc(self.pid).state != "Z"
        except (OSError, ValueError):
            return False

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def all_procs() -> list[Proc]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                out.append(Proc(int(d)))
            except (OSError, ValueError):
                pass
    return out


def _matches(cmdline: list[str], port: int, temp_dir: str) -> bool:
    line = " ".join(cmdline)
    if temp_dir and re.search(re.escape(temp_dir.rstrip("/")) + r"(/|\s|$)", line):
        return True
    # processes that carry only the GCS address: `--gcs-address` (agents), `--address` (the Ray Client
    # server, proxy and specific servers, which `ray start` detaches from the raylet)
    if re.search(rf"--(gcs[-_])?address[= ]\S*:{port}(\s|$)", line):
        return True
    if re.search(rf"--gcs_server_port[= ]{port}(\s|$)", line):
        return True
    return False


def _is_ray_process(p: "Proc") -> bool:
    """A Ray daemon or worker: its program lives in the ray package (raylet, gcs_server,
    dashboard.py, monitor.py, log_monitor.py, ...), it runs a `ray.` module, or it is named
    `ray::...`. An editor or `tail` that merely names a log file under the temp dir is not."""
    if p.name.startswith("ray::") or (p.cmdline and p.cmdline[0].startswith("ray::")):
        return True
    if p.cmdline and os.path.basename(p.cmdline[0]) in {"raylet", "gcs_server"}:
        return True
    for i, arg in enumerate(p.cmdline[:3]):
        if re.search(r"[/\\](site|dist)-packages[/\\]ray[/\\]\S*\.py$", arg):
            return True
        if arg == "-m" and i + 1 < len(p.cmdline) and p.cmdline[i + 1].startswith("ray."):
            return True
    return False


def find_ray(port: int, temp_dir: str) -> list[Proc]:
    """Processes of this cluster: matched by command line, plus all their descendants."""
    procs = all_procs()
    me = {os.getpid(), os.getppid()}
    roots = []
    for p in procs:
        if p.pid in me or not p.cmdline or p.state == "Z":
            continue
        if _is_ray_process(p) and _matches(p.cmdline, port, temp_dir):
            roots.append(p)
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    seen = {p.pid: p for p in roots}
    stack = list(roots)
    while stack:
        for c in children.get(stack.pop().pid, []):
            if c.pid not in seen and c.pid not in me and c.state != "Z":
                seen[c.pid] = c
                stack.append(c)
    return list(seen.values())


def _kind(p: Proc) -> int:
    exe = os.path.basename(p.cmdline[0]) if p.cmdline else ""
    if p.name == "raylet" or exe == "raylet":
        return 0
    if p.name == "gcs_server" or exe == "gcs_server":
        return 2
    return 1


def _wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if p.alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if p.alive()]
    return alive


def kill_ray(port: int, temp_dir: str, grace: float = 10.0) -> int:
    """Stop this cluster's processes in `ray stop` order, one stage at a time: raylets
    first (they unregister from the GCS and take their workers down), then the other
    daemons, the GCS last. SIGTERM, then SIGKILL what is left after `grace` seconds."""
    procs = find_ray(port, temp_dir)
    deadline = time.monotonic() + grace
    for stage in (0, 1, 2):
        group = [p for p in procs if _kind(p) == stage]
        for p in group:
            p.signal(signal.SIGTERM)
        _wait_gone(group, max(0.5, deadline - time.monotonic()))
    left = [p for p in find_ray(port, temp_dir)] + [p for p in procs if p.alive()]
    for p in left:
        p.signal(signal.SIGKILL)
    _wait_gone(left, 5)
    return len(procs)


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def _hex_addr(h: str) -> str:
    addr, port = h.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, raw)
    return f"{ip}:{int(port, 16)}"


def listeners(pid: int) -> list[str]:
    """`ip:port` of the TCP sockets in LISTEN state held by `pid` and its descendants."""
    return sorted(set().union(*listeners_by_process([pid]).values()))


def listeners_by_process(roots: list[int]) -> dict[str, list[str]]:
    """'PID NAME' -> listening `ip:port` of each of `roots` and their descendants that listens."""
    procs = all_procs()
    names = {p.pid: p.name for p in procs}
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    pids, stack = set(roots), list(roots)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in pids:
                pids.add(c)
                stack.append(c)
    found = {f"{p} {names.get(p, '?')}": own_listeners(p) for p in sorted(pids)}
    return {k: v for k, v in found.items() if v}


def own_listeners(pid: int) -> list[str]:
    """`ip:port` of the TCP sockets in LISTEN state held by `pid` itself."""
    inodes = _socket_inodes(pid)
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                out.add(_hex_addr(f[1]))
    return sorted(out)


# --------------------------------------------------------------------------- ray nodes
def ray_start_loopback(args: list[str]) -> int:
    """`ray start ARGS` for a node whose address is 127.0.0.1, so that its servers listen there only.

    Ray 2.60 binds its servers to the node's address, and replaces a loopback one (`--node-ip-address`,
    the host of `--address`) with the machine's outward address (`services.get_node_ip_address`), except
    where multi-node clusters are off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), which also refuses to join a
    worker node. So here: clusters on for the join, that function answering 127.0.0.1, and the variable
    at 0 for every process the node starts (agents, client server, workers keep loopback addresses)."""
    from ray._private import ray_constants, services
    from ray.scripts.scripts import cli as ray_cli

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.get_node_ip_address = lambda address=None: "127.0.0.1"
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    try:
        ray_cli(args=["start", *args], prog_name="ray", standalone_mode=True)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def alive_nodes(address: str) -> int:
    """Number of ALIVE nodes registered in the GCS at `address` (needs ray importable,
    and the same RAY_AUTH_MODE / token env as the cluster)."""
    from ray._raylet import GcsClient  # internal, but what `ray status` itself uses
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    infos = GcsClient(address=address).get_all_node_info(timeout=5).values()
    return sum(1 for n in infos if n.state == GcsNodeInfo.GcsNodeState.ALIVE)


# --------------------------------------------------------------------------- local PostgreSQL
PG_ROLE = PG_DB = "mlflow"
PG_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
_PG_STATE = "harmonia-postgres.json"  # marks a folder made by pg-up (pg-down --purge deletes no other)


class PgError(RuntimeError):
    """The local PostgreSQL cannot be found, started or stopped; the message says what to do."""


def _pg_candidates(given: str | None) -> list[tuple[str, str]]:
    """(folder, where it came from), in order of preference."""
    out = []
    if given:
        out.append((given, "--pg-bin"))
    if os.environ.get("PG_BIN"):
        out.append((os.environ["PG_BIN"], "PG_BIN"))
    on_path = shutil.which("initdb")
    if on_path:
        out.append((os.path.dirname(os.path.realpath(on_path)), "initdb on PATH"))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            if bindir:
                out.append((bindir, "pg_config --bindir"))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple:
        m = re.search(r"/(\d+)(?:\.(\d+))?/bin$", path)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"), key=version, reverse=True):
        out.append((d, "the distribution's PostgreSQL"))
    return out


def find_pg_bin(given: str | None = None) -> str:
    """The first folder that holds every program of PG_PROGRAMS; PgError naming what is missing where."""
    looked = []
    for folder, origin in _pg_candidates(given):
        missing = [p for p in PG_PROGRAMS if not os.access(os.path.join(folder, p), os.X_OK)]
        if not missing:
            return os.path.realpath(folder)
        looked.append(f"{folder} ({origin}): no {', '.join(missing)}")
        if origin == "--pg-bin":
            break  # an explicit folder is not second-guessed
    where = "; ".join(looked) if looked else "no initdb on PATH, no pg_config, no /usr/lib/postgresql/*/bin"
    raise PgError(f"PostgreSQL server programs ({', '.join(PG_PROGRAMS)}) not found: {where}. Install them "
                  "(Debian/Ubuntu: apt-get install postgresql) or name their folder with --pg-bin DIR / PG_BIN")


def _server_user() -> tuple[int, int, str] | None:
    """PostgreSQL refuses to run as root: as root, run it as 'postgres' (or 'nobody'); else as us (None)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return pw.pw_uid, pw.pw_gid, name
    raise PgError("running as root, which PostgreSQL refuses, and there is no 'postgres' or 'nobody' user to "
                  "run it as: create one (useradd --system postgres) or run this as another user")


def _reachable_by(path: str, uid: int, gid: int) -> str | None:
    """The first folder on the way to `path` that user uid:gid cannot enter, or None."""
    import stat as st

    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        d = os.sep.join(parts[:i]) or os.sep
        try:
            s = os.stat(d)
        except FileNotFoundError:
            return None  # made below, by us, with the right mode
        mode = s.st_mode
        ok = (mode & st.S_IXUSR) if s.st_uid == uid else (mode & st.S_IXGRP) if s.st_gid == gid else (mode & st.S_IXOTH)
        if not ok:
            return f"{d} (mode {st.filemode(mode)}, owner uid {s.st_uid})"
    return None


def _as_server(cmd: list[str], cwd: str, timeout: float, user) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "HOME": cwd}
    kw = {}
    if user is not None:
        kw = {"user": user[0], "group": user[1], "extra_groups": []}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def _postmaster_pid(data: str) -> int | None:
    """The pid in DATA/postmaster.pid if that process is alive (and not a zombie)."""
    try:
        with open(os.path.join(data, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
        return pid if Proc(pid).state != "Z" else None
    except (OSError, ValueError):
        return None


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def _read_state(d: str) -> dict:
    try:
        with open(os.path.join(d, _PG_STATE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_state(d: str, state: dict) -> None:
    with open(os.path.join(d, _PG_STATE), "w") as f:
        json.dump(state, f)


def pg_up(d: str, port: int | None = None, pg_bin: str | None = None, timeout: float = 60) -> dict:
    """Start (initdb on first use) the throwaway PostgreSQL in `d`; return uri, passfile, port, pid.

    The password is random, lives only in D/pgpass (mode 600, libpq's format) and reaches mlflow and
    psql through PGPASSFILE: it is in no URI, no command line, no output. The server listens on
    127.0.0.1 only and has no unix socket; pg_hba asks for the password (scram-sha-256) even there.
    """
    d = os.path.abspath(d)
    data, pgpass, log = os.path.join(d, "data"), os.path.join(d, "pgpass"), os.path.join(d, "postgres.log")
    state = _read_state(d)
    pid = _postmaster_pid(data)
    if pid is not None:
        if not state.get("port"):
            raise PgError(f"a PostgreSQL (pid {pid}) runs on {data} but {d}/{_PG_STATE} is missing: stop it first")
        return _pg_info(d, state["port"], pid)
    binary = find_pg_bin(pg_bin or state.get("bin"))
    user = _server_user()
    if os.path.exists(d) and os.listdir(d) and not state:
        raise PgError(f"{d} is not empty and was not made by pg-up ({_PG_STATE} missing): choose another --pg-dir")
    if user is not None:
        blocked = _reachable_by(d, user[0], user[1])
        if blocked:
            raise PgError(f"PostgreSQL refuses to run as root, so it runs as user '{user[2]}', which cannot enter "
                          f"{blocked} on the way to {d}: choose a --pg-dir (or --run-dir) whose parents it can "
                          "enter, e.g. under /tmp, or chmod o+x that folder")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o711 if user is not None else 0o700)
    if not state:
        _write_state(d, {"port": None, "bin": binary, "user": user[2] if user else None})

    if not os.path.isfile(os.path.join(data, "PG_VERSION")):
        if os.path.exists(data):
            shutil.rmtree(data)  # a half-made cluster from an initdb that failed
        password = secrets.token_hex(24)
        fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:*:*:{PG_ROLE}:{password}\nlocalhost:*:*:{PG_ROLE}:{password}\n")
        pwfile = os.path.join(d, ".pwfile")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        try:
            os.makedirs(data, mode=0o700)
            if user is not None:
                os.chown(pwfile, user[0], user[1])
                os.chown(data, user[0], user[1])
            r = _as_server([os.path.join(binary, "initdb"), "-D", data, "-U", PG_ROLE, "--pwfile", pwfile,
                            "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-instructions"],
                           cwd=d, timeout=180, user=user)
        finally:
            os.unlink(pwfile)
        if r.returncode != 0:
            raise PgError(f"initdb failed (exit {r.returncode}) in {data}:\n{(r.stdout + r.stderr)[-2000:]}")
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("\n# harmonia infra/infra_tool.py pg-up: loopback TCP only, no unix socket\n"
                    "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    elif not os.path.isfile(pgpass):
        raise PgError(f"{pgpass} is missing: the password of the PostgreSQL in {data} is lost; "
                      f"delete {d} (pg-down --purge) to start afresh")

    if port is None:
        old = state.get("port")
        port = old if old and _port_free(old) else free_ports(1)[0]
    elif not _port_free(port):
        raise PgError(f"port {port} is taken by another process: choose another or leave it out for a free one")
    if not os.path.exists(log):
        open(log, "a").close()
    os.chmod(log, 0o600)
    if user is not None:
        os.chown(log, user[0], user[1])
    _write_state(d, {"port": port, "bin": binary, "user": user[2] if user else None})
    r = _as_server([os.path.join(binary, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", str(int(timeout)),
                    "-o", f"-p {port}", "start"], cwd=d, timeout=timeout + 30, user=user)
    pid = _postmaster_pid(data)
    if r.returncode != 0 or pid is None:
        raise PgError(f"PostgreSQL did not start on 127.0.0.1:{port} (pg_ctl exit {r.returncode}): "
                      f"{(r.stdout + r.stderr).strip()[-500:]}\n---- {log}:\n{_tail(log)}")
    env = {**os.environ, "PGPASSFILE": pgpass, "PGCONNECT_TIMEOUT": "10"}
    for k in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"):
        env.pop(k, None)
    r = subprocess.run([os.path.join(binary, "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_ROLE,
                        "-w", PG_DB], capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0 and "already exists" not in r.stderr:
        pg_down(d)
        raise PgError(f"createdb {PG_DB} failed (exit {r.returncode}): {r.stderr.strip()}")
    return _pg_info(d, port, pid)


def _pg_info(d: str, port: int, pid: int) -> dict:
    return {"uri": f"postgresql+psycopg://{PG_ROLE}@127.0.0.1:{port}/{PG_DB}", "passfile": os.path.join(d, "pgpass"),
            "port": port, "pid": pid}


def pg_down(d: str, purge: bool = False, grace: float = 30) -> str:
    """Stop the PostgreSQL of `d` (fast shutdown: open sessions are ended); with `purge`, delete `d`."""
    d = os.path.abspath(d)
    data = os.path.join(d, "data")
    state = _read_state(d)
    pid = _postmaster_pid(data)
    said = "no PostgreSQL running in " + d
    if pid is not None:
        binary = state.get("bin") or find_pg_bin()
        try:
            _as_server([os.path.join(binary, "pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", str(int(grace)), "stop"],
                       cwd=d, timeout=grace + 30, user=_server_user())
        except (OSError, subprocess.SubprocessError, PgError):
            pass
        proc = Proc(pid)
        if _wait_gone([proc], 5):
            proc.signal(signal.SIGKILL)
            _wait_gone([proc], 5)
        said = f"PostgreSQL (pid {pid}, port {state.get('port')}) stopped"
    if purge and os.path.isdir(d):
        if not state and os.listdir(d):
            raise PgError(f"{d} was not made by pg-up ({_PG_STATE} missing): not deleting it")
        shutil.rmtree(d)
        said += f"; {d} deleted"
    return said


def pg_status(d: str) -> tuple[bool, str]:
    d = os.path.abspath(d)
    pid = _postmaster_pid(os.path.join(d, "data"))
    if pid is None:
        return False, "stopped"
    return True, f"running 127.0.0.1:{_read_state(d).get('port')} pid {pid}"


# --------------------------------------------------------------------------- http
def wait_http(url: str, timeout: float, any_status: bool = False) -> bool:
    """Poll `url` until it answers 200 (or, with `any_status`, anything at all: a 401 from a
    token-protected dashboard still means it is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200:
                    return True
        except urllib.error.HTTPError:
            if any_status:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ray-start-loopback"]:  # every further argument is ray's
        return ray_start_loopback(argv[1:])
    ap = argparse.ArgumentParser(prog="infra_tool.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("mask-uri"); s.add_argument("uri")
    s = sub.add_parser("free-ports"); s.add_argument("n", type=int); s.add_argument("--start", type=int, default=0)
    s = sub.add_parser("free-range"); s.add_argument("size", type=int); s.add_argument("start", type=int)
    for name in ("find-ray", "kill-ray"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--dir", required=True)
        s.add_argument("--grace", type=float, default=10.0)
    s = sub.add_parser("wait-http"); s.add_argument("url"); s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--any-status", action="store_true")
    s = sub.add_parser("listeners"); s.add_argument("pid", type=int)
    s = sub.add_parser("alive-nodes"); s.add_argument("address")
    s = sub.add_parser("pg-bin"); s.add_argument("--pg-bin")
    s = sub.add_parser("pg-up"); s.add_argument("--dir", required=True); s.add_argument("--port", type=int)
    s.add_argument("--pg-bin")
    s = sub.add_parser("pg-down"); s.add_argument("--dir", required=True); s.add_argument("--purge", action="store_true")
    s = sub.add_parser("pg-status"); s.add_argument("--dir", required=True)
    a = ap.parse_args(argv)

    if a.cmd == "mask-uri":
        print(mask_uri(a.uri))
    elif a.cmd == "free-ports":
        print(" ".join(map(str, free_ports(a.n, a.start))))
    elif a.cmd == "free-range":
        print(free_range(a.size, a.start))
    elif a.cmd == "find-ray":
        for p in sorted(find_ray(a.port, os.path.abspath(a.dir)), key=lambda p: p.pid):
            print(p.pid, p.name)
    elif a.cmd == "kill-ray":
        n = kill_ray(a.port, os.path.abspath(a.dir), a.grace)
        print(f"stopped {n} process(es)")
    elif a.cmd == "wait-http":
        return 0 if wait_http(a.url, a.timeout, a.any_status) else 1
    elif a.cmd == "alive-nodes":
        print(alive_nodes(a.address))
    elif a.cmd == "listeners":
        print("\n".join(listeners(a.pid)))
    elif a.cmd.startswith("pg-"):
        try:
            if a.cmd == "pg-bin":
                print(find_pg_bin(a.pg_bin))
            elif a.cmd == "pg-up":
                info = pg_up(a.dir, a.port, a.pg_bin)
                print(f"PG_URI={info['uri']}\nPGPASSFILE={info['passfile']}\nPG_PID={info['pid']}")
            elif a.cmd == "pg-down":
                print(pg_down(a.dir, a.purge))
            else:
                running, said = pg_status(a.dir)
                print(said)
                return 0 if running else 3
        except PgError as err:
            print(f"infra_tool.py {a.cmd}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
