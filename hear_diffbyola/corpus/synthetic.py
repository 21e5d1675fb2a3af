"""The embedded corpus: procedural, seeded audio so pretraining and the synthetic tasks need no files.

Two families of labelled sounds are synthesised at any sample rate:

* EVENTS (foregrounds, like ESC-50 classes) placed at a random onset over a -60 dB floor;
* SCENES (backgrounds, like rain or traffic) that fill the whole duration.

Every parameter (pitch, rates, bandwidths, envelopes, partial counts...) is drawn per render, so classes
vary a lot internally while keeping a class-specific spectro-temporal signature a log-mel model can learn.
All content stays below 0.45 * sample_rate (tonal content below 0.40 * sample_rate), so nothing aliases
at low rates. Everything is vectorised numpy: a 2 s clip at 16 kHz renders in a few milliseconds.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Callable

import numpy as np
from scipy import fft as sfft

__all__ = ["EVENT_CLASSES", "SCENE_CLASSES", "MIN_SAMPLE_RATE", "render_event", "render_scene", "EmbeddedCorpus"]

MIN_SAMPLE_RATE = 4000
_BAND_EDGE = 0.45  # hard ceiling of all content, as a fraction of the sample rate
_TONAL_EDGE = 0.40  # partials are faded out before this, so tonal classes never touch the ceiling
_FLOOR_DB = -60.0  # noise floor of event clips, relative to the event peak
_PEAK_RANGE = (0.1, 0.9)  # random output peak: loudness must not be a class cue
_SNR_RANGE_DB = (-5.0, 15.0)
_LONE_SCENE_SHARE = 0.6  # share of non-mixed items that are scenes: 0.3 of all items at mix_probability=0.5
_TWO_PI = 2.0 * math.pi

Array = np.ndarray
_Synth = Callable[[np.random.Generator, int, int], Array]


# ----------------------------------------------------------------------------------------------------------
# validation


def _check_sample_rate(sample_rate: object) -> int:
    ok = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool)
    if not ok and isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
        ok = True
    if not ok or int(sample_rate) < MIN_SAMPLE_RATE:  # type: ignore[call-overload]
        raise ValueError(f"sample_rate must be an integer >= {MIN_SAMPLE_RATE} Hz, got {sample_rate!r}")
    return int(sample_rate)  # type: ignore[call-overload]


def _check_duration(duration: object, sample_rate: int) -> int:
    """Validate duration (seconds) and return the clip length in samples."""
    if isinstance(duration, bool) or not isinstance(duration, numbers.Real):
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    d = float(duration)
    if not math.isfinite(d) or d <= 0.0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    n = int(round(d * sample_rate))
    if n < 1:
        raise ValueError(f"duration={duration!r} s is shorter than one sample at sample_rate={sample_rate}")
    return n


def _check_label(label: object, table: dict[str, _Synth], kind: str) -> _Synth:
    synth = table.get(label) if isinstance(label, str) else None
    if synth is None:
        raise ValueError(f"unknown {kind} label {label!r}; valid labels: {', '.join(table)}")
    return synth


# ----------------------------------------------------------------------------------------------------------
# shared DSP helpers (float32 where the arrays are long: transcendental calls and FFTs are ~3x faster)


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size: int | None = None) -> Array | float:
    v = np.exp(rng.uniform(math.log(lo), math.log(hi), size))
    return v if size is not None else float(v)


def _pick_freq(rng: np.random.Generator, lo: float, hi: float, sr: int, ceiling: float) -> float:
    """Log-uniform in [lo, hi], squeezed under ceiling*sr so a class keeps its shape at low sample rates."""
    top = min(hi, ceiling * sr)
    return float(_loguniform(rng, min(lo, 0.5 * top), top))


def _partial_gain(freqs: Array | float, sr: int) -> Array:
    """Gain of a partial given its highest frequency: 1 below 0.35*sr, 0 from 0.40*sr (no aliasing)."""
    f = np.asarray(freqs, dtype=np.float64)
    return np.clip((_TONAL_EDGE * sr - f) / (0.05 * sr), 0.0, 1.0)


@functools.lru_cache(maxsize=64)
def _freq_axis(nfft: int, sr: int) -> Array:
    f = sfft.rfftfreq(nfft, 1.0 / sr).astype(np.float32)
    f.flags.writeable = False
    return f


@functools.lru_cache(maxsize=64)
def _edge_mask(nfft: int, sr: int) -> Array:
    """Cosine roll-off from 0.40*sr to 0.45*sr: the hard band limit of every output."""
    x = np.clip((_freq_axis(nfft, sr) - _TONAL_EDGE * sr) / ((_BAND_EDGE - _TONAL_EDGE) * sr), 0.0, 1.0)
    m = (0.5 + 0.5 * np.cos(np.pi * x)).astype(np.float32)
    m.flags.writeable = False
    return m


def _bandlimit(x: Array, sr: int) -> Array:
    n = x.shape[-1]
    nfft = sfft.next_fast_len(n, real=True)
    spec = sfft.rfft(x.astype(np.float32, copy=False), nfft)
    spec *= _edge_mask(nfft, sr)
    return sfft.irfft(spec, nfft)[..., :n]


def _shaped_noise(
    rng: np.random.Generator, n: int, sr: int, gain: Callable[[Array], Array], shared: bool = True
) -> Array:
    """Noise with magnitude response gain(freqs) ((bins,) or (layers, bins)), unit RMS per layer.

    Random-phase spectra are far cheaper than time-domain noise + FFT filtering; shared=True drives all
    layers from one source, so crossfading them acts like one time-varying filter.
    """
    nfft = sfft.next_fast_len(n, real=True)
    g = (np.asarray(gain(_freq_axis(nfft, sr)), dtype=np.float32) * _edge_mask(nfft, sr)).astype(np.float32)
    g[..., 0] = 0.0
    phase = rng.random(g.shape[-1] if shared else g.shape, dtype=np.float32) * np.float32(_TWO_PI)
    spec = np.empty(g.shape, np.complex64)
    spec.real = g * np.cos(phase)
    spec.imag = g * np.sin(phase)
    x = sfft.irfft(spec, nfft, axis=-1)[..., :n]
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True))
    return x / np.maximum(rms, np.float32(1e-12))


def _log_gauss(f: Array, centre: Array | float, width_oct: Array | float) -> Array:
    """Band-pass shape: a Gaussian in log-frequency (width = standard deviation in octaves)."""
    return np.exp(-0.5 * (np.log2(np.maximum(f, np.float32(1.0)) / centre) / width_oct) ** 2)


def _time(n: int, sr: int) -> Array:
    return np.arange(n, dtype=np.float32) * np.float32(1.0 / sr)


def _phase(freq_hz: Array, sr: int) -> Array:
    """Oscillator phase (float32 radians) of a frequency track; integrated in float64 and wrapped for precision."""
    cycles = np.cumsum(freq_hz, dtype=np.float64)
    cycles *= 1.0 / sr
    return _wrap(cycles)


def _const_phase(freq_hz: float, n: int, sr: int) -> Array:
    return _wrap(np.arange(n, dtype=np.float64) * (freq_hz / sr))


def _wrap(cycles: Array) -> Array:
    np.subtract(cycles, np.floor(cycles), out=cycles)
    return (cycles * _TWO_PI).astype(np.float32)


def _smooth_random(rng: np.random.Generator, n: int, sr: int, rate_hz: float, layers: int | None = None) -> Array:
    """Random curve(s) in [0, 1] with a knot every 1/rate_hz s, cosine-interpolated: slow modulations.

    Evaluated every 32 samples and linearly upsampled: the curves are far slower than that (rate <= 20 Hz).
    """
    hop = 32
    m = n // hop + 2
    step = rate_hz * hop / sr
    n_knots = int(math.ceil(m * step)) + 2
    knots = rng.random(n_knots if layers is None else (layers, n_knots), dtype=np.float32)
    pos = np.arange(m) * step + rng.random()
    i = pos.astype(np.int64)
    w = (0.5 - 0.5 * np.cos(np.pi * (pos - i))).astype(np.float32)
    coarse = knots[..., i] * (1.0 - w) + knots[..., i + 1] * w
    ramp = np.arange(hop, dtype=np.float32) * np.float32(1.0 / hop)
    fine = coarse[..., :-1, None] + (coarse[..., 1:] - coarse[..., :-1])[..., None] * ramp
    return fine.reshape(*coarse.shape[:-1], -1)[..., :n]


def _harmonic_sum(phase: Array, amps: Array) -> Array:
    """sum_h amps[h-1] * sin(h * phase) by the Chebyshev recurrence: two transcendental calls in total."""
    s = np.sin(phase)
    c2 = 2.0 * np.cos(phase)
    out = float(amps[0]) * s
    prev, cur = np.zeros_like(s), s
    for a in amps[1:]:
        prev, cur = cur, c2 * cur - prev
        if a != 0.0:
            out += float(a) * cur
    return out


def _adsr(n: int, attack: float, release: float, sustain: float = 1.0) -> Array:
    """Attack / linear decay to `sustain` / release envelope; attack and release are fractions of n."""
    u = np.arange(n, dtype=np.float32) * np.float32(1.0 / max(n - 1, 1))
    env = np.minimum(u / attack, 1.0 + (sustain - 1.0) * (u - attack) / (1.0 - release - attack))
    np.minimum(env, sustain * (1.0 - u) / release, out=env)
    return np.maximum(env, 0.0, out=env)


def _overlap_add(n: int, starts: Array, grains: Array) -> Array:
    """Sum grains (m, g) into a length-n signal at integer starts (batched, no Python loop over samples)."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(grains.shape[1])
    keep = (idx >= 0) & (idx < n)
    return np.bincount(idx[keep], weights=grains[keep], minlength=n)[:n].astype(np.float32)


