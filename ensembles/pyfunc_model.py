"""MLflow pyfunc over an exported bundle, logged as models-from-code (no pickled Python objects)."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HarmoniaEnsembleModel(PythonModel):
    """Input: a DataFrame with a `path` column (audio files on this machine) or an `audio` column (the bytes
    of WAV/FLAC files; base64 text over HTTP), see `harmonia.ensembles.serving`; output: scores and tags."""

    def load_context(self, context) -> None:
        from harmonia.ensembles.predictor import EnsemblePredictor

        self.predictor = EnsemblePredictor.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows `filename` (the path, or `audio[i]`), one float score per class, `event_labels`, one per input
        row; a bad row is an MlflowException (HTTP 400 when served) naming each bad row and what was expected."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from harmonia.ensembles.serving import ServingInputError, predict_input

        try:
            return predict_input(self.predictor, model_input)
        except ServingInputError as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(HarmoniaEnsembleModel())
