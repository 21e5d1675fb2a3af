"""``hear-diffbyola demo`` and ``demo-seeds`` (registered through the ``hear_diffbyola.commands`` entry points)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser"]


def _list(text: str, kind: type, flag: str) -> list:
    from .settings import DemoError

    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DemoError(
            f"{flag}: {text!r} is not a comma-separated list of {kind.__name__} values, e.g. "
            + ("0,1,2" if kind is int else "0,0.2,0.5,0.8")
        ) from None


def default_budget(device: str) -> str:
    """'decide' when a GPU is asked for by name (--device cuda / cuda:N): the budget that can settle the
    comparison needs one; otherwise 'quick', the pipeline check."""
    return "decide" if device.startswith("cuda") else "quick"


def cmd_demo(args: argparse.Namespace) -> int:
    from .pipeline import run_demo

    seeds = None if args.pretrain_seeds is None else _list(args.pretrain_seeds, int, "--pretrain-seeds")
    budget = args.budget or default_budget(args.device)
    if args.budget is None:
        print(f"[demo] budget {budget!r} (the default for --device {args.device}; --budget to choose)", flush=True)
    run_demo(
        args.out or f"runs/demo-{budget}",
        budget,
        device=args.device,
        text_encoder=args.text_encoder,
        pretrain_seeds=seeds,
        lambdas=_list(args.lambdas, float, "--lambdas"),
        corpus=args.corpus,
        bgknown_task=args.bgknown_task,
        paper_numbers=args.paper_numbers,
        progress=not args.no_progress,
    )
    return 0


def cmd_demo_seeds(args: argparse.Namespace) -> int:
    from .report import read_paper_numbers, seeds_table
    from .settings import DemoError

    results = []
    for item in args.results:
        path = Path(item) / "results.json" if Path(item).is_dir() else Path(item)
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise DemoError(f"cannot read {path} ({e}); give demo folders or their results.json") from e
    print(seeds_table(results, read_paper_numbers(args.paper_numbers)), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``demo-seeds`` to the top-level subcommands."""
    from .settings import BUDGETS

    dm = sub.add_parser(
        "demo",
        help="pretrain lambda=0 and lambda>0 per pretraining seed on the embedded corpus, score "
        "them on synthetic BgKnown, APwD and a HEAR scene task; paired differences with "
        "95%% intervals, the verdict, report.md with plots",
        description="The paper's comparison end to end on data that ships with the package, as a paired "
        "design: every lambda is pretrained once per pretraining seed with that seed's data "
        "order and initialisation, and its effect is the per-seed difference to lambda=0 "
        "with a 95% t interval over seeds. Resumable: run the same command again to finish "
        "an interrupted demo (done stages are skipped); more --pretrain-seeds or --lambdas "
        "extend a demo folder.",
    )
    dm.add_argument("--out", help="demo folder (default runs/demo-BUDGET)")
    dm.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        default=None,
        help="quick: the pipeline check (small v2 encoder, 100 steps); quick10: the same over 10 pretraining "
        "seeds, the cheapest setting measured to separate the two lambdas (on real recordings); full: the v2 default encoder "
        "(d=3072) and the tasks' default sizes, 450 steps; decide: the budget meant to decide the "
        "comparison (v2 default, batch 256, 100 epochs, 8 pretraining seeds), for a GPU. "
        "Measured costs: docs/results.md (default: decide with --device cuda[:N], else quick)",
    )
    dm.add_argument(
        "--pretrain-seeds",
        metavar="S,S,...",
        help="pretraining seeds, e.g. 0,1,2 (default: the budget's: quick 0, quick10 0-9, full 0,1,2, decide 0-7); "
        "an interval needs at least 2, the verdict is stated with this n",
    )
    dm.add_argument(
        "--lambdas",
        default="0,0.5",
        metavar="L,L,...",
        help="lambda values, 0 first (the baseline each other is paired with), e.g. 0,0.2,0.5,0.8 for the "
        "paper's sweep (default 0,0.5)",
    )
    dm.add_argument(
        "--corpus",
        default="embedded",
        help="pretraining corpus: 'embedded' (default), a folder of audio or a .csv/.txt list (as for pretrain)",
    )
    dm.add_argument(
        "--bgknown-task",
        metavar="DIR",
        help="score on this built BgKnown task (e.g. from 'bgknown build --fg-folder/--bg-folder' on real "
        "recordings) instead of building the synthetic one",
    )
    dm.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N (pretraining and embedding)")
    dm.add_argument(
        "--text-encoder",
        choices=("hash", "minilm", "distilbert"),
        default="hash",
        help="APwD text encoder (default hash: needs no model, same numbers everywhere)",
    )
    dm.add_argument(
        "--paper-numbers",
        metavar="FILE",
        help="JSON with the paper's numbers to show instead of the shipped ones (Tables 1-3 of the paper; "
        "format: hear_diffbyola.tasks.demo.report.read_paper_numbers)",
    )
    dm.add_argument("--no-progress", action="store_true", help="no progress bars")
    dm.set_defaults(func=cmd_demo)

    ds = sub.add_parser(
        "demo-seeds",
        help="combine demos that differ only in their pretraining seeds: the paired "
        "BgKnown table and verdict over all their seeds",
    )
    ds.add_argument("results", nargs="+", help="demo folders (or their results.json)")
    ds.add_argument("--paper-numbers", metavar="FILE", help="as for demo (default: the shipped paper's numbers)")
    ds.set_defaults(func=cmd_demo_seeds)
