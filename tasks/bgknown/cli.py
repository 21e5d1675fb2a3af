"""``hear-diffbyola bgknown build|eval|export-heareval`` (a ``hear_diffbyola.commands`` entry point).

Kept import-light: heavy modules load inside the commands, so ``hear-diffbyola --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..embedders import Embedder

__all__ = ["add_parser"]


def _params(args: argparse.Namespace):
    from .manifest import BuildParams

    return BuildParams(snr_db=(args.snr_low, args.snr_high))


def _build_folders(args: argparse.Namespace):
    """--fg-folder/--bg-folder: BgKnown from the user's own labelled clips and long recordings (folder_source)."""
    from .. import TaskError
    from .folder_source import build_from_folders
    from .manifest import BuildParams

    if not (args.fg_folder and args.bg_folder) or args.synthetic or args.esc50 or args.fsd50k:
        raise TaskError(
            "the folder source needs both --fg-folder DIR and --bg-folder DIR, without --synthetic, --esc50 or --fsd50k"
        )
    params = BuildParams(
        snr_db=(args.snr_low, args.snr_high), clip_seconds=args.clip_seconds, min_bg_seconds=2 * args.clip_seconds
    )
    return build_from_folders(
        args.fg_folder,
        args.bg_folder,
        args.out,
        args.seed,
        params,
        args.test_fraction,
        args.workers,
        not args.no_progress,
        args.force,
    )


def cmd_build(args: argparse.Namespace) -> int:
    from .. import TaskError
    from .build import build_from_datasets, build_synthetic

    if args.fg_folder or args.bg_folder:
        out = _build_folders(args)
    elif args.synthetic:
        if args.esc50 or args.fsd50k:
            raise TaskError("--synthetic builds from the embedded corpus: leave out --esc50 and --fsd50k")
        classes = args.classes.split(",") if args.classes else None
        out = build_synthetic(
            args.out,
            args.seed,
            args.train_per_class,
            args.test_per_class,
            classes,
            _params(args),
            args.workers,
            not args.no_progress,
            args.force,
        )
    else:
        if not (args.esc50 and args.fsd50k):
            raise TaskError("give both --esc50 DIR and --fsd50k DIR (your local copies), or --synthetic")
        out = build_from_datasets(
            args.esc50, args.fsd50k, args.out, args.seed, _params(args), args.workers, not args.no_progress, args.force
        )
    from .manifest import load_task

    task = load_task(out)
    counts = ", ".join(f"{s} {len(task.items[s])}" for s in task.items)
    print(
        f"[hear-diffbyola] wrote {task.name} to {out} (build {task.build_id}; {counts} items; "
        f"{len(task.labels)} classes); evaluate with: hear-diffbyola bgknown eval --task {out} --model WEIGHTS"
    )
    return 0


def _embedders(args: argparse.Namespace) -> list[Embedder]:
    """One embedder per --model (our weights, or --hear-module's model files)."""
    from ..embedders import make_embedder

    models = args.model or [None]
    return [make_embedder(m, args.hear_module, args.device) for m in models]


