"""Tune callbacks on the driver: close each trial's MLflow run, show progress."""

from __future__ import annotations

from ray import tune

from harmonia import tracking


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
    """A rich progress bar of finished trials and the best score so far."""

    def __init__(self, total: int, metric: str, advance):
        self.total, self.metric, self.advance = total, metric, advance
        self.done: set[str] = set()

    def __getstate__(self):
        """Tune pickles its callbacks with the experiment state, and under the Ray Client sends them to
        its driver actor on the cluster: a live local bar stays behind, a `RemoteAdvance` (the Ray Client
        relay, see search/cluster.py) goes along."""
        from harmonia.search.cluster import RemoteAdvance

        keep = isinstance(self.advance, RemoteAdvance)
        return {**self.__dict__, "advance": self.advance if keep else _no_progress}

    def _finish(self, trial):
        if trial.trial_id not in self.done:
            self.done.add(trial.trial_id)
            self.advance()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial)


def _no_progress(n: int = 1) -> None:
    return None
