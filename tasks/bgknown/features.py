"""Scene embeddings of a task's mixtures and references, from our weights or any HEAR module, cached.

The embedding itself is ``tasks.embedders`` (one ``Embedder`` for every task). What is BgKnown's own is
the cache: one ``.npz`` per (model, task build), keyed by ``Embedder.identity`` (the model file's sha256
and norm stats, or the HEAR module's name, version and model file) and the task's build id, so a rebuilt
task or a retrained model never reuses stale embeddings.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from hear_diffbyola.weights import atomic_write

from ..embedders import Embedder, embed_audio_files
from .manifest import REFS, SPLITS, BgKnownTask

__all__ = ["KINDS", "task_embeddings", "cache_path"]

KINDS = ("mix", *REFS)  # the mixture and its three background references
CACHE_FORMAT = "hear-diffbyola/bgknown-embeddings/1"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "model"


def cache_path(task: BgKnownTask, embedder: Embedder, cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir or TASK/embeddings>/<model name>-<hash of (model identity, build id)>.npz``."""
    key = json.dumps({"embedder": embedder.identity, "build_id": task.build_id}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir or task.root / "embeddings") / f"{_slug(embedder.name)}-{digest}.npz"


def _load_cache(path: Path, task: BgKnownTask) -> dict[str, dict[str, np.ndarray]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != CACHE_FORMAT or str(z["build_id"]) != task.build_id:
                return None
            out = {}
            for split in SPLITS:
                if list(z[f"{split}/names"]) != [it.name for it in task.items[split]]:
                    return None
                out[split] = {k: z[f"{split}/{k}"] for k in KINDS}
            return out
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from another version: recompute and overwrite


def _save_cache(path: Path, task: BgKnownTask, emb: dict[str, dict[str, np.ndarray]]) -> None:
    arrays: dict[str, np.ndarray] = {"format": np.array(CACHE_FORMAT), "build_id": np.array(task.build_id)}
    for split in SPLITS:
        arrays[f"{split}/names"] = np.array([it.name for it in task.items[split]])
        arrays.update({f"{split}/{k}": emb[split][k] for k in KINDS})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)  # a crash leaves no half-written cache


def task_embeddings(task: BgKnownTask, embedder: Embedder, cache_dir: str | Path | None = None,
                    batch_size: int = 16, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """{split: {"mix"|"a"|"b"|"c": (n_items, d) float32}} in manifest order, from the cache when it has them."""
    from tqdm import tqdm

    path = cache_path(task, embedder, cache_dir)
    cached = _load_cache(path, task) if path.is_file() else None
    if cached is not None:
        return cached
    total = sum(len(its) for its in task.items.values()) * len(KINDS)
    emb: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(total=total, desc=f"embedding ({embedder.name})", unit="clip", disable=not progress) as bar:
        for split in SPLITS:
            items = task.items[split]
            emb[split] = {k: embed_audio_files(embedder, [it.mix if k == "mix" else it.refs[k] for it in items],
                                               batch_size, bar, "the task folder is damaged: rebuild it")
                          for k in KINDS}
    _save_cache(path, task, emb)
    return emb
