"""Connecting the driver to Ray: a local instance by default, or a cluster by `--address`.

Three forms of address: `auto` (the cluster this node belongs to, or `RAY_ADDRESS`), `HOST:PORT` (a
cluster's GCS, from a machine inside its network) and `ray://HOST:PORT` (the Ray Client, from anywhere
that reaches the head's client-server port). Under the Ray Client, Ray Tune runs its driver loop
(`TunerInternal`: searcher, scheduler, callbacks, experiment state) in an actor on the node of the
client server, the head; this process only prepares the data, uploads it once, and waits. Hence the
client helpers below: the search's `storage_path` must be the same place for this process and for the
head (`check_client_storage`), and the progress bar is fed by a counter on the cluster
(`relay_progress`), since Tune's callbacks run there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from harmonia.progress import Ticker

ADDRESS_FORMS = "'auto', 'HOST:PORT' or 'ray://HOST:PORT'"
RAY_CLIENT_INSTALL = "pip install 'ray[client]==2.60.0'"


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


def is_loopback(host: str | None) -> bool:
    """Whether `host` names this machine's loopback interface (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        if kind == "client":
            try:
                import grpc  # noqa: F401 - the Ray Client speaks gRPC
            except ImportError:
                raise ClusterError(f"--address {address}: the Ray Client needs grpcio, which this environment "
                                   f"lacks: {RAY_CLIENT_INSTALL}") from None
        if host is not None:
            check_reachable(host, port, timeout)
    if ray.is_initialized():
        return
    env = {"runtime_env": {"env_vars": {"PYTHONWARNINGS": "ignore"}}}
    if address is None:
        from harmonia.search.warm_workers import init_local

        init_local(num_cpus or os.cpu_count())
        return
    loopback = parse_address(address)[0] == "gcs" and is_loopback(parse_address(address)[1])
    for attempt in range(CLIENT_INIT_ATTEMPTS):
        try:
            with loopback_node() if loopback else nullcontext():  # a cluster on 127.0.0.1 stays there
                ray.init(address=address, configure_logging=False, log_to_driver=False, **env)
            return
        except ConnectionAbortedError as err:  # the head's proxy could not start this driver's client server
            if not address.startswith("ray://") or attempt == CLIENT_INIT_ATTEMPTS - 1:
                raise ClusterError(f"--address {address}: the Ray Client server on the head failed to start a "
                                   f"server for this driver {CLIENT_INIT_ATTEMPTS} times; see ray_client_server_*.err "
                                   f"in the head's session logs. Last error: {err}") from None
            ray.shutdown()  # drop the half-made client connection before the next attempt
            time.sleep(2.0 * (attempt + 1))


