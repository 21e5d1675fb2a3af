"""Linear evaluation on any HEAR-format multiclass scene task, in this process.

The general-purpose check (the paper's Table 3 role): does a representation still classify sounds
when nothing is subtracted? heareval's predictions runner does this with its own MLP grid; this is the
paper's linear protocol (``tasks.linear_eval``) on the same folders, so a quick comparison of two
models needs neither heareval nor its TensorFlow dependency. Training uses train + valid (the protocol
holds out its own validation per seed); accuracy is on test, in %.

Our model's log-mels are normalised with the statistics of the training audio (every split but test:
the clips the protocol learns from), as BYOL-A's evaluation does (``norm="task"``), or with the weights
file's (``norm="weights"``); a HEAR module normalises its own input. The result's ``"norm"`` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskError
from .embedders import Embedder, embed_audio_files, norm_record, task_normalised
from .heartask import HeartaskError, read_scene_task
from .linear_eval import LinearEvalConfig, linear_eval_seeds

__all__ = ["scene_task_embeddings", "evaluate_scene_task"]


def scene_task_embeddings(
    task_dir: str | Path, embedder: Embedder, batch_size: int = 16, progress: bool = True
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(label vocabulary, {split: (embeddings (n, d), label indices (n,))}) of a HEAR scene task."""
    from tqdm import tqdm

    try:
        vocab, splits = read_scene_task(task_dir)
    except HeartaskError as e:
        raise TaskError(str(e)) from None
    index = {lab: i for i, lab in enumerate(vocab)}
    out = {}
    with tqdm(
        total=sum(len(v) for v in splits.values()),
        desc=f"embedding ({embedder.name})",
        unit="clip",
        disable=not progress,
    ) as bar:
        for split, items in splits.items():
            emb = embed_audio_files(
                embedder,
                [path for path, _ in items],
                batch_size,
                bar,
                f"the task folder {task_dir} is damaged: write it again",
            )
            out[split] = (emb, np.array([index[lab] for _, lab in items], dtype=np.int64))
    # NaN/Inf never scores: refused with the count over every split
    embedder.check_finite({s: e for s, (e, _) in out.items()}, {s: [str(p) for p, _ in splits[s]] for s in out})
    return vocab, out


def evaluate_scene_task(
    task_dir: str | Path,
    embedder: Embedder,
    seeds: Sequence[int] = (0, 1, 2),
    config: LinearEvalConfig = LinearEvalConfig(),
    batch_size: int = 16,
    progress: bool = True,
    norm: str = "task",
) -> dict[str, Any]:
    """Accuracy (%) of the linear protocol trained on train + valid and scored on test, per seed."""
    try:
        _, splits = read_scene_task(task_dir)
    except HeartaskError as e:
        raise TaskError(str(e)) from None
    train_files = [path for split, items in splits.items() if split != "test" for path, _ in items]
    embedder = task_normalised(
        embedder,
        train_files,
        norm,
        damaged_hint=f"the task folder {task_dir} is damaged: write it again",
        progress=progress,
    )
    vocab, emb = scene_task_embeddings(task_dir, embedder, batch_size, progress)
    if "test" not in emb:
        raise TaskError(f"{task_dir}: the task has no 'test' split (splits: {', '.join(emb)})")
    train = [s for s in emb if s != "test"]
    x_train = np.concatenate([emb[s][0] for s in train])
    y_train = np.concatenate([emb[s][1] for s in train])
    summary = linear_eval_seeds(
        x_train, y_train, *emb["test"], seeds=seeds, config=config, n_classes=len(vocab), progress=progress
    )
    return {
        "task_dir": str(Path(task_dir).resolve()),
        "model": embedder.name,
        "model_identity": embedder.identity,
        "norm": norm_record(embedder, norm, train),
        "n_classes": len(vocab),
        "n_train": int(y_train.size),
        "n_test": int(emb["test"][1].size),
        "chance": 100.0 / len(vocab),
        "seeds": list(seeds),
        "protocol": config.to_dict(),
        "accuracy": summary.to_dict(),
    }
