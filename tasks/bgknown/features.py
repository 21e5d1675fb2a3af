"""Scene embeddings of a task's mixtures and references, from our weights or any HEAR module, cached.

Our weights go through the core (``weights.load_pretrained`` + ``embed.clip_embedding``: BYOL-A mean+max
pooling); another representation goes through its HEAR API (``load_model`` / ``get_scene_embeddings``).
Embeddings are cached as one ``.npz`` per (model, task build): the model is identified by the sha256 of
its file (plus the module name for HEAR modules), the task by its build id, so a rebuilt task or a
retrained model never reuses stale embeddings.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hear_diffbyola.audio import AudioReadError, read_audio
from hear_diffbyola.weights import file_sha256

from .. import TaskError
from .manifest import REFS, SPLITS, BgKnownTask

__all__ = ["KINDS", "Embedder", "WeightsEmbedder", "HearModuleEmbedder", "make_embedder", "task_embeddings",
           "cache_path", "file_sha256"]

KINDS = ("mix", *REFS)  # the mixture and its three background references
CACHE_FORMAT = "hear-diffbyola/bgknown-embeddings/1"


class Embedder(Protocol):
    name: str          # row name in result tables
    sample_rate: int

    def cache_key(self) -> dict[str, Any]: ...
    def embed(self, waves: np.ndarray) -> np.ndarray: ...  # (B, N) float32 at sample_rate -> (B, d)


class WeightsEmbedder:
    """Our model: a .safetensors export (or an official BYOL-A .pth) through the core loader and pooling."""

    def __init__(self, path: str | Path | None, device: str = "cpu") -> None:
        from hear_diffbyola.weights import DEFAULT_WEIGHTS, load_pretrained

        self.model = load_pretrained(path, device=device)  # raises WeightsError with the reason
        self.path = Path(path) if path else DEFAULT_WEIGHTS
        self.device = device
        self.name = self.path.stem
        self.sample_rate = int(self.model.sample_rate)
        self._sha = file_sha256(self.path)

    def cache_key(self) -> dict[str, Any]:
        return {"kind": "weights", "sha256": self._sha, "norm": self.model.header.get("norm")}

    def embed(self, waves: np.ndarray) -> np.ndarray:
        import torch

        from hear_diffbyola.embed import clip_embedding

        x = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(self.device)
        return clip_embedding(self.model, x).cpu().numpy().astype(np.float32)


class HearModuleEmbedder:
    """Any module with the HEAR API: ``load_model(path)`` -> model with ``sample_rate``;
    ``get_scene_embeddings(audio (B, N) tensor, model)`` -> (B, d) tensor."""

    def __init__(self, module: str, model_path: str | Path | None = None) -> None:
        try:
            self.module = importlib.import_module(module)
        except ImportError as e:
            raise TaskError(f"cannot import HEAR module {module!r} ({e}); install it or put it on PYTHONPATH") from e
        for attr in ("load_model", "get_scene_embeddings"):
            if not callable(getattr(self.module, attr, None)):
                raise TaskError(f"module {module!r} has no {attr}(): it does not implement the HEAR API")
        self.module_name = module
        self.model_path = Path(model_path) if model_path else None
        if self.model_path is not None and not self.model_path.exists():
            raise TaskError(f"--model {self.model_path} does not exist (the model file for HEAR module {module!r})")
        self.model = self.module.load_model(str(self.model_path)) if self.model_path else self.module.load_model()
        rate = getattr(self.model, "sample_rate", None)
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise TaskError(f"HEAR module {module!r}: its model has no integer sample_rate attribute (got {rate!r})")
        self.sample_rate = int(rate)
        self.name = module if self.model_path is None else f"{module}:{self.model_path.stem}"
        self._sha = file_sha256(self.model_path) if self.model_path and self.model_path.is_file() else None

    def cache_key(self) -> dict[str, Any]:
        return {"kind": "hear", "module": self.module_name, "version": str(getattr(self.module, "__version__", "")),
                "model_path": str(self.model_path.resolve()) if self.model_path else "", "sha256": self._sha}

    def embed(self, waves: np.ndarray) -> np.ndarray:
        import torch

        audio = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
        params = getattr(self.model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        if first is not None:
            audio = audio.to(first.device)
        with torch.no_grad():
            out = self.module.get_scene_embeddings(audio, self.model)
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        if out.ndim != 2 or out.shape[0] != waves.shape[0]:
            raise TaskError(f"HEAR module {self.module_name!r}: get_scene_embeddings returned shape {out.shape}, "
                            f"expected ({waves.shape[0]}, d)")
        return out.astype(np.float32)


def make_embedder(model: str | Path | None, hear_module: str | None = None, device: str = "cpu") -> Embedder:
    """``hear_module`` given -> that HEAR module with ``model`` as its model file; else our weights file."""
    return HearModuleEmbedder(hear_module, model) if hear_module else WeightsEmbedder(model, device)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "model"


def cache_path(task: BgKnownTask, embedder: Embedder, cache_dir: str | Path | None = None) -> Path:
    key = json.dumps({"embedder": embedder.cache_key(), "build_id": task.build_id}, sort_keys=True)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)  # a crash leaves no half-written cache
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _embed_files(files: list[Path], embedder: Embedder, batch_size: int, bar: Any) -> np.ndarray:
    out = []
    for i in range(0, len(files), batch_size):
        waves = []
        for f in files[i:i + batch_size]:
            try:
                waves.append(read_audio(f, embedder.sample_rate))
            except AudioReadError as e:
                raise TaskError(f"{e}; the task folder is damaged: rebuild it") from None
        n = min(w.shape[0] for w in waves)
        out.append(embedder.embed(np.stack([w[:n] for w in waves])))
        bar.update(len(waves))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


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
            emb[split] = {k: _embed_files([it.mix if k == "mix" else it.refs[k] for it in items], embedder, batch_size, bar)
                          for k in KINDS}
    _save_cache(path, task, emb)
    return emb