@contextmanager
def loopback_node() -> Iterator[None]:
    """While `ray.init` runs, loopback addresses stay loopback: a local Ray's servers listen on 127.0.0.1 only,
    and a driver reaches a cluster on 127.0.0.1 (infra/local-cluster.sh) there.

    Ray 2.60 binds its gRPC servers (GCS, raylet, object manager, the driver's and workers' core workers) and
    its agents to the node address, and `ray.init` replaces a loopback node or GCS address with the host's
    outward one, except where Ray clusters are off (`ray_constants.ENABLE_RAY_CLUSTER`, consulted then). The
    flag is restored after: `ray start` in a child process and other connections are not affected."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


CLIENT_INIT_ATTEMPTS = 3
"""The Ray Client's per-driver server on the head sometimes fails to start (seen once in CI); nothing has
started yet then, so connecting again is safe."""


def is_client() -> bool:
    """Whether this process drives Ray through the Ray Client (`ray://`, also by `RAY_ADDRESS`)."""
    import ray

    return ray.util.client.ray.is_connected()


# ------------------------------------------------------------------------------------------ Ray Client
def _client_server_node():
    """Scheduling on the node of the Ray Client server: where Tune puts its driver actor."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _read_marker(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def check_client_storage(storage_path: str, timeout: float = 60.0) -> None:
    """Under the Ray Client, refuse a `storage_path` that this process and the head do not share.

    This process writes the search state (`harmonia_search.json`) and checks `--resume` there, while
    Tune's driver actor on the head writes the experiment state and the trials their checkpoints. A
    URI (`s3://`, `gs://`, ...) names the same store for both; a plain folder is checked: a marker
    written here must be read back by a task on the head. Nothing to do without the Ray Client.
    """
    if not is_client():
        return
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", storage_path) and not storage_path.startswith("file://"):
        return
    import ray

    folder = Path(storage_path.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = folder / f".harmonia-client-check-{token}"
    marker.write_text(token)
    try:
        read = ray.remote(num_cpus=0)(_read_marker).options(scheduling_strategy=_client_server_node())
        seen = ray.get(read.remote(str(marker)), timeout=timeout)
    finally:
        marker.unlink(missing_ok=True)
    if seen != token:
        raise ClusterError(
            f"search.storage_path {storage_path}: the Ray cluster's head does not see the folder this driver "
            f"writes (a marker written here at {marker} was {'missing' if seen is None else 'different'} "
            "there). Through ray:// Tune's driver runs on the head: use a store both reach (s3://BUCKET/PATH) "
            "or a folder mounted at the same path on every node and here")


def array_bytes(obj) -> int:
    """Bytes of the numpy arrays in `obj` (dataclasses, dicts, lists): what a `ray.put` of it uploads."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(array_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(array_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)) and obj and not isinstance(obj[0], str):
        return sum(array_bytes(v) for v in obj)
    return 0


def prepare_client(storage_path: str, data) -> None:
    """Checks and a note for a search driven through the Ray Client; nothing without it."""
    if not is_client():
        return
    check_client_storage(storage_path)
    from harmonia.progress import console

    mb = array_bytes(data) / 2**20
    console.print(f"Ray Client: Tune's driver loop runs on the cluster's head; the features ({mb:.0f} MB) "
                  "go up through the client once" + (" (slow over a WAN link: run the driver on the head "
                                                      "with --address auto instead)" if mb > 512 else ""))


class RemoteAdvance:
    """A picklable `advance(n=1)` (and `.note(text)`, like harmonia.progress.Ticker) for callbacks that run on
    the cluster: it bumps (or sets the note of) the named counter actor that `relay_progress` polls. Display
    only: a counter that is gone (a restored search) is ignored, never an error."""

    def __init__(self, name: str, namespace: str):
        self.name, self.namespace = name, namespace
        self._handle = None

    def __getstate__(self):
        return {"name": self.name, "namespace": self.namespace, "_handle": None}

    def __call__(self, n: int = 1) -> None:
        self._send("add", n)

    def note(self, text: str) -> None:
        self._send("set_note", text)

    def _send(self, method: str, arg) -> None:
        import ray

        try:
            if self._handle is None:
                self._handle = ray.get_actor(self.name, namespace=self.namespace)
            getattr(self._handle, method).remote(arg)
        except Exception:  # noqa: BLE001 - a progress display never fails a search
            self._handle = None


class _Counter:
    def __init__(self):
        self.n, self.note = 0, ""

    def add(self, n: int = 1) -> None:
        self.n += n

    def set_note(self, text: str) -> None:
        self.note = text

    def count(self) -> tuple[int, str]:
        return self.n, self.note


@contextmanager
def relay_progress(advance: Ticker, poll: float = 1.0) -> Iterator[Ticker | RemoteAdvance]:
    """`advance` itself, or under the Ray Client a `RemoteAdvance` for Tune's callbacks (they run in
    Tune's driver actor on the cluster) with a thread here that moves the local bar, and shows its note,
    as the counter on the cluster changes."""
    if not is_client():
        yield advance
        return
    import ray

    name = f"harmonia-progress-{uuid.uuid4().hex}"
    namespace = ray.get_runtime_context().namespace
    counter = ray.remote(num_cpus=0)(_Counter).options(
        name=name, namespace=namespace, scheduling_strategy=_client_server_node()).remote()
    shown, noted = 0, ""
    stop = threading.Event()

    def pump() -> None:
        nonlocal shown, noted
        while True:
            last = stop.wait(poll)
            try:
                n, note = ray.get(counter.count.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - display only
                n, note = shown, noted
            if n > shown:
                advance(n - shown)
                shown = n
            if note != noted:
                advance.note(note)
                noted = note
            if last:
                return

    thread = threading.Thread(target=pump, name="harmonia-progress", daemon=True)
    thread.start()
    try:
        yield RemoteAdvance(name, namespace)
    finally:
        stop.set()
        thread.join(timeout=60)
        try:
            ray.kill(counter)
        except Exception:  # noqa: BLE001 - the connection may be gone already
            pass
