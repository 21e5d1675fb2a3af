"""`hear-diffbyola demo`: the paper's comparison, end to end, on data that ships with the package.

Stages, each recorded in ``OUT/demo_state.json`` when it finishes, so a rerun skips what is done (a
pretraining run cut short resumes from its last checkpoint):

1. pretrain λ = 0 (BYOL-A) and λ = 0.5 (DiffBYOL-A) on the embedded corpus, same seed, data and budget;
   export both to ``OUT/weights/lam{0,0.5}.safetensors``;
2. build the synthetic BgKnown task, the synthetic APwD task (both scenes) and a synthetic HEAR-format
   multiclass scene task over all 17 embedded classes (the general-purpose check, the paper's Table 3 role);
3. evaluate both models: BgKnown Mix/(a)/(b)/(c) and the 17-class task with the linear protocol, APwD
   R@1/5/10 with the retrieval system (text encoder 'hash' by default, so the numbers do not depend on
   which optional text models are installed);
4. ``OUT/results.json``, ``OUT/report.md`` and ``OUT/plots/*.png`` (always rewritten; cheap).

The paper's own numbers (AudioSet pretraining, real ESC-50/FSD50K) are not shipped: this project is
built offline and could not obtain them. ``--paper-numbers FILE`` prints them beside ours, labelled as
the paper's; FILE is JSON ``{"source": "citation", "bgknown": {ROW: {"Mix": x, "(a)": x, ...}},
"apwd": {ROW: {"rain R@1": x, ...}}, "general": {ROW: {"accuracy": x}}}`` with values in %.
"""
from __future__ import annotations

from .errors import DiffByolaError

import csv
import datetime as _dt
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import PretrainConfig, apply_overrides
from .dictconfig import DictConfig
from .train import git_commit
from .weights import atomic_write

__all__ = ["DemoBudget", "BUDGETS", "LAMBDAS", "DemoError", "run_demo", "paper_effect", "model_key", "seeds_table"]

LAMBDAS = (0.0, 0.5)
SEED = 0  # of the tasks (builds) and of the pretraining unless --pretrain-seed says otherwise
STATE = "demo_state.json"
GENERAL_SPLITS = ("train", "valid", "test")
BG_COLUMNS = {"mix": "Mix", "a": "(a)", "b": "(b)", "c": "(c)"}
KS = (1, 5, 10)


class DemoError(DiffByolaError, RuntimeError):
    """The demo cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class DemoBudget(DictConfig):
    """Everything that sets the demo's cost. Both models get the same pretraining overrides."""

    section = "budget"

    name: str
    pretrain: tuple[str, ...]                 # SECTION.KEY=VALUE overrides of the pretraining config
    bgknown_train_per_class: int              # synthetic BgKnown: 12 classes x (train + test) items
    bgknown_test_per_class: int
    bgknown_clip_seconds: float               # mixture/reference length (real BgKnown: 5 s)
    apwd_dev: int                             # pairs per scene
    apwd_eval: int
    apwd_epochs: int                          # retrieval-system training epochs at most
    apwd_patience: int
    general_per_label: tuple[int, int, int]   # clips per label in train, valid, test
    general_seconds: float
    seeds: int                                # evaluation seeds (linear protocol, retrieval system)
    linear_max_epochs: int = 200
    linear_patience: int = 20

    def pretrain_config(self, lam: float, device: str = "auto", seed: int = SEED) -> PretrainConfig:
        return PretrainConfig.from_dict(apply_overrides({}, [*self.pretrain, f"learner.lam={lam}", f"train.seed={seed}",
                                                             f"train.device={device}"]))

    def fingerprint(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.to_dict()))  # tuples -> lists, as read back from demo_state.json


BUDGETS = {
    # ~8 min on 2 CPU cores (measured: README "Demo"); the numbers show the pipeline, not the method
    "quick": DemoBudget(
        name="quick", pretrain=("encoder.d=512", "train.batch_size=32", "train.steps=100", "train.norm_clips=200",
                                "train.checkpoint_every=50"),
        bgknown_train_per_class=12, bgknown_test_per_class=6, bgknown_clip_seconds=2.0,
        apwd_dev=64, apwd_eval=32, apwd_epochs=100, apwd_patience=20,
        general_per_label=(8, 2, 4), general_seconds=2.0, seeds=3),
    # the paper's encoder (d = 2048) and the tasks' default sizes; about an hour on 2 CPU cores
    "full": DemoBudget(
        name="full", pretrain=("encoder.d=2048", "train.batch_size=64", "train.steps=450", "train.checkpoint_every=50"),
        bgknown_train_per_class=40, bgknown_test_per_class=20, bgknown_clip_seconds=5.0,
        apwd_dev=160, apwd_eval=80, apwd_epochs=300, apwd_patience=50,
        general_per_label=(24, 4, 12), general_seconds=2.0, seeds=3),
}


