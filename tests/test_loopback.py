"""The local Ray that `harmonia search` starts listens only on loopback (issue 12): every TCP socket in
LISTEN state held by this driver and its Ray processes (GCS, raylet, object manager, agents, the trial
workers) is on 127.0.0.1 (or its IPv4-mapped form, as Ray's gRPC servers bind it)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from tests.conftest import load_script

INFRA_TOOL = Path(__file__).resolve().parents[1] / "infra" / "infra_tool.py"


def infra_tool():
    """infra/infra_tool.py (a script, not a package module): its /proc socket listing."""
    return load_script(INFRA_TOOL)


def is_loopback(addr: str) -> bool:
    """Whether `ip:port` (as infra_tool.listeners writes it) is a loopback address, IPv4-mapped included."""
    ip = ipaddress.ip_address(addr.rsplit(":", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def exposed(by_process: dict[str, list[str]]) -> dict[str, list[str]]:
    """The listeners of `by_process` that are not on loopback, by process."""
    out = {p: [a for a in addrs if not is_loopback(a)] for p, addrs in by_process.items()}
    return {p: a for p, a in out.items() if a}


def test_is_loopback():
    assert is_loopback("127.0.0.1:6379") and is_loopback("::ffff:127.0.0.1:41") and is_loopback("::1:80")
    assert not is_loopback(":::6379") and not is_loopback("0.0.0.0:80") and not is_loopback("192.0.2.2:80")
    assert not is_loopback("::ffff:192.0.2.2:80")
    assert exposed({"1 raylet": ["::ffff:127.0.0.1:5", ":::6"], "2 gcs_server": ["127.0.0.1:7"]}) == {"1 raylet": [":::6"]}


def test_local_search_listens_only_on_loopback(ray_local):
    """The Ray `harmonia search` starts (`connect(None)`, the shared session fixture), with an actor
    running on it as a trial does: the processes a local search listens with."""
    import ray

    trial_like = ray.remote(num_cpus=1)(_Pid).remote()
    assert ray.get(trial_like.pid.remote(), timeout=120) != os.getpid()
    by_process = infra_tool().listeners_by_process([os.getpid()])
    names = " ".join(by_process)
    # what Ray 2.60 starts locally: the GCS, the raylet (node manager and object manager), the runtime-env
    # agent and the core-worker servers of this driver and of the workers that ran the trials
    assert "gcs_server" in names and "raylet" in names and "RuntimeEnv" in names, by_process
    assert sum(len(v) for v in by_process.values()) >= 5, by_process
    assert exposed(by_process) == {}, f"listening beyond loopback: {by_process}"
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    ray.kill(trial_like)


class _Pid:
    def pid(self) -> int:
        return os.getpid()
