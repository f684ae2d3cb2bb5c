"""The files a trained member is logged as: weights, config.json, and prediction tables per split.

Shared by plain trials (`trial.member_files`) and cross-validated ones (`cross_validation.cv_member_files`),
so the layout the ensemble stage reads (DESIGN.md, "Trial") is written in one place.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from harmonia import tracking
from harmonia.featureset import FeatureSet


def member_config(params: dict, data: FeatureSet, best_epoch: int) -> dict:
    """config.json of a trained model: everything needed to rebuild and run it on new audio."""
    return {
        "format": "harmonia.member/1",
        "params": params,
        "classes": data.classes,
        "feature": data.feature,
        "normalization": data.normalizer.to_dict(),
        "frames": data.frames,
        "best_epoch": best_epoch,
    }


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state_dict as safetensors (loads without unpickling)."""
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()})


def parquet_writer(df) -> Callable:
    return lambda path: df.to_parquet(path, index=False)


def frames_npz(ids: list[str], frames: np.ndarray, hop: float) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, clip_id=np.asarray(ids, dtype=str), probs=frames.astype(np.float16), hop_seconds=hop)
    return buf.getvalue()


def prediction_files(prefix: str, split: str, ids: list[str], probs: np.ndarray, frames: np.ndarray,
                     classes: list[str], hop: float) -> dict:
    """`{prefix}predictions/{split}.parquet` (clip_id + one column per class) and `{split}_frames.npz`."""
    return {f"{prefix}predictions/{split}.parquet": parquet_writer(tracking.predictions_frame(ids, probs, classes)),
            f"{prefix}predictions/{split}_frames.npz": frames_npz(ids, frames, hop)}
