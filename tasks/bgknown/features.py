"""Scene embeddings of a task's mixtures and references, from our weights or any HEAR module, cached.

The embedding itself is ``tasks.embedders`` (one ``Embedder`` for every task) and the cache is
``tasks.cache`` (one for every task): one ``.npz`` per (model, normalisation, task build), keyed on
``Embedder.identity`` (the model file's sha256 and norm stats, or the HEAR module's name, version and
model file), the norm stats it applies and the task's build id (which covers every item), so a rebuilt
task, a retrained or re-normalised model never reuses stale embeddings.

``train_audio`` names the training audio whose log-mel statistics normalise our model in the
evaluation (``--norm task``): the mixtures of the training side (HEAR train + valid), the clips the linear
classifier learns from; never a test clip.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..cache import cache_file, cached_arrays
from ..embedders import Embedder, embed_audio_files, task_normalised
from .manifest import REFS, SPLITS, BgKnownTask

__all__ = ["KINDS", "TRAIN_SPLITS", "task_embeddings", "cache_path", "cache_key", "train_audio", "normalised"]

KINDS = ("mix", *REFS)  # the mixture and its three background references
TRAIN_SPLITS = ("train", "valid")  # the training side the linear protocol learns from
CACHE_FORMAT = "hear-diffbyola/bgknown-embeddings/2"


def cache_key(task: BgKnownTask, embedder: Embedder) -> dict:
    """What the embeddings depend on: the model, its normalisation and the task build."""
    return {
        "format": CACHE_FORMAT,
        "embedder": embedder.identity,
        "norm": embedder.norm.cache_key(),
        "build_id": task.build_id,
    }


def cache_path(task: BgKnownTask, embedder: Embedder, cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir or TASK/embeddings>/<model name>-<hash of cache_key>.npz``."""
    return cache_file(cache_dir or task.root / "embeddings", embedder.name, cache_key(task, embedder))


def train_audio(task: BgKnownTask) -> list[Path]:
    """The mixtures of the training side (train + valid), in manifest order."""
    return [it.mix for split in TRAIN_SPLITS for it in task.items[split]]


def normalised(
    task: BgKnownTask,
    embedder: Embedder,
    norm: str = "task",
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> Embedder:
    """``embedder`` normalised as ``norm`` asks (``tasks.embedders.task_normalised``): with "task", by the
    log-mel statistics of :func:`train_audio` (cached beside the embeddings)."""
    return task_normalised(
        embedder,
        train_audio(task),
        norm,
        cache_dir=cache_dir or task.root / "embeddings",
        data_id=f"bgknown:{task.build_id}:{'+'.join(TRAIN_SPLITS)} mixtures",
        damaged_hint="the task folder is damaged: rebuild it",
        progress=progress,
    )


def task_embeddings(
    task: BgKnownTask,
    embedder: Embedder,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """{split: {"mix"|"a"|"b"|"c": (n_items, d) float32}} in manifest order, from the cache when it has them.
    Embeds with ``embedder`` as given (normalise it first with :func:`normalised`)."""
    from tqdm import tqdm

    def compute() -> dict[str, np.ndarray]:
        total = sum(len(its) for its in task.items.values()) * len(KINDS)
        out = {}
        with tqdm(total=total, desc=f"embedding ({embedder.name})", unit="clip", disable=not progress) as bar:
            for split in SPLITS:
                items = task.items[split]
                for k in KINDS:
                    out[f"{split}/{k}"] = embed_audio_files(
                        embedder,
                        [it.mix if k == "mix" else it.refs[k] for it in items],
                        batch_size,
                        bar,
                        "the task folder is damaged: rebuild it",
                    )
        return out

    def names(key: str) -> list[str]:  # "train/mix" -> that split's file names of that kind, for messages
        split, kind = key.split("/")
        return [(it.mix if kind == "mix" else it.refs[kind]).name for it in task.items[split]]

    def check(flat: Mapping[str, np.ndarray]) -> None:  # NaN/Inf never scores (and is never cached)
        embedder.check_finite(flat, {k: names(k) for k in flat})

    flat = cached_arrays(cache_path(task, embedder, cache_dir), cache_key(task, embedder), compute, check)
    return {split: {k: flat[f"{split}/{k}"] for k in KINDS} for split in SPLITS}
