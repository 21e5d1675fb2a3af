"""The HEAR 2021 API: ``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``.

A thin layer over the core: weights come from :func:`hear_diffbyola.weights.load_pretrained`,
frames from :func:`hear_diffbyola.embed.dense_frames` on the model's :class:`~hear_diffbyola.embed.FrameGrid`
and clip embeddings from :func:`hear_diffbyola.embed.clip_embedding`. What this module adds is the
HEAR contract: input checks, padding rules, sub-batching, output shapes and dtypes.

Embeddings are always the eval-mode ones (BatchNorm running statistics, no dropout), computed by the
frozen inference copy of :mod:`hear_diffbyola.inference`; the model itself is never switched to eval
and never changed, so a model left in train mode, or calls from several threads at once, are safe.

Timestamps every 40 ms (HEAR asks for at most 50 ms). AudioNTT2022 (BYOL-A v2, the default) emits
one frame per 4 log-mel frames: one encoder pass, frame k covers log-mel frames [4k, 4k + 4) and is
centred at 15 + 40k ms. AudioNTT2020 (v1) emits one per 8 (80 ms): a second pass on the log-mel
shifted by 4 frames is interleaved with the first, frame k covers [4k, 4k + 8), centre 35 + 40k ms.

Padding rules (docs/hear.md):

* timestamps: the clip is zero-padded at the end only as far as needed to compute every frame whose
  centre lies inside the clip; frames centred past the end are dropped, so no timestamp lies past
  the end of the audio.
* a clip too short to hold the first frame centre (15 ms for v2, 35 ms for v1 at 16 kHz) is
  zero-padded on both sides so that it sits centred under the first frame, and gives exactly one
  timestamp: the clip's centre.
* scene embeddings: a clip shorter than one encoder frame is zero-padded on both sides to that
  length; longer clips are used as they are (BYOL-A: mean + max over all whole frames).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from .embed import DEFAULT_CHUNK, FrameGrid, clip_embedding, dense_frames
from .inputs import check_audio, check_model_dtype
from .weights import PretrainedModel, load_pretrained

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings"]

# Log-mel frames (10 ms each) per encoder pass over a sub-batch: about 35 kB of activations per
# frame at d = 2048 on CPU, so ~0.6 GB, whatever the batch size and clip length.
FRAME_BUDGET = 16384
CHUNK_FRAMES = DEFAULT_CHUNK  # encoder frames per chunk along time (embed.py: chunked == unchunked)


def load_model(
    model_file_path: str | Path = "",
    *,
    norm_mean: float | None = None,
    norm_std: float | None = None,
    device: str | torch.device = "cpu",
) -> PretrainedModel:
    """HEAR ``load_model``: a ``torch.nn.Module`` with ``sample_rate``, ``scene_embedding_size``,
    ``timestamp_embedding_size``.

    ``model_file_path``: ``""`` -> the shipped default (lambda = 0.5); a ``.safetensors`` from
    ``hear-diffbyola export``; or an official BYOL-A ``AudioNTT2022-BYOLA-64x96d2048.pth`` (v2) or
    ``AudioNTT2020-BYOLA-64x96d*.pth`` (v1), each with its authors' front end and normalisation
    stats. ``norm_mean`` / ``norm_std`` override the
    normalisation stats of either format (heareval: ``--model-options '{"norm_mean": ...}'``).
    Raises :class:`hear_diffbyola.weights.WeightsError` naming the file for missing, corrupt or
    wrong-shaped weights.
    """
    model = load_pretrained(model_file_path or None, norm_mean=norm_mean, norm_std=norm_std, device=device)
    model.scene_embedding_size = int(model.encoder.d)
    model.timestamp_embedding_size = int(model.encoder.d)
    return model


def _check_audio(audio: torch.Tensor, model: PretrainedModel, caller: str) -> None:
    """Raise for input the HEAR contract rules out; warn (never clip) for implausibly loud audio.
    The audio checks are the package's one input check (``inputs.check_audio``), shared with s3prl and the tasks."""
    if not isinstance(model, PretrainedModel):
        raise TypeError(f"{caller}: model must come from hear_diffbyola.load_model(), got {type(model).__name__}")
    check_model_dtype(model, caller)
    check_audio(audio, caller, stacklevel=3)


def _device(model: PretrainedModel) -> torch.device:
    return next(model.parameters()).device