def model_key(lam: float) -> str:
    return f"lam{lam:g}"


def model_title(lam: float) -> str:
    return f"λ = {lam:g} (BYOL-A)" if lam == 0 else f"λ = {lam:g} (DiffBYOL-A)"


# ---------------------------------------------------------------- stages

@dataclass
class _Run:
    out: Path
    budget: DemoBudget
    device: str
    text_encoder: str
    progress: bool
    pretrain_seed: int = SEED
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.out / STATE

    def save_state(self) -> None:
        text = json.dumps(self.state, indent=1)
        atomic_write(self.state_path, lambda tmp: Path(tmp).write_text(text))

    def stage(self, number: int, total: int, name: str, fn: Callable[[], None]) -> None:
        done = self.state["stages"].get(name)
        if done is not None:
            print(f"[demo] ({number}/{total}) {name}: done earlier ({done['wall_s']:.0f} s), skipped", flush=True)
            return
        print(f"[demo] ({number}/{total}) {name} ...", flush=True)
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        self.state["stages"][name] = {"wall_s": wall, "finished": _now(), "git_commit": git_commit()}
        self.save_state()
        print(f"[demo] ({number}/{total}) {name}: {wall:.0f} s", flush=True)

    def weights(self, lam: float) -> Path:
        return self.out / "weights" / f"{model_key(lam)}.safetensors"

    def task(self, name: str) -> Path:
        return self.out / "tasks" / name

    def result(self, task: str, lam: float) -> Path:
        return self.out / "results" / f"{task}_{model_key(lam)}.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _open_state(out: Path, budget: DemoBudget, text_encoder: str, pretrain_seed: int) -> dict[str, Any]:
    """The state of an earlier demo in ``out`` with the same settings, or a fresh one; other settings -> error."""
    path = out / STATE
    settings = {"budget": budget.fingerprint(), "text_encoder": text_encoder, "lambdas": list(LAMBDAS), "seed": SEED,
                "pretrain_seed": pretrain_seed}
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except ValueError as e:
            raise DemoError(f"{path} is unreadable ({e}); delete {out} or choose another --out") from e
        if state.get("settings") != settings:
            raise DemoError(f"{out} holds a demo run with other settings ({_describe(state.get('settings', {}))}, "
                            f"asked: {_describe(settings)}); choose another --out, or "
                            "delete it to start over")
        return state
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{out} exists and is not a demo folder (no {STATE}); choose another --out")
    return {"settings": settings, "started": _now(), "stages": {}}


def _describe(settings: dict[str, Any]) -> str:
    return (f"budget {settings.get('budget', {}).get('name')!r}, text encoder {settings.get('text_encoder')!r}, "
            f"pretrain seed {settings.get('pretrain_seed')}")


def _pretrain(run: _Run, lam: float) -> None:
    from .train import pretrain
    from .weights import export_run

    run_dir = run.out / "runs" / model_key(lam)
    config = run.budget.pretrain_config(lam, run.device, run.pretrain_seed)
    summary = run_dir / "summary.json"
    finished = summary.is_file() and json.loads(summary.read_text()).get("final") is True
    if not finished:  # a run stopped before its last step resumes from its last checkpoint
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if resume:
            print(f"[demo] resuming {run_dir} from its last checkpoint", flush=True)
        pretrain(config, run_dir, resume=resume, progress=run.progress)
    export_run(run_dir, run.weights(lam))


def _fresh(path: Path) -> Path:
    """An unfinished stage may have left part of its output: start it clean."""
    if path.exists():
        shutil.rmtree(path)
    return path


def _build_bgknown(run: _Run) -> None:
    from .tasks.bgknown.build import build_synthetic
    from .tasks.bgknown.manifest import BuildParams

    b = run.budget
    params = BuildParams(clip_seconds=b.bgknown_clip_seconds, min_bg_seconds=max(10.0, 2 * b.bgknown_clip_seconds))
    build_synthetic(run.task("bgknown"), SEED, b.bgknown_train_per_class, b.bgknown_test_per_class, None, params,
                    None, run.progress, force=True)


