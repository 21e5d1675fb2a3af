"""The demo's stages and the state that makes them resumable.

Each stage is recorded in ``OUT/demo_state.json`` when it finishes, so a rerun skips what is done; a
pretraining run cut short resumes from its last checkpoint, and a finished one is left as it is.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hear_diffbyola.config import PretrainConfig
from hear_diffbyola.train import git_commit
from hear_diffbyola.weights import atomic_write

from .report import read_paper_numbers, render_report, write_plots
from .results import collect_results, utc_now
from .settings import (
    BUDGETS,
    GENERAL_SPLITS,
    LAMBDAS,
    SEED,
    DemoBudget,
    DemoError,
    model_key,
    run_key,
)

__all__ = ["STATE", "DemoRun", "check_lambdas", "check_pretrain_seeds", "pretraining_finished", "run_demo"]

STATE = "demo_state.json"


@dataclass
class DemoRun:
    """One demo folder: its settings, its recorded state and where each stage puts its output."""

    out: Path
    budget: DemoBudget
    device: str
    text_encoder: str
    progress: bool
    pretrain_seeds: tuple[int, ...] = (SEED,)
    lambdas: tuple[float, ...] = LAMBDAS
    corpus: str = "embedded"  # the pretraining corpus: 'embedded' or a folder / list of the user's audio
    bgknown_task: Path | None = None  # a built BgKnown task to score on instead of the synthetic one
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.out / STATE

    def save_state(self) -> None:
        write_json(self.state_path, self.state)

    def stage(self, number: int, total: int, name: str, fn: Callable[[], None]) -> None:
        done = self.state["stages"].get(name)
        if done is not None:
            print(f"[demo] ({number}/{total}) {name}: done earlier ({done['wall_s']:.0f} s), skipped", flush=True)
            return
        print(f"[demo] ({number}/{total}) {name} ...", flush=True)
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        self.state["stages"][name] = {"wall_s": wall, "finished": utc_now(), "git_commit": git_commit()}
        self.save_state()
        print(f"[demo] ({number}/{total}) {name}: {wall:.0f} s", flush=True)

    # one folder per pretraining seed: every λ of a seed shares its data order and initialisation
    def run_dir(self, seed: int, lam: float) -> Path:
        return self.out / "runs" / f"seed{seed}" / model_key(lam)

    def weights(self, seed: int, lam: float) -> Path:
        return self.out / "weights" / f"seed{seed}" / f"{model_key(lam)}.safetensors"

    def pretrain_config(self, seed: int, lam: float) -> PretrainConfig:
        return self.budget.pretrain_config(lam, self.device, seed, self.corpus)

    def data_settings(self) -> dict[str, Any]:
        """What the demo was pretrained and scored on, as its state and results record it."""
        return {"corpus": self.corpus, "bgknown_task": None if self.bgknown_task is None else str(self.bgknown_task)}

    def task(self, name: str) -> Path:
        if name == "bgknown" and self.bgknown_task is not None:
            return self.bgknown_task
        return self.out / "tasks" / name

    def result(self, task: str, seed: int, lam: float) -> Path:
        return self.out / "results" / f"seed{seed}" / f"{task}_{model_key(lam)}.json"


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_lambdas(lambdas: Sequence[float]) -> tuple[float, ...]:
    """λ = 0 first (every other λ is paired with it), then the others in the order given, each once, in [0, 1]."""
    lams = tuple(float(x) for x in lambdas)
    if not lams or lams[0] != 0.0:
        raise DemoError(
            f"--lambdas must start with 0 (the BYOL-A baseline every other λ is compared with), got "
            f"{', '.join(f'{x:g}' for x in lams) or 'none'}"
        )
    if len(lams) < 2 or len(set(lams)) != len(lams) or not all(0.0 < x <= 1.0 for x in lams[1:]):
        raise DemoError(
            f"--lambdas: after 0 give one or more distinct values in (0, 1], e.g. 0,0.2,0.5,0.8; got "
            f"{', '.join(f'{x:g}' for x in lams)}"
        )
    return lams


def check_pretrain_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in seeds)
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise DemoError(f"--pretrain-seeds must be distinct non-negative integers, e.g. 0,1,2; got {list(out)}")
    return out


# what must match to continue a demo in the same folder (with the value a folder written before the setting
# existed holds); pretraining seeds and λ may grow (their stages are named by seed and λ, so the ones done stay valid)
FIXED_SETTINGS = {"budget": None, "text_encoder": None, "seed": None, "corpus": "embedded", "bgknown_task": None}


def _open_state(run: DemoRun) -> dict[str, Any]:
    """The state of an earlier demo in ``run.out`` with the same settings, or a fresh one; other settings -> error."""
    out = run.out
    path = out / STATE
    settings = {
        "budget": run.budget.fingerprint(),
        "text_encoder": run.text_encoder,
        "lambdas": list(run.lambdas),
        "seed": SEED,
        "pretrain_seeds": list(run.pretrain_seeds),
        **run.data_settings(),
    }
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except ValueError as e:
            raise DemoError(f"{path} is unreadable ({e}); delete {out} or choose another --out") from e
        old = state.get("settings", {})
        if "pretrain_seeds" not in old:
            raise DemoError(
                f"{out} holds a demo of an earlier format (one pretraining seed, no paired design); "
                "choose another --out, or delete it to start over"
            )
        if any(old.get(k, default) != settings[k] for k, default in FIXED_SETTINGS.items()):
            raise DemoError(
                f"{out} holds a demo run with other settings ({_describe(old)}, "
                f"asked: {_describe(settings)}); choose another --out, or delete it to start over"
            )
        state["settings"] = settings  # the seeds and λ asked now: the report covers these
        return state
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{out} exists and is not a demo folder (no {STATE}); choose another --out")
    return {"settings": settings, "started": utc_now(), "stages": {}}


def _describe(settings: dict[str, Any]) -> str:
    return (
        f"budget {settings.get('budget', {}).get('name')!r}, text encoder {settings.get('text_encoder')!r}, "
        f"task seed {settings.get('seed')}, corpus {settings.get('corpus', 'embedded')!r}, "
        f"BgKnown task {settings.get('bgknown_task') or 'synthetic'}"
    )


# ---------------------------------------------------------------- stages


def pretraining_finished(run_dir: Path, config: PretrainConfig) -> bool:
    """Whether ``run_dir`` holds a pretraining run that reached its planned steps.

    The trainer writes ``summary.json`` (with its ``finished`` time) only after the last step; a run
    planned by epochs (``train.steps`` unset) counts as finished once that file says so."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or cut off mid-write: not finished
        return False
    planned = config.train.steps
    return bool(summary.get("finished")) and (planned is None or summary.get("steps") == planned)


