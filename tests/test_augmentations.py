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


# --- chunk mixing (dcase2018_workshop_proceedings.txt L13552–13564) -----------------------------

def _tag_batch(t=40, f=6, seed=0):
    """Label rows with repeats (same label sets), no-event clips, and a clip no other clip matches."""
    rows = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]]
    y = torch.tensor(rows, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(rows), t, f, generator=g)
    yf = (torch.rand(len(rows), t, 3, generator=g) > 0.5).float() * y[:, None, :]  # events of the clip's tags only
    return Batch(x, y, yf)


def test_chunkmix_adds_a_span_of_a_same_label_or_no_event_clip_and_keeps_the_labels():
    from harmonia.trainables.augmentations import ChunkMix, ChunkMixConfig

    batch = _tag_batch()
    aug = ChunkMix(ChunkMixConfig(p=1.0, chunks=1, min_span=0.2, max_span=0.6, max_attenuation=0.5))
    chunks = aug.plan(batch, torch.Generator().manual_seed(4))
    out = aug(batch, torch.Generator().manual_seed(4))  # the same draws as plan
    assert len(chunks) == len(batch.y) and sorted(c.dst for c in chunks) == list(range(len(batch.y)))
    assert torch.equal(out.y, batch.y)
    sources = set()
    for c in chunks:
        i, j = c.dst, c.src
        assert j != i and (torch.equal(batch.y[j], batch.y[i]) or not batch.y[j].any())
        assert 8 <= c.length <= 24 and -0.5 <= c.gain <= 0
        span = slice(c.start, c.start + c.length)
        piece = batch.x[j, c.src_start:c.src_start + c.length] + c.gain
        # only the stated span changed, to the superposition (log-max) of the clip and the chunk
        outside = torch.ones(batch.x.shape[1], dtype=torch.bool)
        outside[span] = False
        assert torch.equal(out.x[i, outside], batch.x[i, outside])
        assert torch.allclose(out.x[i, span], torch.maximum(batch.x[i, span], piece))
        assert (out.x[i, span] > batch.x[i, span]).any()
        # frame targets: the chunk's are OR-ed in at the span it lands on, nowhere else
        assert torch.equal(out.y_frames[i, outside], batch.y_frames[i, outside])
        src_frames = batch.y_frames[j, c.src_start:c.src_start + c.length]
        assert torch.equal(out.y_frames[i, span], torch.maximum(batch.y_frames[i, span], src_frames))
        # ...which adds no class the clip does not have
        assert not (out.y_frames[i].amax(0) > batch.y[i]).any()
        sources.add((i, j))
    assert any(batch.y[j].any() for _, j in sources) and any(not batch.y[j].any() for _, j in sources)


def test_chunkmix_changes_only_stated_spans_with_several_chunks_and_skips_clips_without_a_source():
    from harmonia.trainables.augmentations import ChunkMix, ChunkMixConfig

    batch = _tag_batch(seed=1)
    aug = ChunkMix(ChunkMixConfig(p=0.7, chunks=4, min_span=0.1, max_span=0.5))
    for seed in range(5):
        chunks = aug.plan(batch, torch.Generator().manual_seed(seed))
        out = aug.apply(batch, chunks)
        assert torch.equal(out.y, batch.y)
        for i in range(len(batch.y)):
            touched = torch.zeros(batch.x.shape[1], dtype=torch.bool)
            for c in chunks:
                if c.dst == i:
                    touched[c.start:c.start + c.length] = True
            assert torch.equal(out.x[i, ~touched], batch.x[i, ~touched])
            assert (out.x[i] >= batch.x[i]).all()  # nothing of the clip itself is lowered
    # without same-label sources (task sequence) a clip takes chunks of no-event clips only
    only_none = ChunkMix(ChunkMixConfig(p=1.0, chunks=3, same_label=False))
    chunks = only_none.plan(batch, torch.Generator().manual_seed(0))
    assert chunks and all(not batch.y[c.src].any() for c in chunks)
    # a single clip, or one whose labels no other clip shares in a batch without no-event clips: nothing
    lone = Batch(batch.x[[0, 2, 8]], batch.y[[0, 2, 8]], batch.y_frames[[0, 2, 8]])
    assert aug.plan(lone, torch.Generator().manual_seed(0)) == []
    assert torch.equal(aug(lone, torch.Generator().manual_seed(0)).x, lone.x)


def test_chunkmix_on_scenes_takes_chunks_of_the_same_scene():
    from harmonia.trainables.augmentations import ChunkMix, ChunkMixConfig

    scene = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    batch = Batch(torch.randn(8, 30, 4, generator=torch.Generator().manual_seed(0)),
                  torch.nn.functional.one_hot(scene, 3).float())
    aug = ChunkMix(ChunkMixConfig(p=1.0, chunks=2))
    chunks = aug.plan(batch, torch.Generator().manual_seed(0))
    assert len(chunks) == 16 and all(scene[c.src] == scene[c.dst] and c.src != c.dst for c in chunks)
    assert torch.equal(aug.apply(batch, chunks).y, batch.y)


def test_chunkmix_is_built_from_flat_params_before_label_mixing_and_checks_its_config():
    from harmonia.trainables.augmentations import ChunkMix, ChunkMixConfig

    augs = build_augmentations({"aug.mixup": True, "aug.chunkmix": True, "chunkmix.p": 0.5, "chunkmix.chunks": 2,
                                "chunkmix.min_span": 0.2, "chunkmix.max_span": 0.9})
    assert isinstance(augs[0], ChunkMix) and isinstance(augs[1], Mixup)  # compares hard labels first
    assert augs[0].cfg == ChunkMixConfig(p=0.5, chunks=2, min_span=0.2, max_span=0.9)
    for bad in (dict(p=1.5), dict(chunks=0), dict(min_span=0.6, max_span=0.5), dict(max_span=1.2)):
        with pytest.raises(ValueError, match="chunkmix"):
            ChunkMix(ChunkMixConfig(**bad))


def test_task_sequence_takes_chunks_of_no_event_clips_only():
    from harmonia.trainables.tasks import get_strategy

    for task in ("tagging", "sed", "scene", "sequence"):
        params = {"aug.chunkmix": True, **get_strategy(task).augmentation_params}  # as the Trainer builds them
        assert build_augmentations(params)[0].cfg.same_label == (task != "sequence")
