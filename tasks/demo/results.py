"""The demo's results: one JSON gathered from the stages' own files, then the paired analysis over
pretraining seeds (per-λ means, paired differences to λ = 0 with t intervals, the verdict)."""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hear_diffbyola.train import git_commit

from .settings import (
    BG_COLUMNS,
    KS,
    SEED,
    DemoError,
    metric_keys,
    model_key,
    model_title,
    run_key,
)
from .stats import paired_differences, t_interval, verdict

if TYPE_CHECKING:
    from .pipeline import DemoRun

__all__ = ["FORMAT", "analyse", "collect_results", "combine_results", "read_metrics", "utc_now"]

FORMAT = "hear-diffbyola/demo-results/2"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _mean_std(d: dict[str, Any]) -> dict[str, float]:
    return {"mean": float(d["mean"]), "std": float(d["std"])}


def _model_entry(run: DemoRun, seed: int, lam: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One pretrained model's facts and scores (in %), and its three stage results as read."""
    summary = json.loads((run.run_dir(seed, lam) / "summary.json").read_text())
    config = run.pretrain_config(seed, lam)
    bg, ap, gen = stages = [json.loads(run.result(t, seed, lam).read_text()) for t in ("bgknown", "apwd", "general")]
    entry = {
        "lam": lam,
        "pretrain_seed": seed,
        "title": model_title(lam),
        "weights": str(run.weights(seed, lam)),
        "run_dir": str(run.run_dir(seed, lam).relative_to(run.out)),
        "pretrain": {
            "steps": summary["steps"],
            "batch_size": config.train.batch_size,
            "d": config.encoder.d,
            "arch": config.encoder.arch,
            "hidden": config.encoder.hidden,
            "wall_time_s": summary["wall_time_s"],
            "hardware": summary["hardware"],
            "final_loss": _last_losses(run.run_dir(seed, lam) / "metrics.csv"),
        },
        "bgknown": {c: _mean_std(bg["results"][c]) for c in BG_COLUMNS},
        # R@K in % (the APwD results hold fractions)
        "apwd": {
            s: {f"R@{k}": {m: 100.0 * v for m, v in _mean_std(r["metrics"][f"R@{k}"]).items()} for k in KS}
            for s, r in sorted(ap["scenes"].items())
        },
        "general": _mean_std(gen["accuracy"]),
    }
    return entry, stages


def metric_value(model: dict[str, Any], key: str) -> float:
    """A model's score (mean over evaluation seeds) for a flat metric key (settings.metric_keys)."""
    task, *rest = key.split(".")
    if task == "bgknown":
        return model["bgknown"][rest[0]]["mean"]
    if task == "apwd":
        return model["apwd"][rest[0]][rest[1]]["mean"]
    return model["general"]["mean"]


def collect_results(run: DemoRun, invocation_s: float, stage_names: Sequence[str]) -> dict[str, Any]:
    """One JSON with what the report shows: per pretrained model its facts and scores, then the paired analysis."""
    import torch

    from hear_diffbyola.train import hardware_description

    models, first = {}, None
    for seed in run.pretrain_seeds:
        for lam in run.lambdas:
            models[run_key(seed, lam)], stages = _model_entry(run, seed, lam)
            first = first or stages
    bg0, ap0, gen0 = first  # task facts are the same for every model
    stages = {k: v for k, v in run.state["stages"].items() if k in set(stage_names)}
    results = {
        "format": FORMAT,
        "budget": run.budget.fingerprint(),
        "seed": SEED,
        "pretrain_seeds": list(run.pretrain_seeds),
        "lambdas": list(run.lambdas),
        "text_encoder": run.text_encoder,
        **run.data_settings(),
        "git_commit": git_commit(),
        "hardware": hardware_description(torch.device(run.device), 1),
        "finished": utc_now(),
        "stage_commits": {k: v.get("git_commit", "unknown") for k, v in stages.items()},
        "wall_time_s": {
            "stages": {k: v["wall_s"] for k, v in stages.items()},
            "stages_total": sum(v["wall_s"] for v in stages.values()),
            "this_invocation": invocation_s,
        },
        "tasks": {
            "bgknown": {
                "n_train": bg0["n_train"],
                "n_test": bg0["n_test"],
                "n_classes": bg0["n_classes"],
                "chance": bg0["chance"],
                "build_id": bg0["build_id"],
            },
            "apwd": {
                s: {"n_pairs": r["n_pairs"], "chance": {k: 100.0 * v for k, v in r["chance"].items()}}
                for s, r in sorted(ap0["scenes"].items())
            },
            "general": {
                "n_train": gen0["n_train"],
                "n_test": gen0["n_test"],
                "n_classes": gen0["n_classes"],
                "chance": gen0["chance"],
            },
        },
        "models": models,
    }
    results.update(analyse(models, list(run.lambdas), list(results["tasks"]["apwd"])))
    return results


def analyse(models: dict[str, dict[str, Any]], lambdas: Sequence[float], scenes: Sequence[str]) -> dict[str, Any]:
    """The paired analysis of ``models`` ({run key: entry with lam, pretrain_seed and scores}).

    ``per_lambda[λ][metric]``: the mean over pretraining seeds of each model's score, with its t interval;
    ``paired[λ][metric]`` (λ > 0): the differences to λ = 0 per seed, their mean and t interval;
    ``effect[λ]`` (λ > 0): the verdict read from the (a) and Mix intervals, with n."""
    keys = metric_keys(list(scenes))
    by_lam: dict[float, dict[int, dict[str, Any]]] = {lam: {} for lam in lambdas}
    for m in models.values():
        if m["lam"] in by_lam:
            by_lam[m["lam"]][m["pretrain_seed"]] = m
    if not by_lam[0.0]:
        raise DemoError("the paired analysis needs λ = 0 (the baseline) among the models")
    per_lambda, paired, effect = {}, {}, {}
    for lam in lambdas:
        per_lambda[model_key(lam)] = {
            k: {
                "values": [metric_value(by_lam[lam][s], k) for s in sorted(by_lam[lam])],
                **t_interval([metric_value(by_lam[lam][s], k) for s in sorted(by_lam[lam])]).to_dict(),
            }
            for k in keys
        }
        if lam == 0.0:
            continue
        paired[model_key(lam)] = {}
        for k in keys:
            diffs = paired_differences(
                {s: metric_value(m, k) for s, m in by_lam[0.0].items()},
                {s: metric_value(m, k) for s, m in by_lam[lam].items()},
            )
            paired[model_key(lam)][k] = {
                "seeds": sorted(by_lam[lam]),
                "differences": diffs,
                **t_interval(diffs).to_dict(),
            }
        effect[model_key(lam)] = verdict(
            t_interval(paired[model_key(lam)]["bgknown.a"]["differences"]),
            t_interval(paired[model_key(lam)]["bgknown.mix"]["differences"]),
        )
    return {"per_lambda": per_lambda, "paired": paired, "effect": effect}


def combine_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several demos' results.json (same budget, text encoder and tasks; other pretraining seeds) as one:
    their models pooled by (seed, λ), the paired analysis redone over all seeds (``demo-seeds``)."""
    if not results:
        raise DemoError("give the results of at least one demo (its OUT/results.json or OUT folder)")
    old = [i for i, r in enumerate(results) if r.get("format") != FORMAT]
    if old:
        raise DemoError(
            f"results #{old[0] + 1} is of an earlier format ({results[old[0]].get('format')!r}, one "
            f"pretraining seed per demo); rerun it with this version ({FORMAT})"
        )
    same = {
        json.dumps(
            [r["budget"], r["text_encoder"], r.get("seed"), r["tasks"], r.get("corpus", "embedded")], sort_keys=True
        )
        for r in results
    }
    if len(same) != 1:
        raise DemoError(
            "these demos differ in more than the pretraining seeds (budget, text encoder, corpus or tasks); "
            "only demos that differ in --pretrain-seeds (or --lambdas) can be combined"
        )
    models: dict[str, dict[str, Any]] = {}
    for r in results:
        for key, m in r["models"].items():
            if key in models:
                raise DemoError(
                    f"two demos both hold {key} (pretraining seed {m['pretrain_seed']}, λ = {m['lam']:g}); "
                    "give each pretraining seed once"
                )
            models[key] = m
    lambdas = [0.0, *sorted({m["lam"] for m in models.values()} - {0.0})]
    seeds = sorted({m["pretrain_seed"] for m in models.values()})
    combined = {k: v for k, v in results[0].items() if k not in ("models", "per_lambda", "paired", "effect")}
    combined.update({"pretrain_seeds": seeds, "lambdas": lambdas, "models": models, "combined_from": len(results)})
    combined.update(analyse(models, lambdas, list(results[0]["tasks"]["apwd"])))
    return combined


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a pretraining run's metrics.csv (step, l_byol, l_diff, loss, ...), as text."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _last_losses(metrics_csv: Path) -> dict[str, float | None]:
    rows = read_metrics(metrics_csv)
    last = rows[-1] if rows else {}
    return {k: (float(last[k]) if last.get(k) not in (None, "") else None) for k in ("loss", "l_byol", "l_diff")}
