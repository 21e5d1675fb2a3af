"""The one base class of every error hear-diffbyola raises on bad input or a failed run.

The CLI entry catches :class:`DiffByolaError` alone, prints its message on one line and exits with
status 2. Subclasses keep a second, builtin base (``ValueError`` for a bad value, ``RuntimeError`` for
a failed operation) so callers that caught those before still do.
"""

from __future__ import annotations


class DiffByolaError(Exception):
    """Bad input or a failed operation; the message says what, where and how to fix it."""


class OutOfSpaceError(DiffByolaError, OSError):
    """A file could not be written because its disk is full; the previous version of it is intact."""