def cmd_eval(args: argparse.Namespace) -> int:
    from .. import TaskError
    from ..build_folder import check_output_file
    from ..linear_eval import LinearEvalConfig
    from .evaluate import evaluate, markdown_table
    from .manifest import load_task

    if args.seeds < 1:
        raise TaskError(f"--seeds must be at least 1, got {args.seeds}")
    task = load_task(args.task)
    config = LinearEvalConfig(max_epochs=args.max_epochs, patience=args.patience)
    json_path = check_output_file(args.json or task.root / "results.json", "--json")  # before the work, not after
    md_path = check_output_file(args.markdown or task.root / "results.md", "--markdown")
    results = [
        evaluate(
            task,
            e,
            tuple(range(args.seeds)),
            config,
            args.cache_dir,
            args.batch_size,
            not args.no_progress,
            norm=args.norm,
        )
        for e in _embedders(args)
    ]
    table = markdown_table(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(table)
    print(table, end="")
    print(f"[hear-diffbyola] results: {json_path}, {md_path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .. import TaskError
    from ..build_folder import check_output_folder
    from .heareval_export import export_heareval
    from .manifest import load_task

    if args.model and len(args.model) > 1:
        raise TaskError("export-heareval writes one model at a time: give a single --model (and --out per model)")
    task = load_task(args.task)
    check_output_folder(args.out, "--out")  # before the embedding, not after it
    folders = export_heareval(
        task,
        _embedders(args)[0],
        args.out,
        args.cache_dir,
        args.batch_size,
        not args.no_progress,
        args.force,
        norm=args.norm,
    )
    print("[hear-diffbyola] wrote " + ", ".join(str(f) for f in folders))
    print(
        "[hear-diffbyola] score them with: python -m heareval.predictions.runner " + " ".join(str(f) for f in folders)
    )
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="a task folder written by 'hear-diffbyola bgknown build'")
    p.add_argument(
        "--model",
        action="append",
        metavar="PATH",
        help="our .safetensors weights (or an official BYOL-A .pth); with --hear-module, that module's "
        "model file. Default: the shipped weights.",
    )
    p.add_argument(
        "--hear-module",
        metavar="NAME",
        help="embed with this HEAR-API module (importable name) instead of our loader, e.g. to compare "
        "another representation on the same task",
    )
    p.add_argument("--device", default="cpu", help="device for our weights: cpu (default), cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=16, help="clips per embedding batch (default 16)")
    p.add_argument("--cache-dir", help="embedding cache folder (default: TASK/embeddings)")
    p.add_argument(
        "--norm",
        choices=("task", "weights"),
        default="task",
        help="log-mel normalisation of our weights: 'task' (default; mean/std of the task's training "
        "mixtures, as BYOL-A evaluates) or 'weights' (the file's pretraining statistics). "
        "A --hear-module normalises its own input.",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bgknown`` command group to the top-level subparsers."""
    from .manifest import DEFAULT_TEST_PER_CLASS, DEFAULT_TRAIN_PER_CLASS

    bk = sub.add_parser(
        "bgknown",
        help="BgKnown ESC-50 difference-aware benchmark: build, eval, export-heareval",
        description="BgKnown ESC-50 (the paper's Table 1): ESC-50 clips mixed over FSD50K backgrounds; "
        "linear evaluation of y_mix and y_diff = y_mix - y_bg.",
    )
    bsub = bk.add_subparsers(dest="bgknown_command", required=True)

    b = bsub.add_parser(
        "build",
        help="build a task folder from local ESC-50 + FSD50K, your own folders "
        "(--fg-folder/--bg-folder), or --synthetic",
    )
    b.add_argument("--esc50", help="ESC-50 folder (audio/, meta/esc50.csv)")
    b.add_argument("--fsd50k", help="FSD50K folder (FSD50K.dev_audio/, FSD50K.eval_audio/, FSD50K.ground_truth/)")
    b.add_argument(
        "--synthetic", action="store_true", help="build from the embedded corpus instead (no datasets needed)"
    )
    b.add_argument(
        "--fg-folder",
        metavar="DIR",
        help="your own foreground clips: DIR/<class>/*.wav|flac|ogg|mp3 "
        "(with --bg-folder; the same (a)/(b)/(c) crops, SNR and stratified split as ESC-50 + FSD50K)",
    )
    b.add_argument(
        "--bg-folder",
        metavar="DIR",
        help="your own background recordings, each at least twice --clip-seconds long (with --fg-folder)",
    )
    b.add_argument(
        "--clip-seconds",
        type=float,
        default=5.0,
        help="--fg-folder: mixture length in s (default 5, as ESC-50); clips are cut or zero-padded to it",
    )
    b.add_argument(
        "--test-fraction",
        type=float,
        default=1 / 3,
        help="--fg-folder: share of each class's clips "
        "(and of the background recordings) on the test side (default 1/3)",
    )
    b.add_argument("--out", required=True, help="task folder to create")
    b.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    b.add_argument("--workers", type=int, help="processes (default: all cores; 0 or 1 = in this process)")
    b.add_argument(
        "--train-per-class",
        type=int,
        default=DEFAULT_TRAIN_PER_CLASS,
        help=f"--synthetic: training clips per class (default {DEFAULT_TRAIN_PER_CLASS})",
    )
    b.add_argument(
        "--test-per-class",
        type=int,
        default=DEFAULT_TEST_PER_CLASS,
        help=f"--synthetic: test clips per class (default {DEFAULT_TEST_PER_CLASS})",
    )
    b.add_argument("--classes", help="--synthetic: comma-separated subset of the embedded event classes (default all)")
    b.add_argument("--snr-low", type=float, default=0.0, help="SNR range low end in dB (default 0)")
    b.add_argument("--snr-high", type=float, default=3.0, help="SNR range high end in dB (default 3)")
    b.add_argument(
        "--force",
        action="store_true",
        help="replace an existing task folder at --out whole (the old one is kept until the new one is complete)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    e = bsub.add_parser("eval", help="linear evaluation of Mix, (a), (b), (c); JSON + markdown table")
    _model_args(e)
    e.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1) to average (default 3)")
    e.add_argument("--max-epochs", type=int, default=200, help="linear training epochs at most (default 200)")
    e.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default 20)")
    e.add_argument("--json", help="results JSON path (default TASK/results.json)")
    e.add_argument("--markdown", help="markdown table path (default TASK/results.md)")
    e.set_defaults(func=cmd_eval)

    x = bsub.add_parser("export-heareval", help="write y_mix and y_diff (a/b/c) as heareval embedding folders")
    _model_args(x)
    x.add_argument("--out", required=True, help="folder for the four heareval task folders, e.g. embeddings/MODEL")
    x.add_argument("--force", action="store_true", help="overwrite existing condition folders")
    x.set_defaults(func=cmd_export)
    return bk
