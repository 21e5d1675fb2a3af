import pytest
import torch

from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022, EncoderConfig, build_encoder, temporal_pool

# The keys of the official BYOL-A AudioNTT2020 state dict (nttcslab/byol-a v1 checkpoints).
OFFICIAL_KEYS = {
    *(f"features.{i}.{p}" for i in (0, 4, 8) for p in ("weight", "bias")),
    *(
        f"features.{i}.{p}"
        for i in (1, 5, 9)
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ),
    "fc.0.weight",
    "fc.0.bias",
    "fc.3.weight",
    "fc.3.bias",
}


@pytest.mark.parametrize("d", [512, 1024, 2048])
@pytest.mark.parametrize("t", [8, 15, 96, 401])
def test_shapes_for_every_d_and_length(d, t):
    enc = AudioNTT2020(n_mels=64, d=d).eval()
    x = torch.randn(2, 1, 64, t)
    with torch.no_grad():
        frames = enc.frames(x)
        pooled = enc(x)
    assert frames.shape == (2, t // 8, d)
    assert pooled.shape == (2, d)
    torch.testing.assert_close(pooled, frames.mean(1) + frames.max(1).values)


def test_state_dict_names_and_shapes_are_the_official_ones():
    enc = AudioNTT2020(64, 512)
    sd = enc.state_dict()
    assert set(sd) == OFFICIAL_KEYS
    assert sd["fc.0.weight"].shape == (512, 64 * 8)
    assert sd["fc.3.weight"].shape == (512, 512)


def test_frames_flatten_is_mel_major_then_channel():
    # BYOL-A permutes (B, C, F, T) -> (B, T, F, C) before flattening: feature index = f * C + c.
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    flat = AudioNTT2020.flatten_frames(x)
    assert flat.shape == (2, 5, 12)
    b, c, f, t = 1, 2, 3, 4
    assert flat[b, t, f * 3 + c] == x[b, c, f, t]


def test_conv_maps_sizes_and_errors():
    enc = AudioNTT2020(64, 512)
    maps = enc.conv_maps(torch.randn(1, 1, 64, 96))
    assert [m.shape for m in maps] == [(1, 64, 32, 48), (1, 64, 16, 24), (1, 64, 8, 12)]
    with pytest.raises(ValueError, match="at least 8"):
        enc(torch.randn(1, 1, 64, 7))
    with pytest.raises(ValueError, match=r"\(B, 1, 64, T\)"):
        enc(torch.randn(1, 64, 96))
    with pytest.raises(ValueError, match="multiple of 8"):
        EncoderConfig(arch="audiontt2020", n_mels=60)


def test_temporal_pool_by_hand():
    frames = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]]])
    torch.testing.assert_close(temporal_pool(frames), torch.tensor([[1.0 + 3.0, 2 / 3 + 4.0]]))


# ---------------------------------------------------------------- AudioNTT2022 (BYOL-A v2)

# The keys of the official BYOL-A v2 AudioNTT2022 state dict: two conv blocks, then the fc stack.
OFFICIAL_V2_KEYS = {
    *(f"features.{i}.{p}" for i in (0, 4) for p in ("weight", "bias")),
    *(
        f"features.{i}.{p}"
        for i in (1, 5)
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ),
    "fc.0.weight",
    "fc.0.bias",
    "fc.3.weight",
    "fc.3.bias",
}


