import pytest
import torch

from hear_diffbyola.embed import FrameGrid, clip_embedding, dense_frames, min_samples
from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022
from hear_diffbyola.frontend import Frontend, FrontendConfig
from hear_diffbyola.inference import InferenceEncoder
from hear_diffbyola.weights import PretrainedModel


def make_model(arch: str) -> PretrainedModel:
    torch.manual_seed(0)
    enc = AudioNTT2022(64, 1088, hidden=32) if arch == "v2" else AudioNTT2020(64, 64)
    # non-trivial BN statistics so eval-mode BN is not the identity
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return PretrainedModel(Frontend(FrontendConfig(), -4.0, 3.0), enc, {})


@pytest.fixture(scope="module", params=["v2", "v1"])
def model(request):
    return make_model(request.param)


def wave(seconds, seed=0):
    return torch.randn(2, int(16000 * seconds), generator=torch.Generator().manual_seed(seed)) * 0.1


@pytest.mark.parametrize("seconds,chunk", [(3.0, 5), (7.31, 9), (7.31, 1000), (1.0, 1)])
def test_chunked_frames_equal_the_whole_clip(model, seconds, chunk):
    w = wave(seconds)
    with torch.no_grad():
        whole = model.frames(w)
    (frames,), times = dense_frames(model, w, shifts=1, chunk_frames=chunk)
    torch.testing.assert_close(frames, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        clip_embedding(model, w, chunk_frames=chunk), whole.mean(1) + whole.amax(1), atol=1e-5, rtol=1e-5
    )


def test_grids_of_the_two_encoders():
    v2, v1 = FrameGrid.of(make_model("v2")), FrameGrid.of(make_model("v1"))
    # dense grid: 40 ms either way; v2 natively (one pass), v1 by two passes shifted by 4 log-mel frames
    assert (v2.reduction, v2.shifts, v2.step, v2.hop_samples, v2.context) == (4, 1, 4, 640, 3)
    assert (v1.reduction, v1.shifts, v1.step, v1.hop_samples, v1.context) == (8, 2, 4, 640, 7)
    # centres: block [4k, 4k + 4) -> (4k + 1.5) * 10 ms; block [4k, 4k + 8) -> (4k + 3.5) * 10 ms
    assert v2.centres_ms(3).tolist() == [15.0, 55.0, 95.0]
    assert v1.centres_ms(3).tolist() == [35.0, 75.0, 115.0]
    # samples: frame n - 1 needs log-mel frames up to (n - 1) * 4 + r - 1, centred STFT -> (that) * hop samples
    assert v2.samples_for(1) == 3 * 160 and v2.samples_for(10) == (9 * 4 + 3) * 160
    assert v1.samples_for(2) == (4 + 7) * 160
    assert v2.min_samples == 480 and v1.min_samples == 11 * 160
    assert v2.n_frames(16000) == 101 // 4 and v1.n_frames(16000) == 101 // 8 + (101 - 4) // 8
    assert min_samples(make_model("v2")) == 480 and min_samples(make_model("v1"), 1) == 7 * 160


def test_receptive_field_is_the_grid_context():
    # A change in one log-mel frame moves only the frames whose receptive field covers it:
    # frame j of a reduction-r encoder sees log-mel frames [j r - (r - 1), j r + r + (r - 1)).
    for arch in ("v2", "v1"):
        model = make_model(arch)
        grid = FrameGrid.of(model, 1)
        x = torch.randn(1, 1, 64, 96)
        y = x.clone()
        m = 40
        y[..., m] += 5.0
        with torch.no_grad():
            changed = (model.encoder.frames(x) - model.encoder.frames(y)).abs().amax(-1)[0] > 0
        r = grid.reduction
        expected = [j * r - grid.context <= m < (j + 1) * r + grid.context for j in range(96 // r)]
        assert changed.tolist() == expected


def test_v2_dense_frames_are_one_native_pass(model, monkeypatch):
    if model.encoder.time_reduction != 4:
        pytest.skip("v2 only")
    calls = []
    block = InferenceEncoder._block  # block 0 runs once per encoder pass
    monkeypatch.setattr(
        InferenceEncoder,
        "_block",
        lambda self, x, k, pool=True: (k == 0 and calls.append(tuple(x.shape))) or block(self, x, k, pool),
    )
    (frames,), times = dense_frames(model, wave(2.5), tile_frames=10**6)
    assert len(calls) == 1 and calls[0][:3] == (2, 1, 251)  # one encoder pass over all 251 log-mel frames
    with torch.no_grad():
        torch.testing.assert_close(frames, model.frames(wave(2.5)), atol=1e-5, rtol=1e-5)
    gaps = times[1:] - times[:-1]
    assert torch.allclose(gaps, torch.full_like(gaps, 40.0)) and times[0] == 15.0


@pytest.mark.parametrize("shifts", [2, 4])
def test_shifted_frames_interleave(shifts):
    model = make_model("v1")
    w = wave(2.5)
    (frames,), times = dense_frames(model, w, shifts=shifts, chunk_frames=7)
    lm = model.frontend(w)
    step = 8 // shifts
    with torch.no_grad():
        for k in range(shifts):
            direct = model.encoder.frames(lm[..., k * step :])
            torch.testing.assert_close(frames[:, k::shifts], direct, atol=1e-5, rtol=1e-5)
    # evenly spaced, first centred on log-mel frames 0..7 (3.5 frames * 10 ms), none past the end
    gaps = times[1:] - times[:-1]
    assert torch.allclose(gaps, torch.full_like(gaps, 80.0 / shifts))
    assert times[0] == 35.0 and times[-1] <= 2500.0 and len(times) == frames.shape[1]


def test_minimum_length_and_errors(model):
    n = min_samples(model, None)
    (frames,), times = dense_frames(model, wave(1.0)[:, :n])
    assert frames.shape[1] == FrameGrid.of(model).shifts
    with pytest.raises(ValueError, match="too short"):
        dense_frames(model, wave(1.0)[:, : n - 1])
    with pytest.raises(ValueError, match="shifts must"):
        dense_frames(model, wave(1.0), shifts=3)