def _damped_sines(sr: int, length: int, freqs: Array, taus: Array, amps: Array, attack_s: float = 0.0005) -> Array:
    """Grains (m, length) of exponentially decaying sinusoids (struck resonances) with a short soft attack."""
    t = _time(length, sr)
    col = lambda v: np.asarray(v, dtype=np.float32)[:, None]  # noqa: E731
    env = np.exp(-t / col(taus)) * np.minimum(t / np.float32(attack_s), 1.0)
    return col(amps) * env * np.sin(np.float32(_TWO_PI) * col(freqs) * t)


def _spread_starts(offsets_s: Array, span_s: float, room_s: float) -> Array:
    """Scale increasing onsets (s) so that the last one plus room_s fits inside span_s."""
    last = float(offsets_s[-1])
    free = max(span_s - room_s, 0.0)
    if last > free and last > 0.0:
        offsets_s = offsets_s * (free / last)
    return offsets_s


# ----------------------------------------------------------------------------------------------------------
# events: each synth gets (rng, sample_rate, n_samples of the event itself) and returns float32 (n,)


def _ev_harmonic_vibrato(rng: np.random.Generator, sr: int, n: int) -> Array:
    t = _time(n, sr)
    f0 = _pick_freq(rng, 110.0, 800.0, sr, 0.08)
    n_h = int(rng.integers(3, 13))
    h = np.arange(1, n_h + 1)
    amps = h ** -rng.uniform(0.4, 2.0) * rng.uniform(0.4, 1.4, n_h)
    rate, depth, drift = rng.uniform(4.0, 8.0), rng.uniform(0.008, 0.04), rng.uniform(-0.08, 0.08)
    f = (
        f0
        * (1.0 + drift * t / max(float(t[-1]), 1e-9))
        * (1.0 + depth * np.sin(np.float32(_TWO_PI * rate) * t + np.float32(rng.uniform(0, _TWO_PI))))
    )
    amps = amps * _partial_gain(h * f0 * (1.0 + abs(drift)) * (1.0 + depth), sr)
    x = _harmonic_sum(_phase(f, sr), amps)
    return x * _adsr(n, rng.uniform(0.03, 0.25), rng.uniform(0.1, 0.4), rng.uniform(0.5, 1.0))