def _pretrain(run: DemoRun, seed: int, lam: float) -> None:
    from hear_diffbyola.train import pretrain
    from hear_diffbyola.weights import export_run

    run_dir = run.run_dir(seed, lam)
    config = run.pretrain_config(seed, lam)
    if pretraining_finished(run_dir, config):
        print(f"[demo] {run_dir} is a finished pretraining run; kept as it is", flush=True)
    else:  # a run stopped before its last step resumes from its last checkpoint
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if resume:
            print(f"[demo] resuming {run_dir} from its last checkpoint", flush=True)
        pretrain(config, run_dir, resume=resume, progress=run.progress)
    export_run(run_dir, run.weights(seed, lam))


def _fresh(path: Path) -> Path:
    """An unfinished stage may have left part of its output: start it clean."""
    if path.exists():
        shutil.rmtree(path)
    return path


def _check_bgknown(run: DemoRun) -> None:
    """A given BgKnown task is read once before any pretraining, so a wrong path fails in seconds, not hours."""
    from ..bgknown.manifest import load_task

    task = load_task(run.task("bgknown"))
    sizes = ", ".join(f"{len(v)} {k}" for k, v in task.items.items())
    print(f"[demo] BgKnown task {run.task('bgknown')}: {sizes} items", flush=True)


