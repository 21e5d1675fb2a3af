"""BgKnown ESC-50, the paper's first difference-aware benchmark (its Table 1).

* ``build``: task folder from local ESC-50 + FSD50K (``build_from_datasets``) or the embedded corpus
  (``build_synthetic``); ``manifest``: the folder's format and its checked reader (``load_task``).
* ``features``: cached scene embeddings from our weights or any HEAR module; ``evaluate``: linear
  evaluation of Mix, (a), (b), (c) and the markdown table; ``heareval_export``: heareval embedding folders.
* ``cli``: ``hear-diffbyola bgknown build|eval|export-heareval``.

Importing this package loads no torch (build workers start faster); ``evaluate`` and ``features`` do.
"""

from __future__ import annotations

from .build import build_from_datasets, build_synthetic
from .manifest import FORMAT, BgKnownTask, BuildParams, TaskItem, load_task

__all__ = ["FORMAT", "BgKnownTask", "BuildParams", "TaskItem", "build_from_datasets", "build_synthetic", "load_task"]
