"""Inference paths shared by the HEAR module, the s3prl upstream and the task evaluators.

:class:`FrameGrid` is the one description of where encoder frames lie on the waveform. The encoder
emits one frame per ``r`` log-mel frames (r = 4, 40 ms for AudioNTT2022; r = 8, 80 ms for
AudioNTT2020). HEAR and s3prl want a frame every 40 ms: AudioNTT2022 gives it natively in one pass;
AudioNTT2020 gets it from S = 2 passes on the log-mel shifted by r/S frames, interleaved. Either
way every frame is computed by exactly the encoder's own operations, centred on its own timestamp.

Long audio is processed in chunks of log-mel frames with 2r frames of context on each side, aligned
to the encoder's pooling grid. The receptive field reaches r - 1 log-mel frames beyond a frame's
own r (each conv block k adds 2^(k-1) on each side), so kept frames never see a chunk edge: chunked
equals unchunked to float rounding, while memory is bounded by the chunk, not the clip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .weights import PretrainedModel

DEFAULT_CHUNK = 512  # encoder frames per chunk (v2: 20 s, v1: 41 s of audio); bounds activation memory
DENSE_STEP = 4  # log-mel frames between dense (HEAR / s3prl) frames: 40 ms at a 10 ms hop

FrameFn = Callable[[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class FrameGrid:
    """Frames every ``reduction / shifts`` log-mel frames: frame i of shift k (output i * shifts + k)
    covers log-mel frames [i * r + k * r / S, ... + r) and is centred on the middle of that block."""

    sample_rate: int
    hop_length: int
    n_fft: int
    reduction: int  # log-mel frames per encoder frame
    shifts: int = 1  # encoder passes on shifted log-mels

    def __post_init__(self) -> None:
        if self.shifts < 1 or self.reduction % self.shifts:
            raise ValueError(f"shifts must divide the encoder's {self.reduction}-frame pooling, got {self.shifts}")

    @classmethod
    def of(cls, model: PretrainedModel, shifts: int | None = None) -> "FrameGrid":
        """The model's grid; ``shifts=None`` gives the dense 40 ms grid (1 pass for v2, 2 for v1)."""
        fe, r = model.frontend.config, model.encoder.time_reduction
        return cls(fe.sample_rate, fe.hop_length, fe.n_fft, r, max(1, r // DENSE_STEP) if shifts is None else shifts)

    @property
    def step(self) -> int:
        """Log-mel frames between consecutive frames."""
        return self.reduction // self.shifts

    @property
    def hop_samples(self) -> int:
        """Samples between consecutive frames (s3prl's downsample rate)."""
        return self.step * self.hop_length

    @property
    def context(self) -> int:
        """Log-mel frames the receptive field reaches beyond a frame's own block, on each side."""
        return self.reduction - 1

    @property
    def chunk_context(self) -> int:
        """Log-mel frames of context kept each side of a chunk: >= context, a multiple of the pooling."""
        return 2 * self.reduction

    def centres_ms(self, n: int) -> torch.Tensor:
        """Centre times (ms from the start of the waveform) of the first ``n`` frames (float64).

        Log-mel frame m is centred on sample m * hop (centred STFT), so block [a, a + r) on (a + (r - 1)/2) * hop."""
        mel = torch.arange(n, dtype=torch.float64) * self.step + (self.reduction - 1) / 2
        return mel * self.hop_length * 1000.0 / self.sample_rate

    def n_log_mel(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames all passes give together for ``n_samples`` (later shifts may lack the last frame)."""
        n_mel = self.n_log_mel(n_samples)
        return sum(max(0, (n_mel - k * self.step) // self.reduction) for k in range(self.shifts))

    def samples_for(self, n_frames: int) -> int:
        """Fewest samples that give frames 0 .. n_frames - 1 (and allow the front end's reflect padding)."""
        need_mel = (n_frames - 1) * self.step + self.reduction
        return max((need_mel - 1) * self.hop_length, self.n_fft // 2 + 1)

    @property
    def min_samples(self) -> int:
        """Shortest waveform that gives every pass at least one frame."""
        return self.samples_for(self.shifts)


def min_samples(model: PretrainedModel, shifts: int | None = 1) -> int:
    return FrameGrid.of(model, shifts).min_samples


def _check(grid: FrameGrid, wave: torch.Tensor) -> None:
    if wave.ndim != 2:
        raise ValueError(f"expected a batch of waveforms (B, N), got shape {tuple(wave.shape)}")
    if wave.shape[1] < grid.min_samples:
        raise ValueError(f"waveform of {wave.shape[1]} samples is too short: at least {grid.min_samples} "
                         "needed; zero-pad it first")


def _logmel_chunk(model: PretrainedModel, padded: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Normalised log-mel frames [a, b) of the waveform, from its reflect-padded copy: (B, 1, F, b - a)."""
    hop, n_fft = model.frontend.config.hop_length, model.frontend.config.n_fft
    seg = padded[:, a * hop:(b - 1) * hop + n_fft]
    return model.frontend.norm(model.frontend.logmel(seg, center=False)).unsqueeze(1)


def iter_chunks(model: PretrainedModel, wave: torch.Tensor, fn: FrameFn, shift: int = 0,
                chunk_frames: int = DEFAULT_CHUNK) -> Iterator[list[torch.Tensor]]:
    """Yield ``fn``'s per-chunk outputs for the encoder grid starting at log-mel frame ``shift``.

    ``fn`` maps a normalised log-mel chunk (B, 1, F, L) to tensors (B, L // r, D); the yielded
    pieces, concatenated over time, equal ``fn`` applied to the whole shifted log-mel.
    """
    grid = FrameGrid.of(model, 1)
    r, ctx = grid.reduction, grid.chunk_context
    fe = model.frontend.config
    n_mel = grid.n_log_mel(wave.shape[1])
    n_out = (n_mel - shift) // r
    padded = F.pad(wave[:, None], (fe.n_fft // 2, fe.n_fft // 2), mode="reflect")[:, 0]
    for j0 in range(0, n_out, chunk_frames):
        j1 = min(j0 + chunk_frames, n_out)
        first = shift + r * j0
        a = max(shift, first - ctx)
        # to the real end on the last chunk, so edge effects match the unchunked pass
        b = n_mel if j1 == n_out else min(n_mel, shift + r * j1 + ctx)
        outs = fn(_logmel_chunk(model, padded, a, b))
        skip = (first - a) // r
        yield [o[:, skip:skip + (j1 - j0)] for o in outs]


def encoder_frames(model: PretrainedModel) -> FrameFn:
    return lambda x: [model.encoder.frames(x)]


@torch.no_grad()
def dense_frames(model: PretrainedModel, wave: torch.Tensor, shifts: int | None = None, fn: FrameFn | None = None,
                 chunk_frames: int = DEFAULT_CHUNK) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Frames on ``FrameGrid.of(model, shifts)`` (default: every 40 ms): ([(B, n, D) per output of fn],
    centre times in ms (n,)). Default ``fn``: the encoder's frame embeddings (one output, D = d)."""
    grid = FrameGrid.of(model, shifts)
    _check(grid, wave)
    fn = fn or encoder_frames(model)
    total = grid.n_frames(wave.shape[1])
    S = grid.shifts
    # Chunks go straight into their interleaved slots (frame j of shift k is output j*S + k), so memory
    # is the output plus one chunk, not several copies of the output (20-min clips).
    outs: list[torch.Tensor] = []
    for k in range(S):
        j = 0
        for pieces in iter_chunks(model, wave, fn, k * grid.step, chunk_frames):
            if S == 1 and j == 0 and pieces[0].shape[1] == total:
                outs = pieces  # one pass in one chunk: nothing to interleave or copy
                break
            if not outs:
                outs = [p.new_empty(p.shape[0], total, p.shape[2]) for p in pieces]  # (B, total, D) each
            n = pieces[0].shape[1]
            for out, piece in zip(outs, pieces):
                out[:, k + j * S:k + (j + n - 1) * S + 1:S] = piece
            j += n
    return outs, grid.centres_ms(total)


@torch.no_grad()
def clip_embedding(model: PretrainedModel, wave: torch.Tensor, chunk_frames: int = DEFAULT_CHUNK) -> torch.Tensor:
    """BYOL-A clip embedding (mean + max over the encoder frames of the whole clip), in bounded memory: (B, d)."""
    _check(FrameGrid.of(model, 1), wave)
    total, peak, n = None, None, 0
    for (frames,) in iter_chunks(model, wave, encoder_frames(model), 0, chunk_frames):
        s, m = frames.sum(dim=1), frames.amax(dim=1)
        total = s if total is None else total + s
        peak = m if peak is None else torch.maximum(peak, m)
        n += frames.shape[1]
    return total / n + peak
