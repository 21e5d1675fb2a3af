"""Clip embeddings for the task evaluators: our weights through the core, or any HEAR-API module.

One :class:`Embedder` class serves every task (BgKnown, APwD, HEAR scene tasks). It is built by
:func:`ours` (``weights.load_pretrained`` + ``embed.clip_embedding``: BYOL-A's mean + max pooling of the
whole clip, in bounded memory) or :func:`hear_module` (``load_model`` / ``get_scene_embeddings`` of any
module that implements the HEAR API); :func:`make_embedder` picks one from command-line style arguments.

``Embedder.identity`` names the model for caches: the sha256 of the weights file and the norm stats for
ours; the module name, its ``__version__`` and the model file's sha256 for a HEAR module. A cache keyed
on it is invalidated by a retrained or re-normalised model, never by a renamed or moved file. Each task
keeps its own cache format; this module caches nothing.
"""
from __future__ import annotations

import importlib
import itertools
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from hear_diffbyola.audio import AudioReadError, read_audio
from hear_diffbyola.weights import file_sha256

from . import TaskError

__all__ = ["Embedder", "ours", "hear_module", "make_embedder", "embed_waves", "embed_audio_files"]

ClipFn = Callable[[torch.Tensor], Any]  # (B, N) float32 CPU tensor -> (B, d) tensor or array


class Embedder:
    """One model's clip embeddings, (B, N) waveforms at ``sample_rate`` -> (B, d), with what callers need
    to batch (``min_samples``), cache (``identity``) and report (``name``) them. Build it with :func:`ours`,
    :func:`hear_module` or :func:`make_embedder`; the constructor is for tests and new model kinds."""

    def __init__(self, fn: ClipFn, *, name: str, sample_rate: int, identity: str, min_samples: int = 1,
                 source: str | None = None) -> None:
        self._fn = fn
        self.name = name                  # row name in result tables
        self.sample_rate = int(sample_rate)
        self.identity = identity          # stable across renames; changes when the embeddings could change
        self.min_samples = int(min_samples)  # shorter clips must be zero-padded (embed_waves does it)
        self._source = source or name     # what produced the output, for error messages

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, sample_rate={self.sample_rate}, identity={self.identity!r})"

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """(B, N) float32 at ``sample_rate`` -> (B, d) float32, without autograd."""
        waves = np.asarray(waves)
        if waves.ndim != 2:
            raise TaskError(f"{self.name}: embed() takes a batch of waveforms (B, N), got shape {waves.shape}; "
                            "embed a list of clips with embed_waves()")
        audio = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
        with torch.no_grad():
            out = self._fn(audio)
        out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if out.ndim != 2 or out.shape[0] != waves.shape[0]:
            raise TaskError(f"{self._source} returned shape {out.shape} for a batch of {waves.shape[0]} clips; "
                            f"expected ({waves.shape[0]}, d): a clip-level (scene) embedding per clip")
        return out.astype(np.float32, copy=False)


def ours(weights: str | Path | None = None, device: str = "cpu", norm_mean: float | None = None,
         norm_std: float | None = None) -> Embedder:
    """Our ``.safetensors`` export (or an official BYOL-A .pth; ``None`` = the shipped weights) through the
    core loader and ``clip_embedding``. Raises ``WeightsError`` for a missing or unreadable file."""
    from hear_diffbyola.embed import clip_embedding, min_samples
    from hear_diffbyola.weights import DEFAULT_WEIGHTS, load_pretrained

    model = load_pretrained(weights, norm_mean=norm_mean, norm_std=norm_std, device=device)
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    norm = model.header["norm"]
    # the norm stats belong to the identity: overriding them changes every embedding of the same file
    identity = f"ours:sha256={file_sha256(path)}:norm={float(norm['mean'])!r},{float(norm['std'])!r}"
    return Embedder(lambda audio: clip_embedding(model, audio.to(device)), name=path.stem,
                    sample_rate=model.sample_rate, identity=identity, min_samples=min_samples(model, 1),
                    source=f"clip_embedding of {path}")


