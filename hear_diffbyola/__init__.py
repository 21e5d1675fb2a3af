"""hear-diffbyola: difference-aware BYOL-A audio representations.

The package itself is a HEAR 2021 module (``hear-validator hear_diffbyola --model ...``): ``load_model``,
``get_scene_embeddings`` and ``get_timestamp_embeddings`` come from ``hear_diffbyola.hear``. They are
looked up on first use (PEP 562), so ``import hear_diffbyola`` alone does not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_HEAR_API = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _HEAR_API:
        from . import hear

        return getattr(hear, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HEAR_API})
