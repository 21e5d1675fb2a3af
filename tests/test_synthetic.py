"""Tests of the embedded procedural corpus (hear_diffbyola.corpus.synthetic)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from hear_diffbyola.corpus.synthetic import EVENT_CLASSES, SCENE_CLASSES, EmbeddedCorpus, render_event, render_scene

RATES = (8000, 16000, 44100)
TONAL = ("harmonic_vibrato", "chirp_up", "chirp_down", "am_tone", "fm_texture", "bell", "siren", "dripping")


# ---------------------------------------------------------------------------------------------------------
# independent measurement helpers (plain numpy, nothing shared with the module)


def power_spectrum(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return np.fft.rfftfreq(len(x), 1.0 / sr), p


def energy_fraction_above(x: np.ndarray, sr: int, hz: float) -> float:
    f, p = power_spectrum(x, sr)
    return float(p[f > hz].sum() / p.sum())


def frame_rms(x: np.ndarray, sr: int, frame_s: float) -> np.ndarray:
    hop = max(1, int(frame_s * sr))
    m = len(x) // hop
    frames = x[: m * hop].astype(np.float64).reshape(m, hop)
    return np.sqrt(np.mean(frames**2, axis=1))


def band_log_energies(x: np.ndarray, sr: int, n_bands: int, lo: float, hi: float) -> np.ndarray:
    f, p = power_spectrum(x, sr)
    edges = np.geomspace(lo, hi, n_bands + 1)
    which = np.digitize(f, edges) - 1
    ok = (which >= 0) & (which < n_bands)
    e = np.bincount(which[ok], weights=p[ok], minlength=n_bands)
    return np.log10(e + 1e-12 * p.sum())


def centroid_track(x: np.ndarray, sr: int, frame: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame spectral centroid (Hz) and energy, Hann-windowed, hop = frame / 2."""
    hop = frame // 2
    m = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(m)[:, None]
    spec = np.abs(np.fft.rfft(x.astype(np.float64)[idx] * np.hanning(frame), axis=1)) ** 2
    f = np.fft.rfftfreq(frame, 1.0 / sr)
    energy = spec.sum(axis=1)
    return (spec * f).sum(axis=1) / np.maximum(energy, 1e-30), energy


def onset_time(x: np.ndarray, sr: int) -> float:
    rms = frame_rms(x, sr, 0.005)
    return float(np.argmax(rms > 0.05 * rms.max()) * 0.005)


def check_clip(x: np.ndarray, n: int) -> None:
    assert x.shape == (n,)
    assert x.dtype == np.float32
    assert np.all(np.isfinite(x))
    peak = float(np.max(np.abs(x)))
    assert 0.05 < peak <= 1.0
    assert float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) > 1e-4


# ---------------------------------------------------------------------------------------------------------
# class lists


def test_class_lists():
    assert len(EVENT_CLASSES) >= 10 and len(SCENE_CLASSES) >= 3
    assert len(set(EVENT_CLASSES)) == len(EVENT_CLASSES) and len(set(SCENE_CLASSES)) == len(SCENE_CLASSES)
    assert not set(EVENT_CLASSES) & set(SCENE_CLASSES)
    for name in EVENT_CLASSES + SCENE_CLASSES:
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name
    assert {"chirp_up", "chirp_down", "bell", "bark_like"} <= set(EVENT_CLASSES)
    assert {"rain", "traffic", "wind"} <= set(SCENE_CLASSES)


# ---------------------------------------------------------------------------------------------------------
# every class at every rate


@pytest.mark.parametrize("sr", RATES)
def test_every_event_renders_at_rate(sr):
    n = round(0.75 * sr)
    for k, label in enumerate(EVENT_CLASSES):
        x = render_event(label, np.random.default_rng([sr, k]), sample_rate=sr, duration=0.75)
        check_clip(x, n)
        # an event over near-silence: some 5 ms frame is >= 30 dB below the loudest one
        rms = frame_rms(x, sr, 0.005)
        assert rms.min() < 0.03 * rms.max(), label
        # nothing at or above the band edge (an alias would land there)
        assert energy_fraction_above(x, sr, 0.45 * sr) < 1e-3, label


