import pytest
import torch

from hear_diffbyola.embed import clip_embedding, dense_frames, frame_times_ms, min_samples
from hear_diffbyola.encoder import AudioNTT2020
from hear_diffbyola.frontend import Frontend, FrontendConfig
from hear_diffbyola.weights import PretrainedModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    enc = AudioNTT2020(64, 64)
    # non-trivial BN statistics so eval-mode BN is not the identity
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return PretrainedModel(Frontend(FrontendConfig(), -4.0, 3.0), enc, {})


def wave(seconds, seed=0):
    return torch.randn(2, int(16000 * seconds), generator=torch.Generator().manual_seed(seed)) * 0.1


@pytest.mark.parametrize("seconds,chunk", [(3.0, 5), (7.31, 9), (7.31, 1000), (1.0, 1)])
def test_chunked_frames_equal_the_whole_clip(model, seconds, chunk):
    w = wave(seconds)
    with torch.no_grad():
        whole = model.frames(w)
    (frames,), times = dense_frames(model, w, shifts=1, chunk_frames=chunk)
    torch.testing.assert_close(frames, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clip_embedding(model, w, chunk_frames=chunk), whole.mean(1) + whole.amax(1),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shifts", [2, 4])
def test_shifted_frames_interleave_at_80_over_s_ms(model, shifts):
    w = wave(2.5)
    (frames,), times = dense_frames(model, w, shifts=shifts, chunk_frames=7)
    lm = model.frontend(w)
    step = 8 // shifts
    with torch.no_grad():
        for k in range(shifts):
            direct = model.encoder.frames(lm[..., k * step:])
            torch.testing.assert_close(frames[:, k::shifts], direct, atol=1e-5, rtol=1e-5)
    # evenly spaced, first centred on log-mel frames 0..7 (3.5 frames * 10 ms), none past the end
    gaps = times[1:] - times[:-1]
    assert torch.allclose(gaps, torch.full_like(gaps, 80.0 / shifts))
    assert times[0] == 35.0 and times[-1] <= 2500.0 and len(times) == frames.shape[1]


def test_frame_times_and_minimum_length(model):
    assert frame_times_ms(model, 3, 2).tolist() == [35.0, 75.0, 115.0]
    n = min_samples(model, 2)
    (frames,), times = dense_frames(model, wave(1.0)[:, :n], shifts=2)
    assert frames.shape[1] == 2
    with pytest.raises(ValueError, match="too short"):
        dense_frames(model, wave(1.0)[:, :n - 1], shifts=2)
    with pytest.raises(ValueError, match="shifts must be"):
        dense_frames(model, wave(1.0), shifts=3)
