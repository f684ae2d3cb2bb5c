import numpy as np
import pytest
import torch

from harmonia.trainables.augmentations import (
    AUGMENTATIONS, Batch, Mixup, MixupConfig, TimeIntervalDropout, TimeIntervalDropoutConfig,
    build_augmentations, drop_span)


def _batch(b=8, t=50, f=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, f, generator=g)
    y = (torch.rand(b, c, generator=g) > 0.5).float()
    yf = (torch.rand(b, t, c, generator=g) > 0.5).float()
    return Batch(x, y, yf)


def test_mixup_labels_are_the_same_convex_combination_as_inputs():
    batch = _batch()
    out = Mixup(MixupConfig(alpha=0.4))(batch, torch.Generator().manual_seed(3))
    # Recover λ and the partner of each sample from the inputs, then check the labels used them too.
    for i in range(batch.x.shape[0]):
        found = False
        for j in range(batch.x.shape[0]):
            a = torch.stack([batch.x[i].flatten(), batch.x[j].flatten()], 1)
            sol = torch.linalg.lstsq(a, out.x[i].flatten()[:, None]).solution.flatten()
            if torch.allclose(a @ sol, out.x[i].flatten(), atol=1e-5):
                lam = sol[0] if i != j else sol.sum()
                assert 0 <= float(lam) <= 1 + 1e-6
                expected_y = lam * batch.y[i] + (1 - lam) * batch.y[j] if i != j else batch.y[i]
                assert torch.allclose(out.y[i], expected_y, atol=1e-5)
                expected_yf = lam * batch.y_frames[i] + (1 - lam) * batch.y_frames[j] if i != j else batch.y_frames[i]
                assert torch.allclose(out.y_frames[i], expected_yf, atol=1e-5)
                found = True
                break
        assert found, f"sample {i} is not a mix of two inputs"


def test_mixup_lambda_follows_beta_alpha():
    # Mean of |λ - 0.5| is larger for small α (λ near 0 or 1) than for large α.
    def spread(alpha):
        g = torch.Generator().manual_seed(0)
        x = torch.stack([torch.zeros(1, 1), torch.ones(1, 1)])
        vals = []
        for _ in range(400):
            out = Mixup(MixupConfig(alpha))(Batch(x, torch.zeros(2, 1)), g)
            vals.append(abs(float(out.x[0, 0, 0]) - 0.5))
        return np.mean(vals)
    assert spread(0.1) > spread(5.0) + 0.15


def test_mixup_rejects_nonpositive_alpha():
    with pytest.raises(ValueError, match="alpha"):
        Mixup(MixupConfig(alpha=0))


def test_drop_span_keeps_length_and_removes_exactly_one_span():
    a = torch.arange(10.0)[:, None]
    out = drop_span(a, 3, 4, fill=-1)
    assert out.shape == a.shape
    assert out.flatten().tolist() == [0, 1, 2, 7, 8, 9, -1, -1, -1, -1]


def test_time_interval_dropout_keeps_length_and_removes_one_span():
    batch = _batch(b=32, t=40)
    tid = TimeIntervalDropout(TimeIntervalDropoutConfig(p=1.0, max_span=0.25))
    out = tid(batch, torch.Generator().manual_seed(1))
    assert out.x.shape == batch.x.shape and out.y_frames.shape == batch.y_frames.shape
    assert torch.equal(out.y, batch.y)
    for i in range(32):
        orig, new = batch.x[i], out.x[i]
        # Find the first differing frame: the rest must be the original shifted by one span, then fill.
        diff = [t for t in range(40) if not torch.equal(orig[t], new[t])]
        assert diff, "p=1 must drop a span"
        start = diff[0]
        span = next(s for s in range(1, 11) if torch.equal(new[start:40 - s], orig[start + s:]))
        assert 1 <= span <= 10
        assert torch.all(new[40 - span:] == orig.min())


def test_time_interval_dropout_probability_zero_is_identity():
    batch = _batch()
    out = TimeIntervalDropout(TimeIntervalDropoutConfig(p=0.0))(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out.x, batch.x)


def test_build_augmentations_reads_flat_params():
    augs = build_augmentations({"aug.mixup": True, "mixup.alpha": 1.5, "aug.tid": False})
    assert len(augs) == 1 and isinstance(augs[0], Mixup) and augs[0].alpha == 1.5
    assert {"mixup", "tid"} <= set(AUGMENTATIONS)


def test_samplepairing_averages_inputs_and_keeps_first_labels():
    from harmonia.trainables.augmentations import SampleMix, SampleMixConfig

    batch = _batch()
    g = torch.Generator().manual_seed(5)
    out = SampleMix("pairing", SampleMixConfig())(batch, g)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(out.x, 0.5 * batch.x + 0.5 * batch.x[perm])
    assert torch.equal(out.y, batch.y) and torch.equal(out.y_frames, batch.y_frames)


@pytest.mark.parametrize("kind", ["interpolate", "extrapolate"])
def test_mixup_lp_and_extrapolation_follow_their_formulas(kind):
    from harmonia.trainables.augmentations import SampleMix, SampleMixConfig

    batch = _batch()
    aug = SampleMix(kind, SampleMixConfig(alpha=0.7))
    wi, wj = aug.weights(torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    out = aug(batch, g)
    # Same generator sequence: λ first, then the permutation.
    g2 = torch.Generator().manual_seed(9)
    aug.weights(g2)
    perm = torch.randperm(8, generator=g2)
    lam = wj * -1 if kind == "extrapolate" else wi
    if kind == "extrapolate":
        assert wi == pytest.approx(1 + lam) and 0 < lam < 1  # (1+λ) xi − λ xj
    else:
        assert wj == pytest.approx(1 - lam)
    assert torch.allclose(out.x, wi * batch.x + wj * batch.x[perm], atol=1e-6)
    assert torch.equal(out.y, batch.y)


def test_specaugment_zeroes_exactly_the_stated_bands():
    from harmonia.trainables.augmentations import SpecAugment, SpecAugmentConfig

    batch = Batch(torch.ones(4, 30, 16), torch.zeros(4, 2))
    aug = SpecAugment(SpecAugmentConfig(time_masks=2, time_width=5, freq_masks=1, freq_width=3))
    g = torch.Generator().manual_seed(2)
    out = aug(batch, g)
    g = torch.Generator().manual_seed(2)
    for i in range(4):
        times, bands = aug.masks(30, 16, g)
        expected = torch.ones(30, 16)
        for a, b in times:
            assert b - a <= 5
            expected[a:b] = 0
        for a, b in bands:
            assert b - a <= 3
            expected[:, a:b] = 0
        assert torch.equal(out.x[i], expected)


def test_balanced_sampling_caps_the_class_ratio():
    from harmonia.trainables.augmentations import balanced_sampling_weights

    y = torch.zeros(420, 2)
    y[:400, 0] = 1  # 20:1 imbalance
    y[400:, 1] = 1
    w = balanced_sampling_weights(y, max_ratio=5.0)
    idx = torch.multinomial(w, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    counts = y[idx].sum(0)
    assert 4.5 < float(counts[0] / counts[1]) < 5.5
