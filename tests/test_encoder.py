import pytest
import torch

from hear_diffbyola.encoder import AudioNTT2020, EncoderConfig, temporal_pool

# The keys of the official BYOL-A AudioNTT2020 state dict (nttcslab/byol-a v1 checkpoints).
OFFICIAL_KEYS = {
    *(f"features.{i}.{p}" for i in (0, 4, 8) for p in ("weight", "bias")),
    *(f"features.{i}.{p}" for i in (1, 5, 9) for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    "fc.0.weight", "fc.0.bias", "fc.3.weight", "fc.3.bias",
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
        EncoderConfig(n_mels=60)


def test_temporal_pool_by_hand():
    frames = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]]])
    torch.testing.assert_close(temporal_pool(frames), torch.tensor([[1.0 + 3.0, 2 / 3 + 4.0]]))
