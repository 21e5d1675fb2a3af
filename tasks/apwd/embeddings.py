"""Frozen clip embeddings of APwD audio, cached on disk.

The embedding itself is ``tasks.embedders`` (our weights or any HEAR module, one ``Embedder`` for every
task). What is APwD's own is the cache: one ``.npy`` per (model, list of clips), keyed by a hash of
``Embedder.identity`` and of the data (every clip's path, size and mtime), so an evaluation repeated with
the same model and folder loads the embeddings instead of recomputing them, and any change to either
recomputes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hear_diffbyola.weights import atomic_write

from ..embedders import Embedder, embed_audio_files

__all__ = ["data_key", "embed_files"]


def data_key(paths: Sequence[Path]) -> str:
    """sha256 over every clip's resolved path, size and mtime: changes when any clip is re-rendered."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def embed_files(embedder: Embedder, paths: Sequence[Path], cache_dir: str | Path | None = None,
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
    with tqdm(total=len(paths), desc=desc, disable=not progress, unit="clip") as bar:
        emb = embed_audio_files(embedder, paths, batch_size, bar, "re-render the pair or remove it")
    if cache is not None:
        def save(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, emb, allow_pickle=False)
        atomic_write(cache, save)
    return torch.from_numpy(emb)
