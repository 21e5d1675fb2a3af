"""The demo's report: ``report.md`` (per-λ means over pretraining seeds, paired differences to λ = 0 with
95 % t intervals, the verdict, the paper's own numbers, provenance), its plots, and the combined table of
several demos (``hear-diffbyola demo-seeds``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .results import combine_results, read_metrics
from .settings import BG_COLUMNS, KS, DemoError, model_key

__all__ = ["PAPER_NUMBERS_FORMAT", "read_paper_numbers", "render_report", "seeds_table", "write_plots"]

PAPER_NUMBERS_FORMAT = "hear-diffbyola/paper-numbers/1"
PAPER_TABLES = ("bgknown", "apwd", "general")


# ---------------------------------------------------------------- cells and tables


def _num(x: float) -> str:
    return f"{x:.1f}".replace("-", "−")


def _signed(x: float) -> str:
    return ("+" if x >= 0 else "") + _num(x)


def interval_cell(s: dict[str, Any], signed: bool = False) -> str:
    """'mean [lo, hi]' (the 95 % t interval over pretraining seeds); just 'mean' when n = 1."""
    f = _signed if signed else _num
    lo, hi = s["ci"]
    return f(s["mean"]) if lo is None else f"{f(s['mean'])} [{f(lo)}, {f(hi)}]"


def _cell(m: dict[str, float]) -> str:
    return f"{_num(m['mean'])} ± {m['std']:.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _title(lam: float) -> str:
    return f"λ = {lam:g} (BYOL-A)" if lam == 0 else f"λ = {lam:g} (DiffBYOL-A)"


def _summary_rows(results: dict[str, Any], keys: Sequence[str]) -> list[list[str]]:
    """One row per λ (mean [CI] over pretraining seeds), then one per λ > 0: its paired difference to λ = 0."""
    rows = [
        [_title(lam), *[interval_cell(results["per_lambda"][model_key(lam)][k]) for k in keys]]
        for lam in results["lambdas"]
    ]
    rows += [
        [
            f"Δ λ = {lam:g} − λ = 0 (paired)",
            *[interval_cell(results["paired"][model_key(lam)][k], signed=True) for k in keys],
        ]
        for lam in results["lambdas"][1:]
    ]
    return rows


def _paper_value(paper: dict[str, Any], lam: str, table: str, col: str) -> float | None:
    v = paper["lambdas"].get(lam, {}).get(table, {}).get(col)
    return float(v) if isinstance(v, (int, float)) else None


def _paper_rows(
    paper: dict[str, Any] | None, table: str, columns: Sequence[str], ours: Sequence[float]
) -> list[list[str]]:
    """The paper's rows for every λ it reports, then its difference to its λ = 0 for each of our λ > 0."""
    if not paper:
        return []
    rows = []
    for lam in sorted(paper["lambdas"], key=float):
        vals = [_paper_value(paper, lam, table, c) for c in columns]
        if any(v is not None for v in vals):
            rows.append([f"paper: λ = {float(lam):g}", *["–" if v is None else f"{v:.1f}" for v in vals]])
    for lam in ours[1:]:
        key = f"{lam:g}"
        base = [_paper_value(paper, "0", table, c) for c in columns]
        other = [_paper_value(paper, key, table, c) for c in columns]
        if key in paper["lambdas"] and any(o is not None and b is not None for b, o in zip(base, other)):
            rows.append(
                [
                    f"paper: Δ λ = {lam:g} − λ = 0",
                    *["–" if b is None or o is None else _signed(o - b) for b, o in zip(base, other)],
                ]
            )
    return rows


# ---------------------------------------------------------------- report.md