def _chirp(rng: np.random.Generator, sr: int, n: int, up: bool) -> Array:
    # up and down share every distribution; only the sweep direction differs (a deliberately confusable pair)
    f_lo = _pick_freq(rng, 150.0, 1500.0, sr, 0.1)
    ratio = rng.uniform(2.0, 6.0)
    f_hi = f_lo * ratio
    if f_hi > 0.34 * sr:
        f_hi = 0.34 * sr
        f_lo = f_hi / ratio
    progress = (np.arange(n, dtype=np.float32) * np.float32(1.0 / max(n - 1, 1))) ** np.float32(rng.uniform(0.6, 1.7))
    if not up:
        progress = progress[::-1]
    f = f_lo * np.exp(np.float32(math.log(ratio)) * progress)
    n_h = int(rng.integers(1, 5))
    h = np.arange(1, n_h + 1)
    amps = h ** -rng.uniform(1.0, 2.5) * _partial_gain(h * f_hi, sr)
    x = _harmonic_sum(_phase(f, sr), amps)
    return x * _adsr(n, rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.3), rng.uniform(0.6, 1.0))


def _ev_chirp_up(rng: np.random.Generator, sr: int, n: int) -> Array:
    return _chirp(rng, sr, n, up=True)


def _ev_chirp_down(rng: np.random.Generator, sr: int, n: int) -> Array:
    return _chirp(rng, sr, n, up=False)


def _ev_noise_burst(rng: np.random.Generator, sr: int, n: int) -> Array:
    fc = _pick_freq(rng, 300.0, 5000.0, sr, 0.25)
    width = 0.5 * rng.uniform(0.3, 2.5)
    x = _shaped_noise(rng, n, sr, lambda f: _log_gauss(f, fc, width))
    t = _time(n, sr)
    attack = np.float32(rng.uniform(0.001, 0.02))
    tau = np.float32(rng.uniform(0.15, 1.0) * n / sr)
    return x * np.minimum(t / attack, 1.0) * np.exp(-np.maximum(t - attack, 0.0) / tau)


def _ev_click_train(rng: np.random.Generator, sr: int, n: int) -> Array:
    span = n / sr
    rate = float(_loguniform(rng, 4.0, 40.0))
    count = max(1, int(span * rate))
    jitter, accel = rng.uniform(0.0, 0.2), rng.uniform(-0.4, 0.4)
    periods = (1.0 + accel * np.linspace(-0.5, 0.5, count)) * (1.0 + jitter * rng.uniform(-1, 1, count)) / rate
    starts = np.concatenate([[0.0], np.cumsum(periods[:-1])])
    fc = _pick_freq(rng, 1000.0, 6000.0, sr, 0.3)
    tau = float(_loguniform(rng, 0.0004, 0.003))
    taus = tau * rng.uniform(0.7, 1.3, count)
    length = min(n, int(6.0 * tau * 1.3 * sr) + 2)
    grains = _damped_sines(
        sr, length, fc * rng.uniform(0.85, 1.15, count), taus, rng.uniform(0.5, 1.0, count), attack_s=0.0002
    )
    keep = starts < span
    return _overlap_add(n, np.round(starts[keep] * sr), grains[keep])


def _ev_am_tone(rng: np.random.Generator, sr: int, n: int) -> Array:
    t = _time(n, sr)
    fc = _pick_freq(rng, 250.0, 3000.0, sr, 0.25)
    n_h = int(rng.integers(1, 4))
    amps = np.array([1.0, rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.3)])[:n_h]
    amps = amps * _partial_gain(np.arange(1, n_h + 1) * fc, sr)
    rate, depth, sharp = float(_loguniform(rng, 3.0, 25.0)), rng.uniform(0.5, 1.0), float(_loguniform(rng, 0.3, 8.0))
    m = np.tanh(np.float32(sharp) * np.sin(np.float32(_TWO_PI * rate) * t + np.float32(rng.uniform(0, _TWO_PI))))
    m *= np.float32(1.0 / math.tanh(sharp))
    x = _harmonic_sum(_const_phase(fc, n, sr), amps) * (1.0 - 0.5 * depth * (1.0 - m))
    return x * _adsr(n, rng.uniform(0.02, 0.15), rng.uniform(0.02, 0.15))


def _ev_fm_texture(rng: np.random.Generator, sr: int, n: int) -> Array:
    t = _time(n, sr)
    fc = _pick_freq(rng, 200.0, 2000.0, sr, 0.15)
    fm = fc * rng.uniform(0.3, 3.5)  # non-integer ratios give inharmonic, metallic sidebands
    i0 = rng.uniform(1.0, 8.0)
    top = fc + (i0 + 2.0) * fm  # Carson's rule: keep the sidebands under the tonal edge
    if top > 0.33 * sr:
        fc, fm = fc * 0.33 * sr / top, fm * 0.33 * sr / top
    if rng.random() < 0.5:
        index = np.float32(i0) * np.exp(-t / np.float32(rng.uniform(0.15, 1.0) * n / sr))
    else:
        index = np.float32(i0) * np.linspace(rng.uniform(0.1, 0.5), 1.0, n, dtype=np.float32)
    x = np.sin(_const_phase(fc, n, sr) + index * np.sin(_const_phase(fm, n, sr) + np.float32(rng.uniform(0, _TWO_PI))))
    return x * _adsr(n, rng.uniform(0.01, 0.2), rng.uniform(0.05, 0.3), rng.uniform(0.5, 1.0))


