"""Files an ensemble run logs besides ensemble.json: weight and curve plots, the per-class table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harmonia.ensembles.library import Library
from harmonia.ensembles.registry import FittedEnsemble, member_weights


def weights_png(names: list[str], weights: np.ndarray):
    def write(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        idx = np.flatnonzero(weights > 0)
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(idx) + 1.2))
        ax.barh([names[i] for i in idx], weights[idx])
        ax.set_xlabel("weight")
        ax.set_title("ensemble members")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return write


def curve_png(curve: list[float], metric: str, on: str):
    def write(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(range(len(curve)), curve, marker=".")
        ax.set_xlabel("greedy steps")
        ax.set_ylabel(f"{on} {metric}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return write


def per_class_table(lib: Library, fitted: FittedEnsemble) -> pd.DataFrame:
    """Per-class AP of each member and of the ensemble on valid (in-sample) and test (for the run's artifacts)."""
    from harmonia.metrics import average_precision_per_class

    rows = []
    weights = member_weights(fitted)
    splits = [("valid (in-sample)", lib.valid, lib.y_valid)] + ([("test", lib.test, lib.y_test)] if lib.test is not None else [])
    for split, preds, y in splits:
        models = [(lib.run_names[i], preds[i]) for i in np.flatnonzero(weights > 0)] + [("ensemble", fitted.predict(preds))]
        for name, p in models:
            ap = average_precision_per_class(y, p)
            rows += [{"split": split, "model": name, "class": c, "AP": float(v)} for c, v in zip(lib.classes, ap)]
    return pd.DataFrame(rows)
