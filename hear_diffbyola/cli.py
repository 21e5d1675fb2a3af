"""`hear-diffbyola` command line (also `python -m hear_diffbyola`): the package's composition root.

The core commands (pretrain, export, config, install-eval-tools) live here. Every other command is
added by the code it runs, through the ``hear_diffbyola.commands`` entry-point group: each entry is a
function ``add_parser(subparsers)`` (``pyproject.toml`` lists them; the tasks and the s3prl upstream
register theirs), so a new benchmark touches only its own folder and ``pyproject.toml``.

Errors: every error the package raises on bad input is a :class:`~hear_diffbyola.errors.DiffByolaError`;
``main`` catches it once and prints ``hear-diffbyola COMMAND: error: MESSAGE`` on one line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from .errors import DiffByolaError

if TYPE_CHECKING:
    from .config import PretrainConfig

__all__ = [
    "COMMANDS_GROUP",
    "PRETRAIN_FLAGS",
    "build_config",
    "main",
    "make_parser",
    "parse_args",
    "registered_commands",
]

COMMANDS_GROUP = "hear_diffbyola.commands"

# Named pretrain flags (argparse dest) -> config keys. Their values arrive typed from argparse and go into
# the config as they are; --set SECTION.KEY=VALUE reaches every other key (read as YAML, then type-checked).
PRETRAIN_FLAGS = {
    "corpus": "train.corpus",
    "lam": "learner.lam",
    "steps": "train.steps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "seed": "train.seed",
    "arch": "encoder.arch",
    "d": "encoder.d",
    "device": "train.device",
    "num_workers": "train.num_workers",
    "checkpoint_every": "train.checkpoint_every",
}


def build_config(args: argparse.Namespace) -> PretrainConfig:
    """defaults < --config YAML < named flags < --set overrides; returns a PretrainConfig."""
    from .config import PretrainConfig, apply_overrides, load_yaml, set_values

    data = load_yaml(args.config) if args.config else {}
    named = {key: getattr(args, dest) for dest, key in PRETRAIN_FLAGS.items() if getattr(args, dest) is not None}
    return PretrainConfig.from_dict(apply_overrides(set_values(data, named), list(args.set)))


# ---------------------------------------------------------------- core commands


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .train import pretrain

    config = build_config(args)
    summary = pretrain(config, args.out, resume=args.resume, progress=not args.no_progress)
    if summary.get("final"):
        print(
            f"[hear-diffbyola] done: {summary['steps']} steps in {summary['wall_time_s']:.1f} s; run in {args.out}; "
            f"export with: hear-diffbyola export {args.out} --out weights/NAME.safetensors"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .weights import export_run

    header = export_run(args.run_dir, args.out)
    print(
        f"[hear-diffbyola] wrote {args.out} (lambda={header['lam']}, steps={header['provenance']['steps']}, "
        f"d={header['encoder']['d']})"
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import PretrainConfig

    print(PretrainConfig().to_yaml(), end="")
    return 0


def cmd_install_eval_tools(args: argparse.Namespace) -> int:
    from .evaltools import install_eval_tools, missing_eval_imports

    for cmd in install_eval_tools(patch=not args.no_patch):
        print(f"[hear-diffbyola] ran: {' '.join(cmd)}")
    if not args.no_patch:
        print("[hear-diffbyola] heareval patched for event-task scoring (hear-eval-kit#432)")
    missing = missing_eval_imports()
    if missing:
        print(f"[hear-diffbyola] still missing their imports {missing}: pip install 'hear-diffbyola[hear-eval]'")
    return 0


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    pt = sub.add_parser(
        "pretrain",
        help="pretrain DiffBYOL-A (embedded corpus by default)",
        description="Pretrain on the embedded corpus, a folder of audio or a .csv/.txt list. "
        "Multi-GPU: torchrun --nproc_per_node N -m hear_diffbyola pretrain ...",
    )
    pt.add_argument(
        "--config",
        help="YAML file with sections frontend/encoder/augment/learner/train "
        "(see 'hear-diffbyola config' for all keys and defaults)",
    )
    pt.add_argument("--out", default="runs/pretrain", help="run folder (default: runs/pretrain)")
    pt.add_argument("--corpus", help="'embedded' (default), a folder of audio files, or a .csv/.txt list")
    pt.add_argument("--lam", type=float, help="lambda, weight of L_diff in [0, 1] (default 0.5; 0 = BYOL-A)")
    pt.add_argument("--steps", type=int, help="total optimiser steps (overrides --epochs)")
    pt.add_argument("--epochs", type=int, help="epochs over the corpus (default 100)")
    pt.add_argument("--batch-size", type=int, help="global batch size (default 256)")
    pt.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    pt.add_argument("--seed", type=int, help="seed of everything random (default 0)")
    pt.add_argument(
        "--arch",
        choices=("audiontt2022", "audiontt2020"),
        help="encoder: audiontt2022 (BYOL-A v2, default) or audiontt2020 (BYOL-A v1)",
    )
    pt.add_argument(
        "--d",
        type=int,
        help="per-frame embedding size (default: 3072 for audiontt2022, which needs "
        "d > 1024; 2048 for audiontt2020, a multiple of 64)",
    )
    pt.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    pt.add_argument("--num-workers", type=int, help="data loading processes (default 2)")
    pt.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    pt.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set augment.mixup_ratio=0.2 (repeatable)",
    )
    pt.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(func=cmd_pretrain)


def _add_core(sub: argparse._SubParsersAction) -> None:
    _add_pretrain(sub)

    ex = sub.add_parser("export", help="write a run's encoder as a .safetensors weights file")
    ex.add_argument("run_dir", help="the --out folder of a pretraining run")
    ex.add_argument("--out", required=True, help="output path, e.g. weights/mine.safetensors")
    ex.set_defaults(func=cmd_export)

    cf = sub.add_parser("config", help="print the default configuration as YAML")
    cf.set_defaults(func=cmd_config)

    ie = sub.add_parser(
        "install-eval-tools",
        help="pip-install heareval 2021.1.3 and hearvalidator 2021.0.6 (--no-deps)",
        description="Their declared pins cannot install on Python 3.11, so they go in with --no-deps; "
        "what they import comes from the 'hear-eval' extra. Also patches one line of "
        "heareval so event tasks score with pytorch-lightning 1.9.5 (idempotent).",
    )
    ie.add_argument("--no-patch", action="store_true", help="leave heareval unpatched (event-task scoring then fails)")
    ie.set_defaults(func=cmd_install_eval_tools)


# ---------------------------------------------------------------- registered commands


def registered_commands() -> list[EntryPoint]:
    """The ``hear_diffbyola.commands`` entry points, one per name, in name order."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=COMMANDS_GROUP):
        found.setdefault(ep.name, ep)  # a stale second copy of the metadata must not add a command twice
    return [found[name] for name in sorted(found)]


def _label_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> None:
    """Give every (sub)command's namespace its own words ('bgknown build'), for the one error handler.
    A subcommand's defaults overwrite its parent's, so the deepest command chosen sets them."""
    parser.set_defaults(_command=" ".join(words))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _label_commands(child, (*words, name))


def make_parser() -> argparse.ArgumentParser:
    commands = registered_commands()
    epilog = (
        None
        if commands
        else (
            f"No {COMMANDS_GROUP} entry points are installed, so the task and s3prl commands are missing: "
            "reinstall the package (pip install -e .)."
        )
    )
    p = argparse.ArgumentParser(
        prog="hear-diffbyola", epilog=epilog, description="Difference-aware BYOL-A: pretrain, export, evaluate."
    )
    sub = p.add_subparsers(dest="command", required=True)
    _add_core(sub)
    for ep in commands:
        ep.load()(sub)
    _label_commands(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def _one_line(e: BaseException) -> str:
    return " | ".join(line.strip() for line in str(e).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except DiffByolaError as e:
        print(f"hear-diffbyola {args._command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