def _sub_batches(model: PretrainedModel, audio: torch.Tensor, n_padded: int) -> Iterator[torch.Tensor]:
    """Slices of the batch whose encoder chunks hold about FRAME_BUDGET log-mel frames together,
    moved to the model's device one at a time, so memory grows with neither batch nor clip length."""
    grid = FrameGrid.of(model, 1)
    per_sound = min(grid.n_log_mel(n_padded), CHUNK_FRAMES * grid.reduction + 2 * grid.chunk_context)
    size = max(1, FRAME_BUDGET // per_sound)
    device = _device(model)
    for i in range(0, audio.shape[0], size):
        yield audio[i : i + size].to(device=device, dtype=torch.float32)


def _pad(wave: torch.Tensor, left: int, right: int) -> torch.Tensor:
    # zero padding; no copy when none is needed (a 20-min clip is 77 MB)
    return F.pad(wave, (left, right)) if left or right else wave


def timestamp_plan(model: PretrainedModel, n_samples: int) -> tuple[int, int, torch.Tensor]:
    """(left pad, right pad, centre times in ms (n,)) for a clip of ``n_samples``: see the module docstring."""
    grid = FrameGrid.of(model)
    # Frame k is centred on sample (k * step + (r - 1) / 2) * hop; compare doubled values to stay in integers.
    twice_first = (grid.reduction - 1) * grid.hop_length
    if 2 * n_samples < twice_first:
        # No frame centre inside the clip: centre the clip under frame 0 instead.
        left = (twice_first - n_samples) // 2
        right = max(0, grid.min_samples - left - n_samples)
        return left, right, torch.tensor([n_samples * 500.0 / grid.sample_rate], dtype=torch.float64)
    n_frames = (2 * n_samples - twice_first) // (2 * grid.hop_samples) + 1
    needed = max(grid.samples_for(n_frames), grid.min_samples)
    return 0, max(0, needed - n_samples), grid.centres_ms(n_frames)


def get_timestamp_embeddings(audio: torch.Tensor, model: PretrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR timestamp embeddings every 40 ms (one encoder pass for AudioNTT2022, two for AudioNTT2020).

    audio: (n_sounds, n_samples) float at ``model.sample_rate``, in [-1, 1].
    Returns embeddings (n_sounds, n_timestamps, D) float32 and centre times in ms
    (n_sounds, n_timestamps) float32, both on the model's device.
    """
    _check_audio(audio, model, "get_timestamp_embeddings")
    device, d = _device(model), int(model.encoder.d)
    n_sounds, n = audio.shape
    if n_sounds == 0:
        return torch.zeros(0, 0, d, device=device), torch.zeros(0, 0, device=device)
    left, right, times = timestamp_plan(model, n)
    out = []
    with torch.no_grad():  # eval-mode embeddings from the frozen inference copy; the model is never touched
        for wave in _sub_batches(model, audio, left + n + right):
            (frames,), _ = dense_frames(model, _pad(wave, left, right), chunk_frames=CHUNK_FRAMES)  # (b, >= n_t, d)
            out.append(frames[:, : len(times)].float())
    stamps = times.to(device=device, dtype=torch.float32)
    # one sub-batch (a long clip): no concatenated copy of a possibly large output
    return (out[0] if len(out) == 1 else torch.cat(out)), stamps.expand(n_sounds, -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: PretrainedModel) -> torch.Tensor:
    """HEAR scene embeddings: BYOL-A's mean + max over time of the encoder frames of the whole clip,
    computed in chunks (memory does not grow with the clip length).

    audio: (n_sounds, n_samples) float at ``model.sample_rate``, in [-1, 1] -> (n_sounds, D) float32
    on the model's device.
    """
    _check_audio(audio, model, "get_scene_embeddings")
    device, d = _device(model), int(model.encoder.d)
    n_sounds, n = audio.shape
    if n_sounds == 0:
        return torch.zeros(0, d, device=device)
    short = max(0, FrameGrid.of(model, 1).min_samples - n)
    left, right = short // 2, short - short // 2
    out = []
    with torch.no_grad():  # eval-mode embeddings from the frozen inference copy; the model is never touched
        for wave in _sub_batches(model, audio, n + short):
            out.append(clip_embedding(model, _pad(wave, left, right), chunk_frames=CHUNK_FRAMES).float())  # (b, d)
    return torch.cat(out)