# mode-frequency ratios: a church bell (hum, prime, tierce, quint, nominal...) and a free bar (glockenspiel)
_BELL_RATIOS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.1])
_BAR_RATIOS = np.array([1.0, 2.756, 5.404, 8.933, 13.34])


def _ev_bell(rng: np.random.Generator, sr: int, n: int) -> Array:
    t = _time(n, sr)
    if rng.random() < 0.65:
        base = _BELL_RATIOS[: int(rng.integers(4, len(_BELL_RATIOS) + 1))]
        f0 = _pick_freq(rng, 250.0, 1500.0, sr, 0.08)
    else:
        base = _BAR_RATIOS[: int(rng.integers(2, len(_BAR_RATIOS) + 1))]
        f0 = _pick_freq(rng, 400.0, 1800.0, sr, 0.12)
    k = len(base)
    freqs = f0 * base * rng.uniform(0.97, 1.03, k)
    amps = rng.uniform(0.2, 1.0, k) * _partial_gain(freqs, sr)
    taus = rng.uniform(0.2, 0.7) * (n / sr) * (base / base[0]) ** -rng.uniform(0.3, 1.0)
    live = amps > 0.0
    freqs, amps, taus = freqs[live], amps[live], taus[live]
    phases = np.arange(n, dtype=np.float64)[None, :] * (freqs[:, None] / sr) + rng.uniform(0, 1, len(freqs))[:, None]
    grains = np.sin(_wrap(phases)) * np.exp(-t / taus[:, None].astype(np.float32))
    strike = np.minimum(t / np.float32(rng.uniform(0.001, 0.003)), 1.0)
    return (amps.astype(np.float32) @ grains) * strike


def _ev_dripping(rng: np.random.Generator, sr: int, n: int) -> Array:
    span = n / sr
    count = int(rng.integers(2, 9))
    glide, tau = rng.uniform(0.01, 0.04), rng.uniform(0.005, 0.025)
    length = min(n, int((glide + 5.0 * tau) * sr) + 1)
    onsets = np.concatenate([[0.0], np.cumsum(rng.uniform(0.06, 0.45, count - 1))])
    onsets = _spread_starts(onsets, span, length / sr)
    base = _pick_freq(rng, 400.0, 1500.0, sr, 0.1)
    f_start = base * rng.uniform(0.8, 1.25, count)
    rise = rng.uniform(1.5, 3.0)
    tg = _time(length, sr)
    glide_shape = np.exp(np.float32(math.log(rise)) * np.minimum(tg / np.float32(glide), 1.0))  # rising "plink"
    cycles = np.cumsum(glide_shape, dtype=np.float64)[None, :] * (f_start[:, None] / sr)
    env = np.exp(-tg / np.float32(tau)) * np.minimum(tg / np.float32(0.0005), 1.0)
    amps = (rng.uniform(0.4, 1.0, count) * _partial_gain(f_start * rise, sr)).astype(np.float32)
    grains = amps[:, None] * env * np.sin(_wrap(cycles))
    return _overlap_add(n, np.round(onsets * sr), grains)


def _ev_bark_like(rng: np.random.Generator, sr: int, n: int) -> Array:
    span = n / sr
    count = int(rng.integers(1, 5))
    durs = rng.uniform(0.08, 0.25) * rng.uniform(0.8, 1.2, count)
    gaps = rng.uniform(0.05, 0.3, count)
    starts = np.concatenate([[0.0], np.cumsum(durs[:-1] + gaps[:-1])])
    total = starts[-1] + durs[-1]
    if total > span:
        starts, durs = starts * span / total, durs * span / total
    t = np.arange(n) / sr
    b = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, count - 1)
    local = (t - starts[b]) / durs[b]
    f0 = _pick_freq(rng, 250.0, 700.0, sr, 0.08) * rng.uniform(0.9, 1.1, count)
    f = f0[b] * (1.15 - 0.35 * np.clip(local, 0.0, 1.0))  # pitch falls within each bark
    attack = rng.uniform(0.005, 0.015)
    env = np.minimum(local * durs[b] / attack, 1.0) * np.clip(1.0 - local, 0.0, 1.0) ** rng.uniform(1.0, 3.0)
    cycles = np.cumsum(f) / sr
    marks = np.flatnonzero(np.diff(np.floor(cycles))) + 1  # glottal-like pulse train, one pulse per period
    # breath noise, scaled against the pulse train's power (one unit pulse per period = f0 / sr per sample)
    breath = env * (rng.uniform(0.1, 0.6) * math.sqrt(float(np.mean(f0)) / sr))
    source = rng.standard_normal(n, dtype=np.float32) * breath.astype(np.float32)
    source[marks] += env[marks].astype(np.float32)
    nfft = sfft.next_fast_len(n, real=True)
    fr = _freq_axis(nfft, sr)
    formants = [
        (_pick_freq(rng, 500.0, 1000.0, sr, 0.12), 1.0),
        (_pick_freq(rng, 1100.0, 1900.0, sr, 0.22), rng.uniform(0.3, 1.0)),
        (_pick_freq(rng, 2200.0, 3300.0, sr, 0.33), rng.uniform(0.1, 0.6)),
    ]
    shape = np.full(fr.shape, 0.02, dtype=np.float32)
    for centre, g in formants:
        shape += np.float32(g) / (1.0 + ((fr - np.float32(centre)) * np.float32(1.0 / rng.uniform(60.0, 250.0))) ** 2)
    shape *= _edge_mask(nfft, sr)
    return sfft.irfft(sfft.rfft(source, nfft) * shape, nfft)[:n]


