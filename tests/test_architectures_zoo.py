"""The architecture zoo beyond the CRNN: gated_crnn, elu_crnn, cnn8, multi_input_cnn (and nn_filter)."""

from dataclasses import fields

import numpy as np
import optuna
import pytest
import torch
from safetensors.torch import load, save

from harmonia.spaces import define_by_run
from harmonia.spaces.architectures import ARCHITECTURE_SPACES
from harmonia.spaces.core import RecordingTrial, Space
from harmonia.trainables.architectures import ARCHITECTURES, build_model
from harmonia.trainables.architectures.multi_input_cnn import nn_filter

NAMES = ["gated_crnn", "elu_crnn", "cnn8", "multi_input_cnn"]

# Small widths so a forward/backward pass on [4, 64, 32] takes milliseconds.
SMALL = {
    "gated_crnn": {"gated_crnn.channels": 16, "gated_crnn.gru_size": 16, "gated_crnn.dropout": 0.0},
    "elu_crnn": {"elu_crnn.width": 0.5, "elu_crnn.gru_size": 16, "elu_crnn.dropout": 0.0},
    "cnn8": {"cnn8.channels": 8},
    "multi_input_cnn": {"multi_input_cnn.width": 0.25, "multi_input_cnn.dropout": 0.0},
}


def _check_outputs(m, x, n_classes):
    clip, frames = m(x)
    b, t, _ = x.shape
    assert clip.shape == (b, n_classes)
    assert frames.shape == (b, t // m.time_pool, n_classes)
    assert torch.all((clip > 0) & (clip < 1)) and torch.all((frames > 0) & (frames < 1))
    return clip, frames


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, and one intra-op thread: on a shared 2-core machine OpenMP threads make the small
    GRU matmuls of these tests 10-20x slower, not faster."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("n_mels", [32, 40, 64])
@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_and_give_probabilities(name, n_mels):
    assert name in ARCHITECTURES and name in ARCHITECTURE_SPACES
    m = build_model(name, {}, n_mels=n_mels, n_classes=3)
    assert isinstance(m.time_pool, int) and m.time_pool >= 1
    _check_outputs(m, torch.randn(2, 64, n_mels), 3)


@pytest.mark.parametrize("name", NAMES)
def test_small_config_shapes(name):
    m = build_model(name, {"arch": name, **SMALL[name]}, n_mels=32, n_classes=5)
    _check_outputs(m, torch.randn(4, 64, 32), 5)
    _check_outputs(m, torch.randn(4, 80, 32), 5)  # T not a multiple of time_pool: T' = T // time_pool


def test_gated_crnn_task_pooling_sets_time_resolution():
    tag = build_model("gated_crnn", {**SMALL["gated_crnn"], "gated_crnn.task_pooling": "tagging"}, 32, 4)
    sed = build_model("gated_crnn", {**SMALL["gated_crnn"], "gated_crnn.task_pooling": "sed"}, 32, 4)
    assert tag.time_pool == 8 and sed.time_pool == 1
    x = torch.randn(4, 64, 32)
    assert _check_outputs(tag, x, 4)[1].shape == (4, 8, 4)
    assert _check_outputs(sed, x, 4)[1].shape == (4, 64, 4)  # 'sed' keeps T' = T
    with pytest.raises(ValueError, match="task_pooling"):
        build_model("gated_crnn", {"gated_crnn.task_pooling": "both"}, 32, 4)


def test_time_pools_follow_the_papers():
    assert build_model("elu_crnn", {}, 64, 3).time_pool == 1
    assert build_model("cnn8", {}, 64, 3).time_pool == 16
    for blocks, pool in [(2, 2), (3, 4), (4, 8)]:
        for variant in ["single", "double"]:
            m = build_model("multi_input_cnn", {**SMALL["multi_input_cnn"], "multi_input_cnn.blocks": blocks,
                                                "multi_input_cnn.variant": variant}, 32, 3)
            assert m.time_pool == pool
            _check_outputs(m, torch.randn(2, 64, 32), 3)


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_tiny_batch(name):
    m = build_model(name, {"arch": name, **SMALL[name]}, n_mels=32, n_classes=4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, 32, generator=g)
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.float32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(80):  # each falls 5x within ~30 steps (seeded); 80 leaves a margin and stays < 10 s
        loss = torch.nn.functional.binary_cross_entropy(m(x)[0], y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5, (first, loss.item())


@pytest.mark.parametrize("name", NAMES)
def test_round_trips_through_safetensors(name):
    params = {"arch": name, **SMALL[name]}
    m = build_model(name, params, n_mels=32, n_classes=3)
    m(torch.randn(4, 64, 32))  # one train-mode pass so BN running stats differ from their init
    m.eval()
    blob = save({k: v.contiguous() for k, v in m.state_dict().items()})
    m2 = build_model(name, params, n_mels=32, n_classes=3).eval()
    m2.load_state_dict(load(blob))
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        (c1, f1), (c2, f2) = m(x), m2(x)
    assert torch.equal(c1, c2) and torch.equal(f1, f2)


def _nn_filter_reference(x: np.ndarray, k: int, metric: str) -> np.ndarray:
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if metric == "cosine":
                sims = [x[b, t] @ x[b, u] / (np.linalg.norm(x[b, t]) * np.linalg.norm(x[b, u]))
                        for u in range(x.shape[1])]
            else:
                sims = [-np.linalg.norm(x[b, t] - x[b, u]) for u in range(x.shape[1])]
            nearest = np.argsort(sims)[::-1][:k]
            out[b, t] = np.median(x[b, nearest], axis=0)
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_nn_filter_matches_a_brute_force_reference(k, metric):
    x = torch.randn(2, 12, 6, dtype=torch.float64)
    got = nn_filter(x, k, metric)
    assert got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), _nn_filter_reference(x.numpy(), k, metric), rtol=1e-12, atol=1e-12)
    assert torch.equal(nn_filter(x[0], k, metric), got[0])  # [T, F] input too


@pytest.mark.parametrize("k", [3, 4, 8])
def test_nn_filter_keeps_a_frame_repeated_k_times(k):
    x = torch.randn(3, 40, 16)
    frame = torch.randn(16)
    where = torch.randperm(40)[:k]
    x[:, where] = frame
    y = nn_filter(x, k)
    assert torch.equal(y[:, where], x[:, where])
    assert torch.equal(nn_filter(x, 1), x)  # k = 1: every frame is its own nearest neighbour
    assert nn_filter(x, 100).shape == x.shape  # k is capped at T


@pytest.mark.parametrize("name", NAMES)
def test_space_names_are_config_fields(name):
    s = Space(RecordingTrial())
    ARCHITECTURE_SPACES[name](s)
    config_fields = {f"{name}.{f.name}" for f in fields(ARCHITECTURES[name].config_type)}
    assert s.seen and set(s.seen) <= config_fields


@pytest.mark.parametrize("name", NAMES)
def test_space_samples_buildable_configs(name):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = define_by_run({"arch": name})
    x = torch.randn(2, 64, 32)
    for _ in range(10):
        t = study.ask()
        params = {**t.params, **fn(t)}
        assert params["arch"] == name
        m = build_model(name, params, n_mels=32, n_classes=3).eval()
        with torch.no_grad():
            _check_outputs(m, x, 3)
        study.tell(t, 0.0)