def render_report(results: dict[str, Any], plots: dict[str, str], paper: dict[str, Any] | None = None) -> str:
    """report.md: per-λ means and paired differences over pretraining seeds for the three tasks, the verdict
    per λ > 0, the paper's numbers (labelled), per-seed BgKnown, plots, provenance."""
    b, t = results["budget"], results["tasks"]
    seeds, lambdas = results["pretrain_seeds"], results["lambdas"]
    n = len(seeds)
    scenes = list(t["apwd"])
    walls = results["wall_time_s"]
    some = next(iter(results["models"].values()))["pretrain"]
    md = [
        f"# hear-diffbyola demo ({b['name']} budget)\n",
        f"λ ∈ {{{', '.join(f'{x:g}' for x in lambdas)}}} pretrained on {_corpus(results)} with "
        f"{some.get('arch', 'the default encoder')} (d = {some['d']}), each λ once per pretraining seed "
        f"({', '.join(map(str, seeds))}; n = {n}): all λ of a seed share its data order and initialisation. "
        f"Scored on {_tasks(results)}. Hardware: {results['hardware']}. Code: "
        f"{_commits(results)}. Wall time of all stages: {walls['stages_total'] / 60:.1f} min.\n",
        f"How to read the tables: a λ row is the mean over the {n} pretraining seed{'s' if n != 1 else ''} of each "
        f"model's score (itself the mean over {b['seeds']} evaluation seeds), with its 95 % t interval over "
        f"pretraining seeds in brackets; a Δ row is the mean of the per-seed differences to λ = 0 (same seed), "
        f"with its 95 % t interval (t with n − 1 = {max(n - 1, 0)} degrees of freedom). With n = 1 no interval "
        f"can be given. Scores in %.\n",
    ]
    md += [
        "## The effect (paired over pretraining seeds)\n",
        "The paper's BgKnown claim: λ > 0 raises y_diff (a) while Mix stays. Verdict per λ: **shown** when the "
        "(a) difference's interval lies above 0 and the Mix difference's interval does not lie below 0; "
        "**reversed** when the (a) interval lies below 0; **not shown** otherwise.\n",
    ]
    for lam in lambdas[1:]:
        e = results["effect"][model_key(lam)]
        line = (
            f"- λ = {lam:g}: **{e['verdict']}** (n = {e['n']} pretraining seed{'s' if e['n'] != 1 else ''}; "
            f"{e['reason']}). (a) {interval_cell(e['a'], signed=True)}, Mix {interval_cell(e['mix'], signed=True)}"
        )
        pa, p0 = (
            (_paper_value(paper, f"{lam:g}", "bgknown", "(a)"), _paper_value(paper, "0", "bgknown", "(a)"))
            if paper
            else (None, None)
        )
        pm, p0m = (
            (_paper_value(paper, f"{lam:g}", "bgknown", "Mix"), _paper_value(paper, "0", "bgknown", "Mix"))
            if paper
            else (None, None)
        )
        if None not in (pa, p0, pm, p0m):
            line += f"; the paper: (a) {_signed(pa - p0)}, Mix {_signed(pm - p0m)}"
        md.append(line + ".")
    md.append("")
    md += [
        "## Pretraining\n",
        _table(
            ["seed", "Model", "steps", "batch", "d", "final L_byol", "final L_diff", "wall (s)"],
            [
                [
                    str(m["pretrain_seed"]),
                    m["title"],
                    str(m["pretrain"]["steps"]),
                    str(m["pretrain"]["batch_size"]),
                    str(m["pretrain"]["d"]),
                    _fmt(m["pretrain"]["final_loss"]["l_byol"]),
                    _fmt(m["pretrain"]["final_loss"]["l_diff"]),
                    f"{m['pretrain']['wall_time_s']:.0f}",
                ]
                for m in _ordered(results)
            ],
        ),
    ]
    bg = t["bgknown"]
    bg_keys = [f"bgknown.{c}" for c in BG_COLUMNS]
    md += [
        f"## BgKnown ({'synthetic' if results.get('bgknown_task') is None else 'task ' + results['bgknown_task']}; "
        "the paper's Table 1 layout)\n",
        f"Linear evaluation of y_mix (Mix) and y_diff = y_mix − y_bg with the background reference (a) the same "
        f"segment, (b) half overlapping, (c) not overlapping. {bg['n_classes']} classes, {bg['n_train']} training / "
        f"{bg['n_test']} test items, chance {bg['chance']:.1f} %.\n",
        _table(
            ["Model", *BG_COLUMNS.values()],
            _summary_rows(results, bg_keys) + _paper_rows(paper, "bgknown", list(BG_COLUMNS.values()), lambdas),
        ),
    ]
    md += [
        "Per pretraining seed (mean ± std over evaluation seeds; Δ: the paired difference to λ = 0):\n",
        _table(["seed", "Model", *BG_COLUMNS.values()], _per_seed_rows(results)),
    ]
    ap_cols = [f"{s} R@{k}" for s in scenes for k in KS]
    ap_keys = [f"apwd.{s}.R@{k}" for s in scenes for k in KS]
    md += [
        "## APwD (synthetic; the paper's Table 2 layout)\n",
        f'Retrieval of the clip that differs from the query clip as the text modifier says ("add X" / '
        f"\"remove X\"); text encoder '{results['text_encoder']}'. Recall %; "
        + ", ".join(
            f"{s}: {t['apwd'][s]['n_pairs']['dev']} dev / {t['apwd'][s]['n_pairs']['eval']} eval pairs" for s in scenes
        )
        + ".\n",
        _table(
            ["Model", *ap_cols],
            _summary_rows(results, ap_keys)
            + [["chance", *[f"{t['apwd'][s]['chance'][f'R@{k}']:.1f}" for s in scenes for k in KS]]]
            + _paper_rows(paper, "apwd", ap_cols, lambdas),
        ),
    ]
    g = t["general"]
    md += [
        "## General-purpose check (synthetic HEAR scene task; the paper's Table 3 role)\n",
        f"Linear evaluation on scene embeddings from the HEAR API, {g['n_classes']} classes (the embedded "
        f"corpus's event and scene classes, rendered apart from the pretraining clips), {g['n_train']} training / "
        f"{g['n_test']} test clips, chance {g['chance']:.1f} %.\n",
        _table(
            ["Model", "accuracy"],
            _summary_rows(results, ["general.accuracy"]) + _paper_rows(paper, "general", ["accuracy"], lambdas),
        ),
    ]
    if paper:
        md += [
            f"Rows marked 'paper:' are the paper's own numbers, not ours: {paper['citation']}; {paper['setup']}. "
            "They come from real recordings at a far larger scale and are shown for the direction and size of "
            "the effect, not as a target these synthetic tasks could reach."
            + (f" Note: {paper['general_note']}." if paper.get("general_note") else "")
            + "\n"
        ]
    md += ["## Plots\n", *[f"![{name}]({rel})\n" for name, rel in plots.items()]]
    md += [
        "## Wall time per stage\n",
        _table(
            ["stage", "seconds", "git commit"],
            [[k, f"{v:.0f}", f"`{_short(results['stage_commits'][k])}`"] for k, v in walls["stages"].items()],
        ),
    ]
    return "\n".join(md)