def _ev_knock(rng: np.random.Generator, sr: int, n: int) -> Array:
    span = n / sr
    count = int(rng.integers(2, 7))
    onsets = rng.uniform(0.08, 0.3) * np.arange(count) * (1.0 + rng.uniform(-0.1, 0.1, count))
    onsets[0] = 0.0
    tau = rng.uniform(0.01, 0.06)
    length = min(n, int(5.0 * tau * sr) + 1)
    onsets = _spread_starts(np.maximum.accumulate(onsets), span, length / sr)
    f1 = _pick_freq(rng, 80.0, 400.0, sr, 0.05)
    modes = f1 * np.array([1.0, rng.uniform(2.0, 3.2), rng.uniform(4.0, 6.5)])
    body = _damped_sines(
        sr,
        length,
        modes,
        tau * np.array([1.0, rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.4)]),
        np.array([1.0, rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.4)]) * _partial_gain(modes, sr),
    )
    tg = _time(length, sr)
    hit = rng.standard_normal((count, length), dtype=np.float32) * (
        np.exp(-tg / np.float32(rng.uniform(0.0005, 0.002))) * np.float32(rng.uniform(0.2, 0.8))
    )
    level = rng.uniform(0.6, 1.0, count) * np.linspace(1.0, rng.uniform(0.5, 1.0), count)
    return _overlap_add(n, np.round(onsets * sr), (body.sum(axis=0) + hit) * level[:, None].astype(np.float32))


def _ev_siren(rng: np.random.Generator, sr: int, n: int) -> Array:
    t = _time(n, sr)
    fc = _pick_freq(rng, 400.0, 1500.0, sr, 0.15)
    depth, rate = rng.uniform(0.15, 0.45), float(_loguniform(rng, 0.5, 3.0))
    ph = np.float32(_TWO_PI * rate) * t + np.float32(rng.uniform(0, _TWO_PI))
    wave = np.sin(ph) if rng.random() < 0.5 else np.float32(2.0 / math.pi) * np.arcsin(np.sin(ph))  # wail / yelp
    f = fc * (1.0 + depth * wave)
    n_h = int(rng.integers(1, 4))
    h = np.arange(1, n_h + 1)
    amps = h ** -rng.uniform(1.0, 2.0) * _partial_gain(h * fc * (1.0 + depth), sr)
    x = _harmonic_sum(_phase(f, sr), amps)
    return x * _adsr(n, rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2))


_EVENTS: dict[str, _Synth] = {
    "harmonic_vibrato": _ev_harmonic_vibrato,
    "chirp_up": _ev_chirp_up,
    "chirp_down": _ev_chirp_down,
    "noise_burst": _ev_noise_burst,
    "click_train": _ev_click_train,
    "am_tone": _ev_am_tone,
    "fm_texture": _ev_fm_texture,
    "bell": _ev_bell,
    "dripping": _ev_dripping,
    "bark_like": _ev_bark_like,
    "knock": _ev_knock,
    "siren": _ev_siren,
}

# natural length range (s) of each event; clipped to the clip duration at render time
_EVENT_SPAN: dict[str, tuple[float, float]] = {
    "harmonic_vibrato": (0.4, 1.6),
    "chirp_up": (0.2, 1.0),
    "chirp_down": (0.2, 1.0),
    "noise_burst": (0.1, 1.2),
    "click_train": (0.2, 1.5),
    "am_tone": (0.3, 1.5),
    "fm_texture": (0.3, 1.5),
    "bell": (0.6, 2.5),
    "dripping": (0.4, 1.8),
    "bark_like": (0.3, 1.6),
    "knock": (0.2, 1.2),
    "siren": (0.8, 2.5),
}

# impulsive classes whose sharp transients reach the band edge; the rest are band-limited by construction
_NEEDS_BANDLIMIT = frozenset({"click_train", "knock"})

EVENT_CLASSES: tuple[str, ...] = tuple(_EVENTS)


# ----------------------------------------------------------------------------------------------------------
# scenes: each synth gets (rng, sample_rate, n_samples) and fills all n samples (float32)


def _spectrum_rms(spec: Array) -> float:
    return max(math.sqrt(float(np.sum(spec.real**2 + spec.imag**2))), 1e-12)


def _channel_eq(rng: np.random.Generator, sr: int) -> Callable[[Array], Array]:
    """Random colouring (tilt + two +-9 dB peaks/dips), like recordings of one scene type made with
    different microphones and rooms: without it a noise-texture class would have one fixed spectrum."""
    alpha = rng.uniform(-0.7, 0.7)
    bumps = [
        (
            _pick_freq(rng, 200.0, 6000.0, sr, 0.35),
            rng.uniform(-9.0, 9.0) * math.log(10.0) / 20.0,
            rng.uniform(0.3, 1.0),
        )
        for _ in range(2)
    ]

    def eq(f: Array) -> Array:
        g = (np.maximum(f, np.float32(20.0)) * np.float32(1e-3)) ** np.float32(alpha)
        for centre, log_gain, width in bumps:
            g = g * np.exp(np.float32(log_gain) * _log_gauss(f, centre, width))
        return g

    return eq