def _build_apwd(run: _Run) -> None:
    from .tasks.apwd.build import BuildConfig, build
    from .tasks.apwd.vocab import SCENES

    config = BuildConfig.synthetic(n_dev=run.budget.apwd_dev, n_eval=run.budget.apwd_eval, seed=SEED)
    build(_fresh(run.task("apwd")), sorted(SCENES), config, synthetic=True, progress=run.progress)


def _build_general(run: _Run) -> None:
    from .corpus.synthetic import EVENT_CLASSES, SCENE_CLASSES
    from .heartask import write_hear_task

    # seed 1000: clips rendered apart from the pretraining corpus's own seed
    write_hear_task(_fresh(run.task("general")), kind="scene", labels=[*EVENT_CLASSES, *SCENE_CLASSES],
                    n_per_label=dict(zip(GENERAL_SPLITS, run.budget.general_per_label)), splits=GENERAL_SPLITS,
                    duration=run.budget.general_seconds, seed=SEED + 1000, task_name="synthetic-17")


def _linear_config(run: _Run):
    from .tasks.linear_eval import LinearEvalConfig

    return LinearEvalConfig(max_epochs=run.budget.linear_max_epochs, patience=run.budget.linear_patience)


def _eval_bgknown(run: _Run, lam: float) -> None:
    from .tasks.bgknown.evaluate import evaluate
    from .tasks.bgknown.manifest import load_task
    from .tasks.embedders import ours

    result = evaluate(load_task(run.task("bgknown")), ours(run.weights(lam), run.device),
                      tuple(range(run.budget.seeds)), _linear_config(run), run.out / "cache" / "bgknown", 16, run.progress)
    _write_json(run.result("bgknown", lam), result)


def _eval_apwd(run: _Run, lam: float) -> None:
    from .tasks.apwd.evaluate import evaluate_apwd
    from .tasks.apwd.retrieval import RetrievalConfig
    from .tasks.apwd.text import make_text_encoder
    from .tasks.embedders import ours

    config = RetrievalConfig(epochs=run.budget.apwd_epochs, patience=run.budget.apwd_patience)
    result = evaluate_apwd(run.task("apwd"), ours(run.weights(lam), run.device),
                           make_text_encoder(run.text_encoder), None, tuple(range(run.budget.seeds)), config,
                           run.out / "cache" / "apwd", run.progress)
    _write_json(run.result("apwd", lam), result)


def _eval_general(run: _Run, lam: float) -> None:
    from .tasks.embedders import hear_module
    from .tasks.scene_task import evaluate_scene_task

    # through the HEAR API (load_model / get_scene_embeddings), as hear-eval-kit would embed it
    embedder = hear_module("hear_diffbyola", run.weights(lam), run.device)
    result = evaluate_scene_task(run.task("general"), embedder, tuple(range(run.budget.seeds)), _linear_config(run),
                                 progress=run.progress)
    _write_json(run.result("general", lam), result)


