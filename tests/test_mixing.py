import math

import numpy as np
import pytest

from hear_diffbyola.tasks.mixing import (
    crop,
    draw_reference_crops,
    event_loudness,
    gain_to,
    integrated_loudness,
    k_weighting_sos,
    mix_at_snr,
    overlap_samples,
    peak_scale,
)


def pyln():
    """pyloudnorm (the `test` extra) for the cross-checks; only the tests that use it skip without it."""
    return pytest.importorskip("pyloudnorm")


def sine(freq, seconds, sr, amp=1.0):
    t = np.arange(int(round(seconds * sr))) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def gated_noise(rng, n, sr):
    """Noise with loud, quiet and silent stretches, so both gates remove blocks."""
    x = rng.standard_normal(n) * 0.2
    x[n // 4 : n // 2] *= 1e-3  # ~ -60 dB: under the relative gate
    x[n // 2 : n // 2 + sr] = 0  # digital silence: under the absolute gate
    return x


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_integrated_loudness_equals_pyloudnorm(sr):
    rng = np.random.default_rng(sr)
    lengths = [int(0.4 * sr), int(0.4 * sr) + 1, sr + 123, 5 * sr, 7 * sr + 999]
    for n in lengths:
        for x in (rng.standard_normal(n) * rng.uniform(0.01, 0.5), gated_noise(rng, n, sr)):
            ours = integrated_loudness(x, sr)
            ref = pyln().Meter(sr).integrated_loudness(x)
            assert ours == pytest.approx(ref, abs=1e-6), (sr, n)


def test_full_scale_997_hz_sine_reads_minus_3_01_lkfs():
    # ITU-R BS.1770: a 0 dB FS sine near 1 kHz in one channel reads -3.01 LKFS. pyloudnorm's cookbook
    # K-filter (which ours follows) is ~0.04 dB off the standard's 48 kHz table at 1 kHz, and designing it
    # at 16 kHz warps the shelf a little more.
    assert integrated_loudness(sine(997.0, 5.0, 48000), 48000) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(sine(997.0, 5.0, 16000), 16000) == pytest.approx(-3.01, abs=0.1)


def test_k_weighting_gain_at_dc_high_and_mid_frequencies():
    from scipy.signal import sosfreqz

    w, h = sosfreqz(k_weighting_sos(48000), worN=[20.0, 997.0, 10000.0], fs=48000)
    db = 20 * np.log10(np.abs(h))
    assert db[0] < -1.0  # the 38 Hz high pass bites at 20 Hz
    assert abs(db[1]) < 0.7  # ~0 dB around 1 kHz
    assert db[2] == pytest.approx(4.0, abs=0.3)  # the +4 dB shelf


def test_silence_is_minus_inf_and_event_loudness_floors_it():
    assert integrated_loudness(np.zeros(16000), 16000) == -math.inf
    assert event_loudness(np.zeros(16000), 16000) == -70.0
    assert event_loudness(np.zeros(100), 16000) == -70.0


def test_loudness_moves_by_the_gain_in_db():
    rng = np.random.default_rng(0)
    x = gated_noise(rng, 3 * 16000, 16000)
    for g in (0.1, 0.5, 3.0):
        assert integrated_loudness(g * x, 16000) == pytest.approx(
            integrated_loudness(x, 16000) + 20 * math.log10(g), abs=1e-9
        )
    assert gain_to(-30.0, -12.0) == pytest.approx(10 ** (18 / 20))


def test_short_clips_are_tiled_as_scaper_does():
    # a 0.3 s stationary sine: tiling to >= 0.5 s measures it like a long sine of the same amplitude
    short = sine(997.0, 0.3, 16000, amp=0.5)
    with pytest.raises(ValueError, match="shorter than one"):
        integrated_loudness(short[:1000], 16000)
    assert event_loudness(short, 16000) == pytest.approx(-3.01 - 20 * math.log10(2), abs=0.1)
    long = np.tile(short, 2)  # ceil(0.5 / 0.3) = 2 copies
    assert event_loudness(short, 16000) == pytest.approx(pyln().Meter(16000).integrated_loudness(long), abs=1e-6)


def test_mix_at_snr_measured_back_with_pyloudnorm():
    rng = np.random.default_rng(1)
    sr = 16000
    meter = pyln().Meter(sr)
    for snr in (-5.0, 0.0, 1.7, 3.0, 12.0):
        fg = gated_noise(rng, 5 * sr, sr) * rng.uniform(0.05, 1.0)
        bg = rng.standard_normal(5 * sr) * rng.uniform(0.01, 0.3)
        m = mix_at_snr(fg, bg, snr, sr, ref_lufs=-30.0, peak_limit=None)
        np.testing.assert_allclose(m.mixture, m.foreground + m.background, atol=1e-6)
        assert meter.integrated_loudness(m.foreground.astype(np.float64)) - meter.integrated_loudness(
            m.background.astype(np.float64)
        ) == pytest.approx(snr, abs=1e-3)
        assert meter.integrated_loudness(m.background.astype(np.float64)) == pytest.approx(-30.0, abs=1e-3)
        assert m.peak_scale == 1.0


def test_peak_guard_keeps_snr_and_scales_companions_with_the_background():
    rng = np.random.default_rng(2)
    sr = 16000
    fg, bg, other = (rng.standard_normal(5 * sr) for _ in range(3))
    other[:100] = 0.9  # companions count toward the peak too
    m = mix_at_snr(fg, bg, 2.0, sr, ref_lufs=-3.0, peak_limit=0.9, companions=(other,))
    assert m.peak_scale < 1.0
    assert max(np.abs(m.mixture).max(), np.abs(m.background).max(), np.abs(m.companions[0]).max()) <= 0.9 + 1e-6
    meter = pyln().Meter(sr)
    snr = meter.integrated_loudness(m.foreground.astype(np.float64)) - meter.integrated_loudness(
        m.background.astype(np.float64)
    )
    assert snr == pytest.approx(2.0, abs=1e-3)
    np.testing.assert_allclose(m.background, bg * m.bg_gain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.companions[0], other * m.bg_gain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.foreground, fg * m.fg_gain, rtol=1e-5, atol=1e-7)


def test_mix_at_snr_rejects_silence_and_length_mismatch():
    x = np.random.default_rng(0).standard_normal(16000)
    with pytest.raises(ValueError, match="foreground is silent"):
        mix_at_snr(np.zeros(16000), x, 0.0, 16000)
    with pytest.raises(ValueError, match="background is silent"):
        mix_at_snr(x, np.zeros(16000), 0.0, 16000)
    with pytest.raises(ValueError, match="crop them to one length"):
        mix_at_snr(x, x[:8000], 0.0, 16000)


def test_peak_scale():
    assert peak_scale([np.array([0.5, -0.2])], 0.99) == 1.0
    assert peak_scale([np.array([0.5]), np.array([-1.98])], 0.99) == pytest.approx(0.5)
    assert peak_scale([np.array([5.0])], None) == 1.0


def test_reference_crops_overlap_exactly_half_and_zero():
    rng = np.random.default_rng(3)
    length = 80
    for _ in range(3000):
        total = int(rng.integers(2 * length, 5 * length))
        a, b, c = draw_reference_crops(rng, total, length)
        for s in (a, b, c):
            assert 0 <= s <= total - length
        assert overlap_samples(a, b, length) == length // 2
        assert overlap_samples(a, c, length) == 0
    # at 3 lengths every start of (a) leaves room for (b) and (c): both extremes get drawn
    seen_a = {draw_reference_crops(rng, 3 * length, length)[0] for _ in range(2000)}
    assert min(seen_a) == 0 and max(seen_a) == 2 * length


def test_reference_crops_in_a_recording_of_exactly_two_lengths():
    # only a = 0 (b = L/2, c = L) and a = L (b = L/2, c = 0) are possible
    rng = np.random.default_rng(4)
    draws = {draw_reference_crops(rng, 200, 100) for _ in range(200)}
    assert draws == {(0, 50, 100), (100, 50, 0)}


def test_reference_crops_reject_impossible_requests():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="too short"):
        draw_reference_crops(rng, 199, 100)
    with pytest.raises(ValueError, match="even"):
        draw_reference_crops(rng, 1000, 101)


def test_crop():
    x = np.arange(10)
    np.testing.assert_array_equal(crop(x, 3, 4), [3, 4, 5, 6])
    with pytest.raises(ValueError, match=r"crop \[8, 12\) does not fit in 10 samples"):
        crop(x, 8, 4)
