"""The demo's results: one JSON gathered from the stages' own files, and the paper's effect checked on it."""
from __future__ import annotations

import csv
import datetime as _dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hear_diffbyola.train import git_commit

from .settings import BG_COLUMNS, KS, LAMBDAS, SEED, model_key, model_title

if TYPE_CHECKING:
    from .pipeline import DemoRun

__all__ = ["collect_results", "paper_effect", "read_metrics", "utc_now"]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _mean_std(d: dict[str, Any]) -> dict[str, float]:
    return {"mean": float(d["mean"]), "std": float(d["std"])}


def collect_results(run: DemoRun, invocation_s: float) -> dict[str, Any]:
    """One JSON with what the report shows: per model its pretraining facts and task scores (in %)."""
    import torch

    from hear_diffbyola.train import hardware_description

    models, stage_results = {}, {}
    for lam in LAMBDAS:
        key = model_key(lam)
        summary = json.loads((run.run_dir(lam) / "summary.json").read_text())
        config = run.budget.pretrain_config(lam, run.device, run.pretrain_seed)
        bg, ap, gen = stage_results[key] = [json.loads(run.result(t, lam).read_text())
                                            for t in ("bgknown", "apwd", "general")]
        models[key] = {
            "lam": lam, "title": model_title(lam), "weights": str(run.weights(lam)),
            "pretrain": {"steps": summary["steps"], "batch_size": config.train.batch_size, "d": config.encoder.d,
                         "wall_time_s": summary["wall_time_s"], "hardware": summary["hardware"],
                         "final_loss": _last_losses(run.run_dir(lam) / "metrics.csv")},
            "bgknown": {c: _mean_std(bg["results"][c]) for c in BG_COLUMNS},
            # R@K in % (the APwD results hold fractions)
            "apwd": {s: {f"R@{k}": {m: 100.0 * v for m, v in _mean_std(r["metrics"][f"R@{k}"]).items()} for k in KS}
                     for s, r in sorted(ap["scenes"].items())},
            "general": _mean_std(gen["accuracy"]),
        }
    bg0, ap0, gen0 = stage_results[model_key(LAMBDAS[0])]  # task facts are the same for both models
    stages = run.state["stages"]
    return {
        "format": "hear-diffbyola/demo-results/1", "budget": run.budget.fingerprint(), "seed": SEED,
        "pretrain_seed": run.pretrain_seed,
        "text_encoder": run.text_encoder, "git_commit": git_commit(),
        "hardware": hardware_description(torch.device(run.device), 1),
        "finished": utc_now(),
        "stage_commits": {k: v.get("git_commit", "unknown") for k, v in stages.items()},
        "wall_time_s": {"stages": {k: v["wall_s"] for k, v in stages.items()},
                        "stages_total": sum(v["wall_s"] for v in stages.values()), "this_invocation": invocation_s},
        "tasks": {"bgknown": {"n_train": bg0["n_train"], "n_test": bg0["n_test"], "n_classes": bg0["n_classes"],
                              "chance": bg0["chance"], "build_id": bg0["build_id"]},
                  "apwd": {s: {"n_pairs": r["n_pairs"], "chance": {k: 100.0 * v for k, v in r["chance"].items()}}
                           for s, r in sorted(ap0["scenes"].items())},
                  "general": {"n_train": gen0["n_train"], "n_test": gen0["n_test"], "n_classes": gen0["n_classes"],
                              "chance": gen0["chance"]}},
        "models": models,
        "effect": paper_effect(models[model_key(LAMBDAS[0])]["bgknown"], models[model_key(LAMBDAS[1])]["bgknown"]),
    }


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a pretraining run's metrics.csv (step, l_byol, l_diff, loss, ...), as text."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _last_losses(metrics_csv: Path) -> dict[str, float | None]:
    rows = read_metrics(metrics_csv)
    last = rows[-1] if rows else {}
    return {k: (float(last[k]) if last.get(k) not in (None, "") else None) for k in ("loss", "l_byol", "l_diff")}


def paper_effect(base: dict[str, dict[str, float]], diff: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The paper's claim on BgKnown, checked: λ > 0 beats λ = 0 on y_diff (a) by more than the seed spread
    while Mix stays within it. Spread = the larger of the two models' std over evaluation seeds."""
    a_gain = diff["a"]["mean"] - base["a"]["mean"]
    a_spread = max(diff["a"]["std"], base["a"]["std"])
    mix_change = diff["mix"]["mean"] - base["mix"]["mean"]
    mix_spread = max(diff["mix"]["std"], base["mix"]["std"])
    a_beats = a_gain > a_spread
    mix_within = abs(mix_change) <= mix_spread
    return {"a_gain": a_gain, "a_spread": a_spread, "a_beats_by_more_than_spread": a_beats,
            "mix_change": mix_change, "mix_spread": mix_spread, "mix_within_spread": mix_within,
            "shown": a_beats and mix_within}