def run_demo(out: str | Path, budget: DemoBudget | str = "quick", *, device: str = "auto", text_encoder: str = "hash",
             pretrain_seed: int = SEED, paper_numbers: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or finish) the demo in ``out``; returns the collected results (also ``OUT/results.json``).

    ``pretrain_seed`` changes only the pretraining of both models (tasks and evaluation seeds stay), so
    demos with different values measure how much the comparison moves with the pretraining seed."""
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise DemoError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    paper = _read_paper_numbers(paper_numbers) if paper_numbers else None
    from .train import pick_device

    out = Path(out)
    run = _Run(out, budget, str(pick_device(device)), text_encoder, progress, pretrain_seed)
    run.state = _open_state(out, budget, text_encoder, pretrain_seed)
    out.mkdir(parents=True, exist_ok=True)
    run.save_state()
    t0 = time.perf_counter()
    plan: list[tuple[str, Callable[[], None]]] = []
    for lam in LAMBDAS:
        plan.append((f"pretrain {model_key(lam)}", lambda lam=lam: _pretrain(run, lam)))
    plan += [("build bgknown", lambda: _build_bgknown(run)), ("build apwd", lambda: _build_apwd(run)),
             ("build general", lambda: _build_general(run))]
    for lam in LAMBDAS:
        plan += [(f"eval bgknown {model_key(lam)}", lambda lam=lam: _eval_bgknown(run, lam)),
                 (f"eval apwd {model_key(lam)}", lambda lam=lam: _eval_apwd(run, lam)),
                 (f"eval general {model_key(lam)}", lambda lam=lam: _eval_general(run, lam))]
    for i, (name, fn) in enumerate(plan, 1):
        run.stage(i, len(plan) + 1, name, fn)
    print(f"[demo] ({len(plan) + 1}/{len(plan) + 1}) report ...", flush=True)
    results = collect_results(run, time.perf_counter() - t0)
    _write_json(out / "results.json", results)
    plots = write_plots(out, results)
    (out / "report.md").write_text(render_report(results, plots, paper))
    print(f"[demo] done: {out / 'report.md'} (stages {results['wall_time_s']['stages_total']:.0f} s in all)", flush=True)
    return results


# ---------------------------------------------------------------- results

def _mean_std(d: dict[str, Any]) -> dict[str, float]:
    return {"mean": float(d["mean"]), "std": float(d["std"])}


def collect_results(run: _Run, invocation_s: float) -> dict[str, Any]:
    """One JSON with what the report shows: per model its pretraining facts and task scores (in %)."""
    import torch

    from .train import hardware_description

    models, stage_results = {}, {}
    for lam in LAMBDAS:
        key = model_key(lam)
        summary = json.loads((run.out / "runs" / key / "summary.json").read_text())
        config = run.budget.pretrain_config(lam, run.device, run.pretrain_seed)
        bg, ap, gen = stage_results[key] = [json.loads(run.result(t, lam).read_text())
                                            for t in ("bgknown", "apwd", "general")]
        models[key] = {
            "lam": lam, "title": model_title(lam), "weights": str(run.weights(lam)),
            "pretrain": {"steps": summary["steps"], "batch_size": config.train.batch_size, "d": config.encoder.d,
                         "wall_time_s": summary["wall_time_s"], "hardware": summary["hardware"],
                         "final_loss": _last_losses(run.out / "runs" / key / "metrics.csv")},
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
        "finished": _now(),
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


def _last_losses(metrics_csv: Path) -> dict[str, float | None]:
    rows = _metrics(metrics_csv)
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



def seeds_table(results: Sequence[dict[str, Any]]) -> str:
    """BgKnown across demos that differ only in ``--pretrain-seed``: each demo's rows, then per model the
    mean over pretraining seeds ± their population std, and the effect check with that spread."""
    if len(results) < 2:
        raise DemoError("give the results of at least two demos (their OUT/results.json or OUT folders)")
    same = {json.dumps([r["budget"], r["text_encoder"], r.get("seed")], sort_keys=True) for r in results}
    if len(same) != 1:
        raise DemoError("these demos differ in more than the pretraining seed (budget, text encoder or task seed)")
    seeds = [r.get("pretrain_seed", SEED) for r in results]
    if len(set(seeds)) != len(seeds):
        raise DemoError(f"two demos have the same pretraining seed ({seeds}); each should have its own")
    keys = [model_key(lam) for lam in LAMBDAS]
    rows, pooled = [], {}
    for seed, r in sorted(zip(seeds, results), key=lambda x: x[0]):
        rows += [[str(seed), r["models"][k]["title"], *[_cell(r["models"][k]["bgknown"][c]) for c in BG_COLUMNS]]
                 for k in keys]
    for k in keys:
        pooled[k] = {}
        for c in BG_COLUMNS:
            means = [r["models"][k]["bgknown"][c]["mean"] for r in results]
            pooled[k][c] = {"mean": statistics.fmean(means), "std": statistics.pstdev(means)}
        rows.append([f"all ({len(results)})", results[0]["models"][k]["title"],
                     *[_cell(pooled[k][c]) for c in BG_COLUMNS]])
    eff = paper_effect(pooled[keys[0]], pooled[keys[1]])
    return (_table(["pretrain seed", "Model", *BG_COLUMNS.values()], rows)
            + f"\nRows 'all': mean over pretraining seeds ± their std. With that spread, (a) changes by "
              f"{eff['a_gain']:+.1f} points (spread {eff['a_spread']:.1f}) and Mix by {eff['mix_change']:+.1f} "
              f"(spread {eff['mix_spread']:.1f}): effect {'shown' if eff['shown'] else 'not shown'}.\n")

def _read_paper_numbers(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DemoError(f"--paper-numbers {path}: cannot read it as JSON ({e})") from e
    for table in ("bgknown", "apwd", "general"):
        rows = data.get(table, {})
        if not isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows.values()):
            raise DemoError(f"--paper-numbers {path}: '{table}' must map a row name to {{column: value in %}}")
    return data


# ---------------------------------------------------------------- report

def _cell(m: dict[str, float]) -> str:
    return f"{m['mean']:.1f} ± {m['std']:.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _paper_rows(paper: dict[str, Any] | None, table: str, columns: Sequence[str]) -> list[list[str]]:
    if not paper:
        return []
    return [[f"paper: {name}", *[f"{vals[c]:.1f}" if isinstance(vals.get(c), (int, float)) else "–" for c in columns]]
            for name, vals in paper.get(table, {}).items()]


def render_report(results: dict[str, Any], plots: dict[str, str], paper: dict[str, Any] | None = None) -> str:
    """report.md: the three tables side by side for both models, the λ-effect check, plots, provenance."""
    models = list(results["models"].values())
    b, t, eff = results["budget"], results["tasks"], results["effect"]
    scenes = list(t["apwd"])
    walls = results["wall_time_s"]
    md = [f"# hear-diffbyola demo ({b['name']} budget)\n",
          f"λ = 0 (BYOL-A) against λ = 0.5 (DiffBYOL-A), same seed ({results['pretrain_seed']}), data and budget, pretrained "
          f"on the embedded procedural corpus and scored on synthetic versions of the paper's tasks. "
          f"Hardware: {results['hardware']}. Code: {_commits(results)}. Wall time of all stages: "
          f"{walls['stages_total'] / 60:.1f} min. Evaluation: mean ± std over {b['seeds']} seeds.\n"]
    md += ["## Pretraining\n",
           _table(["Model", "steps", "batch", "d", "final L_byol", "final L_diff", "wall (s)"],
                  [[m["title"], str(m["pretrain"]["steps"]), str(m["pretrain"]["batch_size"]), str(m["pretrain"]["d"]),
                    _fmt(m["pretrain"]["final_loss"]["l_byol"]), _fmt(m["pretrain"]["final_loss"]["l_diff"]),
                    f"{m['pretrain']['wall_time_s']:.0f}"] for m in models])]
    bg = t["bgknown"]
    md += ["## BgKnown (synthetic; the paper's Table 1 layout)\n",
           f"Linear evaluation of y_mix (Mix) and y_diff = y_mix − y_bg with the background reference (a) the same "
           f"segment, (b) half overlapping, (c) not overlapping. Accuracy %, {bg['n_classes']} classes, "
           f"{bg['n_train']} training / {bg['n_test']} test items, chance {bg['chance']:.1f} %.\n",
           _table(["Model", *BG_COLUMNS.values()],
                  [[m["title"], *[_cell(m["bgknown"][c]) for c in BG_COLUMNS]] for m in models]
                  + _paper_rows(paper, "bgknown", list(BG_COLUMNS.values())))]
    ap_cols = [f"{s} R@{k}" for s in scenes for k in KS]
    md += ["## APwD (synthetic; the paper's Table 2 layout)\n",
           f"Retrieval of the clip that differs from the query clip as the text modifier says (\"add X\" / "
           f"\"remove X\"); text encoder '{results['text_encoder']}'. Recall %; "
           + ", ".join(f"{s}: {t['apwd'][s]['n_pairs']['dev']} dev / {t['apwd'][s]['n_pairs']['eval']} eval pairs" for s in scenes)
           + ".\n",
           _table(["Model", *ap_cols],
                  [[m["title"], *[_cell(m["apwd"][s][f"R@{k}"]) for s in scenes for k in KS]] for m in models]
                  + [["chance", *[f"{t['apwd'][s]['chance'][f'R@{k}']:.1f}" for s in scenes for k in KS]]]
                  + _paper_rows(paper, "apwd", ap_cols))]
    g = t["general"]
    md += ["## General-purpose check (synthetic HEAR scene task; the paper's Table 3 role)\n",
           f"Linear evaluation on scene embeddings from the HEAR API, {g['n_classes']} classes (the embedded "
           f"corpus's event and scene classes, rendered apart from the pretraining clips), {g['n_train']} training / "
           f"{g['n_test']} test clips, chance {g['chance']:.1f} %.\n",
           _table(["Model", "accuracy"], [[m["title"], _cell(m["general"])] for m in models]
                  + _paper_rows(paper, "general", ["accuracy"]))]
    verdict = ("shown" if eff["shown"] else "not shown")
    md += ["## The paper's effect at this scale\n",
           f"Claim: λ = 0.5 beats λ = 0 on y_diff (a) by more than the seed spread while Mix stays within it "
           f"(spread: the larger of the two models' std over evaluation seeds). Here: (a) changes by "
           f"{eff['a_gain']:+.1f} points (spread {eff['a_spread']:.1f}); Mix changes by {eff['mix_change']:+.1f} "
           f"points (spread {eff['mix_spread']:.1f}). **Effect {verdict}** at this budget.\n"]
    if paper:
        md += [f"Rows marked 'paper:' are the paper's own numbers (AudioSet pretraining, real ESC-50/FSD50K), from "
               f"{paper.get('source', 'the file given with --paper-numbers')}; they are not comparable in scale to ours.\n"]
    else:
        md += ["The paper's own numbers (AudioSet pretraining, real ESC-50/FSD50K) are not shown: they could not be "
               "obtained where this project is built (offline). Pass `--paper-numbers FILE` to print them beside "
               "these, labelled as the paper's (format: `hear_diffbyola/demo.py`).\n"]
    md += ["## Plots\n", *[f"![{name}]({rel})\n" for name, rel in plots.items()]]
    md += ["## Wall time per stage\n",
           _table(["stage", "seconds", "git commit"],
                  [[k, f"{v:.0f}", f"`{_short(results['stage_commits'][k])}`"] for k, v in walls["stages"].items()])]
    return "\n".join(md)


def _commits(results: dict[str, Any]) -> str:
    """The commits the stages ran at, and the report's own (several after an interrupted run was resumed)."""
    stages = sorted({_short(c) for c in results["stage_commits"].values()})
    report = _short(results["git_commit"])
    text = "stages at " + ", ".join(f"`{c}`" for c in stages)
    return text + ("" if stages == [report] else f"; report written at `{report}`") + " (per stage below)"


