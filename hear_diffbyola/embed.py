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

A tile (a group of sounds, one pass, one chunk) is one encoder call and independent of every other:
on CPU with several threads the fast path runs them on single-threaded workers, one per core
(:func:`hear_diffbyola.runtime.parallel_map`), and combines their results in tile order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from . import runtime
from .inference import inference_encoder, logmel_time_major
from .weights import PretrainedModel

DEFAULT_CHUNK = 512  # encoder frames per chunk (v2: 20 s, v1: 41 s of audio); bounds activation memory
# Log-mel frames per encoder call (clips x chunk length), chosen by default_tile_frames(). One thread:
# ~1024 keeps each activation ~16 MB (cache, no page faults) and was fastest (CPU time, 16 x 10 s clips);
# with more threads every op must carry enough work per thread to pay for its synchronisation, and 4096
# was fastest at 2 threads on the shared 2-core CPU (docs/performance.md).
TILE_FRAMES_ONE_THREAD = 1024
TILE_FRAMES_PER_THREAD = 2048
# With several threads the fast path on CPU runs many tiles at once, one per single-threaded worker
# (runtime.parallel_map), each of TILE_FRAMES_WORKER log-mel frames: faster than one tile at a time
# with every op split over the threads (bench/embed_throughput.py --workers, docs/performance.md).
# WORKERS: None follows torch.get_num_threads(); 1 turns the workers off.
TILE_FRAMES_WORKER = 2048
WORKERS: int | None = None
# Workers only when they would share the tiles evenly enough (_balance): a worker waiting for another's last
# tile gives back the ~10-20 % they gain (bench/embed_throughput.py --workers: two tiles of 2048 and 950
# frames on two workers ran 0.85x one tile at a time).
MIN_BALANCE = 0.85
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
    def of(cls, model: PretrainedModel, shifts: int | None = None) -> FrameGrid:
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
        raise ValueError(
            f"waveform of {wave.shape[1]} samples is too short: at least {grid.min_samples} needed; zero-pad it first"
        )


def _segment(wave: torch.Tensor, a: int, b: int, hop: int, n_fft: int) -> torch.Tensor:
    """Samples of log-mel frames [a, b) of the centred STFT (reflect padding by n_fft // 2): (B, (b - a - 1) hop + n_fft).

    A view of the waveform inside it; only a segment reaching past an end is built, from its inside part
    and the mirrored edges, so the clip itself is never copied (a 20-min clip is 77 MB)."""
    pad, n = n_fft // 2, wave.shape[1]
    lo, hi = a * hop - pad, (b - 1) * hop + n_fft - pad  # waveform coordinates, possibly outside [0, n)
    if lo >= 0 and hi <= n:
        return wave[:, lo:hi]
    parts = [wave[:, max(lo, 0) : min(hi, n)]]
    if lo < 0:  # reflect at 0: sample -i is sample i
        parts.insert(0, wave[:, 1 : 1 - lo].flip(1))
    if hi > n:  # reflect at n - 1: sample n - 1 + k is sample n - 1 - k
        parts.append(wave[:, 2 * n - 1 - hi : n - 1].flip(1))
    return torch.cat(parts, dim=1)


