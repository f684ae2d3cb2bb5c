"""GPU path: fractional GPUs per trial and mixed precision. The resource request is checked everywhere;
training on CUDA runs only where a GPU exists (skipped here with the reason)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_fractional_gpu_reaches_the_trial_resources(tmp_path):
    from harmonia.featureset import prepare
    from harmonia.search.tuner import build_tuner
    from harmonia.trainables.trial import TrialContext

    cfg = tiny_config(tmp_path, name="gpu")
    cfg.search.resources.gpu = 0.25
    _, fs = prepare(cfg, progress=False)
    ctx = TrialContext(cfg.tracking.uri, "0", None, 1, 1, "mAP", 0, 1)
    tuner = build_tuner(cfg, fs, ctx, [], resume=False)
    pgf = tuner._local_tuner.converted_trainable._resources  # set by tune.with_resources
    assert pgf.required_resources.get("GPU") == 0.25 and pgf.required_resources.get("CPU") == 1


@needs_cuda
def test_trainer_uses_cuda_with_mixed_precision(tmp_path):
    from harmonia.featureset import prepare
    from harmonia.trainables.training import Trainer

    cfg = tiny_config(tmp_path, name="cuda")
    _, fs = prepare(cfg, progress=False)
    t = Trainer({"arch": "crnn", "crnn.channels": 8, "crnn.gru_size": 16}, fs, max_epochs=1, patience=1)
    assert t.device.type == "cuda" and t.amp
    r = t.run_epoch()
    assert 0.0 <= r.metrics["valid_mAP"] <= 1.0