def _build_bgknown(run: DemoRun) -> None:
    from ..bgknown.build import build_synthetic
    from ..bgknown.manifest import BuildParams

    b = run.budget
    params = BuildParams(clip_seconds=b.bgknown_clip_seconds, min_bg_seconds=max(10.0, 2 * b.bgknown_clip_seconds))
    build_synthetic(
        run.task("bgknown"),
        SEED,
        b.bgknown_train_per_class,
        b.bgknown_test_per_class,
        None,
        params,
        None,
        run.progress,
        force=True,
    )


def _build_apwd(run: DemoRun) -> None:
    from ..apwd.build import BuildConfig, build
    from ..apwd.vocab import SCENES

    config = BuildConfig.synthetic(n_dev=run.budget.apwd_dev, n_eval=run.budget.apwd_eval, seed=SEED)
    build(_fresh(run.task("apwd")), sorted(SCENES), config, synthetic=True, progress=run.progress)


def _build_general(run: DemoRun) -> None:
    from hear_diffbyola.corpus.synthetic import EVENT_CLASSES, SCENE_CLASSES

    from ..heartask import write_hear_task

    # seed 1000: clips rendered apart from the pretraining corpus's own seed
    write_hear_task(
        _fresh(run.task("general")),
        kind="scene",
        labels=[*EVENT_CLASSES, *SCENE_CLASSES],
        n_per_label=dict(zip(GENERAL_SPLITS, run.budget.general_per_label)),
        splits=GENERAL_SPLITS,
        duration=run.budget.general_seconds,
        seed=SEED + 1000,
        task_name="synthetic-17",
    )


def _linear_config(run: DemoRun):
    from ..linear_eval import LinearEvalConfig

    return LinearEvalConfig(max_epochs=run.budget.linear_max_epochs, patience=run.budget.linear_patience)


def _eval_bgknown(run: DemoRun, seed: int, lam: float) -> None:
    from ..bgknown.evaluate import evaluate
    from ..bgknown.manifest import load_task
    from ..embedders import ours

    result = evaluate(
        load_task(run.task("bgknown")),
        ours(run.weights(seed, lam), run.device),
        tuple(range(run.budget.seeds)),
        _linear_config(run),
        run.out / "cache" / "bgknown",
        16,
        run.progress,
    )
    write_json(run.result("bgknown", seed, lam), result)


def _eval_apwd(run: DemoRun, seed: int, lam: float) -> None:
    from ..apwd.evaluate import evaluate_apwd
    from ..apwd.retrieval import RetrievalConfig
    from ..apwd.text import make_text_encoder
    from ..embedders import ours

    config = RetrievalConfig(epochs=run.budget.apwd_epochs, patience=run.budget.apwd_patience)
    result = evaluate_apwd(
        run.task("apwd"),
        ours(run.weights(seed, lam), run.device),
        make_text_encoder(run.text_encoder),
        None,
        tuple(range(run.budget.seeds)),
        config,
        run.out / "cache" / "apwd",
        run.progress,
    )
    write_json(run.result("apwd", seed, lam), result)


def _eval_general(run: DemoRun, seed: int, lam: float) -> None:
    from ..embedders import hear_module
    from ..scene_task import evaluate_scene_task

    # through the HEAR API (load_model / get_scene_embeddings), as hear-eval-kit would embed it
    embedder = hear_module("hear_diffbyola", run.weights(seed, lam), run.device)
    result = evaluate_scene_task(
        run.task("general"), embedder, tuple(range(run.budget.seeds)), _linear_config(run), progress=run.progress
    )
    write_json(run.result("general", seed, lam), result)


