"""The HEAR 2021 API module (hear_diffbyola.hear), its packaging, and the real HEAR tools on it."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tomllib
import torch

import hear_diffbyola
from hear_diffbyola import evaltools, hear
from hear_diffbyola.cli import main
from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022, EncoderConfig
from hear_diffbyola.frontend import FrontendConfig
from hear_diffbyola.tasks import heartask
from hear_diffbyola.weights import (
    BYOLA_V1_NORM,
    BYOLA_V2_NORM,
    DEFAULT_WEIGHTS,
    WeightsError,
    export_run,
    make_header,
    save_weights,
)

REPO = Path(__file__).resolve().parents[1]
SR = 16000
D = 1088  # the tiny model's d (test_train.TINY): 1024 conv features + 64 fc outputs


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A real (tiny AudioNTT2022, d = 1088) weights file from the pretraining module and exporter."""
    from test_train import TINY

    from hear_diffbyola.config import PretrainConfig, apply_overrides
    from hear_diffbyola.train import pretrain

    root = tmp_path_factory.mktemp("tiny")
    pretrain(
        PretrainConfig.from_dict(apply_overrides({}, TINY + ["train.steps=2", "learner.lam=0.5"])),
        root / "run",
        progress=False,
    )
    export_run(root / "run", root / "tiny.safetensors")
    return root / "tiny.safetensors"


@pytest.fixture(scope="session")
def model(tiny_weights):
    return hear_diffbyola.load_model(str(tiny_weights))


def noise(n_sounds: int, seconds: float, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_sounds, int(round(seconds * SR)), generator=g) * 2 - 1) * scale


# ---------------------------------------------------------------------------------------------- the API


def test_module_exposes_the_hear_api_and_the_model_its_attributes(model, tiny_weights):
    for name in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        assert getattr(hear_diffbyola, name) is getattr(hear, name)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.sample_rate == 16000 and type(model.sample_rate) is int
    assert model.scene_embedding_size == model.timestamp_embedding_size == D
    assert type(model.scene_embedding_size) is int and type(model.timestamp_embedding_size) is int


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory):
    """A random AudioNTT2020 (BYOL-A v1 layout, d = 64) with the paper's front end."""
    torch.manual_seed(3)
    enc = AudioNTT2020(64, 64)
    path = tmp_path_factory.mktemp("v1") / "v1.safetensors"
    save_weights(path, enc.state_dict(), make_header(FrontendConfig(), (-6.0, 4.0), enc.config, 0.0, {"source": "v1"}))
    return hear_diffbyola.load_model(str(path))


@pytest.mark.parametrize(
    "arch,seconds,n_stamps,last",
    [
        # hand-computed. v2: one pass, frames centred at 15 + 40 k ms (blocks [4k, 4k + 4) of 10 ms log-mel
        # frames); v1: two passes, 35 + 40 k ms (blocks [4k, 4k + 8)); kept while the centre is <= the end.
        ("v2", 1.07, 27, 1055.0),
        ("v2", 1.98, 50, 1975.0),
        ("v2", 4.0, 100, 3975.0),
        ("v2", 0.1, 3, 95.0),
        ("v2", 0.015, 1, 15.0),
        ("v1", 1.07, 26, 1035.0),
        ("v1", 1.98, 49, 1955.0),
        ("v1", 4.0, 100, 3995.0),
        ("v1", 0.1, 2, 75.0),
        ("v1", 0.035, 1, 35.0),
    ],
)
def test_timestamps_every_40_ms_centred_never_past_the_end(model, v1_model, arch, seconds, n_stamps, last):
    model, first = (model, 15.0) if arch == "v2" else (v1_model, 35.0)
    d = model.timestamp_embedding_size
    emb, ts = hear_diffbyola.get_timestamp_embeddings(noise(3, seconds), model)
    assert emb.shape == (3, n_stamps, d) and emb.dtype == torch.float32
    assert ts.shape == (3, n_stamps) and ts.dtype == torch.float32
    expected = first + 40.0 * torch.arange(n_stamps)
    for row in ts:
        assert torch.equal(row, expected)
    assert ts.max().item() == last <= seconds * 1000
    # hear-validator's criterion: the last timestamp lies within one hop of the end
    assert last > seconds * 1000 - 40.0
    scene = hear_diffbyola.get_scene_embeddings(noise(3, seconds), model)
    assert scene.shape == (3, d) and scene.dtype == torch.float32 and torch.isfinite(scene).all()