@pytest.mark.parametrize("sr", RATES)
def test_every_scene_renders_at_rate(sr):
    n = round(1.5 * sr)
    for k, label in enumerate(SCENE_CLASSES):
        x = render_scene(label, np.random.default_rng([sr, k]), sample_rate=sr, duration=1.5)
        check_clip(x, n)
        # a scene fills the clip: no 50 ms block is near-silent
        rms = frame_rms(x, sr, 0.05)
        assert rms.min() > 0.01 * rms.max(), label
        assert energy_fraction_above(x, sr, 0.45 * sr) < 1e-3, label


def test_long_scene_and_short_or_odd_lengths():
    x = render_scene("rain", np.random.default_rng(0), 16000, 10.0)
    check_clip(x, 160000)
    for sr, dur in [(8000, 0.01), (16000, 0.0371), (44100, 1.2345), (11025, 0.5)]:
        n = round(dur * sr)
        for label in EVENT_CLASSES:
            x = render_event(label, np.random.default_rng(1), sr, dur)
            assert x.shape == (n,) and x.dtype == np.float32 and np.all(np.isfinite(x)) and np.abs(x).max() > 0
        for label in SCENE_CLASSES:
            x = render_scene(label, np.random.default_rng(1), sr, dur)
            assert x.shape == (n,) and x.dtype == np.float32 and np.all(np.isfinite(x)) and np.abs(x).max() > 0


def test_tonal_classes_do_not_alias_at_8k():
    sr = 8000
    for label in TONAL:
        for seed in range(6):
            x = render_event(label, np.random.default_rng(seed), sr, 1.0)
            assert energy_fraction_above(x, sr, 3600.0) < 1e-4, (label, seed)
            assert energy_fraction_above(x, sr, 3200.0) < 5e-4, (label, seed)


def test_loudness_varies():
    peaks = [np.abs(render_event("bell", np.random.default_rng(s), 16000, 1.0)).max() for s in range(12)]
    assert max(peaks) - min(peaks) > 0.3
    assert all(0.1 - 1e-6 <= p <= 0.9 + 1e-6 for p in peaks)


# ---------------------------------------------------------------------------------------------------------
# determinism


def test_render_determinism_and_seed_sensitivity():
    for label in ("fm_texture", "bark_like", "knock"):
        a = render_event(label, np.random.default_rng(7), 16000, 1.0)
        b = render_event(label, np.random.default_rng(7), 16000, 1.0)
        c = render_event(label, np.random.default_rng(8), 16000, 1.0)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
    for label in SCENE_CLASSES:
        a = render_scene(label, np.random.default_rng(3), 8000, 2.0)
        assert np.array_equal(a, render_scene(label, np.random.default_rng(3), 8000, 2.0))
        assert not np.array_equal(a, render_scene(label, np.random.default_rng(4), 8000, 2.0))


def test_global_numpy_random_state_untouched():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    render_event("click_train", np.random.default_rng(0))
    render_scene("wind", np.random.default_rng(0), duration=1.0)
    EmbeddedCorpus(size=4, duration=0.5)[2]
    assert np.array_equal(before, np.random.get_state()[1])


def test_corpus_items_depend_only_on_seed_and_index():
    a = EmbeddedCorpus(size=50, duration=1.0, seed=11)
    first5 = a[5]
    then3 = a[3]
    b = EmbeddedCorpus(size=50, duration=1.0, seed=11)
    assert np.array_equal(b[3], then3)  # order does not matter
    assert np.array_equal(b[5], first5)
    assert np.array_equal(a[5], first5)  # repeated access is stable
    assert np.array_equal(EmbeddedCorpus(size=9, duration=1.0, seed=11)[5], first5)  # nor does the size
    assert [a.label(i) for i in range(50)] == [b.label(i) for i in range(50)]
    other = EmbeddedCorpus(size=50, duration=1.0, seed=12)
    assert not np.array_equal(other[5], first5)
    assert [other.label(i) for i in range(50)] != [a.label(i) for i in range(50)]
    assert np.array_equal(a[-1], a[49])


# ---------------------------------------------------------------------------------------------------------
# spectral sanity per class


