"""Audio file I/O: any format libsndfile reads (wav, flac, ogg, mp3), any rate and channel count -> mono float32."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .errors import DiffByolaError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioReadError(DiffByolaError, RuntimeError):
    """An audio file could not be read; the message names the file and the reason."""


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased), exact rational ratio."""
    if orig_sr == target_sr:
        return x
    ratio = Fraction(target_sr, orig_sr)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32, copy=False)


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by averaging channels."""
    return x.mean(axis=1) if x.ndim == 2 else x


def read_audio(path: str | Path, sample_rate: int, start: int = 0, frames: int = -1) -> np.ndarray:
    """Read ``frames`` frames from ``start`` (both in the file's own rate; -1 = to the end), as mono float32 at ``sample_rate``."""
    try:
        x, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types; all mean the same to the caller
        raise AudioReadError(f"cannot read audio file {path}: {e}") from e
    return resample(to_mono(x), sr, sample_rate).astype(np.float32, copy=False)


def audio_info(path: str | Path) -> tuple[int, int]:
    """(frames, sample_rate) from the file header; raises AudioReadError."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioReadError(f"cannot read audio file {path}: {e}") from e
    return int(info.frames), int(info.samplerate)


def write_audio(path: str | Path, x: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV (creates parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(x, dtype=np.float32), sample_rate, subtype="PCM_16")
