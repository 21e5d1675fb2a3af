"""Difference-aware benchmarks built on the core (installed as ``hear_diffbyola.tasks``).

``mixing`` (loudness, SNR mixing, crops) and ``linear_eval`` (the paper's linear protocol) are shared;
each task lives in its own subpackage (``bgknown``, ...).
"""
from __future__ import annotations

__all__ = ["TaskError"]


class TaskError(ValueError):
    """A task cannot be built or evaluated as asked; the message says what is wrong, where, and what to do."""