def _quarter_centroids(x: np.ndarray, sr: int) -> tuple[float, float]:
    cent, energy = centroid_track(x, sr)
    active = np.flatnonzero(energy > 1e-3 * energy.max())
    lo, hi = active[0], active[-1] + 1
    q = max(1, (hi - lo) // 4)
    first, last = slice(lo, lo + q), slice(hi - q, hi)
    weighted = lambda s: float(np.sum(cent[s] * energy[s]) / np.sum(energy[s]))  # noqa: E731
    return weighted(first), weighted(last)


def test_chirp_directions():
    sr = 16000
    for seed in range(8):
        start, end = _quarter_centroids(render_event("chirp_up", np.random.default_rng(seed), sr, 1.5), sr)
        assert end > 1.3 * start, (seed, start, end)
        start, end = _quarter_centroids(render_event("chirp_down", np.random.default_rng(seed), sr, 1.5), sr)
        assert start > 1.3 * end, (seed, start, end)


def test_traffic_is_lower_than_rain():
    sr = 16000

    def low_share(label: str) -> float:
        return float(
            np.mean(
                [
                    1.0 - energy_fraction_above(render_scene(label, np.random.default_rng(s), sr, 3.0), sr, 300.0)
                    for s in range(6)
                ]
            )
        )

    traffic, rain = low_share("traffic"), low_share("rain")
    assert traffic > 0.3
    assert traffic > 3.0 * rain


def test_bell_is_inharmonic_and_rain_is_broadband():
    sr = 16000
    # rain: energy spread over many octaves, not a single band
    x = render_scene("rain", np.random.default_rng(0), sr, 3.0)
    bands = 10 ** band_log_energies(x, sr, 8, 250.0, 7000.0)
    assert np.sum(bands > 0.01 * bands.max()) >= 4
    # bell: the strongest spectral peaks are not all integer multiples of the lowest one
    x = render_event("bell", np.random.default_rng(5), sr, 2.0)
    f, p = power_spectrum(x, sr)
    peaks = np.flatnonzero((p[1:-1] > p[:-2]) & (p[1:-1] > p[2:])) + 1
    top = np.sort(f[peaks[np.argsort(p[peaks])[-4:]]])
    ratios = top[1:] / top[0]
    assert np.any(np.abs(ratios - np.round(ratios)) > 0.05), top


def test_event_onsets_vary():
    sr = 16000
    for label in ("bell", "chirp_up", "knock", "noise_burst", "am_tone"):
        onsets = [onset_time(render_event(label, np.random.default_rng(s), sr, 2.0), sr) for s in range(10)]
        assert max(onsets) - min(onsets) > 0.3, (label, onsets)
        assert len({round(o / 0.05) for o in onsets}) >= 4, (label, onsets)
        assert sum(o > 0.02 for o in onsets) >= 5, (label, onsets)


def test_within_class_variety():
    sr = 16000
    for label in EVENT_CLASSES + SCENE_CLASSES:
        render = render_event if label in EVENT_CLASSES else render_scene
        feats = [
            band_log_energies(render(label, np.random.default_rng([99, s]), sr, 1.0), sr, 64, 50.0, 7000.0)
            for s in range(5)
        ]
        worst = max(np.corrcoef(a, b)[0, 1] for a, b in itertools.combinations(feats, 2))
        assert worst < 0.999, (label, worst)


def test_events_are_learnable_but_not_trivial():
    """Nearest-class-mean on 16 log band energies: far above chance (the report quotes the accuracy)."""
    sr, per_class = 16000, 40
    feats, labels = [], []
    for k, label in enumerate(EVENT_CLASSES):
        for i in range(per_class):
            e = band_log_energies(
                render_event(label, np.random.default_rng([2024, k, i]), sr, 1.0), sr, 16, 60.0, 7200.0
            )
            feats.append(e - e.mean())  # loudness is random by design: compare shapes only
            labels.append(k)
    x, y = np.array(feats), np.array(labels)
    train = np.tile(np.arange(per_class) < per_class // 2, len(EVENT_CLASSES))
    means = np.stack([x[train & (y == k)].mean(axis=0) for k in range(len(EVENT_CLASSES))])
    dist = ((x[~train][:, None, :] - means[None]) ** 2).sum(axis=2)
    accuracy = float(np.mean(dist.argmin(axis=1) == y[~train]))
    chance = 1.0 / len(EVENT_CLASSES)
    print(f"nearest-class-mean accuracy: {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy > 3.0 * chance, accuracy


# ---------------------------------------------------------------------------------------------------------
# corpus


def test_corpus_items_and_labels():
    c = EmbeddedCorpus(size=300, sample_rate=8000, duration=0.5, seed=3)
    assert len(c) == 300
    labels = [c.label(i) for i in range(300)]
    assert set(labels) <= set(EVENT_CLASSES) | set(SCENE_CLASSES)
    scene_share = np.mean([lab in SCENE_CLASSES for lab in labels])
    assert 0.2 < scene_share < 0.4, scene_share
    assert len(set(labels) & set(EVENT_CLASSES)) == len(EVENT_CLASSES)  # every class shows up
    assert len(set(labels) & set(SCENE_CLASSES)) == len(SCENE_CLASSES)
    mixed = 0
    for i in range(300):
        event, scene = c.components(i)
        assert labels[i] == (event if event is not None else scene)
        mixed += event is not None and scene is not None
    assert 0.4 < mixed / 300 < 0.6
    for i in range(0, 300, 30):
        check_clip(c[i], 4000)


def test_corpus_mix_probability_extremes():
    always = EmbeddedCorpus(size=60, duration=1.0, mix_probability=1.0)
    assert all(None not in always.components(i) for i in range(60))
    assert all(always.label(i) in EVENT_CLASSES for i in range(60))
    sr = always.sample_rate
    for i in range(6):  # the scene is under the event: no near-silent stretch
        rms = frame_rms(always[i], sr, 0.01)
        assert rms.min() > 1e-3 * rms.max()
    never = EmbeddedCorpus(size=60, duration=2.0, mix_probability=0.0, seed=5)
    kinds = [never.components(i) for i in range(60)]
    assert all((e is None) != (s is None) for e, s in kinds)
    # label and content agree: lone events have near-silence, lone scenes do not
    for i in range(24):
        rms = frame_rms(never[i], sr, 0.01)
        if never.label(i) in SCENE_CLASSES:
            assert rms.min() > 0.01 * rms.max(), never.label(i)
        else:
            assert rms.min() < 0.01 * rms.max(), never.label(i)


def test_describe():
    text = EmbeddedCorpus(size=123, sample_rate=22050, duration=1.5, seed=9).describe()
    assert "\n" not in text
    for part in ("123", "22050", "1.5", "9", str(len(EVENT_CLASSES)), str(len(SCENE_CLASSES))):
        assert part in text


# ---------------------------------------------------------------------------------------------------------
# bad arguments


def test_bad_labels():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"label.*'nope'.*chirp_up"):
        render_event("nope", rng)
    with pytest.raises(ValueError, match=r"label.*rain"):
        render_scene("chirp_up", rng)  # events are not scenes
    with pytest.raises(ValueError, match="label"):
        render_event("rain", rng)


@pytest.mark.parametrize("sr", [3999, 0, -16000, 16000.5, "16000", None, True])
def test_bad_sample_rate(sr):
    with pytest.raises(ValueError, match="sample_rate"):
        render_event("bell", np.random.default_rng(0), sample_rate=sr)
    with pytest.raises(ValueError, match="sample_rate"):
        render_scene("rain", np.random.default_rng(0), sample_rate=sr)
    with pytest.raises(ValueError, match="sample_rate"):
        EmbeddedCorpus(sample_rate=sr)


@pytest.mark.parametrize("duration", [0, -1.0, float("nan"), float("inf"), 1e-9, "2"])
def test_bad_duration(duration):
    with pytest.raises(ValueError, match="duration"):
        render_event("bell", np.random.default_rng(0), duration=duration)
    with pytest.raises(ValueError, match="duration"):
        render_scene("rain", np.random.default_rng(0), duration=duration)
    with pytest.raises(ValueError, match="duration"):
        EmbeddedCorpus(duration=duration)


def test_bad_corpus_arguments():
    for size in (0, -5, 2.5):
        with pytest.raises(ValueError, match="size"):
            EmbeddedCorpus(size=size)
    for p in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"mix_probability.*\[0, 1\]"):
            EmbeddedCorpus(mix_probability=p)
    with pytest.raises(ValueError, match="seed"):
        EmbeddedCorpus(seed=-1)
    c = EmbeddedCorpus(size=10, duration=0.5)
    for index in (10, 11, -11):
        with pytest.raises(IndexError, match="out of range"):
            c[index]
        with pytest.raises(IndexError):
            c.label(index)
    with pytest.raises(TypeError):
        c[1.5]
