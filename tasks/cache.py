"""One on-disk cache for arrays that a model computes from a data set (task embeddings, norm statistics).

An entry is one ``.npz`` (read with ``allow_pickle=False``) holding named arrays and the JSON *key* it
was computed for: the embedder identity, the data (a task build id, or a hash of the clip files) and the
log-mel normalisation statistics. The file name carries a hash of the key, so another model, data set
or normalisation gets another file; the stored key is compared on reading, so a file that does not hold
what its name promises is never used. Entries are written atomically (temp file + rename): a crash
leaves the old entry or the new one, never a torn one. A file that cannot be read, or whose key does not
match, is reported once with a :class:`CacheWarning` naming it, then recomputed and overwritten; a bad
cache never stops an evaluation.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hear_diffbyola.weights import atomic_write

__all__ = ["CacheWarning", "cache_file", "cached_arrays", "read_arrays", "write_arrays"]

KEY_FIELD = "__cache_key__"  # the array holding the entry's key as a JSON string


class CacheWarning(UserWarning):
    """A cache entry was unreadable or written for something else; it is being recomputed."""


def _canonical(key: Mapping[str, Any]) -> str:
    # sorted keys, tuples as lists: two equal keys always give the same text (and the same file name)
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"))
    except TypeError as e:
        raise TypeError(f"cache key must be JSON-serialisable (str, numbers, lists, dicts): {e}") from e


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "entry"


def cache_file(cache_dir: str | Path, name: str, key: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<name, file-name safe>-<first 16 hex of sha256(key)>.npz``."""
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{_slug(name)}-{digest}.npz"


def read_arrays(path: str | Path, key: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays of the entry at ``path`` if it exists and was written for ``key``; else ``None``
    (with a :class:`CacheWarning` when the file exists but is unreadable or holds another key)."""
    path = Path(path)
    if not path.is_file():
        return None
    want = json.loads(_canonical(key))
    try:
        # our own file handle: np.load leaks its own when the zip is torn
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            stored = json.loads(str(z[KEY_FIELD]))
            if stored != want:
                differs = (
                    sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
                    if isinstance(stored, dict)
                    else []
                )
                warnings.warn(
                    f"cache file {path} was written for another {', '.join(differs) or 'key'}; recomputing it",
                    CacheWarning,
                    stacklevel=3,
                )
                return None
            return {k: z[k] for k in z.files if k != KEY_FIELD}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as e:
        # truncated, not an npz, or from an older format without a key
        warnings.warn(
            f"cache file {path} is unreadable ({type(e).__name__}: {e}); recomputing it", CacheWarning, stacklevel=3
        )
        return None


def write_arrays(path: str | Path, key: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``key`` to ``path`` atomically (creates the folder)."""
    if KEY_FIELD in arrays:
        raise ValueError(f"array name {KEY_FIELD!r} is reserved for the cache key")
    payload = {KEY_FIELD: np.array(_canonical(key)), **{k: np.asarray(v) for k, v in arrays.items()}}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)

    atomic_write(path, write)


def cached_arrays(
    path: str | Path | None,
    key: Mapping[str, Any],
    compute: Callable[[], Mapping[str, np.ndarray]],
    check: Callable[[Mapping[str, np.ndarray]], None] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of the entry at ``path`` for ``key``, computed by ``compute()`` and written there when
    missing, unreadable or stale. ``path=None``: no cache, always ``compute()``.

    ``check(arrays)`` (raises to refuse them) runs on freshly computed arrays *before* they are written,
    so a refused result is never cached, and on arrays read from the cache (written by an older version)."""
    if path is not None:
        found = read_arrays(path, key)
        if found is not None:
            if check is not None:
                check(found)
            return found
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    if check is not None:
        check(arrays)
    if path is not None:
        write_arrays(path, key, arrays)
    return arrays
