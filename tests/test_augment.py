import pytest
import torch

from hear_diffbyola.augment import (
    AugmentConfig,
    MixupMemory,
    RandomLinearFader,
    RandomResizeCrop,
    ViewAugmenter,
    standardize_batch,
)


def lms(b=6, f=64, t=96, seed=0):
    return torch.randn(b, 1, f, t, generator=torch.Generator().manual_seed(seed))


def test_resize_crop_with_unit_scales_is_identity(gen):
    x = lms()
    rrc = RandomResizeCrop(virtual_crop_scale=(1.0, 1.0), freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0))
    torch.testing.assert_close(rrc(x, gen), x, atol=1e-4, rtol=0)


def test_resize_crop_params_follow_byola_ranges(gen):
    rrc = RandomResizeCrop()
    i, j, h, w = rrc.sample_params(5000, 64, 96, gen)
    assert h.min() >= int(0.6 * 64) and h.max() == 64  # clipped to the canvas height (scale 1.0)
    assert w.min() >= int(0.6 * 96) and w.max() <= 144 and w.max() > 130
    # crops stay on the canvas: canvas rows [0, 64), cols [-24, 120) in input coordinates
    assert (i >= 0).all() and (i + h <= 64).all()
    assert (j >= -24).all() and (j + w <= 120).all()


def test_resize_crop_of_a_region_matches_interpolating_that_region():
    # A pure-time crop (full height) of a time ramp stays a ramp: output column k reads input column
    # j + k (w - 1) / 95. PyTorch's bicubic (a = -0.75) bends a ramp by < 0.05, a wrong mapping by whole columns.
    x = torch.arange(96, dtype=torch.float32).expand(1, 1, 64, 96).clone()
    g = torch.Generator().manual_seed(3)
    rrc = RandomResizeCrop(virtual_crop_scale=(1.0, 1.0), freq_scale=(1.0, 1.0), time_scale=(0.5, 0.5))
    i, j, h, w = rrc.sample_params(1, 64, 96, torch.Generator().manual_seed(3))
    out = rrc(x, g)[0, 0]
    expected = j.item() + torch.arange(96) * (w.item() - 1) / 95
    torch.testing.assert_close(out[10], expected.float(), atol=0.06, rtol=0)
    torch.testing.assert_close(out[0], out[63])


def test_fader_adds_a_linear_ramp_within_gain(gen):
    x = lms()
    y = RandomLinearFader(gain=1.0)(x, gen)
    d = y - x
    assert torch.allclose(d, d[:, :, :1, :].expand_as(d), atol=1e-6)  # same for every mel bin
    ramp = d[:, 0, 0]  # (B, T)
    second = ramp[:, 2:] - 2 * ramp[:, 1:-1] + ramp[:, :-2]
    assert second.abs().max() < 1e-5  # linear in time
    assert ramp.abs().max() <= 1.0 + 1e-6
    assert not torch.allclose(ramp[0], ramp[1])  # each clip has its own ramp


def test_mixup_identity_when_empty_and_bounded_after(gen):
    mix = MixupMemory(ratio=0.4, n_memory=8)
    x = lms(4)
    assert torch.equal(mix(x, gen), x)
    m = lms(4, seed=9)
    mix.push(m)
    y = mix(x, gen)
    # log((1-a) e^x + a e^m) lies between x and m, and with a <= 0.4 closer to x than log(0.6 e^x + 0.4 e^m)
    lo, hi = torch.minimum(x, m.min(0, keepdim=True).values), torch.maximum(x, m.max(0, keepdim=True).values)
    assert (y >= lo - 1e-5).all() and (y <= hi + 1e-5).all()
    assert not torch.equal(y, x)


def test_mixup_memory_is_a_ring_buffer():
    mix = MixupMemory(n_memory=5)
    for k in range(3):
        mix.push(torch.full((2, 1, 2, 2), float(k)))
    assert mix.filled == 5 and mix.cursor == 1
    assert mix.memory[:, 0, 0, 0].tolist() == [2.0, 0.0, 1.0, 1.0, 2.0]
    state = mix.get_state()
    other = MixupMemory(n_memory=5)
    other.set_state(state)
    assert torch.equal(other.memory, mix.memory) and other.cursor == 1


def test_views_are_independent_deterministic_and_standardised():
    aug = ViewAugmenter(AugmentConfig())
    x = lms(8)
    v1, v2 = aug(x, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == x.shape
    assert not torch.allclose(v1, v2)
    both = torch.cat([v1, v2])
    assert abs(both.mean().item()) < 1e-5 and abs(both.std().item() - 1) < 1e-4
    again = ViewAugmenter(AugmentConfig())(x, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2)
    third = ViewAugmenter(AugmentConfig())(x, torch.Generator().manual_seed(1))
    assert not torch.equal(third[0], v1)


def test_standardize_batch():
    x = torch.randn(3, 1, 4, 5) * 7 + 2
    y = standardize_batch(x)
    torch.testing.assert_close(y, (x - x.mean()) / x.std())


def test_config_validation():
    with pytest.raises(ValueError, match="mixup_ratio"):
        AugmentConfig(mixup_ratio=1.5)
    with pytest.raises(ValueError, match="unknown augment keys"):
        AugmentConfig.from_dict({"gain": 1})
    c = AugmentConfig.from_dict({"freq_scale": [0.5, 1.0]})
    assert c.freq_scale == (0.5, 1.0) and AugmentConfig.from_dict(c.to_dict()) == c