def test_v2_timestamp_frames_are_one_native_encoder_pass(model, monkeypatch):
    from hear_diffbyola.inference import InferenceEncoder

    wave = noise(2, 3.0, seed=1)
    calls = []
    # block 0 of the frozen inference copy every embedding runs: once per encoder pass
    block = InferenceEncoder._block
    monkeypatch.setattr(
        InferenceEncoder,
        "_block",
        lambda self, x, k, pool=True: (k == 0 and calls.append(tuple(x.shape))) or block(self, x, k, pool),
    )
    emb, ts = hear_diffbyola.get_timestamp_embeddings(wave, model)
    # no shifted second pass: one pass over both sounds (they fit one ~1024 log-mel frame tile), whole clips
    assert len(calls) == 1 and calls[0][0] == 2 and calls[0][2] >= 301
    with torch.no_grad():
        native = model.encoder.frames(model.frontend(wave))  # (2, 75, D): 301 log-mel frames // 4
    # frames whose receptive field (3 log-mel frames past their block) stays inside the clip need no padding
    torch.testing.assert_close(emb[:, :74], native[:, :74], atol=1e-5, rtol=1e-5)


def test_v1_timestamp_frames_are_the_encoder_on_the_log_mel_and_its_4_frame_shift(v1_model):
    model = v1_model
    wave = noise(2, 3.0, seed=1)
    emb, _ = hear_diffbyola.get_timestamp_embeddings(wave, model)
    with torch.no_grad():
        lm = model.frontend(wave)  # (2, 1, 64, 301): whole clip, unchunked, no HEAR padding
        native, shifted = model.encoder.frames(lm), model.encoder.frames(lm[..., 4:])  # 80 ms grids
    interleaved = torch.stack([native[:, :36], shifted[:, :36]], dim=2).reshape(2, 72, -1)
    # frames whose receptive field stays clear of the clip's end do not depend on end padding
    torch.testing.assert_close(emb[:, :72], interleaved, atol=1e-5, rtol=1e-5)


def test_sub_batching_and_chunking_equal_one_unchunked_pass(model, monkeypatch):
    monkeypatch.setattr(hear, "CHUNK_FRAMES", 20)  # 5 s = 62 encoder frames in 4 chunks (default: 41 s chunks)
    wave = noise(3, 5.0, seed=2)
    with torch.no_grad():
        whole = model.encoder.frames(model.frontend(wave))  # (3, 125, D) in one pass
    expected_scene = whole.mean(1) + whole.amax(1)  # BYOL-A: mean + max over time
    scene = hear_diffbyola.get_scene_embeddings(wave, model)
    torch.testing.assert_close(scene, expected_scene, atol=1e-5, rtol=1e-5)
    emb, _ = hear_diffbyola.get_timestamp_embeddings(wave, model)
    torch.testing.assert_close(emb[:, :120], whole[:, :120], atol=1e-5, rtol=1e-5)  # interior frames (v2: native)
    monkeypatch.setattr(hear, "FRAME_BUDGET", 1)  # one sound per pass
    torch.testing.assert_close(hear_diffbyola.get_scene_embeddings(wave, model), scene)
    torch.testing.assert_close(hear_diffbyola.get_timestamp_embeddings(wave, model)[0], emb)


# -------------------------------------------------------- centring, checked on a hand-built network


def identity_encoder_weights(path: Path) -> Path:
    """A hand-set AudioNTT2020 whose frame output 0 is sum over mel bands of the max over its 8
    log-mel frames of ReLU(normalised log-mel): silence (log eps, normalised -5.9) gives exactly 0,
    a click gives > 0 in exactly the frames whose 8 log-mel frames see it."""
    enc = AudioNTT2020(64, 64)
    with torch.no_grad():
        for p in enc.parameters():
            p.zero_()
        for i in (0, 4, 8):
            enc.features[i].weight[0, 0, 1, 1] = 1.0  # conv: channel 0 passes through, no spread
            bn = enc.features[i + 1]
            bn.weight.fill_(1.0), bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps)
        enc.fc[0].weight[0, 0::64] = 1.0  # channel 0 of each of the 8 mel groups (mel-major flattening)
        enc.fc[3].weight[0, 0] = 1.0
    header = make_header(FrontendConfig(), (-10.0, 1.0), enc.config, 0.0, {"source": "hand-built"})
    save_weights(path, enc.state_dict(), header)
    return path


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory):
    return hear_diffbyola.load_model(identity_encoder_weights(tmp_path_factory.mktemp("id") / "id.safetensors"))


