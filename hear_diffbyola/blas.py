"""A second sgemm for the fast path's single-threaded workers: OpenBLAS, chosen per shape by timing it.

torch's CPU builds run their matmuls on MKL. On the project's AMD EPYC (AVX2), the OpenBLAS that numpy
and scipy ship (the ``scipy-openblas32`` wheel, Haswell kernels) runs v2's fc faster, and the fc is over
half of a v2 embedding: v2 embeddings on the workers ran 1.05-1.09x as fast with this module's choice
(``python bench/embed_throughput.py --blas --arch v2``; docs/performance.md), while for v1 d = 512 it
kept MKL. Which library is faster depends on the CPU (MKL is at home on Intel) and the shape, so
:func:`addmm` times both on the first call of each shape, on the caller's own input, and keeps the
faster for the process: the idea of ``torch.backends.cudnn.benchmark``. The two round differently
(~1e-7 relative), so a process's embeddings can differ from another's in the last bits if their timings
chose differently; ``HEAR_DIFFBYOLA_BLAS=torch`` (or ``openblas``) pins the choice.

Only for single-threaded callers: this copy of OpenBLAS is set to one thread, and two threads may call it
at once (ctypes lets go of the GIL during the call). Without the wheel, off CPU, for other dtypes or
layouts, :func:`addmm` is ``torch.addmm``.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import DiffByolaError
from .runtime import ForkSafeLock

MODES = ("auto", "torch", "openblas")
MODE = os.environ.get("HEAR_DIFFBYOLA_BLAS", "auto")
_ROW_MAJOR, _NO_TRANS = 101, 111
_TRIALS = 3  # calls of each library per shape when timing, alternating
_lib: list = []  # [CDLL or None] once loading was tried
_load_lock = ForkSafeLock()  # a worker may hold it, loading, when the process forks
_choice: dict[tuple[int, int, int], str] = {}  # (M bucket, K, N) -> "torch" | "openblas"
_choice_lock = ForkSafeLock()


class BlasError(DiffByolaError, RuntimeError):
    """HEAR_DIFFBYOLA_BLAS names a library that is not there or a mode that does not exist."""


def _find_library() -> Path | None:
    try:
        import scipy_openblas32
    except ImportError:
        return None
    folder = Path(scipy_openblas32.get_lib_dir())
    name = scipy_openblas32.get_library()
    for pattern in (f"lib{name}.so*", f"lib{name}.dylib", f"{name}.dll", f"lib{name}.dll"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    return None


def openblas() -> ctypes.CDLL | None:
    """The single-threaded OpenBLAS of the ``scipy-openblas32`` wheel, or None where it is not installed."""
    if _lib:  # loaded (or found missing) once; every addmm asks, so no lock after that
        return _lib[0]
    with _load_lock:
        if not _lib:
            _lib.append(_load())
    return _lib[0]


def _load() -> ctypes.CDLL | None:
    path = _find_library()
    if path is None:
        return None
    # Read at load time: one thread, so it starts no thread pool of its own (our workers are the threads).
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        lib = ctypes.CDLL(str(path))
        sgemm, set_threads = lib.scipy_cblas_sgemm, lib.scipy_openblas_set_num_threads
    except (OSError, AttributeError):
        return None
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    sgemm.restype = None
    set_threads.argtypes = [i]
    set_threads(1)
    return lib


def _openblas_addmm(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # out = bias + x @ w, row-major, through the BLAS's beta = 1 on an output that starts as the bias
    M, K = x.shape
    N = w.shape[1]
    out = torch.empty(M, N).copy_(bias)  # never bias.expand().contiguous(): at M = 1 that is bias itself
    openblas().scipy_cblas_sgemm(
        _ROW_MAJOR, _NO_TRANS, _NO_TRANS, M, N, K, 1.0, x.data_ptr(), x.stride(0), w.data_ptr(), w.stride(0), 1.0,
        out.data_ptr(), N,
    )  # fmt: skip
    return out


def _eligible(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and all(t.dtype == torch.float32 for t in (bias, x, w))
        and x.ndim == 2
        and w.ndim == 2
        and bias.shape == (w.shape[1],)
        and x.shape[1] == w.shape[0]
        and x.stride(1) == 1
        and x.stride(0) >= max(1, x.shape[1])  # rows apart by at least a row: BLAS's lda >= K
        and w.is_contiguous()
        and not (x.requires_grad or w.requires_grad or bias.requires_grad)
        and x.shape[0] > 0
    )


def _mode() -> str:
    if MODE not in MODES:
        raise BlasError(f"HEAR_DIFFBYOLA_BLAS must be one of {list(MODES)}, got {MODE!r}")
    if MODE == "openblas" and openblas() is None:
        raise BlasError(
            "HEAR_DIFFBYOLA_BLAS=openblas, but the scipy-openblas32 wheel cannot be loaded: "
            "`pip install scipy-openblas32`, or set HEAR_DIFFBYOLA_BLAS=auto"
        )
    return MODE


def _faster(fns: dict[str, Callable[[], torch.Tensor]], trials: int = _TRIALS) -> tuple[str, torch.Tensor]:
    """The name of the fastest function (median of ``trials`` calls each, alternating) and its last result."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, torch.Tensor] = {}
    for _ in range(trials):
        for k, f in fns.items():
            t = time.perf_counter()
            results[k] = f()
            times[k].append(time.perf_counter() - t)
    best = min(fns, key=lambda k: statistics.median(times[k]))
    return best, results[best]


def addmm(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``torch.addmm(bias, x, w)`` for a single-threaded caller: x (M, K), w (K, N) contiguous, bias (N,).

    On the first call of a shape (M rounded up to a power of two, K, N) both libraries run it, alternating,
    and the faster one serves that shape from then on in this process."""
    mode = _mode()
    if mode == "torch" or not _eligible(bias, x, w) or openblas() is None:
        return torch.addmm(bias, x, w)
    if mode == "openblas":
        return _openblas_addmm(bias, x, w)
    key = (1 << (x.shape[0] - 1).bit_length(), x.shape[1], w.shape[1])
    chosen = _choice.get(key)
    if chosen is None:
        with _choice_lock:  # one decision per shape and process: a shape's results never change within it
            chosen = _choice.get(key)
            if chosen is None:
                fns = {"torch": lambda: torch.addmm(bias, x, w), "openblas": lambda: _openblas_addmm(bias, x, w)}
                chosen, out = _faster(fns)
                _choice[key] = chosen
                return out
    return _openblas_addmm(bias, x, w) if chosen == "openblas" else torch.addmm(bias, x, w)


def choices() -> dict[tuple[int, int, int], str]:
    """What :func:`addmm` chose so far in this process: (M bucket, K, N) -> library (benchmarks print it)."""
    return dict(_choice)