def _model_device(model: Any, default: str) -> torch.device | str:
    """Where a HEAR model's weights are (the audio must go there); ``default`` for a model without any."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None) \
        if isinstance(model, torch.nn.Module) else None
    return default if first is None else first.device


def hear_module(module: str, model_path: str | Path | None = None, device: str = "cpu") -> Embedder:
    """Any module with the HEAR API, by import name: ``load_model(model_path)`` (or ``load_model()``) -> a
    model with an integer ``sample_rate``; ``get_scene_embeddings(audio (B, N) tensor, model)`` -> (B, d)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise TaskError(f"cannot import HEAR module {module!r} ({e}); install it or put its folder on "
                        "PYTHONPATH, or check the name") from e
    for attr in ("load_model", "get_scene_embeddings"):
        if not callable(getattr(mod, attr, None)):
            raise TaskError(f"{module!r} is not a HEAR module: it has no {attr}() "
                            "(the HEAR API needs load_model and get_scene_embeddings)")
    path = Path(model_path) if model_path else None
    if path is not None and not path.exists():
        raise TaskError(f"model file {path} for HEAR module {module!r} does not exist; give an existing file "
                        "with --model, or no --model if the module loads its own default")
    model = mod.load_model(str(path)) if path is not None else mod.load_model()
    if isinstance(model, torch.nn.Module):  # the HEAR API returns one; .to is only safe on a Module
        model = model.to(device)
    rate = getattr(model, "sample_rate", None)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise TaskError(f"HEAR module {module!r}: the model from load_model() has no positive integer "
                        f"sample_rate attribute (got {rate!r}); the HEAR API requires one")
    version = str(getattr(mod, "__version__", "") or "unknown")
    if path is None:
        model_part = "default model"
    elif path.is_file():
        model_part = f"sha256={file_sha256(path)}"
    else:  # a model folder: its path is the best identity we can afford to compute
        model_part = f"path={path.resolve()}"
    return Embedder(lambda audio: mod.get_scene_embeddings(audio.to(_model_device(model, device)), model),
                    name=module if path is None else f"{module}:{path.stem}", sample_rate=int(rate),
                    identity=f"hear:{module}:version={version}:{model_part}",
                    source=f"HEAR module {module!r}: get_scene_embeddings")


_hear_module = hear_module  # make_embedder's parameter of the same name hides the function


def make_embedder(model: str | Path | None = None, hear_module: str | None = None, device: str = "cpu") -> Embedder:
    """Command-line style choice: ``hear_module`` given -> that module with ``model`` as its model file;
    otherwise ``model`` is our weights file (``None`` = the shipped weights)."""
    return _hear_module(hear_module, model, device) if hear_module else ours(model, device)


def _as_clip(wave: np.ndarray, index: int, embedder: Embedder) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise TaskError(f"clip {index} has shape {wave.shape}; embed_waves takes 1-D (mono) waveforms at "
                        f"{embedder.sample_rate} Hz")
    # zeros at the end: only clips too short for one encoder frame are touched
    return np.pad(wave, (0, max(0, embedder.min_samples - wave.size)))


def embed_waves(embedder: Embedder, waves: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """1-D clips at ``embedder.sample_rate`` -> (len(waves), d) float32 in order ((0, 0) for no clips).

    Clips shorter than ``embedder.min_samples`` are zero-padded to it. A batch of ``batch_size`` clips of
    equal length is embedded in one call; a batch of ragged lengths goes clip by clip, since padding clips
    to a common length would change their pooled embeddings.
    """
    if batch_size < 1:
        raise TaskError(f"batch_size must be at least 1, got {batch_size}")
    out: list[np.ndarray] = []
    for i in range(0, len(waves), batch_size):
        batch = [_as_clip(waves[j], j, embedder) for j in range(i, min(i + batch_size, len(waves)))]
        if len({w.size for w in batch}) == 1:
            out.append(embedder.embed(np.stack(batch)))
        else:
            out.extend(embedder.embed(w[None]) for w in batch)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_audio_files(embedder: Embedder, paths: Sequence[str | Path], batch_size: int = 16, bar: Any = None,
                      damaged_hint: str = "") -> np.ndarray:
    """Audio files -> (len(paths), d) float32, read ``batch_size`` at a time (memory: one batch of audio).

    ``bar``: anything with ``update(n)`` (a tqdm bar), advanced per batch. An unreadable file raises
    ``TaskError`` naming it, followed by ``damaged_hint`` (what the user should do about it).
    """
    out: list[np.ndarray] = []
    for i in range(0, len(paths), batch_size):
        waves = []
        for p in paths[i:i + batch_size]:
            try:
                waves.append(read_audio(p, embedder.sample_rate))
            except AudioReadError as e:
                raise TaskError(f"{e}; {damaged_hint}" if damaged_hint else str(e)) from None
        out.append(embed_waves(embedder, waves, batch_size))
        if bar is not None:
            bar.update(len(waves))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
