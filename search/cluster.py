"""Connecting the driver to Ray: a local instance by default, or a cluster by `--address`."""

from __future__ import annotations

import os
import re
import socket

ADDRESS_FORMS = "'auto', 'HOST:PORT' or 'ray://HOST:PORT'"


class ClusterError(RuntimeError):
    """The Ray address is malformed or unreachable; nothing was started."""


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """('auto'|'gcs'|'client', host, port) for the three accepted forms; anything else is an error."""
    if address == "auto":
        return "auto", None, None
    m = re.fullmatch(r"(ray://)?([A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", address)
    if not m:
        raise ClusterError(f"--address {address!r}: expected {ADDRESS_FORMS}")
    port = int(m.group(3))
    if not 0 < port < 65536:
        raise ClusterError(f"--address {address!r}: port {port} out of range")
    return ("client" if m.group(1) else "gcs"), m.group(2).strip("[]"), port


def check_reachable(host: str, port: int, timeout: float = 5.0) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise ClusterError(f"Ray at {host}:{port} is not reachable within {timeout:.0f} s: {err}") from None


def connect(address: str | None, num_cpus: int | None = None, timeout: float = 5.0) -> None:
    """`ray.init` once per driver; an unreachable address fails within `timeout`, before any trial."""
    import ray

    if address is not None:
        kind, host, port = parse_address(address)
        if host is not None:
            check_reachable(host, port, timeout)
    if ray.is_initialized():
        return
    env = {"runtime_env": {"env_vars": {"PYTHONWARNINGS": "ignore"}}}
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 configure_logging=False, log_to_driver=False, **env)
        return
    ray.init(address=address, configure_logging=False, log_to_driver=False, **env)
