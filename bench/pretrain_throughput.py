"""Pretraining step throughput and peak memory, lambda = 0 (BYOL-A) vs lambda = 0.5, in one process.

Times the trainer's own ``training_step`` (log-mel, batched augmentation, online/target forward,
backward, Adam, EMA) on random waveforms, so data loading is left out. The two settings are
timed in alternating rounds so drift of the machine hits both alike; the figure is the median
round. Peak memory: CUDA max allocated, or on CPU the peak resident set size sampled every 2 ms
while that setting's rounds run (on top of what the process already held).

    python bench/pretrain_throughput.py                    # the v2 default: AudioNTT2022 d=3072, batch 64 per step
    python bench/pretrain_throughput.py --arch audiontt2020 --d 512 --batch-size 64 --rounds 5
    python bench/pretrain_throughput.py --micro            # only Adam's step (loop / foreach / fused), the fc dropout
                                                           # and the first block's conv + pool (slices / compiled)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import threading
import time

import torch

from hear_diffbyola import fused
from hear_diffbyola.config import PretrainConfig, apply_overrides
from hear_diffbyola.learner import _PooledFirstConv
from hear_diffbyola.train import build_step_parts, hardware_description, pick_device, prepare_device, training_step


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RssPeak:
    """Peak resident set size (bytes) of this process while the block runs, sampled from /proc."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssPeak:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="audiontt2022", choices=["audiontt2022", "audiontt2020"])
    ap.add_argument("--d", type=int, help="encoder.d (default: the arch's, 3072 / 2048)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-allocator-tuning", action="store_true", help="leave glibc malloc at its defaults (CPU)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--micro",
        action="store_true",
        help="only time pieces: Adam (loop / foreach / fused), the fc's dropout, the projector, the first block",
    )
    ap.add_argument(
        "--profile", action="store_true", help="after warm-up, torch.profiler over one step per lambda: the top ops"
    )
    args = ap.parse_args()

    device = pick_device(args.device)
    if device.type == "cuda" or not args.no_allocator_tuning:
        prepare_device(device)  # as the trainer does
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = [f"encoder.arch={args.arch}"] + ([f"encoder.d={args.d}"] if args.d else [])
    cfg = {
        lam: PretrainConfig.from_dict(
            apply_overrides({}, enc + [f"learner.lam={lam}", f"train.batch_size={args.batch_size}"])
        )
        for lam in (0.0, 0.5)
    }
    if args.micro:
        return micro_rows(args, build_step_parts(cfg[0.0], (0.0, 1.0), device), device)
    parts = {lam: build_step_parts(c, (0.0, 1.0), device) for lam, c in cfg.items()}
    n_samples = cfg[0.0].frontend.samples_for_frames(96)
    wave = torch.randn(args.batch_size, n_samples, generator=torch.Generator().manual_seed(0)) * 0.1

    for p in parts.values():  # warm-up: allocator, oneDNN/cuDNN kernel choice, Mixup memory, compiling
        for _ in range(2):
            training_step(p, wave)
    if args.profile:
        return profile_rows(parts, wave, device)
    sync(device)
    times = {lam: [] for lam in parts}
    peaks = {lam: 0 for lam in parts}
    for _ in range(args.rounds):
        for lam, p in parts.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with RssPeak() as rss:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    training_step(p, wave)
                sync(device)
                times[lam].append((time.perf_counter() - t0) / args.steps)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
            peaks[lam] = max(peaks[lam], peak)
    res = {
        "hardware": hardware_description(device, 1),
        "torch": torch.__version__,
        "arch": args.arch,
        "d": cfg[0.0].encoder.d,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "batch_size": args.batch_size,
        "allocator_tuning": device.type == "cpu" and not args.no_allocator_tuning,
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process RSS",
    }
    for lam in parts:
        step = statistics.median(times[lam])
        res[f"lam{lam}"] = {"step_s": step, "clips_per_s": args.batch_size / step, "peak_mem_mib": peaks[lam] / 2**20}
    res["step_ratio_lam0.5_over_lam0"] = res["lam0.5"]["step_s"] / res["lam0.0"]["step_s"]
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


