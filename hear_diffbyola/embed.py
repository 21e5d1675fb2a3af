"""Inference paths shared by the HEAR module, the s3prl upstream and the task evaluators.

The encoder emits one frame per 8 log-mel frames (80 ms at a 10 ms hop). Finer frames come
from running the encoder on the log-mel shifted by 8/S frames, S times, and interleaving the
results: hop 80/S ms, every frame computed from exactly the same operations as a native frame
(the same receptive field, centred on its own timestamp), at S times the encoder cost.

Long audio is processed in chunks of log-mel frames with 16 frames of context on each side,
aligned to the 8-frame pooling grid. The encoder's receptive field is 22 log-mel frames
(its 8 plus 7 either side), so kept frames never see a chunk edge: chunked equals unchunked
to float rounding, while memory is bounded by the chunk, not the clip.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .encoder import TIME_REDUCTION
from .weights import PretrainedModel

CONTEXT = 2 * TIME_REDUCTION  # log-mel frames of context each side of a chunk (>= 7 needed, multiple of 8)
DEFAULT_CHUNK = 512  # encoder frames per chunk: 41 s of audio; ~1 GB of conv activations per clip in the batch

FrameFn = Callable[[torch.Tensor], list[torch.Tensor]]


def min_samples(model: PretrainedModel, shifts: int = 1) -> int:
    """Shortest waveform that gives every shift at least one encoder frame (and allows reflect padding)."""
    fe = model.frontend.config
    need_frames = TIME_REDUCTION + (shifts - 1) * (TIME_REDUCTION // shifts)
    return max((need_frames - 1) * fe.hop_length, fe.n_fft // 2 + 1)


def frame_times_ms(model: PretrainedModel, n: int, shifts: int = 1) -> torch.Tensor:
    """Centre times (ms, from the start of the waveform) of the first ``n`` frames at hop 80/shifts ms.

    Frame i covers log-mel frames [i*8/S, i*8/S + 8); log-mel frame m is centred on sample m*hop,
    so the block is centred on (i*8/S + 3.5)*hop.
    """
    fe = model.frontend.config
    step = TIME_REDUCTION // shifts
    return (torch.arange(n, dtype=torch.float64) * step + (TIME_REDUCTION - 1) / 2) * fe.hop_length * 1000.0 / fe.sample_rate


def _check(model: PretrainedModel, wave: torch.Tensor, shifts: int) -> None:
    if wave.ndim != 2:
        raise ValueError(f"expected a batch of waveforms (B, N), got shape {tuple(wave.shape)}")
    if shifts not in (1, 2, 4, 8):
        raise ValueError(f"shifts must be 1, 2, 4 or 8 (hop 80/shifts ms), got {shifts}")
    if wave.shape[1] < min_samples(model, shifts):
        raise ValueError(f"waveform of {wave.shape[1]} samples is too short: at least {min_samples(model, shifts)} "
                         "needed; zero-pad it first")


def _logmel_chunk(model: PretrainedModel, padded: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Normalised log-mel frames [a, b) of the waveform, from its reflect-padded copy: (B, 1, F, b - a)."""
    hop, n_fft = model.frontend.config.hop_length, model.frontend.config.n_fft
    seg = padded[:, a * hop:(b - 1) * hop + n_fft]
    return model.frontend.norm(model.frontend.logmel(seg, center=False)).unsqueeze(1)


def iter_chunks(model: PretrainedModel, wave: torch.Tensor, fn: FrameFn, shift: int = 0,
                chunk_frames: int = DEFAULT_CHUNK) -> Iterator[list[torch.Tensor]]:
    """Yield ``fn``'s per-chunk outputs for the encoder grid starting at log-mel frame ``shift``.

    ``fn`` maps a normalised log-mel chunk (B, 1, F, L) to tensors (B, L // 8, D); the yielded
    pieces, concatenated over time, equal ``fn`` applied to the whole shifted log-mel.
    """
    fe = model.frontend.config
    n_mel = fe.n_frames(wave.shape[1])
    n_out = (n_mel - shift) // TIME_REDUCTION
    padded = F.pad(wave[:, None], (fe.n_fft // 2, fe.n_fft // 2), mode="reflect")[:, 0]
    for j0 in range(0, n_out, chunk_frames):
        j1 = min(j0 + chunk_frames, n_out)
        first = shift + TIME_REDUCTION * j0
        a = max(shift, first - CONTEXT)
        # to the real end on the last chunk, so edge effects match the unchunked pass
        b = n_mel if j1 == n_out else min(n_mel, shift + TIME_REDUCTION * j1 + CONTEXT)
        outs = fn(_logmel_chunk(model, padded, a, b))
        skip = (first - a) // TIME_REDUCTION
        yield [o[:, skip:skip + (j1 - j0)] for o in outs]


def encoder_frames(model: PretrainedModel) -> FrameFn:
    return lambda x: [model.encoder.frames(x)]


@torch.no_grad()
def dense_frames(model: PretrainedModel, wave: torch.Tensor, shifts: int = 2, fn: FrameFn | None = None,
                 chunk_frames: int = DEFAULT_CHUNK) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Frames every 80/shifts ms: ([(B, n, D) per output of fn], centre times in ms (n,)).

    Default ``fn``: the encoder's frame embeddings (one output, D = d).
    """
    _check(model, wave, shifts)
    fn = fn or encoder_frames(model)
    step = TIME_REDUCTION // shifts
    n_mel = model.frontend.config.n_frames(wave.shape[1])
    total = sum((n_mel - k * step) // TIME_REDUCTION for k in range(shifts))  # later shifts may lack the last frame
    # Chunks go straight into their interleaved slots (frame j of shift k is output j*S + k), so memory
    # is the output plus one chunk, not several copies of the output (20-min clips).
    outs: list[torch.Tensor] = []
    for k in range(shifts):
        j = 0
        for pieces in iter_chunks(model, wave, fn, k * step, chunk_frames):
            if not outs:
                outs = [p.new_empty(p.shape[0], total, p.shape[2]) for p in pieces]  # (B, total, D) each
            n = pieces[0].shape[1]
            for out, piece in zip(outs, pieces):
                out[:, k + j * shifts:k + (j + n - 1) * shifts + 1:shifts] = piece
            j += n
    return outs, frame_times_ms(model, total, shifts)


@torch.no_grad()
def clip_embedding(model: PretrainedModel, wave: torch.Tensor, chunk_frames: int = DEFAULT_CHUNK) -> torch.Tensor:
    """BYOL-A clip embedding (mean + max over the encoder frames of the whole clip), in bounded memory: (B, d)."""
    _check(model, wave, 1)
    total, peak, n = None, None, 0
    for (frames,) in iter_chunks(model, wave, encoder_frames(model), 0, chunk_frames):
        s, m = frames.sum(dim=1), frames.amax(dim=1)
        total = s if total is None else total + s
        peak = m if peak is None else torch.maximum(peak, m)
        n += frames.shape[1]
    return total / n + peak
