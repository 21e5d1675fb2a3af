"""Loudness, SNR mixing and crops, shared by the difference-aware tasks (BgKnown, APwD).

* :func:`integrated_loudness` is ITU-R BS.1770 integrated loudness exactly as pyloudnorm 0.2 measures it:
  K-weighting (a +4 dB high shelf at 1500 Hz, Q 1/sqrt(2), then a high pass at 38 Hz, Q 0.5, both
  designed with the Audio-EQ-Cookbook bilinear formulas at the signal's own rate), mean square over
  0.4 s blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU under the
  mean of the blocks that pass it. Mono only: the tasks mix mono audio.
* :func:`event_loudness` is Scaper's measurement on top of it: clips under 0.5 s are tiled end to end
  until they are at least that long, and the result is floored at -70 LUFS (silence would be -inf).
* :func:`mix_at_snr` mixes as Scaper does: the SNR is the difference of the two event loudnesses, the
  background is normalised to ``ref_lufs`` (Scaper's default -12 LUFS) and the foreground to
  ``ref_lufs + snr_db``. A common gain then keeps every output under ``peak_limit``; a common gain moves
  both loudnesses by the same number of dB, so the SNR survives it.

Scaper itself is not used: 1.6.5 does not install on Python 3.11 with numpy 2 (soxbindings has no cp311
wheel, and its generate() uses np.Inf, removed in numpy 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import sosfilt

__all__ = [
    "ABS_GATE_LUFS",
    "REL_GATE_LU",
    "BLOCK_S",
    "OVERLAP",
    "MIN_EVENT_S",
    "LUFS_FLOOR",
    "k_weighting_sos",
    "integrated_loudness",
    "event_loudness",
    "gain_to",
    "Mix",
    "mix_at_snr",
    "peak_scale",
    "crop",
    "overlap_samples",
    "draw_reference_crops",
]

ABS_GATE_LUFS = -70.0
REL_GATE_LU = -10.0
BLOCK_S = 0.4
OVERLAP = 0.75
MIN_EVENT_S = 0.5  # Scaper tiles shorter clips before measuring
LUFS_FLOOR = -70.0  # Scaper's lower bound on a measured loudness
_LUFS_OFFSET = -0.691  # BS.1770: L = -0.691 + 10 log10(mean square of the K-weighted signal)


# ----------------------------------------------------------------------------------------------------------
# loudness


def _high_shelf(sr: float, gain_db: float, q: float, fc: float) -> np.ndarray:
    """Cookbook high-shelf biquad as one second-order section [b0 b1 b2 1 a1 a2]."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * fc / sr
    cw, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    ra = 2.0 * math.sqrt(a) * alpha
    b = [a * ((a + 1) + (a - 1) * cw + ra), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - ra)]
    den = [(a + 1) - (a - 1) * cw + ra, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - ra]
    return np.array(b + den) / den[0]


def _high_pass(sr: float, q: float, fc: float) -> np.ndarray:
    """Cookbook high-pass biquad as one second-order section."""
    w0 = 2.0 * math.pi * fc / sr
    cw, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
    den = [1 + alpha, -2 * cw, 1 - alpha]
    return np.array(b + den) / den[0]


def k_weighting_sos(sr: float) -> np.ndarray:
    """BS.1770 K-weighting at sample rate ``sr`` as second-order sections (2, 6): shelf, then high pass.

    pyloudnorm's parameterisation (shelf +4 dB at 1500 Hz, Q 1/sqrt 2; high pass 38 Hz, Q 0.5), which
    matches the standard's 48 kHz coefficients and works at any rate, rather than the 48 kHz table.
    """
    return np.stack([_high_shelf(sr, 4.0, 1.0 / math.sqrt(2.0), 1500.0), _high_pass(sr, 0.5, 38.0)])