def _alternating(fns: dict, n: int, device: torch.device) -> dict[str, float]:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def micro_rows(args: argparse.Namespace, parts, device: torch.device) -> None:
    """Adam's step on the lambda = 0 learner's trainable parameters (three implementations), and the encoder
    fc's dropout forward + backward on one batch of frames (torch's vs ours), alternating."""
    params = [p for p in parts.learner.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    opts = {"loop": torch.optim.Adam(params, lr=1e-4, foreach=False)}
    opts.update({kind: torch.optim.Adam(params, lr=1e-4, **{kind: True}) for kind in ("foreach", "fused")})
    med = _alternating({k: o.step for k, o in opts.items()}, args.rounds * args.steps, device)
    n = sum(p.numel() for p in params)
    print(f"# {args.arch}, {torch.get_num_threads()} threads, {device}")
    print(f"Adam step, {n / 1e6:.1f} M parameters:")
    for k, t in med.items():
        print(f"  {k:8s} {1e3 * t:7.1f} ms")
    enc = parts.learner.encoder
    frames = args.batch_size * 96 // enc.time_reduction  # rows of the fc for one view of 96 log-mel frames
    x = torch.randn(frames, enc.fc[0].out_features, device=device, requires_grad=True)
    g = torch.randn_like(x)
    drop = enc.fc[2]  # our Dropout, in train mode
    fns = {
        "torch": lambda: torch.nn.functional.dropout(x, drop.p, True).backward(g),
        "ours": lambda: drop(x).backward(g),
    }
    med = _alternating(fns, args.rounds * args.steps, device)
    print(f"dropout p={drop.p} forward + backward, {tuple(x.shape)}:")
    for k, t in med.items():
        print(f"  {k:8s} {1e3 * t:7.1f} ms")
    projector_rows(args, parts, device)
    first_block_rows(args, device)


def profile_rows(parts: dict, wave: torch.Tensor, device: torch.device, top: int = 14) -> None:
    """One step per lambda under torch.profiler: self time of the costliest ops, grouped by input shapes."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for lam, p in parts.items():
        t0 = time.perf_counter()
        training_step(p, wave)
        plain = time.perf_counter() - t0
        with profile(activities=acts, record_shapes=True) as prof:
            training_step(p, wave)
        print(f"\n## lambda={lam}: step {plain:.2f} s unprofiled, {torch.get_num_threads()} threads")
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=top, max_name_column_width=40))


def projector_rows(args: argparse.Namespace, parts, device: torch.device) -> None:
    """The projector g forward + backward on the two views' f(v): one call per view vs ``MLP.views``."""
    head = parts.learner.projector
    ys = [torch.randn(args.batch_size, head.net[0].in_features, device=device, requires_grad=True) for _ in range(2)]

    def backward(outs: list) -> None:
        sum(o.sum() for o in outs).backward()

    fns = {"one call per view": lambda: backward([head(y) for y in ys]), "MLP.views": lambda: backward(head.views(*ys))}
    med = _alternating(fns, args.rounds * args.steps, device)
    print(
        f"projector {head.net[0].in_features} -> {head.net[0].out_features} -> {head.net[3].out_features}, "
        f"2 views of {args.batch_size}, forward + backward:"
    )
    for k, t in med.items():
        print(f"  {k:20s} {1e3 * t:7.1f} ms")


def first_block_rows(args: argparse.Namespace, device: torch.device) -> None:
    """The first block's conv + pool (``learner._PooledFirstConv``) on one view of the batch: forward alone
    (the target's pass) and forward + backward (an online pass), on the slice path and compiled."""
    if device.type != "cpu":
        return
    padded = torch.nn.functional.pad(torch.randn(args.batch_size, 64, 96), (1, 1, 1, 1))
    taps = torch.randn(9, 64, requires_grad=True)
    g = torch.randn(args.batch_size, 32, 48, 64)

    def run(compiled: bool, backward: bool) -> None:
        fused.ENABLED = compiled
        if backward:
            (_PooledFirstConv.apply(padded, taps) * g).sum().backward()
        else:
            with torch.no_grad():
                _PooledFirstConv.apply(padded, taps)

    fns = {
        f"{kind} {path}": functools.partial(run, path == "compiled", kind == "forward + backward")
        for kind in ("forward", "forward + backward")
        for path in ("slices", "compiled")
    }
    saved = fused.ENABLED
    try:
        med = _alternating(fns, args.rounds * args.steps, device)
    finally:
        fused.ENABLED = saved
    print(f"first block conv + pool, {args.batch_size} x 64 x 96 (compile once first; {fused._failed or 'ok'}):")
    for k, t in med.items():
        print(f"  {k:28s} {1e3 * t:7.1f} ms")


if __name__ == "__main__":
    main()
