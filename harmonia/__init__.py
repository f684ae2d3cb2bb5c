"""harmonia: search, track and ensemble audio tagging and SED models."""
__version__ = "0.1.0"

import os as _os

# MLflow's per-download tqdm bars drown the rich progress of each stage.
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Tune warns on every frequent state save; harmonia saves it after each checkpoint on purpose.
_os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