def _sc_rain(rng: np.random.Generator, sr: int, n: int) -> Array:
    nfft = sfft.next_fast_len(n, real=True)
    f = np.maximum(_freq_axis(nfft, sr), np.float32(1.0))
    count = int(rng.poisson(_loguniform(rng, 150.0, 2000.0) * n / sr))
    amps = rng.random(count) ** 3 * rng.choice([-1.0, 1.0], count)  # many faint drops, few loud ones
    impulses = np.bincount(rng.integers(0, n, count), weights=amps, minlength=n).astype(np.float32)
    f0, q = _pick_freq(rng, 1500.0, 6000.0, sr, 0.3), rng.uniform(0.7, 3.0)
    ring = 1.0 / (1.0 + 1j * np.float32(q) * (f / np.float32(f0) - np.float32(f0) / f))  # ringing band-pass per drop
    colour = _channel_eq(rng, sr)(f) * _edge_mask(nfft, sr)
    drops = sfft.rfft(impulses, nfft) * (ring * colour).astype(np.complex64)
    fh, fl = _pick_freq(rng, 300.0, 2000.0, sr, 0.08), _pick_freq(rng, 3000.0, 10000.0, sr, 0.42)
    r = (f / np.float32(fh)) ** 2
    hiss_gain = r / (1.0 + r) / np.sqrt(1.0 + (f / np.float32(fl)) ** 4) * colour
    phase = rng.random(f.shape, dtype=np.float32) * np.float32(_TWO_PI)
    hiss = np.empty(f.shape, np.complex64)
    hiss.real, hiss.imag = hiss_gain * np.cos(phase), hiss_gain * np.sin(phase)
    spec = drops * np.float32(rng.uniform(0.3, 1.0) / _spectrum_rms(drops)) + hiss * np.float32(
        rng.uniform(0.3, 1.0) / _spectrum_rms(hiss)
    )
    x = sfft.irfft(spec, nfft)[:n]
    depth = rng.uniform(0.0, 0.5)
    return x * (1.0 + depth * (2.0 * _smooth_random(rng, n, sr, rng.uniform(0.1, 0.5)) - 1.0))


def _sc_traffic(rng: np.random.Generator, sr: int, n: int) -> Array:
    span = n / sr
    fr = np.float32(_pick_freq(rng, 40.0, 150.0, sr, 0.02))
    f_tyre = _pick_freq(rng, 500.0, 2000.0, sr, 0.15)
    f_eng = np.float32(_pick_freq(rng, 150.0, 500.0, sr, 0.05))
    eq = _channel_eq(rng, sr)
    layers = _shaped_noise(
        rng,
        n,
        sr,
        lambda f: (
            eq(f)
            * np.stack(
                [
                    1.0 / (1.0 + (f / fr) ** 2) * (f > 15.0),  # distant rumble
                    1.0 / (1.0 + (f / f_eng) ** 2) * (f > 25.0),  # engine noise of passing vehicles
                    _log_gauss(f, f_tyre, 0.8),
                ]
            )
        ),
    )  # tyre hiss
    count = min(12, max(1, int(rng.poisson(rng.uniform(0.15, 0.8) * (span + 2.0)))))
    centres = rng.uniform(-1.0, span + 1.0, count)
    widths = rng.uniform(0.4, 2.0, count)
    loud = rng.uniform(0.3, 1.0, count)
    tyre = rng.uniform(0.2, 1.0, count)
    engine_f = _loguniform(rng, 25.0, 110.0, count)
    doppler = rng.uniform(0.03, 0.12, count)
    x = layers[0] * np.float32(rng.uniform(0.3, 1.0))
    h = np.arange(1, 6)
    reach = 3.0  # window half-width in units of the vehicle's width
    edge = 1.0 / (1.0 + reach**2)
    for c in range(count):  # a handful of vehicles; each one vectorised over its own time window
        lo = max(0, int((centres[c] - reach * widths[c]) * sr))
        hi = min(n, int((centres[c] + reach * widths[c]) * sr) + 1)
        if hi <= lo:
            continue
        tc = np.arange(lo, hi, dtype=np.float32) * np.float32(1.0 / sr) - np.float32(centres[c])
        # ~ 1 / distance^2, shifted to reach zero at the window edges (no step)
        swell = 1.0 / (1.0 + (tc * np.float32(1.0 / widths[c])) ** 2)
        swell -= np.float32(edge)
        np.maximum(swell, 0.0, out=swell)
        swell *= np.float32(loud[c] / (1.0 - edge))
        fe = np.tanh(tc * np.float32(2.0 / widths[c]))  # pitch drops as the vehicle passes (Doppler)
        fe *= np.float32(-doppler[c] * engine_f[c])
        fe += np.float32(engine_f[c])
        amps = h ** -rng.uniform(0.5, 1.5) * rng.uniform(0.3, 1.0, len(h)) * _partial_gain(h * engine_f[c] * 1.15, sr)
        mix = _harmonic_sum(_phase(fe, sr), amps)
        mix *= np.float32(rng.uniform(0.1, 0.5))
        mix += layers[1, lo:hi]
        mix += np.float32(tyre[c]) * layers[2, lo:hi]
        mix *= swell
        x[lo:hi] += mix
    return x


def _sc_wind(rng: np.random.Generator, sr: int, n: int) -> Array:
    k = 4
    base = _pick_freq(rng, 150.0, 900.0, sr, 0.05)
    centres = np.minimum(base * 2.0 ** (rng.uniform(0.4, 1.0) * np.arange(k)), 0.3 * sr).astype(np.float32)
    width = rng.uniform(0.3, 0.9)
    whistle = rng.random() < 0.35
    fw = _pick_freq(rng, 600.0, 2500.0, sr, 0.3)
    eq = _channel_eq(rng, sr)

    def gains(f: Array) -> Array:
        g = _log_gauss(f[None, :], centres[:, None], width) * eq(f)
        return np.concatenate([g, _log_gauss(f, fw, 0.03)[None, :]]) if whistle else g

    layers = _shaped_noise(rng, n, sr, gains)
    # crossfading layer gains moves the band centre slowly, like a time-varying band-pass
    moves = 0.15 + _smooth_random(rng, n, sr, rng.uniform(0.15, 0.6), layers=k) ** 2
    gust = 0.35 + 0.65 * _smooth_random(rng, n, sr, rng.uniform(0.05, 0.3))
    x = gust * np.einsum("kn,kn->n", layers[:k], moves)
    if whistle:
        x += np.float32(rng.uniform(0.1, 0.4)) * gust**2 * layers[k]
    return x


