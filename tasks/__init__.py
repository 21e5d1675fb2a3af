"""Difference-aware benchmarks built on the core (installed as ``hear_diffbyola.tasks``).

``mixing`` (loudness, SNR mixing, crops) and ``linear_eval`` (the paper's linear protocol) are shared;
each task lives in its own subpackage (``bgknown``, ...).
"""
from __future__ import annotations

from hear_diffbyola.errors import DiffByolaError

__all__ = ["TaskError"]


class TaskError(DiffByolaError, ValueError):
    """A task cannot be built or evaluated as asked; the message says what is wrong, where, and what to do."""