@pytest.mark.parametrize(
    "t0_ms,responding",
    [
        # A click at sample s reaches log-mel frame m iff |s - 160 m| < 200 (400-sample Hann window).
        # 995 ms: frames 99, 100 -> encoder frames whose blocks [4k, 4k+8) hold them: k = 23, 24, 25.
        (995.0, [955.0, 995.0, 1035.0]),
        # 975 ms: frames 97, 98 -> k = 23, 24.
        (975.0, [955.0, 995.0]),
    ],
)
def test_a_click_moves_exactly_the_frames_centred_around_it(identity_model, t0_ms, responding):
    wave = torch.zeros(1, 2 * SR)
    wave[0, int(t0_ms * SR / 1000)] = 0.5
    emb, ts = hear_diffbyola.get_timestamp_embeddings(wave, identity_model)
    moved = ts[0][emb[0, :, 0] > 0].tolist()
    assert moved == responding
    assert sum(moved) / len(moved) == t0_ms  # symmetric about the click: timestamps are frame centres


def test_clip_shorter_than_a_frame_is_centred_under_the_first_frame(identity_model, model):
    clip = torch.zeros(2, 160)  # 10 ms
    clip[:, 80] = 0.5  # click at the clip's centre
    emb, ts = hear_diffbyola.get_timestamp_embeddings(clip, identity_model)
    assert emb.shape == (2, 1, 64) and ts.tolist() == [[5.0], [5.0]]  # one frame, at the clip's centre
    assert (emb[:, 0, 0] > 0).all()  # ... and it sees the click
    assert hear_diffbyola.get_scene_embeddings(clip, identity_model)[:, 0].gt(0).all()
    emb, ts = hear_diffbyola.get_timestamp_embeddings(noise(1, 0.0003), model)  # 5 samples
    assert emb.shape == (1, 1, D) and ts.item() == pytest.approx(2.5 / 16) and torch.isfinite(emb).all()
    assert hear_diffbyola.get_scene_embeddings(noise(1, 0.0003), model).shape == (1, D)


# ------------------------------------------------------------------------------------------- inputs


def test_input_checks_say_what_is_wrong(model):
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\), got \(16000,\); add the batch axis"):
        hear_diffbyola.get_scene_embeddings(noise(1, 1.0)[0], model)
    with pytest.raises(TypeError, match="torch.int16; scale integer PCM"):
        hear_diffbyola.get_timestamp_embeddings((noise(1, 1.0) * 32767).to(torch.int16), model)
    with pytest.raises(TypeError, match="torch.Tensor"):
        hear_diffbyola.get_scene_embeddings(noise(1, 1.0).numpy(), model)
    bad = noise(4, 1.0)
    bad[1, 100], bad[3, 7] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf in sound\(s\) \[1, 3\]"):
        hear_diffbyola.get_timestamp_embeddings(bad, model)
    with pytest.raises(ValueError, match="0 samples"):
        hear_diffbyola.get_scene_embeddings(torch.zeros(2, 0), model)
    with pytest.raises(TypeError, match="load_model"):
        hear_diffbyola.get_scene_embeddings(noise(1, 1.0), torch.nn.Linear(2, 2))


def test_empty_batch_gives_empty_outputs(model):
    assert hear_diffbyola.get_scene_embeddings(torch.zeros(0, 16000), model).shape == (0, D)
    emb, ts = hear_diffbyola.get_timestamp_embeddings(torch.zeros(0, 16000), model)
    assert emb.shape == (0, 0, D) and ts.shape == (0, 0) and emb.dtype == ts.dtype == torch.float32