def _sc_machinery(rng: np.random.Generator, sr: int, n: int) -> Array:
    span = n / sr
    f0 = (50.0 if rng.random() < 0.5 else 60.0) * rng.uniform(0.99, 1.01)
    if rng.random() < 0.5:
        f0 = float(_loguniform(rng, 20.0, 200.0))  # a motor instead of mains hum
    n_h = int(rng.integers(4, 11))
    h = np.arange(1, n_h + 1)
    amps = rng.uniform(0.0, 1.0, n_h) * h ** -rng.uniform(0.3, 1.2) * _partial_gain(h * f0, sr)
    amps[0] = max(amps[0], 0.3)
    rot = float(_loguniform(rng, 0.5, 8.0))
    wobble = 1.0 + np.float32(rng.uniform(0.0, 0.3)) * np.sin(_const_phase(rot, n, sr))  # rotation-rate AM
    hum = _harmonic_sum(_const_phase(f0, n, sr), amps) * wobble
    hum *= np.float32(1.0 / max(float(np.sqrt(np.mean(hum * hum))), 1e-12))
    fp, fl = np.float32(_pick_freq(rng, 300.0, 3000.0, sr, 0.3)), np.float32(_pick_freq(rng, 2000.0, 8000.0, sr, 0.4))
    peak = np.float32(rng.uniform(0.5, 3.0))
    eq = _channel_eq(rng, sr)
    fan = _shaped_noise(
        rng,
        n,
        sr,
        lambda f: (
            eq(f)
            * (1.0 / np.sqrt(np.maximum(f, np.float32(20.0))) + peak * _log_gauss(f, fp, 0.2) / np.sqrt(fp))
            / (1.0 + (f / fl) ** 2)
        ),
    )
    rate = float(_loguniform(rng, 1.0, 12.0))
    count = int(span * rate) + 1
    onsets = (np.arange(count) + rng.uniform(-0.05, 0.05, count)) / rate + rng.uniform(0.0, 1.0 / rate)
    tau = rng.uniform(0.001, 0.005)
    length = min(n, int(6.0 * tau * sr) + 1)
    ticks = _overlap_add(
        n,
        np.round(np.clip(onsets, 0.0, None) * sr),
        _damped_sines(
            sr,
            length,
            _pick_freq(rng, 1000.0, 5000.0, sr, 0.3) * np.ones(count),
            tau * np.ones(count),
            rng.uniform(0.7, 1.0, count),
            attack_s=0.001,
        ),
    )
    return (
        hum * np.float32(rng.uniform(0.3, 1.0))
        + fan * np.float32(rng.uniform(0.3, 1.0))
        + ticks * np.float32(rng.uniform(0.0, 2.0))
    )


def _sc_stream(rng: np.random.Generator, sr: int, n: int) -> Array:
    fc, width = _pick_freq(rng, 300.0, 1200.0, sr, 0.1), rng.uniform(0.8, 1.6)
    eq = _channel_eq(rng, sr)
    burble = _shaped_noise(rng, n, sr, lambda f: _log_gauss(f, fc, width) * eq(f))
    burble *= 0.6 + 0.4 * _smooth_random(rng, n, sr, rng.uniform(4.0, 15.0))
    count = int(rng.poisson(_loguniform(rng, 15.0, 80.0) * n / sr))
    glide = 0.03
    length = min(n, int(glide * sr) + 1)
    tg = _time(length, sr)
    f_start = _pick_freq(rng, 300.0, 1200.0, sr, 0.08) * rng.uniform(0.6, 1.6, count)
    rise = rng.uniform(1.1, 1.8, count)
    slope = f_start * (rise - 1.0) / glide  # linear glide: closed-form phase, no cumsum over grains
    cycles = f_start[:, None] * tg + 0.5 * slope[:, None] * tg.astype(np.float64) ** 2  # < 60 cycles: float32 ok
    taus = rng.uniform(0.003, 0.012, count)[:, None].astype(np.float32)
    env = np.exp(-tg / taus) * np.minimum(tg / np.float32(0.001), 1.0)
    amps = (rng.uniform(0.2, 1.0, count) * _partial_gain(f_start * rise, sr)).astype(np.float32)
    grains = amps[:, None] * env * np.sin(np.float32(_TWO_PI) * cycles.astype(np.float32))
    bubbles = _overlap_add(n, rng.integers(0, n, count), grains)
    return burble * np.float32(rng.uniform(0.3, 1.0)) + bubbles * np.float32(rng.uniform(1.0, 4.0))


_SCENES: dict[str, _Synth] = {
    "rain": _sc_rain,
    "traffic": _sc_traffic,
    "wind": _sc_wind,
    "machinery": _sc_machinery,
    "stream": _sc_stream,
}

SCENE_CLASSES: tuple[str, ...] = tuple(_SCENES)


# ----------------------------------------------------------------------------------------------------------
# public rendering


def _normalise(x: Array, rng: np.random.Generator) -> Array:
    peak = float(np.max(np.abs(x)))
    if not math.isfinite(peak) or peak <= 0.0:
        raise RuntimeError("synthesis produced a silent or non-finite signal")  # a bug, never expected
    return (x * (rng.uniform(*_PEAK_RANGE) / peak)).astype(np.float32)


