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

Nothing here kills by process name: only processes whose command line names this
cluster's temp dir or its GCS port are touched, so another Ray on the same host
(e.g. one on the default port 6379) is left alone.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
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
    # processes that carry only the GCS address (e.g. the ray client server)
    if re.search(rf"--gcs[-_]address[= ]\S*:{port}(\s|$)", line):
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
    procs = all_procs()
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    pids, stack = {pid}, [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in pids:
                pids.add(c)
                stack.append(c)
    inodes = set().union(*(_socket_inodes(p) for p in pids))
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
def alive_nodes(address: str) -> int:
    """Number of ALIVE nodes registered in the GCS at `address` (needs ray importable,
    and the same RAY_AUTH_MODE / token env as the cluster)."""
    from ray._raylet import GcsClient  # internal, but what `ray status` itself uses
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    infos = GcsClient(address=address).get_all_node_info(timeout=5).values()
    return sum(1 for n in infos if n.state == GcsNodeInfo.GcsNodeState.ALIVE)


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
