"""Process-level CPU settings: glibc's allocator for training, a pool of single-threaded workers for inference."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of handing it back to the kernel.

    A training step allocates and frees activations of hundreds of MB; by default glibc serves
    each from a fresh mmap and unmaps it on free, so every step pays page faults on all of it
    (about a third of CPU step time is system time). With mmap off and no trimming, the same
    memory is reused step after step; measured in bench/pretrain_throughput.py. No-op off glibc.
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _tuned


class ForkSafeLock:
    """A ``threading.Lock`` that a forked child gets back unlocked: one of the parent's threads (a worker,
    say) may hold it at the fork, and that thread does not exist in the child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _fork_safe_locks.add(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_fork_safe_locks: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, workers) -> pool; a forked child builds its own
_pools_lock = ForkSafeLock()
_local = threading.local()


def _after_fork_in_child() -> None:
    # The parent's worker threads do not exist in a forked child: no pools of them, no lock held by them.
    _pools.clear()
    for lock in list(_fork_safe_locks):
        lock._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_worker() -> None:
    _local.worker = True
    # This thread's OpenMP and MKL teams only. torch also keeps the value as the default of threads created
    # later; parallel_map puts the caller's back once the workers have started.
    torch.set_num_threads(1)


def in_worker() -> bool:
    """Whether the current thread is one of :func:`parallel_map`'s workers."""
    return bool(getattr(_local, "worker", False))


def parallel_map(work: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[work(item) for item in items]``, the items spread over ``workers`` threads of one intra-op thread each.

    Many independent tiles, each computed single-threaded on its own core, beat one tile at a time with
    every op split over the cores: no barrier per op, no core idle while another finishes its share, and
    a single-threaded matmul runs nearer the core's peak (bench/embed_throughput.py --workers). Results come
    in item order, so whatever combines them does so in a fixed order. Called from a worker (nested), with
    fewer than two workers or items, the items run here, one after another. ``work`` must be thread-safe;
    it runs with autograd off in the workers (grad mode is per thread)."""
    if workers < 2 or len(items) < 2 or in_worker():
        return [work(item) for item in items]
    key = (os.getpid(), workers)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(workers, "hear-diffbyola", initializer=_start_worker)
    caller_threads = torch.get_num_threads()

    def run(item: T) -> R:
        with torch.no_grad():
            return work(item)

    try:
        return list(pool.map(run, items))
    finally:
        torch.set_num_threads(caller_threads)  # torch's default for new threads, as it was before the workers