def _render_event(label: str, rng: np.random.Generator, sr: int, n: int) -> tuple[Array, int, int]:
    """Event clip of n samples plus (start, length) of the event inside it (for SNR-correct mixing)."""
    lo, hi = _EVENT_SPAN[label]
    span = rng.uniform(lo, hi) * sr
    if span > 0.95 * n:  # leave room for a random onset even when the clip is short
        span = rng.uniform(0.5, 0.95) * n
    length = min(n, max(1, int(round(span))))
    start = int(rng.integers(0, n - length + 1))
    core = np.asarray(_EVENTS[label](rng, sr, length), dtype=np.float32)
    fade_in, fade_out = min(int(0.0003 * sr), length // 4), min(int(0.005 * sr), length // 4)
    if fade_in:  # avoid clicks where the event is cut
        core[:fade_in] *= (0.5 - 0.5 * np.cos(np.pi * np.arange(fade_in) / fade_in)).astype(np.float32)
    if fade_out:
        ramp = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, fade_out + 1) / fade_out)
        core[length - fade_out :] *= ramp.astype(np.float32)
    level = max(float(np.max(np.abs(core))), 1e-6)
    # uniform noise is ~5x cheaper than Gaussian; sqrt(12) gives it the floor's RMS
    x = rng.random(n, dtype=np.float32) - np.float32(0.5)
    x *= np.float32(level * 10.0 ** (_FLOOR_DB / 20.0) * math.sqrt(12.0))
    x[start : start + length] += core
    if label in _NEEDS_BANDLIMIT:
        x = _bandlimit(x, sr)
    return _normalise(x, rng), start, length


def render_event(label: str, rng: np.random.Generator, sample_rate: int = 16000, duration: float = 1.0) -> np.ndarray:
    """One event of class `label` at a random onset inside `duration` s, over a -60 dB floor.

    Returns float32 mono of round(duration * sample_rate) samples, peak in [0.1, 0.9] (random loudness).
    """
    _check_label(label, _EVENTS, "event")
    sr = _check_sample_rate(sample_rate)
    n = _check_duration(duration, sr)
    return _render_event(label, rng, sr, n)[0]


def _render_scene(synth: _Synth, rng: np.random.Generator, sr: int, n: int) -> Array:
    # scenes are stationary textures: render at least 256 samples so tiny clips are still a crop of one
    return np.asarray(synth(rng, sr, max(n, 256))[:n], dtype=np.float32)


def render_scene(label: str, rng: np.random.Generator, sample_rate: int = 16000, duration: float = 10.0) -> np.ndarray:
    """A background scene of class `label` filling `duration` s (float32 mono, peak in [0.1, 0.9])."""
    synth = _check_label(label, _SCENES, "scene")
    sr = _check_sample_rate(sample_rate)
    n = _check_duration(duration, sr)
    return _normalise(_render_scene(synth, rng, sr, n), rng)


class EmbeddedCorpus:
    """Map-style corpus: item i depends only on (seed, i).

    Each item is an event mixed over a scene (probability mix_probability, random SNR in [-5, 15] dB),
    otherwise a lone scene (60 % of the rest) or a lone event. Items are seeded by (seed, index), so they
    do not depend on access order or on which worker process renders them.
    """

    def __init__(
        self,
        size: int = 2000,
        sample_rate: int = 16000,
        duration: float = 2.0,
        seed: int = 0,
        mix_probability: float = 0.5,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        ok = isinstance(mix_probability, numbers.Real) and not isinstance(mix_probability, bool)
        p = float(mix_probability) if ok else float("nan")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mix_probability must be in [0, 1], got {mix_probability!r}")
        self.size = int(size)
        self.sample_rate = _check_sample_rate(sample_rate)
        self.num_samples = _check_duration(duration, self.sample_rate)
        self.duration = float(duration)
        self.seed = int(seed)
        self.mix_probability = p

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        i = operator.index(index)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {index} out of range for EmbeddedCorpus of size {self.size}")
        return i

    def _plan(self, index: int) -> tuple[np.random.Generator, str, str, str]:
        """Draw (kind, event label, scene label) first, so label() needs no rendering."""
        rng = np.random.default_rng([self.seed, self._index(index)])
        if rng.random() < self.mix_probability:
            kind = "mix"
        else:
            kind = "scene" if rng.random() < _LONE_SCENE_SHARE else "event"
        event = EVENT_CLASSES[int(rng.integers(len(EVENT_CLASSES)))]
        scene = SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
        return rng, kind, event, scene

    def components(self, index: int) -> tuple[str | None, str | None]:
        """(event label or None, scene label or None) of item `index`."""
        _, kind, event, scene = self._plan(index)
        return (None if kind == "scene" else event), (None if kind == "event" else scene)

    def label(self, index: int) -> str:
        """Event label when the item has an event, else its scene label."""
        _, kind, event, scene = self._plan(index)
        return scene if kind == "scene" else event

    def __getitem__(self, index: int) -> np.ndarray:
        rng, kind, event, scene = self._plan(index)
        sr, n = self.sample_rate, self.num_samples
        if kind == "event":
            return _render_event(event, rng, sr, n)[0]
        background = _render_scene(_SCENES[scene], rng, sr, n)
        if kind == "scene":
            return _normalise(background, rng)
        fg, start, length = _render_event(event, rng, sr, n)
        fg_rms = math.sqrt(float(np.mean(fg[start : start + length] ** 2))) + 1e-12  # RMS while the event sounds
        bg_rms = math.sqrt(float(np.mean(background**2))) + 1e-12
        snr_db = rng.uniform(*_SNR_RANGE_DB)
        return _normalise(background + fg * (bg_rms / fg_rms * 10.0 ** (snr_db / 20.0)), rng)

    def describe(self) -> str:
        """One line for logs."""
        return (
            f"EmbeddedCorpus(size={self.size}, sample_rate={self.sample_rate}, duration={self.duration:g}s, "
            f"seed={self.seed}, mix_probability={self.mix_probability:g}, classes={len(EVENT_CLASSES)} events"
            f" + {len(SCENE_CLASSES)} scenes)"
        )

    def __repr__(self) -> str:
        return self.describe()
