"""Frozen clip embeddings of APwD audio, from our weights or any HEAR module, cached on disk.

Ours: ``hear_diffbyola.weights.load_pretrained`` + ``hear_diffbyola.embed.clip_embedding`` (BYOL-A's
mean + max pooling over the whole clip). A HEAR module: ``load_model(PATH)`` then
``get_scene_embeddings(audio, model)`` at the module's ``sample_rate``.

The cache key is a hash of the model's identity (weights file content, norm overrides, or module name
and version plus model file) and of the data (every clip's path, size and mtime), so an evaluation
repeated with the same model and folder loads the embeddings instead of recomputing them, and any change
to either recomputes.
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from hear_diffbyola.audio import AudioReadError, read_audio
from hear_diffbyola.weights import atomic_write, file_sha256

from .vocab import APwDError


class AudioEmbedder:
    """waveforms (B, N) at ``sample_rate`` -> clip embeddings (B, d), plus an identity for the cache."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], sample_rate: int, identity: str, name: str,
                 min_samples: int = 1) -> None:
        self.fn, self.sample_rate, self.identity, self.name, self.min_samples = fn, sample_rate, identity, name, min_samples

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        return self.fn(wave).float().cpu()


def ours(weights: str | Path | None, device: str = "cpu", norm_mean: float | None = None,
         norm_std: float | None = None) -> AudioEmbedder:
    """Our weights file (or an official BYOL-A .pth) through the core loader and clip embedding."""
    from hear_diffbyola.embed import clip_embedding, min_samples
    from hear_diffbyola.weights import DEFAULT_WEIGHTS, load_pretrained

    model = load_pretrained(weights, norm_mean=norm_mean, norm_std=norm_std, device=device)
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    ident = f"ours:{file_sha256(path)}:{model.header['norm']['mean']}:{model.header['norm']['std']}"
    name = path.stem
    return AudioEmbedder(lambda w: clip_embedding(model, w.to(device)), model.sample_rate, ident, name,
                         min_samples(model, 1))


def hear_module(module: str, model_path: str | Path | None, device: str = "cpu") -> AudioEmbedder:
    """Any HEAR-API module by import name: load_model(model_path) + get_scene_embeddings."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise APwDError(f"cannot import HEAR module {module!r} ({e}); install it, or check the name") from e
    for attr in ("load_model", "get_scene_embeddings"):
        if not hasattr(mod, attr):
            raise APwDError(f"{module!r} is not a HEAR module: it has no {attr}()")
    model = mod.load_model(str(model_path)) if model_path else mod.load_model()
    if hasattr(model, "to"):
        model = model.to(device)
    sr = getattr(model, "sample_rate", None)
    if not isinstance(sr, int):
        raise APwDError(f"HEAR module {module!r}: the model from load_model() has no integer sample_rate attribute")
    mp = Path(model_path) if model_path else None
    ident = f"hear:{module}:{getattr(mod, '__version__', '')}:" + (file_sha256(mp) if mp and mp.is_file() else str(mp))
    return AudioEmbedder(lambda w: mod.get_scene_embeddings(w.to(device), model), sr, ident,
                         module.split(".")[0] if not mp else f"{module}:{mp.stem}")


def data_key(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _load_batch(paths: Sequence[Path], sr: int, min_len: int) -> list[np.ndarray]:
    out = []
    for p in paths:
        try:
            x = read_audio(p, sr)
        except AudioReadError as e:
            raise APwDError(f"{e}; re-render the pair or remove it") from e
        out.append(np.pad(x, (0, max(0, min_len - len(x)))))  # only sub-second clips are padded
    return out


def embed_files(embedder: AudioEmbedder, paths: Sequence[Path], cache_dir: str | Path | None = None,
                batch_size: int = 16, progress: bool = True, desc: str = "embedding") -> torch.Tensor:
    """Clip embeddings (len(paths), d) of audio files, loaded from / saved to ``cache_dir`` when given."""
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{embedder.identity}\n{data_key(paths)}".encode()).hexdigest()[:24]
        cache = Path(cache_dir) / f"{key}.npy"
        if cache.is_file():
            emb = np.load(cache, allow_pickle=False)
            if emb.shape[0] == len(paths):
                return torch.from_numpy(emb)
    chunks = []
    bar = tqdm(total=len(paths), desc=desc, disable=not progress, unit="clip")
    for i in range(0, len(paths), batch_size):
        waves = _load_batch(paths[i:i + batch_size], embedder.sample_rate, embedder.min_samples)
        # equal lengths are stacked into one batch; a ragged batch (unusual in APwD) goes clip by clip
        if len({len(w) for w in waves}) == 1:
            chunks.append(embedder(torch.from_numpy(np.stack(waves))))
        else:
            chunks.extend(embedder(torch.from_numpy(w)[None]) for w in waves)
        bar.update(len(waves))
    bar.close()
    emb = torch.cat(chunks).float()
    if cache is not None:
        def save(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, emb.numpy(), allow_pickle=False)
        atomic_write(cache, save)
    return emb
