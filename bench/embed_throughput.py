"""HEAR embedding speed and memory: audio-seconds per second, and peak RSS versus clip length.

    python bench/embed_throughput.py                      # shipped default weights (else random v2 d=3072)
    python bench/embed_throughput.py --weights W.safetensors --batch 8 --minutes 1 5 20
    python bench/embed_throughput.py --archs-only         # only the v2-vs-v1 timestamp comparison
    python bench/embed_throughput.py --memory-only --weights AudioNTT2020-BYOLA-64x96d512.pth   # RSS table only
    python bench/embed_throughput.py --memory-only --arch v1 --d 2048    # random AudioNTT2020 d=2048
    python bench/embed_throughput.py --vs-modules --arch v1 --d 512      # fast path vs the unoptimised module path
    python bench/embed_throughput.py --workers --arch v2                 # tiles on single-threaded workers vs one at a time
    python bench/embed_throughput.py --stages --arch v2                  # ms and GFLOP/s of each stage of one tile
    python bench/embed_throughput.py --compiled --arch v2                # the workers' first block compiled vs in slices
    python bench/embed_throughput.py --blas --arch v2                    # the workers' fc on MKL vs OpenBLAS

v2 versus v1 timestamps: random AudioNTT2022 (d = 3072, one pass on its native 40 ms grid) and
AudioNTT2020 (d = 2048, two grids shifted by 40 ms, from one shared pass: hear_diffbyola/inference.py) with the same front end embed the same batch
of 10-s clips, alternating in rounds in this one process; the median of each and their ratio are
printed (the ratio is what survives a shared CPU).

Throughput: get_scene_embeddings and get_timestamp_embeddings on a batch of 10-s clips and on one
20-minute clip, median of --repeats runs, reported as audio-seconds per second of wall time, and
as ratios (timestamps / scene cost; long clip / short clips throughput), which survive a shared CPU.
Memory: each clip length runs in a fresh child process; the figure is the child's peak RSS
(os.wait4 rusage), and the growth over the child's RSS before embedding (model + audio loaded).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from hear_diffbyola import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_diffbyola.embed import FrameGrid
from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022
from hear_diffbyola.frontend import Frontend, FrontendConfig
from hear_diffbyola.weights import DEFAULT_WEIGHTS, PretrainedModel

SR = 16000


def make_model(weights: str | None, d: int, arch: str | None = None) -> tuple[PretrainedModel, str]:
    """The given or shipped weights; with ``arch`` (or no shipped file) a random encoder of that arch and d
    (speed and memory do not depend on the values)."""
    path = weights or (str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() and arch is None else None)
    if path:
        return load_model(path), path
    enc = AudioNTT2020(64, d) if arch == "v1" else AudioNTT2022(64, d)
    model = PretrainedModel(Frontend(FrontendConfig(), -4.0, 3.0), enc, {})
    model.scene_embedding_size = model.timestamp_embedding_size = d
    return model, f"random {type(enc).__name__} d={d}"


def random_model(arch: str) -> PretrainedModel:
    torch.manual_seed(0)
    enc = AudioNTT2022(64, 3072) if arch == "v2" else AudioNTT2020(64, 2048)
    model = PretrainedModel(Frontend(FrontendConfig(), -4.0, 3.0), enc, {})
    model.scene_embedding_size = model.timestamp_embedding_size = enc.d
    return model


def compare_archs(args: argparse.Namespace) -> None:
    """Timestamp embeddings of v2 (one pass) and v1 (two passes), alternating rounds in one process."""
    models = {"v1": random_model("v1"), "v2": random_model("v2")}
    wave = audio(args.batch, 10.0)
    secs = wave.numel() / SR
    for m in models.values():
        get_timestamp_embeddings(wave, m)  # warm-up: the whole batch, so the workers' compile is not timed
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, m in models.items():
            times[k].append(timed(get_timestamp_embeddings, wave, m, 1))
    print(f"\n# timestamp embeddings, {args.batch} x 10 s, {args.rounds} alternating rounds, medians")
    print("| encoder | 40 ms grids (v1: shifted, from one shared pass) | frame hop | audio-s/s (min-max) |")
    print("|---|---|---|---|")
    for k, m in models.items():
        g = FrameGrid.of(m)
        rates = sorted(secs / x for x in times[k])
        print(
            f"| {type(m.encoder).__name__} d={m.encoder.d} | {g.shifts} | {g.hop_samples * 1000 // g.sample_rate} ms | "
            f"{statistics.median(rates):.1f} ({rates[0]:.1f}-{rates[-1]:.1f}) |"
        )
    ratio = statistics.median(times["v1"]) / statistics.median(times["v2"])
    print(f"v2 / v1 timestamp throughput: {ratio:.2f}x")


def compare_modules(args: argparse.Namespace) -> None:
    """The fast inference path (embed.clip_embedding / dense_frames) against the unoptimised module path (an
    eval-mode copy: front end, encoder.frames on the whole batch, mean + max; v1 timestamps as two passes),
    alternating rounds in this one process; prints throughputs, ratios and the agreement (min cosine)."""
    import copy

    from hear_diffbyola.embed import clip_embedding, dense_frames
    from hear_diffbyola.encoder import temporal_pool

    model, source = make_model(args.weights, args.d, args.arch)
    ref = copy.deepcopy(model).eval()
    wave = audio(args.batch, 10.0)
    secs = wave.numel() / SR

    @torch.no_grad()
    def module_frames() -> torch.Tensor:
        lm = ref.frontend(wave)
        frames = ref.encoder.frames(lm)
        if FrameGrid.of(ref).shifts == 1:
            return frames
        shifted = ref.encoder.frames(lm[..., FrameGrid.of(ref).step :])
        out = frames.new_empty(frames.shape[0], frames.shape[1] + shifted.shape[1], frames.shape[2])
        out[:, 0::2], out[:, 1::2] = frames, shifted
        return out

    @torch.no_grad()
    def module_scene() -> torch.Tensor:
        return temporal_pool(ref.encoder.frames(ref.frontend(wave)))

    fns = {
        "module scene": module_scene,
        "fast scene": lambda: clip_embedding(model, wave),
        "module timestamps": module_frames,
        "fast timestamps": lambda: dense_frames(model, wave)[0][0],
    }
    cos = torch.nn.functional.cosine_similarity
    agree = (
        cos(fns["fast scene"](), module_scene()).min().item(),
        cos(fns["fast timestamps"](), module_frames(), dim=-1).min().item(),
    )
    for f in fns.values():
        f()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n# {source}: fast path vs module path, {args.batch} x 10 s, {args.rounds} alternating rounds, medians")
    print(f"min cosine fast vs module: scene {agree[0]:.7f}, timestamps {agree[1]:.7f}")
    print("| what | module audio-s/s | fast audio-s/s | fast / module |\n|---|---|---|---|")
    for what in ("scene", "timestamps"):
        m, f = med[f"module {what}"], med[f"fast {what}"]
        print(f"| {what} | {secs / m:.1f} | {secs / f:.1f} | {m / f:.2f}x |")


def compare_workers(args: argparse.Namespace) -> None:
    """The fast path's tiles one at a time (each op on every thread) against tiles on single-threaded
    workers (runtime.parallel_map) at two tile sizes (embed.WORKERS / TILE_FRAMES_WORKER)."""
    from hear_diffbyola import embed

    settings = {"one tile at a time": {"WORKERS": 1}}
    settings.update({f"workers, tiles of {t}": {"WORKERS": None, "TILE_FRAMES_WORKER": t} for t in (1024, 2048)})
    compare_settings(args, embed, settings, "tiles on workers vs one at a time")


def compare_blas(args: argparse.Namespace) -> None:
    """Tiles on workers with their fc on torch's MKL, on the per-shape choice, and on OpenBLAS (blas.py)."""
    from hear_diffbyola import blas

    if blas.openblas() is None:
        raise SystemExit("scipy-openblas32 is not installed: nothing to compare")
    settings = {
        "torch (MKL)": {"MODE": "torch"},
        "per-shape choice": {"MODE": "auto"},
        "OpenBLAS": {"MODE": "openblas"},
    }
    compare_settings(args, blas, settings, "the workers' fc on MKL vs OpenBLAS")
    print(f"per-shape choice, (M bucket, K, N): {blas.choices()}")


