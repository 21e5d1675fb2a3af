"""`hear-diffbyola` command line (also `python -m hear_diffbyola`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, PretrainConfig, apply_overrides, load_yaml

# Named pretrain flags -> config keys; --set section.key=value reaches every other key.
PRETRAIN_FLAGS = {
    "corpus": "train.corpus", "lam": "learner.lam", "steps": "train.steps", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed", "d": "encoder.d",
    "device": "train.device", "num_workers": "train.num_workers", "checkpoint_every": "train.checkpoint_every",
}


def build_config(args: argparse.Namespace) -> PretrainConfig:
    """defaults < --config YAML < named flags < --set overrides."""
    data = load_yaml(args.config) if args.config else {}
    flags = [f"{key}={getattr(args, name)}" for name, key in PRETRAIN_FLAGS.items() if getattr(args, name) is not None]
    return PretrainConfig.from_dict(apply_overrides(data, flags + list(args.set)))


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .train import pretrain

    config = build_config(args)
    summary = pretrain(config, args.out, resume=args.resume, progress=not args.no_progress)
    if summary.get("final"):
        print(f"[hear-diffbyola] done: {summary['steps']} steps in {summary['wall_time_s']:.1f} s; run in {args.out}; "
              f"export with: hear-diffbyola export {args.out} --out weights/NAME.safetensors")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .weights import export_run

    header = export_run(args.run_dir, args.out)
    print(f"[hear-diffbyola] wrote {args.out} (lambda={header['lam']}, steps={header['provenance']['steps']}, "
          f"d={header['encoder']['d']})")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(PretrainConfig().to_yaml(), end="")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hear-diffbyola", description="Difference-aware BYOL-A: pretrain, export, evaluate.")
    sub = p.add_subparsers(dest="command", required=True)

    pt = sub.add_parser("pretrain", help="pretrain DiffBYOL-A (embedded corpus by default)",
                        description="Pretrain on the embedded corpus, a folder of audio or a .csv/.txt list. "
                                    "Multi-GPU: torchrun --nproc_per_node N -m hear_diffbyola pretrain ...")
    pt.add_argument("--config", help="YAML file with sections frontend/encoder/augment/learner/train "
                                     "(see 'hear-diffbyola config' for all keys and defaults)")
    pt.add_argument("--out", default="runs/pretrain", help="run folder (default: runs/pretrain)")
    pt.add_argument("--corpus", help="'embedded' (default), a folder of audio files, or a .csv/.txt list")
    pt.add_argument("--lam", type=float, help="lambda, weight of L_diff in [0, 1] (default 0.5; 0 = BYOL-A)")
    pt.add_argument("--steps", type=int, help="total optimiser steps (overrides --epochs)")
    pt.add_argument("--epochs", type=int, help="epochs over the corpus (default 100)")
    pt.add_argument("--batch-size", type=int, help="global batch size (default 256)")
    pt.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    pt.add_argument("--seed", type=int, help="seed of everything random (default 0)")
    pt.add_argument("--d", type=int, help="embedding dimension: 512, 1024 or 2048 (default 2048)")
    pt.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    pt.add_argument("--num-workers", type=int, help="data loading processes (default 2)")
    pt.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    pt.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override any config key, e.g. --set augment.mixup_ratio=0.2 (repeatable)")
    pt.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(func=cmd_pretrain)

    ex = sub.add_parser("export", help="write a run's encoder as a .safetensors weights file")
    ex.add_argument("run_dir", help="the --out folder of a pretraining run")
    ex.add_argument("--out", required=True, help="output path, e.g. weights/mine.safetensors")
    ex.set_defaults(func=cmd_export)

    cf = sub.add_parser("config", help="print the default configuration as YAML")
    cf.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from .corpus import CorpusError
    from .train import TrainingError
    from .weights import WeightsError

    try:
        return args.func(args)
    except (ConfigError, CorpusError, TrainingError, WeightsError) as e:
        print(f"hear-diffbyola {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
