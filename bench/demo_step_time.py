"""Wall time of one pretraining step at each demo budget, and what a paired multi-seed demo would cost.

Times the trainer's own ``training_step`` (log-mel, batched augmentation, per-view online/target
passes, backward, Adam, EMA) on random waveforms with each budget's pretraining config (so data
loading and the norm-statistics pass are left out: a lower bound on the pretraining stage). After
one warm-up step per setting, the settings are timed in alternating rounds so that drift of a shared
machine hits them alike; the figure is the median round. The cost line multiplies it by the budget's
planned steps, its default number of pretraining seeds and the number of λ.

    python bench/demo_step_time.py                         # quick, full, decide; λ 0 and 0.5; 2 rounds of 2 steps
    python bench/demo_step_time.py --budgets quick --rounds 3 --json step_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from hear_diffbyola.tasks.demo.settings import BUDGETS
from hear_diffbyola.train import (
    build_step_parts,
    hardware_description,
    pick_device,
    prepare_device,
    total_steps,
    training_step,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="quick,full,decide", help="comma-separated demo budget names")
    ap.add_argument("--lambdas", default="0,0.5", help="comma-separated λ values to time")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    device = pick_device(args.device)
    prepare_device(device)  # as the trainer does
    lambdas = [float(x) for x in args.lambdas.split(",")]
    settings = [(b, lam) for b in args.budgets.split(",") for lam in lambdas]
    parts, waves = {}, {}
    for name, lam in settings:
        cfg = BUDGETS[name].pretrain_config(lam, str(device))
        parts[name, lam] = build_step_parts(cfg, (0.0, 1.0), device)
        n = cfg.frontend.samples_for_frames(96)
        waves[name, lam] = torch.randn(cfg.train.batch_size, n, generator=torch.Generator().manual_seed(0)) * 0.1
        training_step(parts[name, lam], waves[name, lam])  # warm-up: allocator, kernel choice, Mixup memory

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[tuple[str, float], list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for s in settings:
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                training_step(parts[s], waves[s])
            sync()
            times[s].append((time.perf_counter() - t0) / args.steps)

    res = {
        "hardware": hardware_description(device, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_after": os.getloadavg(),
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "budgets": {},
    }
    for name in args.budgets.split(","):
        b = BUDGETS[name]
        cfg = b.pretrain_config(0.0, str(device))
        steps = total_steps(cfg, cfg.train.embedded_size)
        row = {
            "d": cfg.encoder.d,
            "hidden": cfg.encoder.hidden,
            "proj_hidden": cfg.learner.proj_hidden,
            "batch_size": cfg.train.batch_size,
            "planned_steps": steps,
            "default_pretrain_seeds": len(b.pretrain_seeds),
        }
        for lam in lambdas:
            step_s = statistics.median(times[name, lam])
            row[f"lam{lam:g}"] = {
                "step_s": step_s,
                "rounds_s": times[name, lam],
                "clips_per_s": cfg.train.batch_size / step_s,
                "one_run_h": step_s * steps / 3600,
            }
        # every pretraining seed trains λ = 0 and one λ > 0 (the second timed λ stands for all λ > 0)
        per_seed_h = sum(row[f"lam{lam:g}"]["one_run_h"] for lam in lambdas[:2])
        row["per_seed_pair_h"] = per_seed_h
        row["three_seeds_pair_h"] = 3 * per_seed_h
        row["default_seeds_pair_h"] = len(b.pretrain_seeds) * per_seed_h
        res["budgets"][name] = row
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
