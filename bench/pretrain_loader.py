"""Pretraining from audio files through the trainer's own data loader, lambda = 0 vs 0.5, in one process.

What bench/pretrain_throughput.py leaves out is timed here as ``hear-diffbyola pretrain`` runs it: files read
and decoded in DataLoader workers, random crops, collation, the copy to the device, then ``training_step``.
On CUDA the step runs under bf16 autocast (``train.amp=auto``) at B = 256 by default; on CPU at B = 64.
Prints clips/s of the whole loop for each setting (alternating rounds, medians), their ratio, peak memory
(CUDA max allocated, or the peak RSS on CPU) and, on the same device, HEAR embedding audio-s/s on 16 x 10 s
with the shipped weights. Nothing is downloaded: without ``--corpus`` it writes noise wav files to a
temporary folder (speed does not depend on the content).

    python bench/pretrain_loader.py                                  # 512 x 2 s wav files, written first
    python bench/pretrain_loader.py --device cuda --batch-size 256 --workers 8 --corpus /data/wavs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pretrain_throughput import RssPeak, sync  # bench/ is on sys.path when this file runs as a script

from hear_diffbyola import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_diffbyola.audio import write_audio
from hear_diffbyola.config import PretrainConfig, apply_overrides
from hear_diffbyola.train import (
    Run,
    build_step_parts,
    hardware_description,
    make_loader,
    open_source,
    pick_device,
    prepare_device,
    training_step,
)

SR = 16000


def write_noise_corpus(folder: Path, n: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_audio(folder / f"noise{i:05d}.wav", (rng.standard_normal(int(SR * seconds)) * 0.1).astype(np.float32), SR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", help="a folder of audio or a .csv/.txt list (default: noise wav files written here)")
    ap.add_argument("--files", type=int, default=512, help="noise files to write without --corpus")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default="audiontt2022", choices=["audiontt2022", "audiontt2020"])
    ap.add_argument("--batch-size", type=int, help="default 256 on CUDA, 64 on CPU")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (train.num_workers)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each round's timed ones")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    prepare_device(device)  # as the trainer does: deterministic kernels on CUDA, the allocator tuned on CPU
    B = args.batch_size or (256 if device.type == "cuda" else 64)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if corpus is None:
            corpus = str(Path(tmp) / "corpus")
            Path(corpus).mkdir()
            write_noise_corpus(Path(corpus), args.files, 2.0)
        per_round = args.warmup + args.steps
        settings, loaders = {}, {}
        for lam in (0.0, 0.5):
            overrides = [f"encoder.arch={args.arch}", f"learner.lam={lam}", f"train.batch_size={B}"]
            overrides += [f"train.num_workers={args.workers}", f"train.device={device}"]
            config = PretrainConfig.from_dict(apply_overrides({"train": {"corpus": corpus}}, overrides))
            run = Run(Path(tmp) / f"run{lam}", config, device)
            source = open_source(run)
            settings[lam] = build_step_parts(config, (0.0, 1.0), device)
            loaders[lam] = iter(make_loader(run, source, 0, args.rounds * per_round))
        times: dict[float, list[float]] = {lam: [] for lam in settings}
        peaks: dict[float, float] = {lam: 0.0 for lam in settings}
        for _ in range(args.rounds):
            for lam, parts in settings.items():
                for _ in range(args.warmup):
                    training_step(parts, next(loaders[lam]))
                sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                with RssPeak() as rss:
                    t = time.perf_counter()
                    for _ in range(args.steps):
                        training_step(parts, next(loaders[lam]))
                    sync(device)
                    times[lam].append((time.perf_counter() - t) / args.steps)
                peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
                peaks[lam] = max(peaks[lam], peak / 2**20)
        source_note = args.corpus or f"{args.files} noise wav files of 2 s, 16 kHz"
        print(
            f"# {hardware_description(device, 1)}; torch {torch.__version__}; {args.arch}, B={B}, corpus: {source_note}"
        )
        print(f"# DataLoader workers {args.workers}, {args.rounds} rounds of {args.warmup} + {args.steps} steps")
        memory = "peak GPU memory (max allocated)" if device.type == "cuda" else "peak RSS"
        print(f"| setting | clips/s | step | {memory} |\n|---|---|---|---|")
        for lam, ts in times.items():
            med = statistics.median(ts)
            print(f"| lambda = {lam:g} | {B / med:.1f} | {med * 1e3:.0f} ms | {peaks[lam]:.0f} MiB |")
        ratio = statistics.median(times[0.5]) / statistics.median(times[0.0])
        print(f"lambda=0.5 step / lambda=0 step: {ratio:.3f}")

    model = load_model(device=device)  # the shipped default weights
    wave = (torch.rand(16, 10 * SR, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.3
    rates = {}
    for name, fn in (("scene", get_scene_embeddings), ("timestamps", get_timestamp_embeddings)):
        fn(wave, model)  # warm-up: the whole batch, so the CPU workers' compile is not timed
        ts = []
        for _ in range(args.rounds):
            sync(device)
            t = time.perf_counter()
            fn(wave, model)
            sync(device)
            ts.append(time.perf_counter() - t)
        rates[name] = wave.numel() / SR / statistics.median(ts)
    print(f"HEAR embeddings on {device}: scene {rates['scene']:.1f} audio-s/s, timestamps {rates['timestamps']:.1f}")


if __name__ == "__main__":
    main()
