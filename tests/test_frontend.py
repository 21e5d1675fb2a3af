import math

import pytest
import torch

from hear_diffbyola.frontend import (
    Frontend,
    FrontendConfig,
    LogMelSpectrogram,
    Normalizer,
    mel_filterbank,
    running_stats,
)


def htk_mel(f):
    return 2595 * math.log10(1 + f / 700)


def htk_hz(m):
    return 700 * (10 ** (m / 2595) - 1)


def test_filterbank_matches_hand_computed_triangle():
    sr, n_fft, n_mels, fmin, fmax = 16000, 400, 64, 50.0, 8000.0
    fb = mel_filterbank(n_fft // 2 + 1, fmin, fmax, n_mels, sr)
    assert fb.shape == (201, 64)
    step = (htk_mel(fmax) - htk_mel(fmin)) / (n_mels + 1)
    edges = [htk_hz(htk_mel(fmin) + i * step) for i in range(n_mels + 2)]
    # bin 25 = 1000 Hz; find the two filters it falls in and compute their values by hand
    f = 25 * sr / n_fft
    k = max(i for i in range(n_mels) if edges[i + 1] <= f)  # filter whose centre is just below f
    rising_next = (f - edges[k + 1]) / (edges[k + 2] - edges[k + 1])
    falling_this = (edges[k + 2] - f) / (edges[k + 2] - edges[k + 1])
    assert fb[25, k].item() == pytest.approx(falling_this, abs=1e-5)
    assert fb[25, k + 1].item() == pytest.approx(rising_next, abs=1e-5)
    assert fb[25].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_filters_sum_to_one_between_first_and_last_centre():
    sr = 16000
    fb = mel_filterbank(513, 60.0, 7800.0, 64, sr)
    freqs = torch.linspace(0, sr / 2, 513)
    lo, hi = (
        htk_hz(htk_mel(60) + (htk_mel(7800) - htk_mel(60)) / 65),
        htk_hz(htk_mel(60) + 64 * (htk_mel(7800) - htk_mel(60)) / 65),
    )
    inside = (freqs > lo) & (freqs < hi)
    torch.testing.assert_close(fb[inside].sum(1), torch.ones(int(inside.sum())), atol=1e-5, rtol=0)
    assert fb[freqs < 60].abs().max() == 0 and fb[freqs > 7800].abs().max() == 0


@pytest.mark.parametrize("n,expected", [(15200, 96), (16000, 101), (1, 1), (159, 1), (160, 2)])
def test_frame_count_is_centred_stft(n, expected):
    cfg = FrontendConfig()
    assert cfg.n_frames(n) == expected
    if n > cfg.n_fft // 2:  # reflect padding needs more samples than half a window
        assert LogMelSpectrogram(cfg)(torch.zeros(2, n)).shape == (2, 64, expected)


def test_pure_tone_lands_in_the_right_mel_band():
    cfg = FrontendConfig()
    t = torch.arange(16000) / 16000
    for hz in (300.0, 1000.0, 4000.0):
        lm = LogMelSpectrogram(cfg)(torch.sin(2 * math.pi * hz * t))[0]
        step = (htk_mel(cfg.f_max) - htk_mel(cfg.f_min)) / (cfg.n_mels + 1)
        centres = [htk_hz(htk_mel(cfg.f_min) + (i + 1) * step) for i in range(cfg.n_mels)]
        nearest = min(range(cfg.n_mels), key=lambda i: abs(centres[i] - hz))
        assert abs(int(lm.mean(1).argmax()) - nearest) <= 1


def test_log_of_silence_is_log_eps_and_batch_consistent():
    cfg = FrontendConfig()
    lm = LogMelSpectrogram(cfg)
    assert torch.allclose(lm(torch.zeros(1, 4000)), torch.full((1, 64, 26), math.log(cfg.eps)))
    x = torch.randn(3, 8000) * 0.1
    torch.testing.assert_close(lm(x)[1], lm(x[1])[0])


def test_normaliser_and_frontend_shape():
    fe = Frontend(FrontendConfig(), mean=-3.0, std=2.0)
    x = torch.randn(2, 16000) * 0.1
    expected = (LogMelSpectrogram(FrontendConfig())(x) + 3.0) / 2.0
    torch.testing.assert_close(fe(x), expected.unsqueeze(1))
    with pytest.raises(ValueError, match="std > 0"):
        Normalizer(0.0, 0.0)


def test_running_stats_equal_direct_computation():
    xs = [torch.randn(4, 64, 10) * 3 + 1, torch.randn(2, 64, 10)]
    allv = torch.cat([x.flatten() for x in xs]).double()
    m, s = running_stats(xs)
    assert m == pytest.approx(allv.mean().item(), rel=1e-9)
    assert s == pytest.approx(allv.std(unbiased=False).item(), rel=1e-6)


def test_config_validation_and_byola_v1():
    with pytest.raises(ValueError, match="f_max"):
        FrontendConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="unknown frontend keys"):
        FrontendConfig.from_dict({"hop": 1})
    v1 = FrontendConfig.byola_v1()
    assert (v1.n_fft, v1.win_length, v1.hop_length, v1.f_min, v1.f_max) == (1024, 1024, 160, 60.0, 7800.0)
    assert FrontendConfig.from_dict(v1.to_dict()) == v1


