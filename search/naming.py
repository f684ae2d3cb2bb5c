"""Trial numbers in the MLflow run names: the driver numbers trials in the order Tune creates them."""

from __future__ import annotations

from ray import tune

from harmonia import tracking
from harmonia.trainables.naming import trial_run_name


class TrialRunNamer(tune.Callback):
    """Renames each trial's MLflow run to `ARCH-POOLING AUGMENTATIONS #N` once its run id is known."""

    def __init__(self, uri: str, experiment_id: str):
        self.uri, self.experiment_id = uri, experiment_id
        self.numbers: dict[str, int] = {}
        self.named: set[str] = set()

    def on_trial_add(self, iteration, trials, trial, **info) -> None:
        self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)

    def _name(self, trial, run_id: str | None) -> None:
        if trial.trial_id in self.named or not run_id:
            return
        n = self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)
        c = tracking.client(self.uri)
        tracking.retry(lambda: c.update_run(run_id, name=trial_run_name(trial.config or {}, n)))
        self.named.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._name(trial, result.get("mlflow_run_id"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        c = tracking.client(self.uri)
        flt = f"tags.`{tracking.TRIAL_ID_TAG}` = '{trial.trial_id}'"
        runs = tracking.retry(lambda: c.search_runs([self.experiment_id], filter_string=flt, max_results=1))
        self._name(trial, runs[0].info.run_id if runs else None)
