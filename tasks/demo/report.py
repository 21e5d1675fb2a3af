"""The demo's report: ``report.md`` (tables of both models, the effect check, provenance), its plots,
and the table across pretraining seeds (``hear-diffbyola demo-seeds``)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from .results import paper_effect, read_metrics
from .settings import BG_COLUMNS, KS, LAMBDAS, SEED, DemoError, model_key

__all__ = ["render_report", "write_plots", "seeds_table", "read_paper_numbers"]


# ---------------------------------------------------------------- report.md

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
               "these, labelled as the paper's (format: `hear_diffbyola.tasks.demo.report.read_paper_numbers`).\n"]
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


def read_paper_numbers(path: str | Path) -> dict[str, Any]:
    """The paper's own numbers to print beside ours (``--paper-numbers FILE``), labelled as the paper's.

    FILE is JSON ``{"source": "citation", "bgknown": {ROW: {"Mix": x, "(a)": x, ...}},
    "apwd": {ROW: {"rain R@1": x, ...}}, "general": {ROW: {"accuracy": x}}}`` with values in %; a row
    may give only some of its table's columns."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DemoError(f"--paper-numbers {path}: cannot read it as JSON ({e})") from e
    for table in ("bgknown", "apwd", "general"):
        rows = data.get(table, {})
        if not isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows.values()):
            raise DemoError(f"--paper-numbers {path}: '{table}' must map a row name to {{column: value in %}}")
    return data


# ---------------------------------------------------------------- across pretraining seeds

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
        rows = read_metrics(out / "runs" / key / "metrics.csv")
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


def _num(s: str | None) -> float:
    return float(s) if s not in (None, "") else math.nan


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plots/{path.name}"

