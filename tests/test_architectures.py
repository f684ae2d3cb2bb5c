import pytest
import torch
from safetensors.torch import load, save

from harmonia.trainables.architectures import ARCHITECTURES, build_model


@pytest.mark.parametrize("pooling", ["max", "avg", "attention"])
def test_crnn_shapes_and_probabilities(pooling):
    m = build_model("crnn", {"arch": "crnn", "crnn.pooling": pooling, "crnn.blocks": 3, "crnn.channels": 8,
                             "crnn.gru_size": 16}, n_mels=64, n_classes=5)
    clip, frames = m(torch.randn(3, 100, 64))
    assert clip.shape == (3, 5) and frames.shape == (3, 50, 5)
    assert torch.all((clip > 0) & (clip < 1))
    if pooling == "max":
        assert torch.allclose(clip, frames.max(1).values)
    if pooling == "avg":
        assert torch.allclose(clip, frames.mean(1))


def test_crnn_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = build_model("crnn", {"arch": "crnn", "crnn.channels": 8, "crnn.gru_size": 16, "crnn.dropout": 0.0},
                    n_mels=32, n_classes=4)
    x, y = torch.randn(8, 40, 32), (torch.rand(8, 4) > 0.5).float()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy(m(x)[0], y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


def test_crnn_round_trips_through_safetensors():
    params = {"arch": "crnn", "crnn.channels": 8, "crnn.gru_size": 16, "crnn.pooling": "attention"}
    m = build_model("crnn", params, n_mels=32, n_classes=3).eval()
    blob = save(m.state_dict())
    m2 = build_model("crnn", params, n_mels=32, n_classes=3).eval()
    m2.load_state_dict(load(blob))
    x = torch.randn(2, 30, 32)
    assert torch.equal(m(x)[0], m2(x)[0])


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(KeyError, match="crnn"):
        build_model("resnet9000", {}, 64, 3)
    assert "crnn" in ARCHITECTURES
