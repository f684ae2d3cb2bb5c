"""Which errors of a trial are its own (deterministic: retrying repeats them) and which are infrastructure.

A trial's own error (a non-finite loss, a config error inside the trial, a shape mismatch) is raised as
`TrialFailed`, which the search never retries (search/failures.py); infrastructure failures (a lost node,
a killed worker, an unreachable tracking server, a full disk, out of memory) keep Tune's retries.
"""

from __future__ import annotations


class TrialFailed(Exception):
    """The trial's own, deterministic error; `reason` is `ErrorType: message` of the original error."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


INFRASTRUCTURE_MARKERS = ("CUDA error", "NCCL", "CUBLAS_STATUS_ALLOC_FAILED")
"""Messages of RuntimeErrors that come from the device rather than from the trial's config or code."""


def _infrastructure_types() -> tuple[type[BaseException], ...]:
    import torch

    from harmonia.tracking import TrackingError

    types: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError, MemoryError, TrackingError,
                                        torch.OutOfMemoryError]
    try:
        from mlflow.exceptions import MlflowException

        types.append(MlflowException)
    except ImportError:  # pragma: no cover - mlflow is a dependency
        pass
    return tuple(types)


def is_deterministic(err: BaseException) -> bool:
    """Whether `err` is the trial's own error, which a retry would only repeat."""
    if isinstance(err, TrialFailed):
        return True
    if isinstance(err, _infrastructure_types()):
        return False
    if isinstance(err, RuntimeError) and any(m in str(err) for m in INFRASTRUCTURE_MARKERS):
        return False
    return isinstance(err, Exception)


def failure_reason(err: BaseException) -> str:
    """`ErrorType: message`, at most 5000 characters (an MLflow tag's limit)."""
    if isinstance(err, TrialFailed):
        return err.reason[:5000]
    return f"{type(err).__name__}: {err}"[:5000]
