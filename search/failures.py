"""Retries for infrastructure failures only: a trial's own error (`TrialFailed`) fails it once.

Ray Tune 2.60 retries every trial error up to `FailureConfig.max_failures` and offers no per-error
choice: `Trial.handle_error` counts the failure and `Trial.should_recover` compares the count with
`max_failures`. `FinalTrialErrors.setup` wraps those two methods once in the process that runs Tune's
loop (this driver, or Tune's driver actor on the head under the Ray Client) so that an error whose cause
is `TrialFailed` is final, prints one line per failed trial instead of Tune's traceback, and keeps the
reasons for the search's summary.
"""

from __future__ import annotations

import logging

from ray import tune
from rich.markup import escape

from harmonia.progress import console
from harmonia.trainables.failures import TrialFailed

TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
_FINAL = "harmonia_final_error"  # on Trial.temporary_state (not saved with the experiment state)


def final_cause(exc: BaseException | None) -> TrialFailed | None:
    """The `TrialFailed` behind a trial error as Tune sees it (a RayTaskError wraps the trial's)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, TrialFailed):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def install_final_trial_errors() -> None:
    """Make `TrialFailed` errors final for every Trial of this process (idempotent)."""
    from ray.tune.experiment.trial import Trial

    if getattr(Trial, "_harmonia_final_errors", False):
        return
    handle_error, should_recover = Trial.handle_error, Trial.should_recover

    def handle_error_final(self, exc=None):
        setattr(self.temporary_state, _FINAL, final_cause(exc))
        return handle_error(self, exc)

    def should_recover_unless_final(self):
        if getattr(self.temporary_state, _FINAL, None) is not None:
            return False
        return should_recover(self)

    Trial.handle_error, Trial.should_recover = handle_error_final, should_recover_unless_final
    Trial._harmonia_final_errors = True


class _DropFinalTracebacks(logging.Filter):
    """Drops Tune's 'Trial task failed' traceback for a trial's own error: one line is printed instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return final_cause(exc) is None


class FinalTrialErrors(tune.Callback):
    """Installs the no-retry rule where Tune's loop runs and prints one line per trial that failed."""

    def __init__(self):
        self.reasons: dict[str, str] = {}

    def setup(self, **info) -> None:
        install_final_trial_errors()
        log = logging.getLogger(TUNE_CONTROLLER_LOGGER)
        if not any(isinstance(f, _DropFinalTracebacks) for f in log.filters):
            log.addFilter(_DropFinalTracebacks())

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        cause = getattr(trial.temporary_state, _FINAL, None)
        reason = cause.reason if cause is not None else _last_error_line(trial)
        self.reasons[trial.trial_id] = reason
        console.print(f"[red]trial {trial.trial_id} failed:[/] {escape(reason)}", highlight=False)


class SearchFailed(RuntimeError):
    """Every trial of a search failed; the message sums up their reasons."""


def error_reason(error: BaseException | None) -> str:
    """The one-line reason of a trial error from Tune's results (`ResultGrid` entries' `.error`)."""
    cause = final_cause(error)
    if cause is not None:
        return cause.reason
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def failure_summary(name: str, reasons: list[str]) -> str:
    """'all N trials of NAME failed:' then one line per distinct reason with its count."""
    counts: dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    lines = [f"search {name}: all {len(reasons)} trials failed; the search run is marked FAILED. Reasons:"]
    lines += [f"  {n} × {r[:300]}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def _last_error_line(trial) -> str:
    try:
        with open(trial.error_file) as f:
            lines = f.read().strip().splitlines()
        return lines[-1] if lines else "unknown error"
    except (OSError, TypeError):
        return "unknown error"
