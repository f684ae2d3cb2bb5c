"""MLflow pyfunc over an exported bundle, logged as models-from-code (no pickled Python objects)."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HarmoniaEnsembleModel(PythonModel):
    """Input: a DataFrame with a `path` column of audio files; output: the bundle's scores and tags."""

    def load_context(self, context) -> None:
        from harmonia.ensembles.predictor import EnsemblePredictor

        self.predictor = EnsemblePredictor.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows `filename`, one float score per class, `event_labels`, for the files in `model_input.path`."""
        if isinstance(model_input, pd.DataFrame):
            col = "path" if "path" in model_input.columns else model_input.columns[0]
            paths = [str(p) for p in model_input[col]]
        else:
            paths = [str(p) for p in model_input]
        return self.predictor.predict_files(paths)


mlflow.models.set_model(HarmoniaEnsembleModel())