def test_other_float_dtypes_are_converted_and_loud_audio_warns_without_clipping(model):
    wave = noise(2, 1.0, seed=3)
    ref = hear_diffbyola.get_scene_embeddings(wave, model)
    torch.testing.assert_close(hear_diffbyola.get_scene_embeddings(wave.double(), model), ref)
    loud = wave.clone()
    loud[1] *= 100.0
    with pytest.warns(UserWarning, match=r"sound\(s\) \[1\] peak at up to .* unclipped"):
        out = hear_diffbyola.get_scene_embeddings(loud, model)
    torch.testing.assert_close(out[0], ref[0])
    clipped = hear_diffbyola.get_scene_embeddings(loud.clamp(-1, 1), model)
    assert not torch.allclose(out[1], clipped[1], atol=1e-3)  # computed on the audio as given
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in-range audio (and mild overs) stay silent
        hear_diffbyola.get_timestamp_embeddings(wave / wave.abs().max() * 1.5, model)


def test_no_gradients_and_train_mode_does_not_change_embeddings(model):
    wave = noise(2, 1.0, seed=4).requires_grad_(True)
    ref = hear_diffbyola.get_scene_embeddings(wave, model)
    assert not ref.requires_grad
    emb, ts = hear_diffbyola.get_timestamp_embeddings(wave, model)
    assert not emb.requires_grad and not ts.requires_grad
    model.train()  # dropout on in fc: embeddings must still be the eval-mode ones
    try:
        torch.testing.assert_close(hear_diffbyola.get_scene_embeddings(wave, model), ref)
        assert model.training  # the caller's mode is given back
    finally:
        model.eval()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_on_cuda_moves_the_audio(tiny_weights):
    cpu = hear_diffbyola.load_model(str(tiny_weights))
    gpu = hear_diffbyola.load_model(str(tiny_weights)).to("cuda")
    wave = noise(2, 2.0)
    scene = hear_diffbyola.get_scene_embeddings(wave, gpu)
    emb, ts = hear_diffbyola.get_timestamp_embeddings(wave, gpu)
    assert scene.device.type == emb.device.type == ts.device.type == "cuda"
    torch.testing.assert_close(scene.cpu(), hear_diffbyola.get_scene_embeddings(wave, cpu), atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------------ weights


def htk_filterbank(n_fft: int, sr: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular HTK-mel filters (n_fft // 2 + 1, n_mels), written out independently of frontend.py."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10.0 ** (np.linspace(mel(fmin), mel(fmax), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)[:, None]
    up = (freqs - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    down = (edges[None, 2:] - freqs) / (edges[2:] - edges[1:-1])
    return torch.from_numpy(np.maximum(0.0, np.minimum(up, down))).float()


def byola_v1_embedding(enc: AudioNTT2020, wave: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """BYOL-A v1's own recipe: MelSpectrogram(n_fft=win=1024, hop 160, 64 mels 60-7800 Hz), log(x + eps),
    (x - mean) / std, AudioNTT2020 with mean + max pooling."""
    spec = (
        torch.stft(
            wave, 1024, 160, 1024, torch.hann_window(1024), center=True, pad_mode="reflect", return_complex=True
        ).abs()
        ** 2
    )  # (B, 513, T)
    lm = torch.log(
        torch.einsum("bft,fm->bmt", spec, htk_filterbank(1024, SR, 64, 60.0, 7800.0)) + torch.finfo(torch.float32).eps
    )
    with torch.no_grad():
        return enc.eval()(((lm - mean) / std).unsqueeze(1))


def test_official_byola_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    enc = AudioNTT2020(64, 512)
    for m in enc.modules():  # non-trivial BN statistics, as a trained checkpoint has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(enc.state_dict(), path)  # what the BYOL-A repository ships: a plain state dict
    model = hear_diffbyola.load_model(str(path))
    assert model.scene_embedding_size == model.timestamp_embedding_size == 512 and model.sample_rate == 16000
    wave = noise(2, 1.5, seed=5)
    expected = byola_v1_embedding(enc, wave, *BYOLA_V1_NORM)
    torch.testing.assert_close(hear_diffbyola.get_scene_embeddings(wave, model), expected, atol=1e-4, rtol=1e-4)
    # overridable stats (heareval: --model-options '{"norm_mean": -4, "norm_std": 4}')
    other = hear_diffbyola.load_model(str(path), norm_mean=-4.0, norm_std=4.0)
    torch.testing.assert_close(
        hear_diffbyola.get_scene_embeddings(wave, other), byola_v1_embedding(enc, wave, -4.0, 4.0), atol=1e-4, rtol=1e-4
    )


def test_bad_weight_files_name_the_file_and_what_was_expected(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match=f"{re.escape(str(missing))} does not exist.*expected a .safetensors"):
        hear_diffbyola.load_model(str(missing))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match=f"{re.escape(str(corrupt))} is not a readable safetensors file"):
        hear_diffbyola.load_model(str(corrupt))
    garbage = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match=f"{re.escape(str(garbage))} could not be read as a PyTorch state dict"):
        hear_diffbyola.load_model(str(garbage))
    wrong = tmp_path / "wrong.pth"
    state = AudioNTT2020(64, 512).state_dict()
    state["features.0.weight"] = torch.zeros(32, 1, 3, 3)  # 32 instead of 64 conv channels
    torch.save(state, wrong)
    with pytest.raises(
        WeightsError, match=rf"{re.escape(str(wrong))}: weights do not fit AudioNTT2020\(n_mels=64, d=512, hidden=512\)"
    ):
        hear_diffbyola.load_model(str(wrong))
    not_encoder = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, not_encoder)
    with pytest.raises(WeightsError, match=f"{re.escape(str(not_encoder))} is not a BYOL-A encoder state dict"):
        hear_diffbyola.load_model(str(not_encoder))
    four_blocks = tmp_path / "four.pth"
    state = AudioNTT2020(64, 512).state_dict()
    state["features.12.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(state, four_blocks)
    with pytest.raises(WeightsError, match=r"features.\[0, 4, 8, 12\] match neither AudioNTT2022"):
        hear_diffbyola.load_model(str(four_blocks))
    bad_fc = tmp_path / "bad_fc.pth"
    state = AudioNTT2022(64, 3072, 2048).state_dict()
    state["fc.3.weight"] = torch.zeros(2048, 1000)  # fc.3 must take fc.0's 2048 outputs
    torch.save(state, bad_fc)
    with pytest.raises(WeightsError, match="do not fit audiontt2022"):
        hear_diffbyola.load_model(str(bad_fc))


def slaney_filterbank(n_fft: int, sr: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """librosa's default mel filters (Slaney scale, area-normalised), written out independently of frontend.py."""

    def mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) * 27 / np.log(6.4))

    def hz(m):
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)[:, None]
    up = (freqs - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    down = (edges[None, 2:] - freqs) / (edges[2:] - edges[1:-1])
    return torch.from_numpy(np.maximum(0.0, np.minimum(up, down)) * 2 / (edges[2:] - edges[:-2])).float()


def byola_v2_embedding(enc: AudioNTT2022, wave: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """BYOL-A v2's own recipe (its README): nnAudio MelSpectrogram(n_fft=win=1024, hop 160, 64 mels 60-7800 Hz,
    centre, reflect, power 2, librosa filters), log(x + eps), (x - mean) / std, AudioNTT2022 mean + max."""
    spec = (
        torch.stft(
            wave, 1024, 160, 1024, torch.hann_window(1024), center=True, pad_mode="reflect", return_complex=True
        ).abs()
        ** 2
    )
    lm = torch.log(
        torch.einsum("bft,fm->bmt", spec, slaney_filterbank(1024, SR, 64, 60.0, 7800.0))
        + torch.finfo(torch.float32).eps
    )
    with torch.no_grad():
        return enc.eval()(((lm - mean) / std).unsqueeze(1))


@pytest.mark.parametrize("d,hidden", [(3072, 2048), (2048, 2048)])
@pytest.mark.parametrize("layout", ["plain", "state_dict", "model_prefix", "model_entry"])
def test_official_byola_v2_state_dicts_load_as_the_official_loader_loads_them(tmp_path, d, hidden, layout):
    torch.manual_seed(1)
    enc = AudioNTT2022(64, d, hidden)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    sd = enc.state_dict()
    # plain: what v2/train_v2.py saves; the others: the wrappings and prefix BYOL-A's and EVAR's loaders undo
    payload = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model_prefix": {f"model.{k}": v for k, v in sd.items()},
        "model_entry": {"model": {f"model.{k}": v for k, v in sd.items()}, "optimizer_step": 7},
    }[layout]
    path = tmp_path / "AudioNTT2022-BYOLA-64x96d2048.pth"
    torch.save(payload, path)
    model = hear_diffbyola.load_model(str(path))
    assert model.header["format"] == "byol-a-v2" and model.header["encoder"]["arch"] == "audiontt2022"
    assert (model.header["encoder"]["d"], model.header["encoder"]["hidden"]) == (d, hidden)
    assert model.scene_embedding_size == d
    fe = model.frontend.config
    assert (fe.n_fft, fe.f_min, fe.f_max, fe.mel_scale, fe.mel_norm) == (1024, 60.0, 7800.0, "slaney", "slaney")
    assert model.header["norm"] == {"mean": BYOLA_V2_NORM[0], "std": BYOLA_V2_NORM[1]}
    wave = noise(2, 1.5, seed=6)
    expected = byola_v2_embedding(enc, wave, *BYOLA_V2_NORM)
    torch.testing.assert_close(hear_diffbyola.get_scene_embeddings(wave, model), expected, atol=1e-4, rtol=1e-4)


def test_header_decides_the_architecture_and_format_1_files_are_v1(tmp_path):
    from safetensors.torch import save_file

    from hear_diffbyola.weights import HEADER_KEY

    enc = AudioNTT2020(64, 512)
    old = tmp_path / "old.safetensors"  # written by an earlier version: no encoder.arch, format 1
    header = {
        "format": "hear-diffbyola/1",
        "frontend": FrontendConfig().to_dict(),
        "norm": {"mean": -6.0, "std": 4.0},
        "encoder": {"n_mels": 64, "d": 512},
        "lam": 0.5,
        "provenance": {},
    }
    save_file(
        {k: v.contiguous() for k, v in enc.state_dict().items()}, str(old), metadata={HEADER_KEY: json.dumps(header)}
    )
    model = hear_diffbyola.load_model(str(old))
    assert type(model.encoder) is AudioNTT2020 and model.header["encoder"]["arch"] == "audiontt2020"
    # a header that says v2 over v1 tensors is an error naming both, not a guess
    lying = tmp_path / "lying.safetensors"
    save_weights(lying, enc.state_dict(), make_header(FrontendConfig(), (-6.0, 4.0), EncoderConfig(), 0.5, {}))
    with pytest.raises(WeightsError, match=r"do not fit AudioNTT2022\(n_mels=64, d=3072, hidden=2048\)"):
        hear_diffbyola.load_model(str(lying))


def test_the_shipped_default_is_the_lambda_half_file_and_loads():
    assert DEFAULT_WEIGHTS.name == "diffbyola_lam0.5.safetensors"
    assert DEFAULT_WEIGHTS.parent == REPO / "weights"  # a source checkout (or editable install)
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} not trained yet")
    model = hear_diffbyola.load_model("")
    assert model.header["lam"] == 0.5 and model.sample_rate == 16000
    assert model.scene_embedding_size == model.header["encoder"]["d"]
    assert DEFAULT_WEIGHTS.stat().st_size <= 25 * 2**20


# ---------------------------------------------------------------------------------------- packaging


def test_every_subpackage_is_listed_for_installation():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "hear_diffbyola").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert conf["package-dir"]["hear_diffbyola._weights"] == "weights"
    assert set(conf["package-data"]["hear_diffbyola._weights"]) >= {"*.safetensors", "README.md"}


