"""The first block's one-channel 3x3 conv + 2x2 max-pool as compiled CPU kernels: training's, and the inference workers'.

``conv3x3_one_channel_pooled`` runs the conv as a 9-tap matmul and the pool as maxima over views of each
slice: every conv output goes to memory once and is read back, which made the first block about 15 % of
a v1 training step (``bench/pretrain_throughput.py --profile``) for under 5 % of its FLOPs. Here
``torch.compile`` (inductor) turns the same arithmetic into one loop that computes the four conv outputs
of each pool window in registers and writes only their maximum, plus which of the four it was; the
backward pass sums the gradient times the input each tap read at the chosen position, so it needs
neither the map nor a second conv. B = 64 views of 96 frames, 2 threads, against the slice path:
forward 18.0 against 29.7 ms, forward + backward 41.3 against 104.1 ms
(``python bench/pretrain_throughput.py --micro``; docs/performance.md).

The training step on CPU uses these with its input shape, the same at every step: each compile is
specialised to it (5-25 s on the project's machine, then kept in inductor's on-disk cache).

Inference (:func:`pooled_relu`) uses one kernel for every tile: the clips are stacked along time, each with
its own zero rows, into one 2-D map whose only varying size is its number of rows, marked dynamic, so one
compile serves every batch and clip length. The fast path's workers use it
(:func:`hear_diffbyola.runtime.parallel_map`); it is compiled at one thread, where inductor's CPU kernel
has no OpenMP region, and refused to callers with more. One tile of 2 x 10 s at one thread: 5.6 ms
against 12.6 ms for the slice path, the whole v2 tile 141.8 against 152.6 ms
(``python bench/embed_throughput.py --stages --arch v2 --batch 2``; docs/performance.md). A process pays
the compile at its first tile, seconds, and 110-200 MiB of peak RSS (docs/performance.md).

If compiling fails (no C++ compiler, an unsupported platform) the slice path is used, with one warning.
``HEAR_DIFFBYOLA_COMPILE=0`` (or ``fused.ENABLED = False``) turns it off.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from .runtime import ForkSafeLock

ENABLED = os.environ.get("HEAR_DIFFBYOLA_COMPILE", "1") != "0"
_compiled: dict[str, Callable] = {}
_failed: list[str] = []  # the first compile error, once one happened
_warm: set[str] = set()  # names whose first call (the compile) is done
_first_call = ForkSafeLock()  # a worker may hold it, compiling, when the process forks


def usable(device: torch.device) -> bool:
    """Whether the compiled kernels serve inputs on ``device``: CPU, switched on, and no compile has failed."""
    return ENABLED and not _failed and device.type == "cpu"


def _read(padded: torch.Tensor, a: int, b: int, P: int, Q: int) -> torch.Tensor:
    """padded[2p + a, 2q + b] for every pool cell (p, q): what a conv output at window position (s, u)
    reads through tap (i, j), a = s + i, b = u + j. (B, P, Q, 1) from padded (B, H + 2, W + 2)."""
    return padded[:, a : a + 2 * P : 2, b : b + 2 * Q : 2, None]


def _window_maps(padded: torch.Tensor, taps: torch.Tensor) -> list[torch.Tensor]:
    """The conv outputs at the 4 positions (s, u) of each 2x2 pool window, in max_pool2d's scan order:
    4 x (B, H // 2, W // 2, C) from padded (B, H + 2, W + 2) and taps (9, C)."""
    P, Q = (padded.shape[1] - 2) // 2, (padded.shape[2] - 2) // 2
    maps = []
    for s in range(2):
        for u in range(2):
            acc = None
            for i in range(3):
                for j in range(3):
                    tap = _read(padded, s + i, u + j, P, Q) * taps[3 * i + j]
                    acc = tap if acc is None else acc + tap
            maps.append(acc)
    return maps


def _pooled(padded: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    y = _window_maps(padded, taps)
    return torch.maximum(torch.maximum(y[0], y[1]), torch.maximum(y[2], y[3]))


def _pooled_and_choice(padded: torch.Tensor, taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled, choice): choice (float 0-3) is the window position of the first maximum, since max_pool2d
    replaces its running maximum only by a strictly greater value (ties go to the earlier position)."""
    y = _window_maps(padded, taps)
    best, choice = y[0], torch.zeros_like(y[0])
    for k in range(1, 4):
        choice = torch.where(y[k] > best, float(k), choice)
        best = torch.maximum(best, y[k])
    return best, choice


def _taps_grad(padded: torch.Tensor, choice: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """(9, C) gradient of the taps: tap (i, j) of pooled cell (p, q) read padded[2p + s + i, 2q + u + j] at the
    window position (s, u) its maximum came from, so its gradient is grad times that input, summed over
    (B, P, Q). Compiled, the nine sums are one pass over grad and choice; nothing of (B, P, Q, 4, C) is
    materialised (the routed gradient a matmul formulation needs was 4x the pooled map)."""
    P, Q = choice.shape[1], choice.shape[2]
    rows = []
    for i in range(3):
        for j in range(3):
            x = [_read(padded, s + i, u + j, P, Q) for s in range(2) for u in range(2)]
            at_max = torch.where(
                choice == 0.0, x[0], torch.where(choice == 1.0, x[1], torch.where(choice == 2.0, x[2], x[3]))
            )
            rows.append((grad * at_max).sum((0, 1, 2)))
    return torch.stack(rows)


def _call(name: str, fn: Callable, *args: torch.Tensor):
    """``fn`` compiled once (per shape, by dynamo's guards), or None when compiling failed."""
    try:
        if name in _warm:
            return _compiled[name](*args)
        with _first_call:  # two workers must not both compile the inference kernel on their first tile
            if name not in _compiled:
                _compiled[name] = torch.compile(fn, dynamic=False, options={"compile_threads": 1})
            out = _compiled[name](*args)
            _warm.add(name)
            return out
    except Exception as exc:  # inductor raises many kinds (compiler missing, codegen, subprocess)
        if not _failed:
            _failed.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            warnings.warn(
                f"torch.compile of the first conv block failed ({_failed[0]}); the uncompiled path runs from "
                "now on (slower, same results up to float rounding). Set HEAR_DIFFBYOLA_COMPILE=0 to skip the "
                "attempt.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None


def _pooled_relu_rows(rows: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(maxpool(conv(rows)) + bias): stacked padded rows (R, W + 2) -> (R // 2 - 1, W // 2, C)."""
    return torch.relu(_pooled(rows[None], taps)[0] + bias)


def pooled_relu(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor | None:
    """``relu(conv3x3_one_channel_pooled(pad(x), taps) + bias)`` for inference: x (B, H, W) -> (B, H // 2, W // 2, C).

    Clip b goes to rows [b S + 1, b S + 1 + H) of one zero map of B S + 2 rows, S = H + 2 rounded up to
    even: the conv of each clip then reads its own zero padding, each pool window lies within one clip,
    and clip b's pooled rows start at b S / 2; the rows between clips are computed and dropped. None if
    compiling failed or the caller runs more than one thread (see the module docstring)."""
    if torch.get_num_threads() != 1:
        return None
    B, H, W = x.shape
    S = H + 2 + H % 2
    rows = x.new_zeros(B * S + 2, W + 2)
    rows[: B * S].view(B, S, W + 2)[:, 1 : H + 1, 1 : W + 1] = x
    torch._dynamo.mark_dynamic(rows, 0)
    with torch.no_grad():
        out = _call("pooled_relu", _pooled_relu_rows, rows, taps, bias)
    if out is None:
        return None
    return out.view(B, S // 2, W // 2, -1)[:, : H // 2].contiguous()  # the next conv reads it compact


def pooled(padded: torch.Tensor, taps: torch.Tensor) -> torch.Tensor | None:
    """``conv3x3_one_channel_pooled(padded, taps)`` compiled; None if compiling failed."""
    return _call("pooled", _pooled, padded, taps)


def pooled_and_choice(padded: torch.Tensor, taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(pooled (B, H // 2, W // 2, C), choice of the same shape) compiled; None if compiling failed."""
    return _call("choice", _pooled_and_choice, padded, taps)


def taps_grad(padded: torch.Tensor, choice: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient (9, C) of the taps from the pooled gradient (B, P, Q, C) and the forward pass's window choices.
    Eager (slower, the same sums) if compiling fails here: the forward pass already chose this path."""
    grad = grad.contiguous()  # one compile: its layout is part of what the kernel is specialised to
    out = _call("taps_grad", _taps_grad, padded, choice, grad)
    return _taps_grad(padded, choice, grad) if out is None else out
