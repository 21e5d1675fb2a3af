"""`hear-diffbyola` command line (also `python -m hear_diffbyola`)."""
from __future__ import annotations

import argparse
import json
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


def cmd_install_eval_tools(args: argparse.Namespace) -> int:
    from .heartask import HeartaskError, install_eval_tools, missing_eval_imports

    try:
        for cmd in install_eval_tools(patch=not args.no_patch):
            print(f"[hear-diffbyola] ran: {' '.join(cmd)}")
    except HeartaskError as e:
        print(f"hear-diffbyola install-eval-tools: error: {e}", file=sys.stderr)
        return 2
    if not args.no_patch:
        print("[hear-diffbyola] heareval patched for event-task scoring (hear-eval-kit#432)")
    missing = missing_eval_imports()
    if missing:
        print(f"[hear-diffbyola] still missing their imports {missing}: pip install 'hear-diffbyola[hear-eval]'")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoError, run_demo
    from .tasks import TaskError

    try:
        run_demo(args.out or f"runs/demo-{args.budget}", args.budget, device=args.device, text_encoder=args.text_encoder,
                 pretrain_seed=args.pretrain_seed, paper_numbers=args.paper_numbers, progress=not args.no_progress)
    except (DemoError, TaskError) as e:
        print(f"hear-diffbyola demo: error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_demo_seeds(args: argparse.Namespace) -> int:
    from .demo import DemoError, seeds_table

    results = []
    try:
        for item in args.results:
            path = Path(item) / "results.json" if Path(item).is_dir() else Path(item)
            try:
                results.append(json.loads(path.read_text()))
            except (OSError, ValueError) as e:
                raise DemoError(f"cannot read {path} ({e}); give demo folders or their results.json") from e
        print(seeds_table(results), end="")
    except DemoError as e:
        print(f"hear-diffbyola demo-seeds: error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_s3prl(args: argparse.Namespace) -> int:
    from .s3prl import S3prlError, run_downstream

    try:
        return run_downstream(args.runner_args)
    except S3prlError as e:
        print(f"hear-diffbyola s3prl: error: {e}", file=sys.stderr)
        return 2


def cmd_s3prl_install(args: argparse.Namespace) -> int:
    from .s3prl import S3prlError, install, uninstall

    try:
        changed = uninstall(args.s3prl_root) if args.uninstall else install(args.s3prl_root, copy=args.copy)
    except S3prlError as e:
        print(f"hear-diffbyola s3prl-install: error: {e}", file=sys.stderr)
        return 2
    for line in changed or ["nothing to do: already " + ("uninstalled" if args.uninstall else "installed")]:
        print(f"[hear-diffbyola] {line}")
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

    dm = sub.add_parser("demo", help="pretrain lambda=0 and 0.5 on the embedded corpus, score both on synthetic "
                                     "BgKnown, APwD and a HEAR scene task, write report.md with plots",
                        description="The paper's comparison end to end on data that ships with the package. Resumable: "
                                    "run the same command again to finish an interrupted demo (done stages are skipped).")
    dm.add_argument("--out", help="demo folder (default runs/demo-BUDGET)")
    dm.add_argument("--budget", choices=("quick", "full"), default="quick",
                    help="quick: about 8 min on 2 CPU cores (shows the pipeline); full: the paper's d=2048 encoder and "
                         "the tasks' default sizes, about an hour on 2 CPU cores (default quick)")
    dm.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N (pretraining and embedding)")
    dm.add_argument("--text-encoder", choices=("hash", "minilm", "distilbert"), default="hash",
                    help="APwD text encoder (default hash: needs no model, same numbers everywhere)")
    dm.add_argument("--pretrain-seed", type=int, default=0,
                    help="seed of both pretraining runs (default 0); tasks and evaluation seeds stay the same, so "
                         "demos with other values show how much the comparison moves with it")
    dm.add_argument("--paper-numbers", metavar="FILE",
                    help="JSON with the paper's own numbers to print beside ours, labelled (format: hear_diffbyola/demo.py)")
    dm.add_argument("--no-progress", action="store_true", help="no progress bars")
    dm.set_defaults(func=cmd_demo)

    ds = sub.add_parser("demo-seeds", help="BgKnown table across demos that differ only in --pretrain-seed")
    ds.add_argument("results", nargs="+", help="demo folders (or their results.json)")
    ds.set_defaults(func=cmd_demo_seeds)

    cf = sub.add_parser("config", help="print the default configuration as YAML")
    cf.set_defaults(func=cmd_config)

    ie = sub.add_parser("install-eval-tools", help="pip-install heareval 2021.1.3 and hearvalidator 2021.0.6 (--no-deps)",
                        description="Their declared pins cannot install on Python 3.11, so they go in with --no-deps; "
                                    "what they import comes from the 'hear-eval' extra. Also patches one line of "
                                    "heareval so event tasks score with pytorch-lightning 1.9.5 (idempotent).")
    ie.add_argument("--no-patch", action="store_true", help="leave heareval unpatched (event-task scoring then fails)")
    ie.set_defaults(func=cmd_install_eval_tools)

    from .tasks.bgknown.cli import add_parser as add_bgknown_parser  # bgknown build|eval|export-heareval (tasks/bgknown)
    add_bgknown_parser(sub)

    from .tasks.apwd.cli import add_parser as add_apwd_parser  # apwd build|eval|table (tasks/apwd)
    add_apwd_parser(sub)

    # prefix_chars="+": every argument after 's3prl' (-m, -u, --help ...) goes to s3prl's runner untouched
    s3 = sub.add_parser("s3prl", prefix_chars="+", add_help=False,
                        help="run s3prl's downstream runner with the diffbyola upstreams registered "
                             "(arguments are run_downstream.py's, e.g. -m train -u diffbyola -d emotion -c CONFIG -p EXPDIR)")
    s3.add_argument("runner_args", nargs=argparse.REMAINDER)
    s3.set_defaults(func=cmd_s3prl)

    si = sub.add_parser("s3prl-install", help="link upstream/diffbyola into an s3prl tree and add it to s3prl/hub.py",
                        description="For s3prl source checkouts: afterwards s3prl's own run_downstream.py knows "
                                    "-u diffbyola. Idempotent; --uninstall reverses it exactly.")
    si.add_argument("--s3prl-root", help="s3prl checkout (or its s3prl/ package folder); default: the installed s3prl")
    si.add_argument("--copy", action="store_true", help="copy the upstream folder instead of linking it")
    si.add_argument("--uninstall", action="store_true", help="remove the link (or copy) and the hub.py line")
    si.set_defaults(func=cmd_s3prl_install)
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
