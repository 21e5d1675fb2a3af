"""Difference-aware benchmarks built on the core (installed as ``hear_diffbyola.tasks``).

``mixing`` (loudness, SNR mixing, crops), ``linear_eval`` (the paper's linear protocol), ``embedders``
and ``heartask`` (HEAR task folders) are shared; each task lives in its own subpackage (``bgknown``,
``apwd``), and ``demo`` runs the paper's comparison over them. The core never imports this package:
a subpackage's ``cli.add_parser`` adds its commands through the ``hear_diffbyola.commands`` entry-point
group in ``pyproject.toml``.
"""

from __future__ import annotations

from hear_diffbyola.errors import DiffByolaError

__all__ = ["TaskError"]


class TaskError(DiffByolaError, ValueError):
    """A task cannot be built or evaluated as asked; the message says what is wrong, where, and what to do."""
