"""`hear-diffbyola demo`: the paired pipeline at a tiny budget, its report read back against its own stage
files, resuming, the paired statistics by hand, combining demos, and the HEAR scene-task pieces it is built from."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from test_train import TINY as TINY_CORE  # the core tests' tiny configuration

from hear_diffbyola.cli import main
from hear_diffbyola.tasks import heartask
from hear_diffbyola.tasks.demo import (
    BUDGETS,
    DemoBudget,
    DemoError,
    combine_results,
    read_paper_numbers,
    run_demo,
    seeds_table,
    t_interval,
    verdict,
)
from hear_diffbyola.tasks.demo.pipeline import (
    DemoRun,
    _open_state,
    check_lambdas,
    pretraining_finished,
)
from hear_diffbyola.tasks.demo.results import FORMAT, analyse
from hear_diffbyola.tasks.embedders import Embedder
from hear_diffbyola.tasks.linear_eval import LinearEvalConfig
from hear_diffbyola.tasks.scene_task import evaluate_scene_task

# BYOL-A v2's encoder at its smallest (1024 conv features + 64 fc outputs), as the core's tests use it
TINY_PRETRAIN = ("encoder.arch=audiontt2022", *TINY_CORE, "train.steps=4", "train.checkpoint_every=2")
TINY = DemoBudget(
    name="tiny",
    pretrain=TINY_PRETRAIN,
    bgknown_train_per_class=2,
    bgknown_test_per_class=1,
    bgknown_clip_seconds=1.0,
    apwd_dev=8,
    apwd_eval=6,
    apwd_epochs=3,
    apwd_patience=2,
    general_per_label=(2, 1, 1),
    general_seconds=1.0,
    seeds=2,
    linear_max_epochs=5,
    linear_patience=2,
    pretrain_seeds=(0, 1),
)
MEAN_CI = re.compile(r"^([+−]?\d+\.\d)(?: \[([+−]?\d+\.\d), ([+−]?\d+\.\d)\])?$")
CELL = re.compile(r"^(−?\d+\.\d) ± (\d+\.\d)$")
T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445}  # Student's t 0.975 quantiles, from a printed table


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    results = run_demo(out, TINY, progress=False)  # pretraining seeds 0, 1 (TINY's default); λ 0 and 0.5
    return out, results


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """{section heading: table rows (header first, rule dropped)} of a markdown document (all tables of a section)."""
    found, section = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and not line.startswith("|---"):
            found.setdefault(section, []).append([c.strip() for c in line.strip("|").split("|")])
    return found


def by_heading(t: dict[str, list[list[str]]], prefix: str) -> list[list[str]]:
    (rows,) = [v for k, v in t.items() if k.startswith(prefix)]
    return rows


def num(text: str) -> float:
    return float(text.replace("−", "-"))


def mean_ci(cell: str) -> tuple[float, float | None, float | None]:
    m = MEAN_CI.match(cell)
    assert m, f"not a 'mean [lo, hi]' cell: {cell!r}"
    return num(m.group(1)), *(None if g is None else num(g) for g in m.group(2, 3))


def mean_std(cell: str) -> tuple[float, float]:
    m = CELL.match(cell)
    assert m, f"not a 'mean ± std' cell: {cell!r}"
    return num(m.group(1)), float(m.group(2))


def by_hand_interval(xs: list[float]) -> tuple[float, float, float]:
    """mean, lo, hi of the 95 % t interval, from the printed t table."""
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = T_975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def stage_mean(out, seed: int, key: str, cond: str) -> float:
    """A model's BgKnown score straight from its stage file: the mean of the per-seed accuracies."""
    stage = json.loads((out / "results" / f"seed{seed}" / f"bgknown_{key}.json").read_text())
    return float(np.mean(stage["results"][cond]["accuracies"]))


