"""BgKnown evaluation (the paper's Table 1): linear evaluation of y_mix and of y_diff = y_mix - y_bg.

Conditions: "mix" (y_mix alone) and "a", "b", "c" (y_diff with the background reference (a) = the very
segment under the foreground, (b) = a segment overlapping it by half, (c) = a segment not overlapping it).
Training uses the whole training side (HEAR train + valid = ESC-50 folds 1-3); the linear protocol holds
out its own 10 % validation per seed (see ``tasks.linear_eval``). Accuracies are in %.

Our model's log-mels are normalised as BYOL-A's evaluation does (``norm="task"``, the default): with
the mean and std of the training-side mixtures (``features.train_audio``), not the pretraining
statistics of the weights file (``norm="weights"``). A HEAR module normalises its own input. The
result's ``"norm"`` says which statistics were applied, and the table's note repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embedders import Embedder, describe_norm, norm_record
from ..linear_eval import LinearEvalConfig, linear_eval_seeds
from .features import normalised, task_embeddings
from .manifest import BgKnownTask

__all__ = ["CONDITIONS", "condition_features", "evaluate", "markdown_table"]

CONDITIONS = ("mix", "a", "b", "c")
COLUMN_TITLES = {"mix": "Mix", "a": "(a)", "b": "(b)", "c": "(c)"}


def condition_features(emb: dict[str, np.ndarray], condition: str) -> np.ndarray:
    """Features of one split for a condition: y_mix, or y_mix - y_bg(ref). emb: {"mix"|"a"|"b"|"c": (n, d)}."""
    if condition == "mix":
        return emb["mix"]
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    return emb["mix"] - emb[condition]


def evaluate(
    task: BgKnownTask,
    embedder: Embedder,
    seeds: Sequence[int] = (0, 1, 2),
    config: LinearEvalConfig = LinearEvalConfig(),
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
    norm: str = "task",
) -> dict[str, Any]:
    """Normalise (``norm``: "task" or "weights", see the module docstring), embed (or read cached
    embeddings), then run the linear protocol per condition and seed."""
    embedder = normalised(task, embedder, norm, cache_dir, progress)
    emb = task_embeddings(task, embedder, cache_dir, batch_size, progress)
    y_train = np.array(task.label_indices("train") + task.label_indices("valid"), dtype=np.int64)
    y_test = np.array(task.label_indices("test"), dtype=np.int64)
    results = {}
    for cond in CONDITIONS:
        x_train = np.concatenate([condition_features(emb["train"], cond), condition_features(emb["valid"], cond)])
        x_test = condition_features(emb["test"], cond)
        results[cond] = linear_eval_seeds(
            x_train,
            y_train,
            x_test,
            y_test,
            seeds,
            config,
            n_classes=len(task.labels),
            progress=progress,
            desc=f"linear evaluation {COLUMN_TITLES[cond]}",
        ).to_dict()
    return {
        "task": task.name,
        "task_dir": str(task.root.resolve()),
        "build_id": task.build_id,
        "model": embedder.name,
        "model_identity": embedder.identity,
        "norm": norm_record(embedder, norm),
        "embedding_dim": int(emb["test"]["mix"].shape[1]),
        "n_train": int(y_train.size),
        "n_test": int(y_test.size),
        "n_classes": len(task.labels),
        "chance": 100.0 / len(task.labels),
        "seeds": list(seeds),
        "protocol": config.to_dict(),
        "results": results,
    }


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """The paper's Table 1 layout: one row per model, columns Mix, (a), (b), (c), accuracy % mean ± std over seeds."""
    head = "| Model | " + " | ".join(COLUMN_TITLES[c] for c in CONDITIONS) + " |"
    rule = "|---|" + "---:|" * len(CONDITIONS)
    rows = []
    for r in results:
        cells = [f"{r['results'][c]['mean']:.1f} ± {r['results'][c]['std']:.1f}" for c in CONDITIONS]
        rows.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    seeds = sorted({len(r["seeds"]) for r in results})
    note = (
        (
            f"\nAccuracy (%) on {results[0]['task']} (build {results[0]['build_id']}), mean ± std over "
            f"{'/'.join(map(str, seeds))} seeds; chance {results[0]['chance']:.1f} %.\n"
        )
        if results
        else ""
    )
    norms = "".join(
        f"Log-mel normalisation of {r['model']}: {describe_norm(r['norm'])}.\n" for r in results if "norm" in r
    )
    return "\n".join([head, rule, *rows]) + "\n" + note + norms