def _logmel_chunk(model: PretrainedModel, wave: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Normalised log-mel frames [a, b) of the waveform, time-major: (B, 1, b - a, F)."""
    fe = model.frontend.config
    return logmel_time_major(model.frontend, _segment(wave, a, b, fe.hop_length, fe.n_fft))


def _chunk_spans(
    grid: FrameGrid, n_mel: int, shift: int, chunk_frames: int
) -> Iterator[tuple[int, int, int, int, int]]:
    """(a, b, skip, j0, j1): encoder frames j0..j1 - 1 of the grid starting at log-mel frame ``shift`` come
    from log-mel frames [a, b), as outputs skip .. skip + j1 - j0 - 1 of that chunk."""
    r, ctx = grid.reduction, grid.chunk_context
    n_out = (n_mel - shift) // r
    for j0 in range(0, n_out, chunk_frames):
        j1 = min(j0 + chunk_frames, n_out)
        first = shift + r * j0
        a = max(shift, first - ctx)
        # to the real end on the last chunk, so edge effects match the unchunked pass
        b = n_mel if j1 == n_out else min(n_mel, shift + r * j1 + ctx)
        yield a, b, (first - a) // r, j0, j1


def default_tile_frames() -> int:
    """Log-mel frames per encoder call for torch's current thread count (see TILE_FRAMES_*)."""
    threads = torch.get_num_threads()
    return TILE_FRAMES_ONE_THREAD if threads <= 1 else TILE_FRAMES_PER_THREAD * threads


def _fast_chunk(grid: FrameGrid, chunk_frames: int, tile_frames: int) -> int:
    """Encoder frames per chunk for the fast path: the caller's ``chunk_frames``, at most a tile long."""
    return max(1, min(chunk_frames, tile_frames // grid.reduction))


def _groups(grid: FrameGrid, n_sounds: int, n_mel: int, chunk_frames: int, tile_frames: int) -> Iterator[slice]:
    """Slices of the batch whose chunks hold about ``tile_frames`` log-mel frames together, so activations
    stay small (tens of MB: cache-friendly, few page faults) whatever the batch size and clip length."""
    per_sound = min(n_mel, chunk_frames * grid.reduction + 2 * grid.chunk_context)
    size = max(1, tile_frames // per_sound)
    for i in range(0, n_sounds, size):
        yield slice(i, min(i + size, n_sounds))


Span = tuple[int, int, int, int, int]  # (a, b, skip, j0, j1) of _chunk_spans
Tile = tuple[slice, int, Span]  # (sounds, pass, span): one encoder call


def _tiles(grid: FrameGrid, n_sounds: int, n_mel: int, passes: int, chunk_frames: int, tile_frames: int) -> list[Tile]:
    """Every encoder call of a batch: each group of sounds, pass k (log-mel shifted by k steps), chunk."""
    one = replace(grid, shifts=1)
    return [
        (rows, k, span)
        for rows in _groups(one, n_sounds, n_mel, chunk_frames, tile_frames)
        for k in range(passes)
        for span in _chunk_spans(one, n_mel, k * grid.step, chunk_frames)
    ]


def _balance(tiles: list[Tile], workers: int) -> float:
    """Busy share of ``workers`` taking the tiles in order, each the next free worker's (a pool's queue), with
    a tile's cost its log-mel frames: 1 when they all finish together, 0.5 for two workers and one tile."""
    free = [0] * workers
    for rows, _, (a, b, _, _, _) in tiles:
        i = free.index(min(free))
        free[i] += (rows.stop - rows.start) * (b - a)
    return sum(free) / (workers * max(free))


def _schedule(
    grid: FrameGrid, wave: torch.Tensor, passes: int, chunk_frames: int, tile_frames: int | None, fast: bool
) -> tuple[int, list[Tile]]:
    """(workers, tiles) for one call. The fast path on CPU with several threads runs tiles of one worker's
    size on single-threaded workers (runtime.parallel_map) when they keep the workers evenly busy; otherwise
    tiles run one after another, each op using every thread, at the size that suits that."""
    n_sounds, n_mel = wave.shape[0], grid.n_log_mel(wave.shape[1])
    threads = 1 if runtime.in_worker() else WORKERS or torch.get_num_threads()
    if fast and wave.device.type == "cpu" and threads > 1:
        tile = tile_frames or TILE_FRAMES_WORKER
        tiles = _tiles(grid, n_sounds, n_mel, passes, _fast_chunk(grid, chunk_frames, tile), tile)
        if _balance(tiles, threads) >= MIN_BALANCE:
            return threads, tiles
    tile = tile_frames or default_tile_frames()
    chunk = _fast_chunk(grid, chunk_frames, tile) if fast else chunk_frames
    return 1, _tiles(grid, n_sounds, n_mel, passes, chunk, tile)


def _time_major(fn: FrameFn) -> bool:
    return bool(getattr(fn, "time_major", False))


class FastFrames:
    """Frame function of the frozen inference copy (:mod:`hear_diffbyola.inference`), time-major input."""

    time_major = True

    def __init__(self, model: PretrainedModel, layers: bool = False) -> None:
        self.fast = inference_encoder(model.encoder)
        self.layers = layers

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fast.layer_frames(x) if self.layers else [self.fast.frames(x)]


def encoder_frames(model: PretrainedModel) -> FrameFn:
    """The encoder's frame embeddings, eval mode, through the fast inference copy."""
    return FastFrames(model)


def layer_frames(model: PretrainedModel) -> FrameFn:
    """``encoder.layer_frames`` (s3prl's hidden states), eval mode, through the fast inference copy."""
    return FastFrames(model, layers=True)


class _Outputs:
    """The (B, total, D) outputs of dense_frames, frame j of pass k at j * S + k, allocated by the first
    tile to finish. Tiles may run on several threads; each writes its own slots, so only the allocation
    is locked, not the copies (which also take the page faults of the fresh output)."""

    def __init__(self, n_sounds: int, total: int, passes: int) -> None:
        self.n_sounds, self.total, self.passes = n_sounds, total, passes
        self.tensors: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def write(self, rows: slice, pieces: list[torch.Tensor], k: int, j: int) -> None:
        with self._lock:
            if not self.tensors:
                whole = rows == slice(0, self.n_sounds) and j == 0 and pieces[0].shape[1] == self.total
                if whole and self.passes == 1:
                    self.tensors = pieces  # one pass in one tile: nothing to interleave or copy
                    return
                self.tensors = [p.new_empty(self.n_sounds, self.total, p.shape[2]) for p in pieces]
            tensors = self.tensors
        S, n = self.passes, pieces[0].shape[1]
        for out, piece in zip(tensors, pieces):
            out[rows, k + j * S : k + (j + n - 1) * S + 1 : S] = piece


def _first_shifted_frame(model: PretrainedModel, wave: torch.Tensor, grid: FrameGrid, out: torch.Tensor) -> None:
    """Frame 0 of the shifted grid starts at the clip's left edge in the two-pass reference: its receptive
    field holds zero padding where the shared pass holds signal. Computed exactly, for the whole batch at once."""
    n_mel, step, r = grid.n_log_mel(wave.shape[1]), grid.step, grid.reduction
    if (n_mel - step) // r > 0:
        x = _logmel_chunk(model, wave, step, min(n_mel, step + 3 * r))
        out[:, 1] = inference_encoder(model.encoder).frames(x)[:, 0]


@torch.no_grad()
def dense_frames(
    model: PretrainedModel,
    wave: torch.Tensor,
    shifts: int | None = None,
    fn: FrameFn | None = None,
    chunk_frames: int = DEFAULT_CHUNK,
    tile_frames: int | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Frames on ``FrameGrid.of(model, shifts)`` (default: every 40 ms): ([(B, n, D) per output of fn],
    centre times in ms (n,)). Default ``fn``: the encoder's frame embeddings in eval mode (one output,
    D = d), through the frozen inference copy; a shifted pair of grids shares one pass. The model is
    never changed (no mode switch), so concurrent calls are safe.

    ``fn`` maps a normalised log-mel chunk (B, 1, F, L) (or time-major (B, 1, L, F) if ``fn.time_major``)
    to tensors (B, L // r, D). Memory is the output plus one tile per worker: chunks go straight into
    their interleaved slots, never into copies of the output (20-min clips)."""
    grid = FrameGrid.of(model, shifts)
    _check(grid, wave)
    total, n_mel = grid.n_frames(wave.shape[1]), grid.n_log_mel(wave.shape[1])
    # v1's two 40 ms grids from one pass per chunk (inference.phase_frames): only the last pool differs
    shared = fn is None and grid.shifts == 2 and grid.step * 2 == grid.reduction
    passes = 1 if shared else grid.shifts
    workers, tiles = _schedule(grid, wave, passes, chunk_frames, tile_frames, fn is None or isinstance(fn, FastFrames))
    fn = fn or encoder_frames(model)
    fast = inference_encoder(model.encoder) if shared else None  # a caller's fn needs no frozen copy
    tm = _time_major(fn)
    n_shifted = (n_mel - grid.step) // grid.reduction  # frames of the shifted grid
    outs = _Outputs(wave.shape[0], total, grid.shifts)

    def run(tile: Tile) -> None:
        rows, k, (a, b, skip, j0, j1) = tile
        x = _logmel_chunk(model, wave[rows], a, b)  # (b, 1, L, F)
        if not shared:
            pieces = fn(x if tm else x.transpose(2, 3))
            outs.write(rows, [o[:, skip : skip + (j1 - j0)] for o in pieces], k, j0)
            return
        for phase, frames in enumerate(fast.phase_frames(x, 2)):
            n = min(j1, n_shifted if phase else j1) - j0
            if n > 0:
                outs.write(rows, [frames[:, skip : skip + n]], phase, j0)

    runtime.parallel_map(run, tiles, workers)
    if shared:
        _first_shifted_frame(model, wave, grid, outs.tensors[0])
    return outs.tensors, grid.centres_ms(total)


@torch.no_grad()
def clip_embedding(
    model: PretrainedModel, wave: torch.Tensor, chunk_frames: int = DEFAULT_CHUNK, tile_frames: int | None = None
) -> torch.Tensor:
    """BYOL-A clip embedding (mean + max over the encoder frames of the whole clip), eval mode, in bounded
    memory, through the frozen inference copy (the model is never changed): (B, d)."""
    grid = FrameGrid.of(model, 1)
    _check(grid, wave)
    workers, tiles = _schedule(grid, wave, 1, chunk_frames, tile_frames, True)
    fast = inference_encoder(model.encoder)

    def run(tile: Tile) -> tuple[torch.Tensor, torch.Tensor]:
        rows, _, (a, b, skip, j0, j1) = tile
        frames = fast.frames(_logmel_chunk(model, wave[rows], a, b))[:, skip : skip + (j1 - j0)]
        return frames.sum(dim=1), frames.amax(dim=1)

    out = wave.new_empty(wave.shape[0], model.encoder.d)
    total: dict[int, torch.Tensor] = {}
    peak: dict[int, torch.Tensor] = {}
    # combined in tile order whatever thread computed them: the same sums for the same input
    for (rows, _, _), (s, m) in zip(tiles, runtime.parallel_map(run, tiles, workers)):
        if rows.start in total:
            total[rows.start].add_(s)
            torch.maximum(peak[rows.start], m, out=peak[rows.start])
        else:
            total[rows.start], peak[rows.start] = s, m
    n = grid.n_frames(wave.shape[1])
    for rows, _, _ in tiles:
        if rows.start in total:
            out[rows] = total.pop(rows.start) / n + peak.pop(rows.start)
    return out