def _short(commit: str) -> str:
    """12 hex digits, keeping the "+dirty" mark (uncommitted changes to tracked files)."""
    sha, _, rest = commit.partition("+")
    return sha[:12] + ("+dirty" if rest.startswith("dirty") else "")


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


# ---------------------------------------------------------------- plots

def write_plots(out: Path, results: dict[str, Any]) -> dict[str, str]:
    """Loss curves of both runs and a bar chart per table; returns {title: path relative to out}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    models = results["models"]
    made = {}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, m in models.items():
        rows = _metrics(out / "runs" / key / "metrics.csv")
        steps = [int(r["step"]) for r in rows]
        axes[0].plot(steps, [_num(r["l_byol"]) for r in rows], label=m["title"])
        if any(not math.isnan(_num(r["l_diff"])) for r in rows):
            axes[1].plot(steps, [_num(r["l_diff"]) for r in rows], label=f"{m['title']}: L_diff")
            axes[1].plot(steps, [_num(r["loss"]) for r in rows], label=f"{m['title']}: total")
    for ax, title in zip(axes, ("L_byol (both runs)", "L_diff and total loss (λ > 0)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("2 − 2 cos")
        ax.grid(alpha=0.3)
        ax.legend()
    made["loss curves"] = _save(fig, folder / "loss_curves.png")

    scenes = list(results["tasks"]["apwd"])
    charts = {
        "BgKnown accuracy (%)": ("bgknown.png", list(BG_COLUMNS.values()),
                                 lambda m: [m["bgknown"][c] for c in BG_COLUMNS]),
        "APwD recall (%)": ("apwd.png", [f"{s}\nR@{k}" for s in scenes for k in KS],
                            lambda m: [m["apwd"][s][f"R@{k}"] for s in scenes for k in KS]),
        "General-purpose accuracy (%)": ("general.png", ["17-class scene task"], lambda m: [m["general"]]),
    }
    for title, (fname, groups, values) in charts.items():
        fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(groups) + 2), 4))
        width = 0.8 / len(models)
        for i, m in enumerate(models.values()):
            vals = values(m)
            xs = [g + (i - (len(models) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, [v["mean"] for v in vals], width, yerr=[v["std"] for v in vals], capsize=3, label=m["title"])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        made[title] = _save(fig, folder / fname)
    return made


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(s: str | None) -> float:
    return float(s) if s not in (None, "") else math.nan


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plots/{path.name}"