def _mono_float64(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected mono audio of shape (n_samples,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: expected floating-point samples, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def integrated_loudness(x: np.ndarray, sr: int, block_s: float = BLOCK_S) -> float:
    """BS.1770 gated integrated loudness of mono ``x`` (n,) in LUFS, as pyloudnorm's ``Meter(sr).integrated_loudness``.

    -inf when no block passes the gates (silence). Raises ValueError for audio shorter than one block.
    """
    x = _mono_float64(x, "integrated_loudness")
    if x.shape[0] < block_s * sr:
        raise ValueError(
            f"integrated_loudness: {x.shape[0]} samples at {sr} Hz is shorter than one "
            f"{block_s} s gating block; use event_loudness, which tiles short clips as Scaper does"
        )
    y = sosfilt(k_weighting_sos(sr), x)
    step = 1.0 - OVERLAP
    n_blocks = int(np.round((x.shape[0] / sr - block_s) / (block_s * step))) + 1
    # block bounds computed with pyloudnorm's own float expression so the same samples land in each block
    j = np.arange(n_blocks)
    lo = (block_s * (j * step) * sr).astype(np.int64)
    hi = np.minimum((block_s * (j * step + 1) * sr).astype(np.int64), y.shape[0])
    energy = np.concatenate([[0.0], np.cumsum(y * y)])
    # mean square normalised by the nominal block length, also for a truncated last block (as pyloudnorm)
    z = (energy[hi] - energy[lo]) / (block_s * sr)  # (n_blocks,)
    with np.errstate(divide="ignore"):
        block_lufs = _LUFS_OFFSET + 10.0 * np.log10(z)
    above_abs = block_lufs >= ABS_GATE_LUFS
    if not above_abs.any():
        return -math.inf
    rel_gate = _LUFS_OFFSET + 10.0 * math.log10(z[above_abs].mean()) + REL_GATE_LU
    gated = (block_lufs > rel_gate) & (block_lufs > ABS_GATE_LUFS)
    if not gated.any():
        return -math.inf
    return float(_LUFS_OFFSET + 10.0 * math.log10(z[gated].mean()))


def event_loudness(x: np.ndarray, sr: int, min_duration: float = MIN_EVENT_S, floor: float = LUFS_FLOOR) -> float:
    """Scaper's loudness of an event: clips under ``min_duration`` s tiled to reach it, floored at ``floor`` LUFS."""
    x = _mono_float64(x, "event_loudness")
    if x.shape[0] == 0:
        raise ValueError("event_loudness: empty audio")
    duration = x.shape[0] / sr
    if duration < min_duration:
        x = np.tile(x, int(math.ceil(min_duration / duration)))
    return max(integrated_loudness(x, sr), floor)


def gain_to(lufs: float, target_lufs: float) -> float:
    """Linear gain that moves a signal measured at ``lufs`` to ``target_lufs``."""
    return 10.0 ** ((target_lufs - lufs) / 20.0)


# ----------------------------------------------------------------------------------------------------------
# mixing


@dataclass(frozen=True)
class Mix:
    """A foreground mixed over a background; ``mixture == foreground + background`` sample for sample.

    ``foreground``/``background`` are the scaled components; ``companions`` are the extra background-side
    signals given to :func:`mix_at_snr`, scaled by ``bg_gain``. Loudnesses are of the unscaled inputs.
    """

    mixture: np.ndarray
    foreground: np.ndarray
    background: np.ndarray
    companions: tuple[np.ndarray, ...]
    fg_gain: float
    bg_gain: float
    fg_lufs: float
    bg_lufs: float
    snr_db: float
    peak_scale: float


def peak_scale(signals: Sequence[np.ndarray], limit: float | None) -> float:
    """Common gain <= 1 that brings the largest absolute sample of ``signals`` to at most ``limit`` (1 if None)."""
    if limit is None:
        return 1.0
    peak = max((float(np.max(np.abs(s))) for s in signals if s.size), default=0.0)
    return 1.0 if peak <= limit else limit / peak


def mix_at_snr(
    fg: np.ndarray,
    bg: np.ndarray,
    snr_db: float,
    sr: int,
    ref_lufs: float = -12.0,
    peak_limit: float | None = 0.99,
    companions: Sequence[np.ndarray] = (),
) -> Mix:
    """Mix ``fg`` over ``bg`` (same length) so that event_loudness(fg part) - event_loudness(bg part) = ``snr_db``.

    As Scaper: background at ``ref_lufs``, foreground at ``ref_lufs + snr_db``. ``companions`` (e.g. other
    crops of the same background recording) get the background's gain and count toward ``peak_limit``,
    so they stay comparable with the background inside the mixture. Raises ValueError for a silent input,
    whose loudness (the -70 LUFS floor) would make the gain meaningless.
    """
    fg = _mono_float64(fg, "mix_at_snr foreground")
    bg = _mono_float64(bg, "mix_at_snr background")
    if fg.shape != bg.shape:
        raise ValueError(
            f"mix_at_snr: foreground has {fg.shape[0]} samples, background {bg.shape[0]}; crop them to one length"
        )
    if not math.isfinite(snr_db):
        raise ValueError(f"mix_at_snr: snr_db must be finite, got {snr_db}")
    fg_lufs, bg_lufs = event_loudness(fg, sr), event_loudness(bg, sr)
    for name, lufs in (("foreground", fg_lufs), ("background", bg_lufs)):
        if lufs <= LUFS_FLOOR:
            raise ValueError(
                f"mix_at_snr: the {name} is silent (loudness at the {LUFS_FLOOR} LUFS floor); "
                "no gain can give it a loudness"
            )
    fg_gain, bg_gain = gain_to(fg_lufs, ref_lufs + snr_db), gain_to(bg_lufs, ref_lufs)
    fg_s, bg_s = fg * fg_gain, bg * bg_gain
    comp = [_mono_float64(c, "mix_at_snr companion") * bg_gain for c in companions]
    scale = peak_scale([fg_s + bg_s, bg_s, *comp], peak_limit)
    fg_s, bg_s = fg_s * scale, bg_s * scale
    return Mix(
        mixture=(fg_s + bg_s).astype(np.float32),
        foreground=fg_s.astype(np.float32),
        background=bg_s.astype(np.float32),
        companions=tuple((c * scale).astype(np.float32) for c in comp),
        fg_gain=fg_gain * scale,
        bg_gain=bg_gain * scale,
        fg_lufs=fg_lufs,
        bg_lufs=bg_lufs,
        snr_db=float(snr_db),
        peak_scale=scale,
    )


# ----------------------------------------------------------------------------------------------------------
# crops


def crop(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """x[start:start + length] along the last axis; ValueError (naming the bounds) if it does not fit."""
    n = x.shape[-1]
    if start < 0 or length <= 0 or start + length > n:
        raise ValueError(f"crop [{start}, {start + length}) does not fit in {n} samples")
    return x[..., start : start + length]


def overlap_samples(start_a: int, start_b: int, length: int) -> int:
    """Samples shared by two crops of ``length`` starting at ``start_a`` and ``start_b``."""
    return max(0, length - abs(start_a - start_b))


Intervals = list[tuple[int, int]]  # closed integer intervals [lo, hi]


def _intersect(u: Intervals, v: Intervals) -> Intervals:
    out = [(max(a, c), min(b, d)) for a, b in u for c, d in v]
    return sorted((lo, hi) for lo, hi in out if lo <= hi)


def _union(*parts: tuple[int, int]) -> Intervals:
    return sorted((lo, hi) for lo, hi in parts if lo <= hi)


def _draw(rng: np.random.Generator, intervals: Intervals) -> int:
    """Uniform integer over a union of disjoint closed intervals."""
    sizes = [hi - lo + 1 for lo, hi in intervals]
    k = int(rng.integers(sum(sizes)))
    for (lo, _), size in zip(intervals, sizes):
        if k < size:
            return lo + k
        k -= size
    raise AssertionError("unreachable")


def _merge(intervals: Intervals) -> Intervals:
    merged: Intervals = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def draw_reference_crops(rng: np.random.Generator, total: int, length: int) -> tuple[int, int, int]:
    """Starts (a, b, c) of three crops of ``length`` samples in a recording of ``total`` samples.

    (b) overlaps (a) by exactly half (starts ``length // 2`` before or after it), (c) shares no sample
    with (a). (a) is uniform over every start that leaves room for both; the side of (b) is uniform
    over the feasible sides; (c) is uniform over all non-overlapping starts. Needs ``total >= 2 * length``
    and an even ``length`` (otherwise "exactly 50 %" is not a whole number of samples).
    """
    if length <= 0 or length % 2:
        raise ValueError(f"crop length must be a positive even number of samples, got {length}")
    if total < 2 * length:
        raise ValueError(
            f"a recording of {total} samples is too short for a crop of {length} samples plus a "
            f"non-overlapping one: at least {2 * length} samples are needed"
        )
    last, half = total - length, length // 2
    b_ok = _union((half, last), (0, last - half))
    c_ok = _union((length, last), (0, last - length))
    a = _draw(rng, _merge(_intersect(_intersect([(0, last)], b_ok), c_ok)))
    sides = [s for s in (a - half, a + half) if 0 <= s <= last]
    b = sides[int(rng.integers(len(sides)))]
    c = _draw(rng, _merge(_union((0, a - length), (a + length, last))))
    return a, b, c