@pytest.mark.slow
def test_a_built_wheel_ships_the_weights_where_default_weights_looks(built_wheel, tmp_path):
    wheel, src = built_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in list((src / "weights").glob("*.safetensors")) + [src / "weights" / "README.md"]:
        assert f"hear_diffbyola/_weights/{f.name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = subprocess.run(
        [sys.executable, "-c", "from hear_diffbyola.weights import DEFAULT_WEIGHTS as d; print(d, d.is_file())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert out.stdout.split() == [str(site / "hear_diffbyola" / "_weights" / "diffbyola_lam0.5.safetensors"), "True"]


# ------------------------------------------------------------------------------------- HEAR tasks


def test_write_hear_task_layout_labels_and_event_annotations(tmp_path):
    scene = heartask.write_hear_task(tmp_path / "s", n_per_label=2, duration=1.0, seed=3)
    meta = json.loads((scene / "task_metadata.json").read_text())
    assert meta["embedding_type"] == "scene" and meta["prediction_type"] == "multiclass"
    assert meta["splits"] == ["train", "valid", "test"] and meta["split_mode"] == "trainvaltest"
    vocab = (scene / "labelvocabulary.csv").read_text().split()
    assert vocab == ["idx,label", "0,rain", "1,traffic", "2,wind", "3,machinery", "4,stream"]
    for split in meta["splits"]:
        items = json.loads((scene / f"{split}.json").read_text())
        assert len(items) == 10 and sorted(lab for v in items.values() for lab in v) == sorted(
            ["rain", "traffic", "wind", "machinery", "stream"] * 2
        )
        for name in items:
            x, sr = sf.read(scene / "16000" / split / name)
            assert sr == 16000 and x.shape == (16000,)
    again = heartask.write_hear_task(tmp_path / "s2", n_per_label=2, duration=1.0, seed=3)
    assert (again / "16000/test/test_0003.wav").read_bytes() == (scene / "16000/test/test_0003.wav").read_bytes()

    event = heartask.write_hear_task(
        tmp_path / "e", kind="event", labels=["bell", "siren", "knock"], n_per_label=2, duration=2.0, events_per_clip=2
    )
    meta = json.loads((event / "task_metadata.json").read_text())
    assert meta["embedding_type"] == "event" and meta["prediction_type"] == "multilabel"
    items = json.loads((event / "train.json").read_text())
    assert len(items) == 3 and sorted(e["label"] for v in items.values() for e in v) == sorted(
        ["bell", "siren", "knock"] * 2
    )
    for name, events in items.items():
        x, _ = sf.read(event / "16000" / "train" / name)
        inside = np.zeros(len(x), bool)
        for e in events:
            assert 0 <= e["start"] < e["end"] <= 2000.0
            inside[int(e["start"] * 16) : int(math.ceil(e["end"] * 16))] = True
        # every event (peak >= 0.1) is louder than anything outside the annotations (scene peak 0.05)
        assert np.abs(x[inside]).max() > 1.5 * np.abs(x[~inside]).max()
    with pytest.raises(ValueError, match="labels of a event task must be distinct names from"):
        heartask.write_hear_task(tmp_path / "x", kind="event", labels=["rain"])


def test_patch_heareval_is_idempotent_and_refuses_other_versions(tmp_path, monkeypatch):
    f = tmp_path / "task_predictions.py"
    original = "a = 1\n    trainer.fit_loop.current_epoch = grid_point.epoch\nb = 2\n"
    f.write_text(original)
    monkeypatch.setattr(evaltools, "_module_file", lambda name: f)
    assert evaltools.patch_heareval() == "patched"
    patched = f.read_text()
    assert "fit_loop.epoch_progress.current.completed = grid_point.epoch" in patched
    assert patched.replace(evaltools._HEAREVAL_FIX, evaltools._HEAREVAL_BUG) == original
    assert evaltools.patch_heareval() == "already patched" and f.read_text() == patched
    f.write_text("something else\n")
    with pytest.raises(evaltools.EvalToolsError, match="another heareval version"):
        evaltools.patch_heareval()


def test_install_eval_tools_command_uses_no_deps_and_the_pinned_versions(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(
        evaltools.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0, "", "")
    )
    monkeypatch.setattr(evaltools, "patch_heareval", lambda: ran.append("patch") or "patched")
    assert main(["install-eval-tools"]) == 0
    assert ran == [
        [sys.executable, "-m", "pip", "install", "--no-deps", "heareval==2021.1.3"],
        [sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-requires-python", "hearvalidator==2021.0.6"],
        "patch",
    ]
    assert "patched for event-task scoring" in capsys.readouterr().out


# ------------------------------------------------------------------- the real tools (slow, CI)


def _require(module: str) -> None:
    missing = evaltools.missing_eval_imports() + ([module] if importlib.util.find_spec(module) is None else [])
    if missing:
        pytest.skip(f"{missing} not installed: pip install -e '.[test]' && hear-diffbyola install-eval-tools")


def _validate(weights: Path | None, cwd: Path) -> str:
    cmd = [str(Path(sys.executable).parent / "hear-validator"), "hear_diffbyola"]
    if weights is not None:
        cmd += ["--model", str(weights)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Looks good!" in out, out[-4000:]
    # The validator always warns once about rounding drift; any other warning is a finding.
    others = [line for line in out.splitlines() if "Warning:" in line and "IMPORTANT: A common bug" not in line]
    assert others == [], out[-4000:]
    for conditional in ("We suggest a interval", "appears to be wrong", "You won't have embeddings"):
        assert conditional not in out
    return out


@pytest.mark.slow
def test_hear_validator_passes_without_warnings(tiny_weights, tmp_path):
    _require("hearvalidator")
    out = _validate(tiny_weights, tmp_path)
    # v2: stamps at 15 + 40 k ms, the last one of 4 s audio at 15 + 40 * ((4000 - 15) // 40) = 3975 ms
    assert "Avg interval between timestamps is 40.0ms" in out and "Max timestamp 3975.0ms" in out
    if DEFAULT_WEIGHTS.is_file():  # the shipped default, as a user runs it
        _validate(DEFAULT_WEIGHTS, tmp_path)


@pytest.mark.slow
def test_heareval_embeds_and_scores_a_scene_and_an_event_task(tiny_weights, model, tmp_path):
    _require("heareval")
    tasks = tmp_path / "tasks"
    heartask.write_hear_task(tasks / "syn_scene", n_per_label=3, duration=1.0)
    heartask.write_hear_task(tasks / "syn_event", kind="event", n_per_label=3, duration=2.0)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "heareval.embeddings.runner",
            "hear_diffbyola",
            "--model",
            str(tiny_weights),
            "--tasks-dir",
            str(tasks),
            "--embeddings-dir",
            str(tmp_path / "emb"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    emb = tmp_path / "emb" / "hear_diffbyola"
    for split in ("train", "valid", "test"):
        # scene: one D-d row per clip (5 labels x 3)
        assert json.loads((emb / "syn_scene" / f"{split}.embedding-dimensions.json").read_text()) == [15, D]
        assert (emb / "syn_scene" / f"{split}.embeddings.npy").stat().st_size == 15 * D * 4
        # event: 4 labels x 3 events, 2 per clip -> 6 clips of 2 s, (2000 - 15) // 40 + 1 = 50 stamps each
        assert json.loads((emb / "syn_event" / f"{split}.embedding-dimensions.json").read_text()) == [300, D]
        stamps = json.loads((emb / "syn_event" / f"{split}.filename-timestamps.json").read_text())
        assert sorted({t for _, t in stamps}) == [15.0 + 40 * k for k in range(50)]
    # the stored embedding of a file is what our API returns for it
    name = sorted(json.loads((tasks / "syn_scene" / "test.json").read_text()))[0]
    x, _ = sf.read(tasks / "syn_scene" / "16000" / "test" / name, dtype="float32")
    stored = np.load(emb / "syn_scene" / "test" / f"{name}.embedding.npy")
    np.testing.assert_allclose(
        stored, hear_diffbyola.get_scene_embeddings(torch.from_numpy(x)[None], model)[0], atol=1e-5, rtol=1e-5
    )

    evaltools.patch_heareval()  # what install-eval-tools applies; idempotent
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # heareval's own Lightning checkpoints only
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "heareval.predictions.runner",
            str(emb / "syn_scene"),
            str(emb / "syn_event"),
            "--grid",
            "faster",
            "--grid-points",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    scene_scores = json.loads((emb / "syn_scene" / "test.predicted-scores.json").read_text())["test"]
    assert 0.0 <= scene_scores["test_top1_acc"] <= 1.0
    event_scores = json.loads((emb / "syn_event" / "test.predicted-scores.json").read_text())["test"]
    assert 0.0 <= event_scores["test_segment_1s_er"] and "test_event_onset_200ms_fms" in event_scores


def test_a_half_precision_model_gets_a_clear_error(tiny_weights):
    half = hear_diffbyola.load_model(str(tiny_weights)).half()
    for fn in (hear_diffbyola.get_scene_embeddings, hear_diffbyola.get_timestamp_embeddings):
        with pytest.raises(TypeError, match=r"weights are torch.float16; .* call model.float\(\) first"):
            fn(noise(1, 1.0), half)