# ---------------------------------------------------------------- Slaney mels (BYOL-A v2 / nnAudio / librosa)


def slaney_mel(f):
    # Slaney's Auditory Toolbox scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4
    return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) * 27 / math.log(6.4)


def slaney_hz(m):
    return m * 200 / 3 if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)


def test_slaney_scale_by_hand():
    from hear_diffbyola.frontend import hz_to_mel, mel_to_hz

    for f in (0.0, 500.0, 999.0, 1000.0, 2000.0, 6400.0, 7800.0):
        assert float(hz_to_mel(f, "slaney")) == pytest.approx(slaney_mel(f), rel=1e-9, abs=1e-9)
        assert float(mel_to_hz(hz_to_mel(f, "slaney"), "slaney")) == pytest.approx(f, rel=1e-9, abs=1e-9)
    assert float(hz_to_mel(6400.0, "slaney")) == pytest.approx(42.0)  # 15 + 27: one factor 6.4 above 1 kHz


def test_slaney_normalised_filters_by_hand():
    sr, n_fft, n_mels, fmin, fmax = 16000, 1024, 64, 60.0, 7800.0
    fb = mel_filterbank(n_fft // 2 + 1, fmin, fmax, n_mels, sr, scale="slaney", norm="slaney")
    lo, hi = slaney_mel(fmin), slaney_mel(fmax)
    edges = [slaney_hz(lo + i * (hi - lo) / (n_mels + 1)) for i in range(n_mels + 2)]
    freqs = [b * sr / n_fft for b in range(n_fft // 2 + 1)]
    for k in (0, 10, 40, 63):
        for b in range(0, n_fft // 2 + 1, 7):
            f = freqs[b]
            tri = max(
                0.0, min((f - edges[k]) / (edges[k + 1] - edges[k]), (edges[k + 2] - f) / (edges[k + 2] - edges[k + 1]))
            )
            assert fb[b, k].item() == pytest.approx(tri * 2 / (edges[k + 2] - edges[k]), rel=1e-5, abs=1e-9)


def test_v2_preset_logmel_equals_a_numpy_reference():
    # What nnAudio's MelSpectrogram(center=True, reflect, periodic Hann, power 2) with librosa's Slaney filters
    # computes, written with numpy's FFT; then log(x + eps) as BYOL-A v2.
    import numpy as np

    cfg = FrontendConfig.byola_v2()
    assert (cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm) == (
        1024,
        1024,
        160,
        60.0,
        7800.0,
        "slaney",
        "slaney",
    )
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(4000) + 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 16000)).astype(np.float64)
    padded = np.pad(x, 512, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    n_frames = 1 + len(x) // 160
    frames = np.stack([padded[i * 160 : i * 160 + 1024] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, 513)
    lo, hi = slaney_mel(60.0), slaney_mel(7800.0)
    edges = np.array([slaney_hz(lo + i * (hi - lo) / 65) for i in range(66)])
    f = np.arange(513) * 16000 / 1024
    tri = np.maximum(
        0,
        np.minimum(
            (f[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2]),
            (edges[2:] - f[:, None]) / (edges[2:] - edges[1:-1]),
        ),
    )
    fb = tri * (2 / (edges[2:] - edges[:-2]))
    expected = np.log(power @ fb + np.finfo(np.float32).eps).T  # (64, T)
    got = LogMelSpectrogram(cfg)(torch.from_numpy(x).float())[0].double().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_v2_preset_matches_librosa_when_installed():
    librosa = pytest.importorskip("librosa")
    import numpy as np

    x = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(
        y=x,
        sr=16000,
        n_fft=1024,
        win_length=1024,
        hop_length=160,
        n_mels=64,
        fmin=60,
        fmax=7800,
        htk=False,
        norm="slaney",
        pad_mode="reflect",
        power=2.0,
    )
    got = LogMelSpectrogram(FrontendConfig.byola_v2())(torch.from_numpy(x))[0].double().numpy()
    np.testing.assert_allclose(got, np.log(ref + np.finfo(np.float32).eps), atol=1e-4)


def test_front_end_rejects_unknown_mel_options():
    with pytest.raises(ValueError, match="mel_scale"):
        FrontendConfig(mel_scale="bark")
    with pytest.raises(ValueError, match="mel_norm"):
        FrontendConfig(mel_norm="peak")