def _corpus(results: dict[str, Any]) -> str:
    corpus = results.get("corpus", "embedded")
    return "the embedded procedural corpus" if corpus == "embedded" else f"the corpus `{corpus}`"


def _tasks(results: dict[str, Any]) -> str:
    if results.get("bgknown_task") is None:
        return "synthetic versions of the paper's tasks"
    return f"the BgKnown task `{results['bgknown_task']}` and synthetic versions of APwD and the general-purpose task"


def _ordered(results: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(results["models"].values(), key=lambda m: (m["pretrain_seed"], m["lam"]))


def _per_seed_rows(results: dict[str, Any]) -> list[list[str]]:
    by = {(m["pretrain_seed"], m["lam"]): m for m in results["models"].values()}
    rows = []
    for seed in results["pretrain_seeds"]:
        base = by[seed, 0.0]
        for lam in results["lambdas"]:
            m = by[seed, lam]
            rows.append([str(seed), m["title"], *[_cell(m["bgknown"][c]) for c in BG_COLUMNS]])
            if lam != 0.0:
                rows.append(
                    [
                        str(seed),
                        f"Δ λ = {lam:g} − λ = 0",
                        *[_signed(m["bgknown"][c]["mean"] - base["bgknown"][c]["mean"]) for c in BG_COLUMNS],
                    ]
                )
    return rows


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


# ---------------------------------------------------------------- the paper's numbers


def read_paper_numbers(path: str | Path | None = None) -> dict[str, Any]:
    """The paper's own numbers shown beside ours, labelled as the paper's: by default the file shipped in the
    package (``paper_numbers.json``: Tables 1-3 of the paper, with the citation); ``path`` replaces it.

    Format: ``{"format": "hear-diffbyola/paper-numbers/1", "citation": str, "setup": str,
    "lambdas": {"0": {"bgknown": {"Mix": x, "(a)": x, ...}, "apwd": {"rain R@1": x, ...},
    "general": {"accuracy": x}}, "0.5": {...}}}`` with values in %; a λ may give only some tables/columns."""
    where = "the shipped paper_numbers.json" if path is None else f"--paper-numbers {path}"
    try:
        text = (
            (resources.files(__package__) / "paper_numbers.json").read_text()
            if path is None
            else Path(path).read_text()
        )
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise DemoError(f"{where}: cannot read it as JSON ({e})") from e
    fix = f"see hear_diffbyola.tasks.demo.report.read_paper_numbers for the format ({PAPER_NUMBERS_FORMAT})"
    if not isinstance(data, dict) or data.get("format") != PAPER_NUMBERS_FORMAT:
        raise DemoError(f"{where}: not a paper-numbers file (format must be {PAPER_NUMBERS_FORMAT!r}); {fix}")
    for key in ("citation", "setup"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise DemoError(f"{where}: '{key}' must be a non-empty string (the numbers are labelled with it); {fix}")
    lams = data.get("lambdas")
    if not isinstance(lams, dict) or "0" not in lams:
        raise DemoError(f"{where}: 'lambdas' must map λ (as text, '0' among them) to its tables; {fix}")
    for lam, tables in lams.items():
        try:
            float(lam)
        except ValueError:
            raise DemoError(f"{where}: λ key {lam!r} is not a number; {fix}") from None
        for table, cols in tables.items():
            if (
                table not in PAPER_TABLES
                or not isinstance(cols, dict)
                or not all(isinstance(v, (int, float)) for v in cols.values())
            ):
                raise DemoError(
                    f"{where}: λ {lam}: '{table}' must be one of {', '.join(PAPER_TABLES)} mapping a "
                    f"column to a value in %; {fix}"
                )
    return data


# ---------------------------------------------------------------- across demos


def seeds_table(results: Sequence[dict[str, Any]], paper: dict[str, Any] | None = None) -> str:
    """BgKnown and the verdict over several demos pooled by pretraining seed (``hear-diffbyola demo-seeds``):
    per λ the mean over all their seeds, the paired differences to λ = 0 with t intervals, and per seed."""
    r = combine_results(results)
    keys = [f"bgknown.{c}" for c in BG_COLUMNS]
    n = len(r["pretrain_seeds"])
    text = [
        f"BgKnown over pretraining seeds {', '.join(map(str, r['pretrain_seeds']))} (n = {n}; from "
        f"{len(results)} demo{'s' if len(results) != 1 else ''}): mean [95 % t interval over seeds]; Δ: paired "
        f"difference to λ = 0.\n",
        _table(
            ["Model", *BG_COLUMNS.values()],
            _summary_rows(r, keys) + _paper_rows(paper, "bgknown", list(BG_COLUMNS.values()), r["lambdas"]),
        ),
        _table(["seed", "Model", *BG_COLUMNS.values()], _per_seed_rows(r)),
    ]
    for lam in r["lambdas"][1:]:
        e = r["effect"][model_key(lam)]
        text.append(
            f"λ = {lam:g}: effect {e['verdict']} (n = {e['n']}; {e['reason']}); (a) "
            f"{interval_cell(e['a'], signed=True)}, Mix {interval_cell(e['mix'], signed=True)}."
        )
    return "\n".join(text) + "\n"


# ---------------------------------------------------------------- plots


def write_plots(out: Path, results: dict[str, Any]) -> dict[str, str]:
    """Loss curves of every run, the paired differences with their intervals, and per task the per-λ means;
    returns {title: path relative to out}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    lambdas = results["lambdas"]
    colours = {lam: f"C{i}" for i, lam in enumerate(lambdas)}
    made = {}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in _ordered(results):
        rows = read_metrics(
            out / m.get("run_dir", f"runs/seed{m['pretrain_seed']}/{model_key(m['lam'])}") / "metrics.csv"
        )
        steps = [int(r["step"]) for r in rows]
        label = m["title"] if m["pretrain_seed"] == results["pretrain_seeds"][0] else None
        axes[0].plot(steps, [_to_float(r["l_byol"]) for r in rows], color=colours[m["lam"]], alpha=0.7, label=label)
        if m["lam"] > 0:
            axes[1].plot(steps, [_to_float(r["l_diff"]) for r in rows], color=colours[m["lam"]], alpha=0.7, label=label)
    for ax, title in zip(axes, ("L_byol (every run; one line per pretraining seed)", "L_diff (λ > 0)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("2 − 2 cos")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    made["loss curves"] = _save(fig, folder / "loss_curves.png")

    scenes = list(results["tasks"]["apwd"])
    groups = (
        [("bgknown." + c, f"BgKnown\n{BG_COLUMNS[c]}") for c in BG_COLUMNS]
        + [(f"apwd.{s}.R@1", f"APwD {s}\nR@1") for s in scenes]
        + [("general.accuracy", "general\n17-class")]
    )
    if len(lambdas) > 1:
        fig, ax = plt.subplots(figsize=(1.1 * len(groups) + 3, 4.2))
        width = 0.8 / (len(lambdas) - 1)
        for i, lam in enumerate(lambdas[1:]):
            paired = results["paired"][model_key(lam)]
            for g, (key, _) in enumerate(groups):
                x = g + (i - (len(lambdas) - 2) / 2) * width
                s = paired[key]
                lo, hi = s["ci"]
                yerr = None if lo is None else [[s["mean"] - lo], [hi - s["mean"]]]
                ax.errorbar(
                    [x],
                    [s["mean"]],
                    yerr=yerr,
                    fmt="o",
                    color=colours[lam],
                    capsize=4,
                    label=f"Δ λ = {lam:g} − λ = 0 (mean, 95 % CI)" if g == 0 else None,
                )
                ax.plot([x] * len(s["differences"]), s["differences"], ".", color=colours[lam], alpha=0.4)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([label for _, label in groups])
        ax.set_ylabel("points (%)")
        ax.set_title(
            f"Paired differences to λ = 0 over {len(results['pretrain_seeds'])} pretraining seeds (dots: single seeds)"
        )
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        made["paired differences"] = _save(fig, folder / "paired_differences.png")

    charts = {
        "BgKnown accuracy (%)": ("bgknown.png", [(f"bgknown.{c}", BG_COLUMNS[c]) for c in BG_COLUMNS]),
        "APwD recall (%)": ("apwd.png", [(f"apwd.{s}.R@{k}", f"{s}\nR@{k}") for s in scenes for k in KS]),
        "General-purpose accuracy (%)": ("general.png", [("general.accuracy", "17-class scene task")]),
    }
    for title, (fname, cols) in charts.items():
        fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(cols) + 2), 4))
        width = 0.8 / len(lambdas)
        for i, lam in enumerate(lambdas):
            per = results["per_lambda"][model_key(lam)]
            xs = [g + (i - (len(lambdas) - 1) / 2) * width for g in range(len(cols))]
            means = [per[k]["mean"] for k, _ in cols]
            errs = [0.0 if per[k]["ci"][0] is None else per[k]["mean"] - per[k]["ci"][0] for k, _ in cols]
            ax.bar(xs, means, width, yerr=errs, capsize=3, color=colours[lam], label=_title(lam))
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([label for _, label in cols])
        ax.set_title(title + " (error bars: 95 % CI over pretraining seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        made[title] = _save(fig, folder / fname)
    return made


def _to_float(s: str | None) -> float:
    return float(s) if s not in (None, "") else math.nan


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plots/{path.name}"