@pytest.mark.slow
def test_demo_report_tables_are_the_paired_analysis_of_the_stage_files(demo):
    out, results = demo
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["pretrain_seeds"] == [0, 1] and results["lambdas"] == [0.0, 0.5]
    assert set(results["models"]) == {"seed0/lam0", "seed0/lam0.5", "seed1/lam0", "seed1/lam0.5"}
    assert (
        set(results["stage_commits"]) == set(results["wall_time_s"]["stages"]) and len(results["stage_commits"]) == 19
    )
    report = (out / "report.md").read_text()
    bg = by_heading(tables(report), "BgKnown")
    assert bg[0] == ["Model", "Mix", "(a)", "(b)", "(c)"]
    rows = {r[0]: r[1:] for r in bg[1:]}
    for i, cond in enumerate(("mix", "a", "b", "c")):
        base = [stage_mean(out, s, "lam0", cond) for s in (0, 1)]
        other = [stage_mean(out, s, "lam0.5", cond) for s in (0, 1)]
        for title, xs in (
            ("λ = 0 (BYOL-A)", base),
            ("λ = 0.5 (DiffBYOL-A)", other),
            ("Δ λ = 0.5 − λ = 0 (paired)", [o - b for o, b in zip(other, base)]),
        ):
            mean, lo, hi = mean_ci(rows[title][i])
            want = by_hand_interval(xs)
            assert (mean, lo, hi) == pytest.approx(want, abs=0.051), (title, cond)
    # the paper's own numbers are shown by default, labelled, with their own λ = 0.5 − λ = 0 difference
    paper = read_paper_numbers()
    assert rows["paper: λ = 0"] == [f"{paper['lambdas']['0']['bgknown'][c]:.1f}" for c in ("Mix", "(a)", "(b)", "(c)")]
    a_gain = paper["lambdas"]["0.5"]["bgknown"]["(a)"] - paper["lambdas"]["0"]["bgknown"]["(a)"]
    assert num(rows["paper: Δ λ = 0.5 − λ = 0"][1]) == pytest.approx(a_gain, abs=0.051)
    assert paper["citation"].split(",")[0] in report

    # the verdict line is the one read from the same intervals, stated with n = 2
    e = results["effect"]["lam0.5"]
    assert (
        e["n"] == 2
        and e["verdict"]
        == verdict(
            t_interval(results["paired"]["lam0.5"]["bgknown.a"]["differences"]),
            t_interval(results["paired"]["lam0.5"]["bgknown.mix"]["differences"]),
        )["verdict"]
    )
    assert f"λ = 0.5: **{e['verdict']}** (n = 2 pretraining seeds" in report

    ap = by_heading(tables(report), "APwD")
    assert ap[0][1:] == [f"{s} R@{k}" for s in ("rain", "traffic") for k in (1, 5, 10)]
    n_gallery = 2 * TINY.apwd_eval - 1  # every other eval clip
    chance = next(r for r in ap if r[0] == "chance")
    assert num(chance[1]) == pytest.approx(100 / n_gallery, abs=0.051)
    ap_rows = {r[0]: r[1:] for r in ap[1:]}
    r1 = [
        100
        * json.loads((out / "results" / f"seed{s}" / "apwd_lam0.json").read_text())["scenes"]["rain"]["metrics"]["R@1"][
            "mean"
        ]
        for s in (0, 1)
    ]  # the stage files hold fractions; the report %
    assert mean_ci(ap_rows["λ = 0 (BYOL-A)"][0]) == pytest.approx(by_hand_interval(r1), abs=0.051)

    gen = {r[0]: r[1:] for r in by_heading(tables(report), "General-purpose")[1:]}
    diffs = [
        results["models"][f"seed{s}/lam0.5"]["general"]["mean"] - results["models"][f"seed{s}/lam0"]["general"]["mean"]
        for s in (0, 1)
    ]
    assert mean_ci(gen["Δ λ = 0.5 − λ = 0 (paired)"][0]) == pytest.approx(by_hand_interval(diffs), abs=0.051)
    for key in results["models"]:
        gen_stage = json.loads(
            (out / "results" / f"{key.split('/')[0]}" / f"general_{key.split('/')[1]}.json").read_text()
        )
        assert gen_stage["n_classes"] == 17 and gen_stage["n_test"] == 17 * TINY.general_per_label[2]


@pytest.mark.slow
def test_demo_pairs_each_seed_and_writes_weights_and_plots(demo):
    out, results = demo
    for seed in (0, 1):
        configs = {}
        for key in ("lam0", "lam0.5"):
            assert (out / "weights" / f"seed{seed}" / f"{key}.safetensors").is_file()
            m = results["models"][f"seed{seed}/{key}"]
            assert (
                m["pretrain"]["steps"] == 4 and m["pretrain"]["arch"] == "audiontt2022" and m["pretrain"]["d"] == 1088
            )
            configs[key] = json.loads(
                json.dumps(
                    __import__("yaml").safe_load((out / "runs" / f"seed{seed}" / key / "config.yaml").read_text())
                )
            )
        # the two runs of a seed differ in λ only (same seed: same data order and initialisation)
        assert configs["lam0"]["learner"].pop("lam") == 0.0 and configs["lam0.5"]["learner"].pop("lam") == 0.5
        assert configs["lam0"] == configs["lam0.5"] and configs["lam0"]["train"]["seed"] == seed
    assert results["models"]["seed0/lam0"]["pretrain"]["final_loss"]["l_diff"] is None  # λ = 0 has no difference branch
    assert results["models"]["seed0/lam0.5"]["pretrain"]["final_loss"]["l_diff"] is not None
    report = (out / "report.md").read_text()
    for png in ("loss_curves", "paired_differences", "bgknown", "apwd", "general"):
        path = out / "plots" / f"{png}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{png}.png)" in report


