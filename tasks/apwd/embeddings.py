"""Frozen clip embeddings of APwD audio, cached on disk.

The embedding itself is ``tasks.embedders`` (our weights or any HEAR module, one ``Embedder`` for every
task) and the cache is ``tasks.cache`` (one for every task): one ``.npz`` per (model, normalisation,
list of clips), keyed on ``Embedder.identity``, the norm stats it applies and the data (every clip's
path, size and mtime), so an evaluation repeated with the same model and folder loads the embeddings
instead of recomputing them, and any change to either recomputes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..cache import cache_file, cached_arrays
from ..embedders import Embedder, embed_audio_files

__all__ = ["data_key", "embed_files"]

CACHE_FORMAT = "hear-diffbyola/apwd-embeddings/2"


def data_key(paths: Sequence[Path]) -> str:
    """sha256 over every clip's resolved path, size and mtime: changes when any clip is re-rendered."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def embed_files(
    embedder: Embedder,
    paths: Sequence[Path],
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "embedding",
) -> torch.Tensor:
    """Clip embeddings (len(paths), d) of audio files, loaded from / saved to ``cache_dir`` when given."""
    from tqdm import tqdm

    paths = [Path(p) for p in paths]

    def compute() -> dict:
        with tqdm(total=len(paths), desc=desc, disable=not progress, unit="clip") as bar:
            return {
                "embeddings": embed_audio_files(embedder, paths, batch_size, bar, "re-render the pair or remove it")
            }

    path = None
    key = {"format": CACHE_FORMAT, "embedder": embedder.identity, "norm": embedder.norm.cache_key()}
    if cache_dir is not None:
        key["data"] = data_key(paths)
        path = cache_file(cache_dir, embedder.name, key)

    def check(arrays: dict) -> None:  # NaN/Inf never scores (and is never cached)
        embedder.check_finite({desc: arrays["embeddings"]}, {desc: [str(p) for p in paths]})

    return torch.from_numpy(cached_arrays(path, key, compute, check)["embeddings"])