@pytest.mark.parametrize("d,hidden", [(3072, 2048), (2048, 2048), (1536, 512)])
@pytest.mark.parametrize("t", [4, 7, 96, 401])
def test_v2_shapes_names_and_the_concatenated_frame(d, hidden, t):
    enc = AudioNTT2022(n_mels=64, d=d, hidden=hidden).eval()
    sd = enc.state_dict()
    assert set(sd) == OFFICIAL_V2_KEYS
    assert sd["fc.0.weight"].shape == (hidden, 64 * 16)  # 64 channels x 64/4 mel bins
    assert sd["fc.3.weight"].shape == (d - 1024, hidden)
    x = torch.randn(2, 1, 64, t)
    with torch.no_grad():
        frames, pooled = enc.frames(x), enc(x)
        conv = enc.features(x)  # (2, 64, 16, t // 4)
    assert conv.shape == (2, 64, 16, t // 4)
    assert frames.shape == (2, t // 4, d)
    # per-frame output = the conv features (mel-major flatten) followed by the fc output of them
    flat = conv.permute(0, 3, 2, 1).reshape(2, t // 4, 1024)
    torch.testing.assert_close(frames[..., :1024], flat)
    with torch.no_grad():
        torch.testing.assert_close(frames[..., 1024:], enc.fc(flat))
    torch.testing.assert_close(pooled, frames.mean(1) + frames.max(1).values)


def test_v2_fc_is_the_documented_stack():
    enc = AudioNTT2022(64, 3072, 2048)
    kinds = [type(m).__name__ for m in enc.fc]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU"] and enc.fc[2].p == 0.3
    assert [type(m).__name__ for m in enc.features] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2


def test_config_resolves_arch_defaults_and_rejects_bad_values():
    assert (EncoderConfig().arch, EncoderConfig().d, EncoderConfig().hidden) == ("audiontt2022", 3072, 2048)
    v1 = EncoderConfig(arch="audiontt2020")
    assert (v1.d, v1.hidden, v1.time_reduction, v1.conv_d) == (2048, 2048, 8, 512)
    assert EncoderConfig(arch="audiontt2020", d=512).hidden == 512
    assert EncoderConfig().time_reduction == 4 and EncoderConfig().conv_d == 1024
    with pytest.raises(ValueError, match="exceed the 1024 conv features"):
        EncoderConfig(d=1024)
    with pytest.raises(ValueError, match="multiple of 64"):
        EncoderConfig(arch="audiontt2020", d=100)
    with pytest.raises(ValueError, match="hidden must equal d"):
        EncoderConfig(arch="audiontt2020", d=512, hidden=256)
    with pytest.raises(ValueError, match="encoder.arch"):
        EncoderConfig(arch="resnet")
    with pytest.raises(ValueError, match="multiple of 4"):
        EncoderConfig(n_mels=62)
    assert type(build_encoder(EncoderConfig())) is AudioNTT2022
    assert type(build_encoder(EncoderConfig(arch="audiontt2020", d=512))) is AudioNTT2020


def test_v2_layers_sit_in_their_own_slots_and_sum_to_the_frames():
    torch.manual_seed(0)
    enc = AudioNTT2022(64, 1536, 64).eval()
    x = torch.randn(2, 1, 64, 37)
    with torch.no_grad():
        conv1, conv2, fc, full = enc.layer_frames(x)
        c1 = enc.features[:4](x)  # (2, 64, 32, 18)
        frames = enc.frames(x)
    assert all(t.shape == (2, 9, 1536) for t in (conv1, conv2, fc, full))
    torch.testing.assert_close(full, frames)
    torch.testing.assert_close(conv2 + fc, full)
    assert (conv1[..., 1024:] == 0).all() and (conv2[..., 1024:] == 0).all() and (fc[..., :1024] == 0).all()
    # conv1: block 1's map max-pooled 2x2 (to block 2's grid), flattened mel-major
    pooled = torch.nn.functional.max_pool2d(c1, 2)  # (2, 64, 16, 9)
    torch.testing.assert_close(conv1[..., :1024], pooled.permute(0, 3, 2, 1).reshape(2, 9, 1024))


def test_dropout_keeps_one_minus_p_scales_the_kept_and_is_off_in_eval():
    from hear_diffbyola.encoder import Dropout

    drop = Dropout(p=0.3)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    # 1e6 Bernoulli(0.7) draws: the kept share is 0.7 within 5 standard deviations (0.00046 each)
    assert abs(kept.float().mean().item() - 0.7) < 5 * (0.7 * 0.3 / 1e6) ** 0.5
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()  # the gradient is the mask, scaled alike
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    # the two 32-bit halves of one 64-bit draw mask neighbours: both kept with probability 0.49
    k = kept.flatten().view(-1, 2).float()
    assert abs((k[:, 0] * k[:, 1]).mean().item() - 0.49) < 5 * (0.49 * 0.51 / 5e5) ** 0.5
    torch.manual_seed(0)  # the same draws for float64 input of the same seed
    assert torch.equal(drop(torch.ones(1000, 1000, dtype=torch.float64)) != 0, kept)
    odd = drop(torch.ones(3, 5, 7))  # an odd number of elements: half of the last draw goes unused
    assert odd.shape == (3, 5, 7) and ((odd == 0) | (odd == torch.tensor(1 / 0.7))).all()
    drop.eval()
    assert torch.equal(drop(x), x)
