"""Official BYOL-A v2 per-sample augmentation in DataLoader workers vs our batched augmentation on a device.

BYOL-A v2 makes each clip's two views in its data loader: for every clip a worker runs pre-normalisation,
MixupBYOLA (its own memory bank), RandomResizeCrop (one bicubic resize per view) and RandomLinearFader,
and the batch of views is standardised on the device afterwards. Ours (``augment.ViewAugmenter``) does the
same on the whole batch on the training device (one ``grid_sample`` for all crops). Both get the same
pre-made log-mel clips (B, 1, 64, 96) and the same parameters (``AugmentConfig``); printed: clips/s (two
views each) for each side, in alternating rounds, medians, and their ratio.

The official classes come from a local checkout (``v2/byol_a2/augmentations.py``; nothing is downloaded).
Their module imports torchaudio through ``byol_a2.common``, which these three classes do not use; the script
supplies that module with torch, numpy and random only, so the checkout runs where torchaudio does not.

    python bench/official_augment.py --official PATH/TO/byol-a                       # CPU, 2 workers
    python bench/official_augment.py --official PATH/TO/byol-a --device cuda --workers 8 --batch-size 256
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import random
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pretrain_throughput import sync  # bench/ is on sys.path when this file runs as a script
from torch import nn

from hear_diffbyola.augment import AugmentConfig, ViewAugmenter, standardize_batch
from hear_diffbyola.train import pick_device


def import_official_augmentations(official: Path) -> types.ModuleType:
    """``byol_a2.augmentations`` from the checkout, with a ``byol_a2.common`` that holds only what they use."""
    path = official / "v2" / "byol_a2" / "augmentations.py"
    pkg = types.ModuleType("byola_official_v2")
    pkg.__path__ = [str(path.parent)]
    common = types.ModuleType("byola_official_v2.common")
    common.__dict__.update(
        torch=torch, nn=nn, F=F, np=np, random=random, logging=logging, torchaudio=None, AF=None, AT=None
    )
    sys.modules.update({"byola_official_v2": pkg, "byola_official_v2.common": common})
    spec = importlib.util.spec_from_file_location("byola_official_v2.augmentations", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class OfficialViews(torch.utils.data.Dataset):
    """Two views of clip i as BYOL-A v2's dataset makes them: pre-norm, then Mixup -> RRC -> fader, twice."""

    def __init__(self, lms: torch.Tensor, aug: types.ModuleType, cfg: AugmentConfig) -> None:
        self.lms = lms  # (N, 1, F, T) log-mel, not normalised
        self.mean, self.std = lms.mean().item(), lms.std().item()
        self.chain = nn.Sequential(
            aug.MixupBYOLA(ratio=cfg.mixup_ratio, n_memory=cfg.mixup_memory),
            aug.RandomResizeCrop(cfg.virtual_crop_scale, cfg.freq_scale, cfg.time_scale),
            aug.RandomLinearFader(gain=cfg.fader_gain),
        )

    def __len__(self) -> int:
        return len(self.lms)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.lms[i] - self.mean) / self.std  # PrecomputedNorm
        return self.chain(x), self.chain(x)


def official_round(loader: torch.utils.data.DataLoader, batches: int, device: torch.device) -> float:
    """Seconds per batch over ``batches`` batches after the first (worker start-up and Mixup banks left out),
    including the copy to the device and the batch standardisation BYOL-A runs there."""
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        v1, v2 = next(it)
        standardize_batch(torch.cat([v1, v2]).to(device, non_blocking=True))
        sync(device)
    seconds = (time.perf_counter() - t0) / batches
    del it  # stops the workers before the other side runs
    return seconds


def ours_round(augmenter: ViewAugmenter, x: torch.Tensor, batches: int, device: torch.device) -> float:
    gen = torch.Generator(device="cpu").manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        augmenter(x, gen)
    sync(device)
    return (time.perf_counter() - t0) / batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", help="checkout of github.com/nttcslab/byol-a (with v2/byol_a2/)")
    ap.add_argument("--device", default="auto", help="where ours runs (the official views are made on CPU workers)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the official side")
    ap.add_argument("--batches", type=int, default=8, help="timed batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads for ours on CPU (default: torch's)")
    args = ap.parse_args()
    official = Path(args.official) if args.official else None
    if official is None or not (official / "v2" / "byol_a2" / "augmentations.py").is_file():
        print("skipped: give --official, a checkout of github.com/nttcslab/byol-a (v2/byol_a2/augmentations.py)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = AugmentConfig()
    B = args.batch_size
    n = B * (args.batches + 1)
    lms = torch.randn(n, 1, 64, 96, generator=torch.Generator().manual_seed(0)) * 2.0 - 5.0
    dataset = OfficialViews(lms, import_official_augmentations(official), cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=B, num_workers=args.workers, shuffle=False)
    augmenter = ViewAugmenter(cfg).to(device)
    x = ((lms[:B] - dataset.mean) / dataset.std).to(device)
    for _ in range(3):  # fills our Mixup memory, warms the kernels
        augmenter(x, torch.Generator().manual_seed(1))
    sync(device)
    times: dict[str, list[float]] = {"official": [], "ours": []}
    for _ in range(args.rounds):
        times["official"].append(official_round(loader, args.batches, device))
        times["ours"].append(ours_round(augmenter, x, args.batches, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"# torch {torch.__version__}; {os.cpu_count()} CPUs; ours on {device} ({name}); load {os.getloadavg()[0]:.2f}"
    )
    print(f"## two views per clip, B={B}, {args.rounds} rounds of {args.batches} batches")
    print("| what | clips/s | vs official |\n|---|---|---|")
    print(f"| official per-sample, {args.workers} DataLoader workers | {B / med['official']:.1f} | 1.00x |")
    print(f"| ours batched on {device} | {B / med['ours']:.1f} | {med['official'] / med['ours']:.2f}x |")


if __name__ == "__main__":
    main()