@pytest.mark.slow
def test_demo_resumes_only_what_is_not_done(demo, capsys):
    out, _ = demo
    state_path = out / "demo_state.json"
    state = json.loads(state_path.read_text())
    weights = {p: p.read_bytes() for p in (out / "weights").rglob("*.safetensors")}
    kept = out / "results" / "seed0" / "bgknown_lam0.json"
    kept_bytes, kept_mtime = kept.read_bytes(), kept.stat().st_mtime_ns
    del state["stages"]["eval general seed1/lam0.5"]  # as if the run had been killed during that stage
    state_path.write_text(json.dumps(state))
    run_demo(out, TINY, progress=False)
    printed = capsys.readouterr().out
    assert "eval general seed1/lam0.5 ..." in printed
    assert printed.count("skipped") == 18  # 4 pretrain + 3 builds + 11 evals
    assert kept.stat().st_mtime_ns == kept_mtime and kept.read_bytes() == kept_bytes
    assert {p: p.read_bytes() for p in (out / "weights").rglob("*.safetensors")} == weights
    assert "eval general seed1/lam0.5" in json.loads(state_path.read_text())["stages"]


def _files(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_demo_keeps_a_finished_pretraining_run_as_it_is(demo, capsys):
    out, _ = demo
    state_path = out / "demo_state.json"
    state = json.loads(state_path.read_text())
    run = out / "runs" / "seed0" / "lam0.5"
    before = _files(run)
    assert run / "summary.json" in before and run / "checkpoints" / "last.pt" in before
    del state["stages"]["pretrain seed0/lam0.5"]  # as if killed after the run finished, before the stage was recorded
    state_path.write_text(json.dumps(state))
    run_demo(out, TINY, progress=False)
    printed = capsys.readouterr().out
    assert "pretrain seed0/lam0.5 ..." in printed and "is a finished pretraining run; kept as it is" in printed
    assert _files(run) == before  # not resumed for zero steps: no file rewritten
    assert "pretrain seed0/lam0.5" in json.loads(state_path.read_text())["stages"]


def test_pretraining_finished_needs_the_finished_mark_and_the_planned_steps(tmp_path):
    config = TINY.pretrain_config(0.5, "cpu")  # train.steps=4
    assert not pretraining_finished(tmp_path, config)  # no summary.json
    summary = tmp_path / "summary.json"
    summary.write_text('{"steps": 4, "final": {"step": 4')  # cut off mid-write
    assert not pretraining_finished(tmp_path, config)
    summary.write_text(json.dumps({"steps": 4, "final": {"step": 4, "loss": 0.5}}))  # "final" is a metrics row
    assert not pretraining_finished(tmp_path, config)
    summary.write_text(json.dumps({"steps": 2, "final": {}, "finished": "2026-01-01T00:00:00+00:00"}))
    assert not pretraining_finished(tmp_path, config)  # finished with another plan
    summary.write_text(json.dumps({"steps": 4, "final": {}, "finished": "2026-01-01T00:00:00+00:00"}))
    assert pretraining_finished(tmp_path, config)


def test_demo_refuses_a_folder_with_other_settings_or_foreign_content(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DemoError, match="not a demo folder"):
        run_demo(foreign, TINY, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"

    other = tmp_path / "other"
    other.mkdir()
    (other / "demo_state.json").write_text(
        json.dumps(
            {
                "settings": {
                    "budget": BUDGETS["quick"].fingerprint(),
                    "text_encoder": "hash",
                    "seed": 0,
                    "pretrain_seeds": [0],
                    "lambdas": [0.0, 0.5],
                },
                "stages": {},
            }
        )
    )
    with pytest.raises(DemoError, match="other settings.*budget 'quick'.*asked: budget 'tiny'"):
        run_demo(other, TINY, progress=False)

    old = tmp_path / "old"
    old.mkdir()
    (old / "demo_state.json").write_text(
        json.dumps({"settings": {"budget": TINY.fingerprint(), "pretrain_seed": 0}, "stages": {}})
    )
    with pytest.raises(DemoError, match="earlier format"):
        run_demo(old, TINY, progress=False)


def _state(out, text_encoder="hash", seeds=(0,), lambdas=(0.0, 0.5), corpus="embedded", bgknown_task=None):
    return _open_state(DemoRun(out, TINY, "cpu", text_encoder, False, seeds, lambdas, corpus, bgknown_task))


def test_more_seeds_or_lambdas_extend_a_demo_folder_and_keep_its_stages(tmp_path):
    first = _state(tmp_path)
    first["stages"]["pretrain seed0/lam0"] = {"wall_s": 1.0}
    (tmp_path / "demo_state.json").write_text(json.dumps(first))
    more = _state(tmp_path, seeds=(0, 1, 2), lambdas=(0.0, 0.2, 0.5))
    assert more["stages"] == {"pretrain seed0/lam0": {"wall_s": 1.0}}
    assert more["settings"]["pretrain_seeds"] == [0, 1, 2] and more["settings"]["lambdas"] == [0.0, 0.2, 0.5]
    with pytest.raises(DemoError, match="other settings"):
        _state(tmp_path, text_encoder="minilm")
    with pytest.raises(DemoError, match="other settings.*corpus 'embedded'.*asked.*corpus '/data/mine'"):
        _state(tmp_path, corpus="/data/mine")
    with pytest.raises(DemoError, match="other settings.*BgKnown task synthetic.*asked.*BgKnown task /tasks/real"):
        _state(tmp_path, bgknown_task="/tasks/real")


def test_a_demo_folder_from_before_corpus_and_task_options_reads_as_embedded_and_synthetic(tmp_path):
    old = _state(tmp_path)
    del old["settings"]["corpus"], old["settings"]["bgknown_task"]
    (tmp_path / "demo_state.json").write_text(json.dumps(old))
    assert _state(tmp_path)["settings"]["corpus"] == "embedded"
    with pytest.raises(DemoError, match="other settings"):
        _state(tmp_path, corpus="/data/mine")


def test_models_of_one_seed_differ_in_lambda_only_and_start_from_the_same_weights():
    from hear_diffbyola.train import build_step_parts

    c0, c5 = TINY.pretrain_config(0.0, "cpu", seed=3), TINY.pretrain_config(0.5, "cpu", seed=3)
    d0, d5 = c0.to_dict(), c5.to_dict()
    assert d0["learner"].pop("lam") == 0.0 and d5["learner"].pop("lam") == 0.5 and d0 == d5
    assert (c0.train.seed, c0.encoder.arch, c0.encoder.d, c0.encoder.hidden) == (3, "audiontt2022", 1088, 32)
    w0 = build_step_parts(c0, (0.0, 1.0), torch.device("cpu")).learner.state_dict()
    w5 = build_step_parts(c5, (0.0, 1.0), torch.device("cpu")).learner.state_dict()
    assert w0.keys() == w5.keys() and all(torch.equal(w0[k], w5[k]) for k in w0)
    other = build_step_parts(
        TINY.pretrain_config(0.0, "cpu", seed=4), (0.0, 1.0), torch.device("cpu")
    ).learner.state_dict()
    assert not all(torch.equal(w0[k], other[k]) for k in w0 if w0[k].is_floating_point())


def test_quick10_is_quick_over_ten_pretraining_seeds():
    q, q10 = BUDGETS["quick"].to_dict(), BUDGETS["quick10"].to_dict()
    assert q10.pop("name") == "quick10" and q.pop("name") == "quick"
    assert q10.pop("pretrain_seeds") == tuple(range(10)) and q.pop("pretrain_seeds") == (0,)
    assert q10 == q  # same models, tasks and evaluation: only the number of pretraining seeds differs


def test_budgets_pretrain_byol_a_v2():
    for name, budget in BUDGETS.items():
        c = budget.pretrain_config(0.5, "cpu")
        assert c.encoder.arch == "audiontt2022" and c.encoder.d > 1024, name
    full = BUDGETS["full"].pretrain_config(0.0, "cpu")
    assert (full.encoder.d, full.encoder.hidden) == (3072, 2048)  # the v2 default shape
    assert len(BUDGETS["full"].pretrain_seeds) >= 3 and len(BUDGETS["decide"].pretrain_seeds) >= 3


def test_cli_demo_reports_bad_paper_numbers_lambdas_and_seeds(tmp_path, capsys):
    bad = tmp_path / "paper.json"
    bad.write_text("{not json")
    assert main(["demo", "--out", str(tmp_path / "d"), "--paper-numbers", str(bad), "--no-progress"]) == 2
    assert "paper.json: cannot read it as JSON" in capsys.readouterr().err
    bad.write_text(
        json.dumps(
            {
                "format": "hear-diffbyola/paper-numbers/1",
                "citation": "x",
                "setup": "y",
                "lambdas": {"0": {"bgknown": {"(a)": "high"}}},
            }
        )
    )
    assert main(["demo", "--out", str(tmp_path / "d"), "--paper-numbers", str(bad), "--no-progress"]) == 2
    assert "'bgknown' must be one of" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--lambdas", "0.5,0", "--no-progress"]) == 2
    assert "--lambdas must start with 0" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--lambdas", "0,0.5,0.5", "--no-progress"]) == 2
    assert "distinct values in (0, 1]" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--pretrain-seeds", "0,x", "--no-progress"]) == 2
    assert "--pretrain-seeds: '0,x' is not a comma-separated list" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--pretrain-seeds", "1,1", "--no-progress"]) == 2
    assert "distinct non-negative" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert check_lambdas([0, 0.2, 0.5, 0.8]) == (0.0, 0.2, 0.5, 0.8)


def test_shipped_paper_numbers_cover_the_papers_sweep():
    paper = read_paper_numbers()
    assert sorted(paper["lambdas"], key=float) == ["0", "0.1", "0.2", "0.5", "0.8"]
    for tables_ in paper["lambdas"].values():
        assert set(tables_["bgknown"]) == {"Mix", "(a)", "(b)", "(c)"} and set(tables_["general"]) == {"accuracy"}
        assert set(tables_["apwd"]) == {f"{s} R@{k}" for s in ("rain", "traffic") for k in (1, 5, 10)}
    assert "Takeuchi" in paper["citation"] and "AudioSet" in paper["setup"]


def test_t_interval_by_hand():
    i = t_interval([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sd sqrt(5/3) = 1.2910, t(0.975, 3) = 3.1824
    assert i.mean == 2.5 and i.sd == pytest.approx(math.sqrt(5 / 3)) and i.n == 4
    assert (i.lo, i.hi) == pytest.approx((2.5 - 3.182446 * 1.290994 / 2, 2.5 + 3.182446 * 1.290994 / 2), abs=1e-5)
    assert (i.lo, i.hi) == pytest.approx((0.445737, 4.554263), abs=1e-5)
    j = t_interval([-2.0, 4.0])  # mean 1, sd 4.2426, t(0.975, 1) = 12.7062: half width 38.12
    assert (j.lo, j.hi) == pytest.approx((1 - 12.706205 * 3.0, 1 + 12.706205 * 3.0), abs=1e-4)
    one = t_interval([5.0])
    assert one.mean == 5.0 and one.lo is None and one.hi is None and one.sd is None


def test_verdict_reads_the_a_and_mix_intervals():
    gain, loss, around = t_interval([3.0, 4.0, 5.0]), t_interval([-5.0, -4.0, -3.0]), t_interval([-1.0, 0.5, 1.5])
    assert verdict(gain, around)["verdict"] == "shown"
    assert verdict(gain, gain)["verdict"] == "shown"  # Mix rising is no loss
    assert verdict(gain, loss) == {**verdict(gain, loss), "verdict": "not shown"}
    assert "Mix interval lies below 0" in verdict(gain, loss)["reason"]
    assert verdict(loss, around)["verdict"] == "reversed"
    assert verdict(around, around)["verdict"] == "not shown" and "includes 0" in verdict(around, around)["reason"]
    single = verdict(t_interval([9.0]), t_interval([0.0]))
    assert single["verdict"] == "not shown" and single["n"] == 1 and "no interval" in single["reason"]
    assert verdict(gain, around)["n"] == 3


def _model(seed: int, lam: float, bg: dict[str, float], general: float = 50.0) -> dict:
    """A results.json model entry with just what the analysis reads; bg: {condition: eval-seed mean}."""
    return {
        "lam": lam,
        "pretrain_seed": seed,
        "title": f"λ = {lam:g}",
        "bgknown": {c: {"mean": v, "std": 0.5} for c, v in bg.items()},
        "apwd": {s: {f"R@{k}": {"mean": 10.0 * k + seed, "std": 0.0} for k in (1, 5, 10)} for s in ("rain", "traffic")},
        "general": {"mean": general, "std": 0.0},
    }


def _models(a_gains: list[float], mix_gains: list[float], seeds: list[int]) -> dict:
    models = {}
    for seed, ga, gm in zip(seeds, a_gains, mix_gains):
        base = {"mix": 40.0 + seed, "a": 50.0 + 2 * seed, "b": 45.0, "c": 42.0}
        models[f"seed{seed}/lam0"] = _model(seed, 0.0, base, 60.0 + seed)
        models[f"seed{seed}/lam0.5"] = _model(
            seed, 0.5, {**base, "mix": base["mix"] + gm, "a": base["a"] + ga}, 59.0 + seed
        )
    return models


def test_paired_analysis_by_hand():
    # the seed moves both models alike (+2 per seed on (a)); the pairs remove that
    r = analyse(_models([3.0, 4.0, 5.0], [-1.0, 0.5, 1.5], [0, 1, 2]), [0.0, 0.5], ["rain", "traffic"])
    base_a = r["per_lambda"]["lam0"]["bgknown.a"]
    assert base_a["values"] == [50.0, 52.0, 54.0] and base_a["mean"] == 52.0 and base_a["n"] == 3
    assert base_a["ci"] == pytest.approx(
        [52.0 - 4.302653 * 2.0 / math.sqrt(3), 52.0 + 4.302653 * 2.0 / math.sqrt(3)], abs=1e-5
    )
    d = r["paired"]["lam0.5"]["bgknown.a"]
    assert d["differences"] == [3.0, 4.0, 5.0] and d["mean"] == 4.0
    assert d["ci"] == pytest.approx([4.0 - 4.302653 / math.sqrt(3), 4.0 + 4.302653 / math.sqrt(3)], abs=1e-5)  # sd 1
    assert r["paired"]["lam0.5"]["general.accuracy"]["differences"] == [-1.0, -1.0, -1.0]
    assert r["paired"]["lam0.5"]["apwd.rain.R@5"]["differences"] == [0.0, 0.0, 0.0]
    e = r["effect"]["lam0.5"]
    assert e["verdict"] == "shown" and e["n"] == 3 and e["a"]["mean"] == 4.0
    # unpaired, the same numbers could not show it: the λ = 0.5 and λ = 0 (a) intervals overlap
    other_a = r["per_lambda"]["lam0.5"]["bgknown.a"]
    assert other_a["ci"][0] < base_a["ci"][1]
    with pytest.raises(DemoError, match="both models at every pretraining seed"):
        models = _models([3.0, 4.0], [0.0, 0.0], [0, 1])
        del models["seed1/lam0.5"]
        analyse(models, [0.0, 0.5], ["rain", "traffic"])


def _results(seeds: list[int], a_gains: list[float], budget: str = "full") -> dict:
    models = _models(a_gains, [0.0] * len(seeds), seeds)
    tasks = {"bgknown": {"n_classes": 12}, "apwd": {"rain": {}, "traffic": {}}, "general": {}}
    return {
        "format": FORMAT,
        "budget": {"name": budget},
        "text_encoder": "hash",
        "seed": 0,
        "tasks": tasks,
        "pretrain_seeds": seeds,
        "lambdas": [0.0, 0.5],
        "models": models,
        **analyse(models, [0.0, 0.5], ["rain", "traffic"]),
    }


def test_demo_seeds_combines_demos_by_pretraining_seed(tmp_path, capsys):
    r01, r2 = _results([0, 1], [3.0, 5.0]), _results([2], [4.0])
    combined = combine_results([r2, r01])
    assert combined["pretrain_seeds"] == [0, 1, 2] and combined["combined_from"] == 2
    assert combined["paired"]["lam0.5"]["bgknown.a"]["differences"] == [3.0, 5.0, 4.0]
    assert combined["effect"]["lam0.5"]["verdict"] == "shown" and combined["effect"]["lam0.5"]["n"] == 3
    text = seeds_table([r01, r2])
    assert "(n = 3; from 2 demos)" in text and "λ = 0.5: effect shown (n = 3;" in text
    lo, hi = 4.0 - 4.302653 / math.sqrt(3), 4.0 + 4.302653 / math.sqrt(3)
    assert f"(a) +4.0 [+{lo:.1f}, +{hi:.1f}]" in text
    with pytest.raises(DemoError, match="give each pretraining seed once"):
        combine_results([r01, r01])
    with pytest.raises(DemoError, match="differ in more than the pretraining seeds"):
        combine_results([r01, _results([2], [4.0], budget="quick")])
    with pytest.raises(DemoError, match="earlier format"):
        combine_results([r01, {**r2, "format": "hear-diffbyola/demo-results/1"}])
    for i, r in enumerate((r01, r2)):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "results.json").write_text(json.dumps(r))
    assert main(["demo-seeds", str(tmp_path / "d0"), str(tmp_path / "d1" / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "effect shown" in out and "paper: λ = 0.8" in out  # the paper's sweep beside ours by default


def test_scene_task_sizes_per_split_and_read_back(tmp_path):
    task = heartask.write_hear_task(
        tmp_path / "t",
        labels=["rain", "bell", "siren"],
        n_per_label={"train": 3, "test": 1},
        splits=("train", "test"),
        duration=0.5,
        seed=1,
    )
    vocab, splits = heartask.read_scene_task(task)
    assert vocab == ["rain", "bell", "siren"]
    assert [len(splits["train"]), len(splits["test"])] == [9, 3]
    assert sorted(lab for _, lab in splits["train"]) == sorted(["rain", "bell", "siren"] * 3)
    assert all(p.is_file() and p.parent == task / "16000" / "train" for p, _ in splits["train"])
    with pytest.raises(ValueError, match="counts for"):
        heartask.write_hear_task(tmp_path / "u", n_per_label={"train": 3}, splits=("train", "test"))
    event = heartask.write_hear_task(tmp_path / "e", kind="event", labels=["bell"], n_per_label=1, duration=1.0)
    with pytest.raises(heartask.HeartaskError, match="multiclass scene task is needed"):
        heartask.read_scene_task(event)


def test_scene_task_linear_eval_separates_what_the_embedder_separates(tmp_path):
    """An embedder that reads the class off the clip (here: its loudness) makes the task trivially learnable;
    one that outputs noise stays near chance. Checks the wiring: labels follow their clips into the protocol."""
    task = tmp_path / "t"
    labels = ["bell", "siren", "knock"]
    heartask.write_hear_task(
        task, labels=labels, n_per_label={"train": 12, "valid": 2, "test": 6}, duration=0.25, seed=2
    )
    _, splits = heartask.read_scene_task(task)
    truth = {p.name + p.parent.name: labels.index(lab) for items in splits.values() for p, lab in items}
    from hear_diffbyola.audio import write_audio

    for items in splits.values():  # rewrite each clip as a constant whose level encodes its class
        for p, lab in items:
            write_audio(p, np.full(4000, 0.1 * (1 + labels.index(lab)), np.float32), 16000)

    def level(waves: torch.Tensor) -> torch.Tensor:  # one-hot of the level: 0.1 -> class 0, 0.2 -> 1, 0.3 -> 2
        return torch.nn.functional.one_hot((waves.mean(dim=1) * 10).round().long() - 1, 3).float()

    oracle = Embedder(level, name="level", sample_rate=16000, identity="level")
    result = evaluate_scene_task(
        task, oracle, seeds=(0, 1), config=LinearEvalConfig(lr=0.05, max_epochs=200, patience=200), progress=False
    )
    assert result["accuracy"]["mean"] == 100.0 and result["n_train"] == 3 * 14 and result["n_test"] == 18
    assert len(truth) == 3 * 20
    rng = np.random.default_rng(0)
    noise = Embedder(
        lambda w: rng.normal(size=(w.shape[0], 8)).astype(np.float32), name="noise", sample_rate=16000, identity="noise"
    )
    assert evaluate_scene_task(task, noise, seeds=(0,), progress=False)["accuracy"]["mean"] < 70.0


def test_report_and_plots_of_a_sweep_with_one_seed(tmp_path):
    """n = 1 and three λ: every λ gets its row and its Δ row, no interval is printed, the verdict says why."""
    from hear_diffbyola.tasks.demo.report import render_report, write_plots

    models = {}
    for lam, gain in ((0.0, 0.0), (0.2, 1.5), (0.8, -2.0)):
        m = _model(0, lam, {"mix": 40.0, "a": 50.0 + gain, "b": 45.0, "c": 42.0})
        key = f"seed0/lam{lam:g}"
        m.update(
            run_dir=f"runs/{key}",
            pretrain={
                "steps": 4,
                "batch_size": 8,
                "d": 1088,
                "arch": "audiontt2022",
                "wall_time_s": 1.0,
                "final_loss": {"l_byol": 0.5, "l_diff": None},
            },
        )
        (tmp_path / "runs" / key).mkdir(parents=True)
        (tmp_path / "runs" / key / "metrics.csv").write_text("step,l_byol,l_diff,loss\n1,0.9,,0.9\n2,0.8,0.7,0.75\n")
        models[key] = m
    tasks = {
        "bgknown": {"n_classes": 12, "n_train": 24, "n_test": 12, "chance": 8.3},
        "apwd": {
            s: {"n_pairs": {"dev": 8, "eval": 6}, "chance": {f"R@{k}": 1.0 for k in (1, 5, 10)}}
            for s in ("rain", "traffic")
        },
        "general": {"n_classes": 17, "n_train": 34, "n_test": 17, "chance": 5.9},
    }
    results = {
        "budget": {"name": "tiny", "seeds": 2},
        "pretrain_seeds": [0],
        "lambdas": [0.0, 0.2, 0.8],
        "tasks": tasks,
        "models": models,
        "hardware": "cpu",
        "text_encoder": "hash",
        "git_commit": "abc",
        "stage_commits": {"x": "abc"},
        "wall_time_s": {"stages": {"x": 1.0}, "stages_total": 1.0},
        **analyse(models, [0.0, 0.2, 0.8], ["rain", "traffic"]),
    }
    plots = write_plots(tmp_path, results)
    assert set(plots) >= {"loss curves", "paired differences"}
    report = render_report(results, plots, read_paper_numbers())
    rows = {r[0]: r[1:] for r in by_heading(tables(report), "BgKnown")[1:]}
    assert rows["Δ λ = 0.2 − λ = 0 (paired)"][1] == "+1.5" and rows["Δ λ = 0.8 − λ = 0 (paired)"][1] == "−2.0"
    assert rows["λ = 0.8 (DiffBYOL-A)"][1] == "48.0"  # n = 1: no interval
    assert num(rows["paper: Δ λ = 0.8 − λ = 0"][1]) == pytest.approx(59.96 - 55.29, abs=0.051)
    assert "paper: Δ λ = 0.2 − λ = 0" in rows
    for lam in ("0.2", "0.8"):
        assert f"λ = {lam}: **not shown** (n = 1 pretraining seed; no interval with fewer than 2" in report


def test_cli_demo_budget_defaults_to_decide_on_a_named_gpu(monkeypatch, tmp_path, capsys):
    from hear_diffbyola.tasks.demo import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "run_demo", lambda out, budget, **kw: calls.append((out, budget, kw)))
    assert main(["demo", "--device", "cuda", "--no-progress"]) == 0
    assert main(["demo", "--device", "cuda:1", "--budget", "quick", "--no-progress"]) == 0
    assert main(["demo", "--pretrain-seeds", "0,1,2", "--lambdas", "0,0.2,0.5,0.8", "--no-progress"]) == 0
    assert [(c[0], c[1]) for c in calls] == [
        ("runs/demo-decide", "decide"),
        ("runs/demo-quick", "quick"),
        ("runs/demo-quick", "quick"),
    ]
    assert calls[0][2]["pretrain_seeds"] is None  # the budget's own seeds (decide: 0-7)
    assert calls[2][2]["pretrain_seeds"] == [0, 1, 2] and calls[2][2]["lambdas"] == [0.0, 0.2, 0.5, 0.8]
    assert "budget 'decide' (the default for --device cuda" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_on_a_users_corpus_and_a_built_bgknown_task(tmp_path, capsys):
    import soundfile as sf
    from test_folder_source import PARAMS, make_folders

    from hear_diffbyola.tasks.bgknown.folder_source import build_from_folders
    from hear_diffbyola.tasks.bgknown.manifest import load_task

    fg, bg = make_folders(tmp_path / "sounds")
    task_dir = build_from_folders(fg, bg, tmp_path / "task", seed=3, params=PARAMS, workers=0, progress=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(1)
    for i in range(10):  # TINY's batch is 8
        sf.write(corpus / f"c{i}.wav", (0.1 * rng.normal(size=16000 + 2000 * i)).astype(np.float32), 16000)
    one_seed = DemoBudget(**{**TINY.to_dict(), "pretrain_seeds": (0,)})
    out = tmp_path / "out"

    with pytest.raises(DemoError, match="--corpus .*nowhere: no such folder"):
        run_demo(out, one_seed, corpus=str(tmp_path / "nowhere"), progress=False)
    assert not out.exists()  # refused before anything is written

    results = run_demo(out, one_seed, corpus=str(corpus), bgknown_task=task_dir, progress=False)
    assert results["corpus"] == str(corpus.resolve()) and results["bgknown_task"] == str(task_dir.resolve())
    for key in ("lam0", "lam0.5"):
        config = __import__("yaml").safe_load((out / "runs" / "seed0" / key / "config.yaml").read_text())
        assert config["train"]["corpus"] == str(corpus.resolve())
    assert "corpus: 10 audio files" in capsys.readouterr().out  # the trainer read the user's files
    # the given task is scored as it is: not rebuilt, its build and sizes in the results
    assert not (out / "tasks" / "bgknown").exists()
    task = load_task(task_dir)
    facts = results["tasks"]["bgknown"]
    assert facts["build_id"] == task.build_id and facts["n_classes"] == 3
    n_fit = len(task.items["train"]) + len(task.items["valid"])  # the linear protocol holds out its own validation
    assert facts["n_test"] == len(task.items["test"]) and facts["n_train"] == n_fit
    assert (
        "check bgknown" in results["wall_time_s"]["stages"] and "build bgknown" not in results["wall_time_s"]["stages"]
    )
    report = (out / "report.md").read_text()
    assert f"pretrained on the corpus `{corpus.resolve()}`" in report
    assert f"## BgKnown (task {task_dir.resolve()}; " in report
    # the same folder with the embedded corpus is another demo: refused, nothing mixed
    with pytest.raises(DemoError, match="other settings"):
        run_demo(out, one_seed, bgknown_task=task_dir, progress=False)
