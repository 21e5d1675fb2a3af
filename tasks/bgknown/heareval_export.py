"""Write y_mix and y_diff (a/b/c) as heareval embedding folders, so heareval scores them like any HEAR task.

One folder per condition, ``<out>/<task>-mix``, ``<out>/<task>-diff-a``, ... each laid out as
``heareval.embeddings.runner`` leaves a scene task: task_metadata.json (split_mode trainvaltest),
labelvocabulary.csv, ``<split>.json``, and per split ``<split>.embeddings.npy`` (raw float32 written
through ``np.memmap``, not ``np.save``: heareval memmaps it back), ``<split>.embedding-dimensions.json``
([n, d]), ``<split>.target-labels.pkl`` (list of [label]) and the per-file
``<split>/<file>.embedding.npy`` + ``<split>/<file>.target-labels.json``. Then:

    python -m heareval.predictions.runner <out>/<task>-mix <out>/<task>-diff-a ...

Here the HEAR train/valid/test splits of the task folder are used as they are (valid is the build's
fixed stratified 10 % of the training side). Our model is normalised as in ``evaluate`` (``norm``; the
default "task": statistics of the training-side mixtures); each folder's task_metadata.json records it.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import TaskError
from ..embedders import Embedder, norm_record
from .evaluate import CONDITIONS, condition_features
from .features import normalised, task_embeddings
from .manifest import SPLITS, BgKnownTask

__all__ = ["export_heareval", "condition_folder_name"]


def condition_folder_name(task: BgKnownTask, condition: str) -> str:
    return f"{task.name}-mix" if condition == "mix" else f"{task.name}-diff-{condition}"


def _write_split(folder: Path, split: str, x: np.ndarray, files: list[str], labels: list[list[str]]) -> None:
    n, d = x.shape
    (folder / f"{split}.embedding-dimensions.json").write_text(json.dumps([n, d]))
    mm = np.memmap(folder / f"{split}.embeddings.npy", dtype=np.float32, mode="w+", shape=(n, d))
    mm[:] = x
    mm.flush()
    del mm
    with open(folder / f"{split}.target-labels.pkl", "wb") as fh:
        pickle.dump(labels, fh)
    per_file = folder / split
    per_file.mkdir(exist_ok=True)
    for f, row, lab in zip(files, x, labels):
        np.save(per_file / f"{f}.embedding.npy", row.astype(np.float32))
        (per_file / f"{f}.target-labels.json").write_text(json.dumps(lab))


def export_heareval(
    task: BgKnownTask,
    embedder: Embedder,
    out: str | Path,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
    force: bool = False,
    norm: str = "task",
) -> list[Path]:
    """Write the four condition folders under ``out``; returns their paths."""
    out = Path(out)
    embedder = normalised(task, embedder, norm, cache_dir, progress)
    emb = task_embeddings(task, embedder, cache_dir, batch_size, progress)
    meta = json.loads((task.root / "task_metadata.json").read_text())
    folders = []
    for cond in CONDITIONS:
        folder = out / condition_folder_name(task, cond)
        if folder.exists():
            if not force:
                raise TaskError(f"{folder} already exists; pass --force to overwrite it, or choose another --out")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        feature = "y_mix" if cond == "mix" else f"y_mix - y_bg({cond})"
        cond_meta: dict[str, Any] = {
            **meta,
            "task_name": folder.name,
            "feature": feature,
            "model": embedder.name,
            "norm": norm_record(embedder, norm),
        }
        (folder / "task_metadata.json").write_text(json.dumps(cond_meta, indent=2) + "\n")
        shutil.copy(task.root / "labelvocabulary.csv", folder)
        for split in SPLITS:
            shutil.copy(task.root / f"{split}.json", folder)
            items = task.items[split]
            _write_split(
                folder,
                split,
                condition_features(emb[split], cond),
                [it.mix.name for it in items],
                [[it.label] for it in items],
            )
        folders.append(folder)
    return folders
