"""MLflow helpers: experiments, retries with bounded backoff, prediction artifacts, URI masking."""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")

KIND_TAG = "harmonia.kind"
TRIAL_ID_TAG = "harmonia.trial_id"
NODE_TAG = "harmonia.node_id"
PARENT_TAG = "mlflow.parentRunId"


class TrackingError(RuntimeError):
    """The tracking server or store cannot be used; says which URI (password masked) and why."""


def mask_uri(uri: str) -> str:
    """`scheme://user:secret@host` → `scheme://user:***@host`, for anything printed or logged."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def retry(fn: Callable[[], T], attempts: int = 6, base_delay: float = 0.5, max_delay: float = 8.0) -> T:
    """Call `fn`, retrying transient tracking failures (locked SQLite, server restarting) with backoff."""
    delay = base_delay
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - mlflow raises many types for transient failures
            if i == attempts - 1 or not _transient(err):
                raise
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


def _transient(err: Exception) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return any(s in text for s in ("database is locked", "connection", "timed out", "temporarily",
                                   "max retries", "503", "502", "504", "resetbypeer", "refused"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any trial starts, when an HTTP tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"tracking server {mask_uri(uri)} answered {resp.status} on /health")
    except OSError as err:
        raise TrackingError(f"tracking server {mask_uri(uri)} is not reachable: {err}") from None


def ensure_experiment(uri: str, name: str, artifacts: str | None = None) -> str:
    """Create (driver side) or find the experiment; local stores put artifacts under `artifacts/`."""
    c = client(uri)
    exp = retry(lambda: c.get_experiment_by_name(name))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            retry(lambda: c.restore_experiment(exp.experiment_id))
        return exp.experiment_id
    location = None
    if artifacts and not uri.startswith(("http://", "https://", "databricks")):
        location = (Path(artifacts).resolve() / name).as_uri()
    return retry(lambda: c.create_experiment(name, artifact_location=location))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → dotted keys, for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(params).items())]
    for i in range(0, len(items), 100):
        retry(lambda chunk=items[i:i + 100]: c.log_batch(run_id, params=chunk))


def log_metrics(c, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    retry(lambda: c.log_batch(run_id, metrics=items))


def predictions_frame(clip_ids: list[str], probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The contract of DESIGN.md: `clip_id` (string) and one float32 column per class label."""
    df = pd.DataFrame(probs.astype(np.float32), columns=list(classes))
    df.insert(0, "clip_id", pd.Series(clip_ids, dtype="string"))
    return df


class PredictionsError(ValueError):
    """A logged predictions table lacks clips or class columns that the reader needs."""


def download(uri: str, run_id: str, path: str, dst: str) -> Path:
    """One artifact of a run, downloaded into `dst` (retried on transient errors)."""
    import mlflow.artifacts

    return Path(retry(lambda: mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=dst, tracking_uri=uri)))


def read_table(uri: str, run_id: str, path: str) -> pd.DataFrame:
    """A parquet artifact of a run (labels, predictions) as a DataFrame."""
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(download(uri, run_id, path, tmp))


def predictions_array(df: pd.DataFrame, ids: list[str], classes: list[str], what: str) -> np.ndarray:
    """The inverse of `predictions_frame`: rows `ids`, columns `classes`, float32; PredictionsError names `what`."""
    missing = [c for c in classes if c not in df.columns]
    if missing:
        raise PredictionsError(f"{what}: missing class columns {missing}")
    df = df.set_index(df["clip_id"].astype(str))
    absent = set(ids) - set(df.index)
    if absent:
        raise PredictionsError(f"{what}: {len(absent)} clips missing, e.g. {sorted(absent)[:3]}")
    return df.loc[ids, classes].to_numpy(np.float32)


def log_files(c, run_id: str, files: dict[str, bytes | Callable[[Path], None]], artifact_dir: str | None = None) -> None:
    """Write each file into a temp dir (bytes, or a writer callable) and log the dir as artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                content(path)
        retry(lambda: c.log_artifacts(run_id, tmp, artifact_dir))


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable).encode()


def _jsonable(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