def _plan(run: DemoRun) -> list[tuple[str, Callable[[], None]]]:
    """(stage name, what it does), in order: the three task builds, then per pretraining seed its pretrainings
    (every λ) and their evaluations, so that an interrupted demo holds whole seeds. Stage names carry the seed
    and λ, so more seeds or λ extend a demo."""
    plan: list[tuple[str, Callable[[], None]]] = [
        ("check bgknown", lambda: _check_bgknown(run))
        if run.bgknown_task is not None
        else ("build bgknown", lambda: _build_bgknown(run)),
        ("build apwd", lambda: _build_apwd(run)),
        ("build general", lambda: _build_general(run)),
    ]
    for seed in run.pretrain_seeds:
        for lam in run.lambdas:
            plan.append((f"pretrain {run_key(seed, lam)}", lambda seed=seed, lam=lam: _pretrain(run, seed, lam)))
        for lam in run.lambdas:
            key = run_key(seed, lam)
            plan += [
                (f"eval bgknown {key}", lambda seed=seed, lam=lam: _eval_bgknown(run, seed, lam)),
                (f"eval apwd {key}", lambda seed=seed, lam=lam: _eval_apwd(run, seed, lam)),
                (f"eval general {key}", lambda seed=seed, lam=lam: _eval_general(run, seed, lam)),
            ]
    return plan


def run_demo(
    out: str | Path,
    budget: DemoBudget | str = "quick",
    *,
    device: str = "auto",
    text_encoder: str = "hash",
    pretrain_seeds: Sequence[int] | None = None,
    lambdas: Sequence[float] = LAMBDAS,
    corpus: str = "embedded",
    bgknown_task: str | Path | None = None,
    paper_numbers: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or finish, or extend) the demo in ``out``; returns the collected results (also ``OUT/results.json``).

    Every λ is pretrained once per pretraining seed (default: the budget's ``pretrain_seeds``) with that
    seed's data order and initialisation; tasks and evaluation seeds are the same for all. The effect of
    each λ > 0 is its paired difference to λ = 0 per seed, with a t interval over the seeds.
    ``corpus``: pretrain on a folder or list of the user's audio instead of the embedded corpus (resolved to an
    absolute path); ``bgknown_task``: score on this built BgKnown task (e.g. ``bgknown build --fg-folder ...``)
    instead of building the synthetic one. ``paper_numbers``: a JSON file to show instead of the paper's
    numbers shipped with the package."""
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise DemoError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    seeds = check_pretrain_seeds(budget.pretrain_seeds if pretrain_seeds is None else pretrain_seeds)
    lams = check_lambdas(lambdas)
    paper = read_paper_numbers(paper_numbers)
    from hear_diffbyola.train import pick_device

    out = Path(out)
    if corpus != "embedded":
        if not Path(corpus).exists():
            raise DemoError(
                f"--corpus {corpus}: no such folder or list; give a folder of audio, a .csv/.txt list or 'embedded'"
            )
        corpus = str(Path(corpus).resolve())
    task = None if bgknown_task is None else Path(bgknown_task).resolve()
    run = DemoRun(out, budget, str(pick_device(device)), text_encoder, progress, seeds, lams, corpus, task)
    run.state = _open_state(run)
    out.mkdir(parents=True, exist_ok=True)
    run.save_state()
    t0 = time.perf_counter()
    plan = _plan(run)
    total = len(plan) + 1  # + the report
    for i, (name, fn) in enumerate(plan, 1):
        run.stage(i, total, name, fn)
    print(f"[demo] ({total}/{total}) report ...", flush=True)
    results = collect_results(run, time.perf_counter() - t0, [name for name, _ in plan])
    write_json(out / "results.json", results)
    plots = write_plots(out, results)
    (out / "report.md").write_text(render_report(results, plots, paper))
    print(
        f"[demo] done: {out / 'report.md'} (stages {results['wall_time_s']['stages_total']:.0f} s in all)", flush=True
    )
    return results
