"""``hear-diffbyola demo`` and ``demo-seeds`` (registered through the ``hear_diffbyola.commands`` entry points)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser"]


def cmd_demo(args: argparse.Namespace) -> int:
    from .pipeline import run_demo

    run_demo(args.out or f"runs/demo-{args.budget}", args.budget, device=args.device, text_encoder=args.text_encoder,
             pretrain_seed=args.pretrain_seed, paper_numbers=args.paper_numbers, progress=not args.no_progress)
    return 0


def cmd_demo_seeds(args: argparse.Namespace) -> int:
    from .report import seeds_table
    from .settings import DemoError

    results = []
    for item in args.results:
        path = Path(item) / "results.json" if Path(item).is_dir() else Path(item)
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise DemoError(f"cannot read {path} ({e}); give demo folders or their results.json") from e
    print(seeds_table(results), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``demo-seeds`` to the top-level subcommands."""
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
                    help="JSON with the paper's own numbers to print beside ours, labelled "
                         "(format: hear_diffbyola.tasks.demo.report.read_paper_numbers)")
    dm.add_argument("--no-progress", action="store_true", help="no progress bars")
    dm.set_defaults(func=cmd_demo)

    ds = sub.add_parser("demo-seeds", help="BgKnown table across demos that differ only in --pretrain-seed")
    ds.add_argument("results", nargs="+", help="demo folders (or their results.json)")
    ds.set_defaults(func=cmd_demo_seeds)
