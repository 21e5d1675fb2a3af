"""The one check of audio handed to a model, for every entry point (HEAR module, s3prl upstream, task embedders).

:func:`check_audio` refuses what no entry point can embed correctly: not a tensor, the wrong shape,
integer PCM (its values are 32768 times too large: the model would see noise at full scale), NaN or
Inf (they spread through the front end to every output). It warns, never clips, for audio that peaks
far above full scale. :func:`check_model_dtype` refuses a model cast to another precision
(``model.half()``), whose front end and float32 audio would otherwise fail deep inside a conv layer.

The errors subclass :class:`~hear_diffbyola.errors.DiffByolaError` and the builtin the HEAR contract
documents (``TypeError`` for a wrong type, ``ValueError`` for a wrong value), so callers catching
either keep working.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .errors import DiffByolaError

__all__ = ["AudioTypeError", "AudioValueError", "LoudAudioWarning", "LOUD_PEAK", "check_audio", "check_model_dtype"]

# Peaks above this (6 dB over full scale) almost always mean unscaled integer PCM; below it,
# resampling overshoot is common and harmless, so stay quiet.
LOUD_PEAK = 2.0
_LISTED = 10  # sounds named in a message at most


class AudioTypeError(DiffByolaError, TypeError):
    """Audio of the wrong type or dtype (not a tensor, integer PCM), or a model of the wrong dtype."""


class AudioValueError(DiffByolaError, ValueError):
    """Audio of the wrong shape, empty, or holding NaN / Inf."""


class LoudAudioWarning(UserWarning):
    """Audio peaks far outside [-1, 1]: probably integer PCM that was not scaled; it is embedded unclipped."""


def _listed(labels: Sequence[Any]) -> str:
    return "[" + ", ".join(map(str, labels[:_LISTED])) + (" ..." if len(labels) > _LISTED else "") + "]"


def _check_dtype(x: torch.Tensor, caller: str) -> None:
    if not x.is_floating_point():
        raise AudioTypeError(
            f"{caller}: audio must be floating point in [-1, 1], got {x.dtype}; "
            "scale integer PCM first, e.g. audio.float() / 32768 for int16"
        )


def _peaks(sounds: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Peak |x| per sound, (n_sounds,) float64. Reductions only, no full-size temporaries (a batch may be
    many 20-min clips): max and min propagate NaN and carry Inf, so the peak detects both."""
    if isinstance(sounds, torch.Tensor):  # (n_sounds, n_samples), n_samples > 0
        return torch.maximum(sounds.amax(dim=1), -sounds.amin(dim=1)).double()
    return torch.tensor(
        [float(torch.maximum(w.amax(), -w.amin())) if w.numel() else 0.0 for w in sounds], dtype=torch.float64
    )


def check_audio(
    audio: torch.Tensor | Sequence[torch.Tensor], caller: str, names: Sequence[Any] | None = None, stacklevel: int = 2
) -> None:
    """Raise for audio no model can embed correctly; warn (never clip) for implausibly loud audio.

    ``audio``: a batch ``(n_sounds, n_samples)`` tensor (HEAR, task embedders), or a sequence of 1-D
    waveform tensors of any lengths (s3prl's list of wavs). ``caller`` starts every message (the function
    the user called). ``names``: one label per sound for the messages (e.g. file paths); by default the
    sounds' indices. ``stacklevel``: as for ``warnings.warn``, counted from the function calling this one.

    Raises :class:`AudioTypeError` (not a tensor, integer dtype) or :class:`AudioValueError` (shape, no
    samples, NaN / Inf); warns :class:`LoudAudioWarning` when a peak exceeds :data:`LOUD_PEAK`.
    """
    if isinstance(audio, torch.Tensor):
        if audio.ndim != 2:
            hint = "; add the batch axis with audio[None]" if audio.ndim == 1 else ""
            raise AudioValueError(
                f"{caller}: audio must have shape (n_sounds, n_samples), got {tuple(audio.shape)}{hint}"
            )
        _check_dtype(audio, caller)
        if audio.shape[0] and audio.shape[1] == 0:
            raise AudioValueError(f"{caller}: audio has {audio.shape[0]} sounds of 0 samples; nothing to embed")
        n = audio.shape[0]
    elif isinstance(audio, (list, tuple)):
        for i, w in enumerate(audio):
            if not isinstance(w, torch.Tensor):
                raise AudioTypeError(
                    f"{caller}: waveform {i} must be a torch.Tensor, got {type(w).__name__}; "
                    "wrap a numpy array with torch.from_numpy"
                )
            if w.ndim != 1:
                raise AudioValueError(f"{caller}: waveform {i} has shape {tuple(w.shape)}; give 1-D (mono) waveforms")
            _check_dtype(w, caller)
        n = len(audio)
    else:
        raise AudioTypeError(
            f"{caller}: audio must be a torch.Tensor of shape (n_sounds, n_samples), got "
            f"{type(audio).__name__}; wrap a numpy array with torch.from_numpy"
        )
    if names is not None and len(names) != n:
        raise ValueError(f"check_audio: {len(names)} names for {n} sounds")
    if n == 0 or (isinstance(audio, torch.Tensor) and audio.numel() == 0):
        return
    peaks = _peaks(audio)
    labels = list(names) if names is not None else list(range(n))
    finite = torch.isfinite(peaks)
    if not bool(finite.all()):
        bad = [labels[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise AudioValueError(f"{caller}: audio contains NaN or Inf in sound(s) {_listed(bad)}")
    loud = [labels[i] for i in torch.nonzero(peaks > LOUD_PEAK).flatten().tolist()]
    if loud:
        warnings.warn(
            f"{caller}: sound(s) {_listed(loud)} peak at up to {float(peaks.max()):.4g}, far outside the HEAR "
            "range [-1, 1]; embedding them unclipped (scale integer PCM by 1/32768)",
            LoudAudioWarning,
            stacklevel=stacklevel + 1,
        )


def check_model_dtype(model: torch.nn.Module, caller: str) -> None:
    """Refuse a model whose floating-point weights are not float32 (``model.half()``, ``.double()``):
    the front end computes float32 log-mels, and a cast encoder would fail inside its first conv layer."""
    found = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if found - {torch.float32}:
        listed = ", ".join(sorted(str(d) for d in found))
        raise AudioTypeError(
            f"{caller}: the model's weights are {listed}; embeddings are computed in float32: call model.float() first"
        )
