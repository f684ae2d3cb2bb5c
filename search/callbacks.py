"""Tune callbacks on the driver: close each trial's MLflow run, show progress."""

from __future__ import annotations

from ray import tune

from harmonia import tracking
from harmonia.metrics import get_metric
from harmonia.progress import Ticker


class MlflowRunCloser(tune.Callback):
    """Marks a trial's MLflow runs FINISHED (stopped by ASHA) or FAILED (errored) from the driver.

    A trial that ASHA stops never runs code after its last report, so its run would stay RUNNING.
    """

    def __init__(self, uri: str, experiment_id: str):
        self.uri, self.experiment_id = uri, experiment_id

    def _close(self, trial, status: str, reason: str | None = None) -> None:
        c = tracking.client(self.uri)
        flt = f"tags.`{tracking.TRIAL_ID_TAG}` = '{trial.trial_id}' and attributes.status = 'RUNNING'"
        runs = tracking.retry(lambda: c.search_runs([self.experiment_id], filter_string=flt))
        for run in runs:
            if reason:
                tracking.retry(lambda: c.set_tag(run.info.run_id, "harmonia.error", reason[:5000]))
            tracking.retry(lambda: c.set_terminated(run.info.run_id, status))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = None
        if trial.error_file:
            try:
                with open(trial.error_file) as f:
                    reason = f.read().strip().splitlines()[-1]
            except OSError:
                pass
        self._close(trial, "FAILED", reason)


class ProgressCallback(tune.Callback):
    """The search's progress bar: a tick per finished trial and, refreshed on every result, a line with the
    running trials, the epochs done, and the best score so far (the bar shows the elapsed time)."""

    def __init__(self, total: int, metric: str, advance):
        self.total, self.metric, self.advance = total, metric, advance
        self.greater = get_metric(metric).greater_is_better
        self.done: set[str] = set()
        self.running: set[str] = set()
        self.epochs: dict[str, int] = {}
        self.best: tuple[float, str] | None = None

    def __getstate__(self):
        """Tune pickles its callbacks with the experiment state, and under the Ray Client sends them to
        its driver actor on the cluster: a live local bar stays behind, a `RemoteAdvance` (the Ray Client
        relay, see search/cluster.py) goes along."""
        from harmonia.search.cluster import RemoteAdvance

        keep = isinstance(self.advance, RemoteAdvance)
        return {**self.__dict__, "advance": self.advance if keep else Ticker()}

    def line(self) -> str:
        """What the bar shows beside the finished count, e.g. `2 running · 7 epochs · best valid mAP 0.4120 (#00003)`."""
        best = (f"best valid {self.metric} {self.best[0]:.4f} (#{self.best[1]})" if self.best
                else f"no valid {self.metric} yet")
        return f"{len(self.running)} running · {sum(self.epochs.values())} epochs · {best}"

    def _show(self) -> None:
        self.advance.note(self.line())

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.running.add(trial.trial_id)
        self.epochs[trial.trial_id] = int(result.get("training_iteration", self.epochs.get(trial.trial_id, 0)))
        score = result.get("best_valid_score", result.get(f"valid_{self.metric}"))
        if score is not None and score == score and (
                self.best is None or (score > self.best[0] if self.greater else score < self.best[0])):
            self.best = (float(score), trial.trial_id.rsplit("_", 1)[-1])
        self._show()

    def _finish(self, trial):
        self.running.discard(trial.trial_id)
        if trial.trial_id not in self.done:
            self.done.add(trial.trial_id)
            self.advance()
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial)