def compare_compiled(args: argparse.Namespace) -> None:
    """Tiles on workers with the first block's slice path against its compiled kernel (fused.pooled_relu)."""
    from hear_diffbyola import fused

    if not fused.usable(torch.device("cpu")):
        raise SystemExit("compiling is off (HEAR_DIFFBYOLA_COMPILE=0): nothing to compare")
    settings = {"first block in slices": {"ENABLED": False}, "first block compiled": {"ENABLED": True}}
    compare_settings(args, fused, settings, "the workers' first block compiled vs in slices")


def compare_settings(args: argparse.Namespace, module, settings: dict[str, dict], title: str) -> None:
    """Scene and timestamps under each setting (attributes of ``module``; the first is the baseline) on the
    short batch and on one clip of --long-minutes, alternating rounds in this one process."""
    model, source = make_model(args.weights, args.d, args.arch)
    inputs = {
        f"{args.batch} x 10 s": audio(args.batch, 10.0),
        f"1 x {args.long_minutes:g} min": audio(1, args.long_minutes * 60),
    }
    saved = {k: getattr(module, k) for attrs in settings.values() for k in attrs}
    times: dict[tuple[str, str, str], list[float]] = {}
    try:
        for r in range(args.rounds + 1):  # round 0 warms up (and compiles)
            for label, wave in inputs.items():
                for what, fn in (("scene", get_scene_embeddings), ("timestamps", get_timestamp_embeddings)):
                    for name, attrs in settings.items():
                        for k, v in {**saved, **attrs}.items():
                            setattr(module, k, v)
                        t = timed(fn, wave, model, 1)
                        times.setdefault((label, what, name) if r else ("warm-up", name), []).append(t)
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
    base_name = next(iter(settings))
    print(
        f"\n# {source}: {title}, {args.rounds} alternating rounds: median audio-s/s "
        f"(min-max); median [quartiles] of each round's speedup over {base_name}"
    )
    print(
        "warm-up round (first calls, compiles included), s: "
        + "; ".join(f"{name} " + " / ".join(f"{t:.1f}" for t in times[("warm-up", name)]) for name in settings)
    )
    print("| input | embedding | " + " | ".join(settings) + " |")
    print("|---|---|" + "---|" * len(settings))
    for label, wave in inputs.items():
        secs = wave.numel() / SR
        for what in ("scene", "timestamps"):
            cells = []
            base = times[(label, what, base_name)]
            for name in settings:
                rates = sorted(secs / x for x in times[(label, what, name)])
                # each round's ratio to the baseline run of that round: pairs share the machine's state
                paired = sorted(b / x for b, x in zip(base, times[(label, what, name)]))
                q1, q3 = paired[len(paired) // 4], paired[(3 * len(paired)) // 4]
                cells.append(
                    f"{statistics.median(rates):.1f} ({rates[0]:.1f}-{rates[-1]:.1f}); "
                    f"{statistics.median(paired):.2f}x [{q1:.2f}, {q3:.2f}]"
                )
            print(f"| {label} | {what} | " + " | ".join(cells) + " |")


def compare_stages(args: argparse.Namespace) -> None:
    """Where one tile's time goes: each stage of the fast path (front end, conv blocks, fc layers) on a tile
    of --batch 10-s clips, at 1 thread and at --threads, median of --rounds calls, with GFLOP/s."""
    import torch.nn.functional as F

    from hear_diffbyola import fused, runtime
    from hear_diffbyola.inference import inference_encoder, logmel_time_major

    model, source = make_model(args.weights, args.d, args.arch)
    fast = inference_encoder(model.encoder)
    fe = model.frontend.config
    seg = F.pad(audio(args.batch, 10.0), (fe.n_fft // 2, fe.n_fft // 2), mode="reflect")
    x = logmel_time_major(model.frontend, seg).contiguous(memory_format=torch.channels_last)
    stages: list[tuple[str, object, float]] = [
        ("front end (log-mel)", lambda: logmel_time_major(model.frontend, seg), 0.0)
    ]
    m = x
    for k, (w, _) in enumerate(fast.convs):
        t, f = m.shape[2] // 2 * 2, m.shape[3] // 2 * 2  # conv outputs the pool keeps
        flops = 2.0 * 9 * w.shape[1] * w.shape[0] * t * f * m.shape[0]
        stages.append(
            (f"conv block {k + 1} ({w.shape[1]} -> {w.shape[0]}, pooled)", lambda m=m, k=k: fast._block(m, k), flops)
        )
        m = fast._block(m, k)
    h = fast.flatten(m)
    h = h.reshape(-1, h.shape[-1])
    for i, (w, b) in enumerate(fast.fc):
        flops = 2.0 * h.shape[0] * w.shape[0] * w.shape[1]
        stages.append(
            (f"fc {i + 1} ({w.shape[0]} -> {w.shape[1]})", lambda h=h, w=w, b=b: torch.addmm(b, h, w).relu_(), flops)
        )
        h = torch.addmm(b, h, w).relu_()
    stages.append(("whole tile (frames)", lambda: fast.frames(x), 0.0))
    if fused.usable(x.device):  # at one thread the first block runs compiled (fused.pooled_relu): its slice path too

        def uncompiled(fn):
            fused.ENABLED = False
            try:
                return fn()
            finally:
                fused.ENABLED = True

        stages.insert(2, ("conv block 1, slice path", lambda: uncompiled(lambda: fast._block(x, 0)), stages[1][2]))
        stages.append(("whole tile, first block in slices", lambda: uncompiled(lambda: fast.frames(x)), 0.0))
    saved = torch.get_num_threads()
    results: dict[int, list[float]] = {}
    try:
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            # at one thread, this thread passes for one of the fast path's workers, the only callers
            # of the compiled first block (runtime.in_worker())
            runtime._local.worker = threads == 1
            results[threads] = []
            for _, fn, _ in stages:
                fn()  # warm-up
                results[threads].append(median_seconds(fn, args.rounds))
    finally:
        runtime._local.worker = False
        torch.set_num_threads(saved)
    print(f"\n# {source}: one tile of {args.batch} x 10 s ({x.shape[2]} log-mel frames each), median of {args.rounds}")
    print("| stage | " + " | ".join(f"{t} thread(s): ms, GFLOP/s" for t in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, (name, _, flops) in enumerate(stages):
        cells = [f"{r[i] * 1e3:.1f}" + (f", {flops / r[i] / 1e9:.0f}" if flops else "") for r in results.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


def audio(n_sounds: int, seconds: float) -> torch.Tensor:
    return (torch.rand(n_sounds, int(seconds * SR), generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.3


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed(fn, wave: torch.Tensor, model: PretrainedModel, repeats: int) -> float:
    return median_seconds(lambda: fn(wave, model), repeats)


def child_memory(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model, _ = make_model(args.weights, args.d, args.arch)
    wave = audio(1, args.child_minutes * 60)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = get_scene_embeddings if args.child_mode == "scene" else get_timestamp_embeddings
    fn(wave, model)
    print(before, flush=True)  # kB; the parent reads the peak from wait4


def measure_memory(args: argparse.Namespace, minutes: float, mode: str) -> tuple[float, float]:
    """(peak RSS, growth over the pre-embedding RSS) in MiB of a fresh process embedding one clip."""
    cmd = (
        [
            sys.executable,
            __file__,
            "--child-minutes",
            str(minutes),
            "--child-mode",
            mode,
            "--threads",
            str(args.threads),
            "--d",
            str(args.d),
        ]
        + (["--weights", args.weights] if args.weights else [])
        + (["--arch", args.arch] if args.arch else [])
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"memory child for {minutes} min {mode} failed (exit {proc.returncode})")
    peak = usage.ru_maxrss / 1024
    return peak, peak - int(out.split()[-1]) / 1024


def print_memory(memory: dict[float, list[tuple[float, float]]]) -> None:
    print("\n| clip | scene peak RSS (growth) MiB | timestamps peak RSS (growth) MiB |")
    print("|---|---|---|")
    for minutes, cells in memory.items():
        print(f"| {minutes:g} min | " + " | ".join(f"{peak:.0f} ({grow:+.0f})" for peak, grow in cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", help="weights file (default: the shipped default, else a random d=2048 encoder)")
    p.add_argument("--d", type=int, default=3072, help="d of the random encoder (--arch, or no weights file)")
    p.add_argument("--arch", choices=["v1", "v2"], help="a random AudioNTT2020 (v1) / AudioNTT2022 (v2) of --d")
    p.add_argument("--memory-only", action="store_true", help="only the fresh-process peak RSS table")
    p.add_argument("--vs-modules", action="store_true", help="only the fast-path vs module-path comparison")
    p.add_argument("--workers", action="store_true", help="only tiles on workers vs one tile at a time")
    p.add_argument("--stages", action="store_true", help="only the time of each stage of one tile")
    p.add_argument("--compiled", action="store_true", help="only the workers' compiled first block vs its slices")
    p.add_argument("--blas", action="store_true", help="only the workers' fc on MKL vs OpenBLAS (blas.py)")
    p.add_argument("--batch", type=int, default=8, help="10-s clips in the short-clip batch (default 8)")
    p.add_argument("--long-minutes", type=float, default=20.0, help="length of the long clip (default 20)")
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 20.0], help="clip lengths for memory")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the median is kept")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of the v2-vs-v1 comparison")
    p.add_argument("--archs-only", action="store_true", help="only the v2-vs-v1 timestamp comparison")
    p.add_argument("--child-minutes", type=float, help=argparse.SUPPRESS)
    p.add_argument("--child-mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_minutes is not None:
        return child_memory(args)
    if args.vs_modules or args.workers or args.stages or args.compiled or args.blas:
        torch.set_num_threads(args.threads)
        print(
            f"# torch {torch.__version__}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}"
        )
        if args.vs_modules:
            compare_modules(args)
        elif args.workers:
            compare_workers(args)
        elif args.compiled:
            compare_compiled(args)
        elif args.blas:
            compare_blas(args)
        else:
            compare_stages(args)
        return print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    if args.archs_only:
        torch.set_num_threads(args.threads)
        print(
            f"# torch {torch.__version__}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}"
        )
        return compare_archs(args)

    # Memory first: Linux carries the parent's peak RSS into a child's ru_maxrss across fork/exec, so the
    # parent must be lighter than any child (torch only, ~220 MB) when it starts them.
    memory = {
        minutes: [measure_memory(args, minutes, mode) for mode in ("scene", "timestamp")] for minutes in args.minutes
    }
    if args.memory_only:
        _, source = make_model(args.weights, args.d, args.arch)
        print(f"# {source}; torch {torch.__version__}; {args.threads} threads; load average {os.getloadavg()[0]:.2f}")
        return print_memory(memory)
    torch.set_num_threads(args.threads)
    model, source = make_model(args.weights, args.d, args.arch)
    print(
        f"# {source}; torch {torch.__version__}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} threads; load average {os.getloadavg()[0]:.2f}"
    )
    short, long = audio(args.batch, 10.0), audio(1, args.long_minutes * 60)
    get_scene_embeddings(short, model)  # warm-up: allocator, kernels, the workers' compile
    rows = {}
    for label, wave in ((f"{args.batch} x 10 s", short), (f"1 x {args.long_minutes:g} min", long)):
        secs = wave.numel() / SR
        reps = args.repeats if secs <= 600 else 1
        rows[label] = (
            secs / timed(get_scene_embeddings, wave, model, reps),
            secs / timed(get_timestamp_embeddings, wave, model, reps),
        )
    print("\n| input | scene audio-s/s | timestamp audio-s/s | timestamp / scene cost |")
    print("|---|---|---|---|")
    for label, (scene, stamps) in rows.items():
        print(f"| {label} | {scene:.1f} | {stamps:.1f} | {scene / stamps:.2f} |")
    (s_short, t_short), (s_long, t_long) = rows.values()
    print(f"\nlong / short throughput: scene {s_long / s_short:.2f}, timestamps {t_long / t_short:.2f}")

    print_memory(memory)
    compare_archs(args)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
