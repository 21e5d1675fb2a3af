"""`hear-diffbyola demo`: the whole pipeline at a tiny budget, its report read back against its JSON,
resuming, the effect check, and the HEAR scene-task pieces it is built from."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from hear_diffbyola.cli import main
from hear_diffbyola.tasks import heartask
from hear_diffbyola.tasks.demo import BUDGETS, DemoBudget, DemoError, paper_effect, run_demo, seeds_table
from hear_diffbyola.tasks.demo.pipeline import pretraining_finished
from hear_diffbyola.tasks.embedders import Embedder
from hear_diffbyola.tasks.linear_eval import LinearEvalConfig
from hear_diffbyola.tasks.scene_task import evaluate_scene_task

TINY_PRETRAIN = ("encoder.arch=audiontt2020", "encoder.d=64", "learner.proj_hidden=64", "learner.proj_dim=32",
                 "augment.mixup_memory=64", "train.embedded_size=48", "train.embedded_duration=1.0", "train.batch_size=8", "train.norm_clips=16",
                 "train.num_workers=0", "train.log_every=1", "train.steps=4", "train.checkpoint_every=2")
TINY = DemoBudget(name="tiny", pretrain=TINY_PRETRAIN, bgknown_train_per_class=2, bgknown_test_per_class=1,
                  bgknown_clip_seconds=1.0, apwd_dev=8, apwd_eval=6, apwd_epochs=3, apwd_patience=2,
                  general_per_label=(2, 1, 1), general_seconds=1.0, seeds=2, linear_max_epochs=5, linear_patience=2)
CELL = re.compile(r"^(-?\d+\.\d) ± (\d+\.\d)$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    paper = out.parent / "paper.json"
    paper.write_text(json.dumps({"source": "a test file", "bgknown": {"BYOL-A": {"Mix": 71.5, "(a)": 60.25}}}))
    results = run_demo(out, TINY, progress=False, paper_numbers=paper)
    return out, results


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """{section heading: table rows (header first, rule dropped)} of a markdown document."""
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


def mean_std(cell: str) -> tuple[float, float]:
    m = CELL.match(cell)
    assert m, f"not a 'mean ± std' cell: {cell!r}"
    return float(m.group(1)), float(m.group(2))


def assert_cell(cell: str, expected: dict) -> None:
    mean, std = mean_std(cell)
    assert mean == pytest.approx(expected["mean"], abs=0.051) and std == pytest.approx(expected["std"], abs=0.051)


@pytest.mark.slow
def test_demo_report_tables_match_the_json_results(demo):
    out, results = demo
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert set(results["stage_commits"]) == set(results["wall_time_s"]["stages"]) and len(results["stage_commits"]) == 11
    t = tables((out / "report.md").read_text())
    titles = {m["title"]: m for m in results["models"].values()}
    assert len(titles) == 2

    bg = by_heading(t, "BgKnown")
    assert bg[0] == ["Model", "Mix", "(a)", "(b)", "(c)"]
    for row in bg[1:3]:
        for cell, cond in zip(row[1:], ("mix", "a", "b", "c")):
            assert_cell(cell, titles[row[0]]["bgknown"][cond])
    assert bg[3] == ["paper: BYOL-A", "71.5", "60.2", "–", "–"]  # labelled, only the columns the file gives

    ap = by_heading(t, "APwD")
    assert ap[0][1:] == [f"{s} R@{k}" for s in ("rain", "traffic") for k in (1, 5, 10)]
    for row in ap[1:3]:
        for cell, col in zip(row[1:], ap[0][1:]):
            scene, k = col.split()
            assert_cell(cell, titles[row[0]]["apwd"][scene][k])
    n_gallery = 2 * TINY.apwd_eval - 1  # every other eval clip
    assert ap[3][0] == "chance" and float(ap[3][1]) == pytest.approx(100 / n_gallery, abs=0.051)

    gen = by_heading(t, "General-purpose")
    for row in gen[1:3]:
        assert_cell(row[1], titles[row[0]]["general"])

    # the JSON summarises the per-stage result files, which hold every seed
    for key, m in results["models"].items():
        stage = json.loads((out / "results" / f"bgknown_{key}.json").read_text())
        accs = stage["results"]["a"]["accuracies"]
        assert len(accs) == TINY.seeds
        assert m["bgknown"]["a"]["mean"] == pytest.approx(np.mean(accs)) and m["bgknown"]["a"]["std"] == pytest.approx(np.std(accs))
        gen_stage = json.loads((out / "results" / f"general_{key}.json").read_text())
        assert gen_stage["n_classes"] == 17 and gen_stage["n_test"] == 17 * TINY.general_per_label[2]

    # the verdict line repeats the effect computed from the table's own numbers
    lam0, lam5 = bg[1], bg[2]
    gain = mean_std(lam5[2])[0] - mean_std(lam0[2])[0]
    verdict = re.search(r"\(a\) changes by ([+-]\d+\.\d) points", (out / "report.md").read_text())
    assert float(verdict.group(1)) == pytest.approx(gain, abs=0.11)


@pytest.mark.slow
def test_demo_writes_weights_plots_and_loss_curves_of_both_runs(demo):
    out, results = demo
    for key in ("lam0", "lam0.5"):
        assert (out / "weights" / f"{key}.safetensors").is_file()
        assert results["models"][key]["pretrain"]["steps"] == 4
    assert results["models"]["lam0"]["pretrain"]["final_loss"]["l_diff"] is None  # λ = 0 has no difference branch
    assert results["models"]["lam0.5"]["pretrain"]["final_loss"]["l_diff"] is not None
    report = (out / "report.md").read_text()
    for png in ("loss_curves", "bgknown", "apwd", "general"):
        path = out / "plots" / f"{png}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{png}.png)" in report


@pytest.mark.slow
def test_demo_resumes_only_what_is_not_done(demo, capsys):
    out, _ = demo
    state_path = out / "demo_state.json"
    state = json.loads(state_path.read_text())
    weights = {p: p.read_bytes() for p in (out / "weights").iterdir()}
    kept = out / "results" / "bgknown_lam0.json"
    kept_bytes, kept_mtime = kept.read_bytes(), kept.stat().st_mtime_ns
    del state["stages"]["eval general lam0.5"]  # as if the run had been killed during that stage
    state_path.write_text(json.dumps(state))
    run_demo(out, TINY, progress=False)
    printed = capsys.readouterr().out
    assert "eval general lam0.5 ..." in printed
    assert printed.count("skipped") == 10  # 2 pretrain + 3 builds + 5 evals
    assert kept.stat().st_mtime_ns == kept_mtime and kept.read_bytes() == kept_bytes
    assert {p: p.read_bytes() for p in (out / "weights").iterdir()} == weights
    assert "eval general lam0.5" in json.loads(state_path.read_text())["stages"]


def _files(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_demo_keeps_a_finished_pretraining_run_as_it_is(demo, capsys):
    out, _ = demo
    state_path = out / "demo_state.json"
    state = json.loads(state_path.read_text())
    run = out / "runs" / "lam0.5"
    before = _files(run)
    assert run / "summary.json" in before and run / "checkpoints" / "last.pt" in before
    del state["stages"]["pretrain lam0.5"]  # as if killed after the run finished, before the stage was recorded
    state_path.write_text(json.dumps(state))
    run_demo(out, TINY, progress=False)
    printed = capsys.readouterr().out
    assert "pretrain lam0.5 ..." in printed and "is a finished pretraining run; kept as it is" in printed
    assert _files(run) == before  # not resumed for zero steps: no file rewritten
    assert "pretrain lam0.5" in json.loads(state_path.read_text())["stages"]


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
    (other / "demo_state.json").write_text(json.dumps({"settings": {"budget": BUDGETS["quick"].fingerprint()}, "stages": {}}))
    with pytest.raises(DemoError, match="other settings"):
        run_demo(other, TINY, progress=False)


def test_pretrain_seed_changes_only_the_pretraining_and_is_part_of_the_settings(tmp_path):
    config = TINY.pretrain_config(0.5, "cpu", seed=7)
    assert (config.train.seed, config.learner.lam, config.train.device, config.encoder.d) == (7, 0.5, "cpu", 64)
    out = tmp_path / "d"
    out.mkdir()
    settings = {"budget": TINY.fingerprint(), "text_encoder": "hash", "lambdas": [0.0, 0.5], "seed": 0, "pretrain_seed": 1}
    (out / "demo_state.json").write_text(json.dumps({"settings": settings, "stages": {}}))
    with pytest.raises(DemoError, match="pretrain seed 1.*asked: .*pretrain seed 0"):
        run_demo(out, TINY, progress=False)


def test_cli_demo_reports_bad_paper_numbers_file(tmp_path, capsys):
    bad = tmp_path / "paper.json"
    bad.write_text("{not json")
    assert main(["demo", "--out", str(tmp_path / "d"), "--paper-numbers", str(bad), "--no-progress"]) == 2
    assert "paper.json: cannot read it as JSON" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_paper_effect_by_hand():
    base = {"mix": {"mean": 40.0, "std": 2.0}, "a": {"mean": 50.0, "std": 3.0}}
    better = {"mix": {"mean": 41.5, "std": 1.0}, "a": {"mean": 54.0, "std": 1.0}}
    e = paper_effect(base, better)
    assert e["a_gain"] == pytest.approx(4.0) and e["a_spread"] == 3.0 and e["a_beats_by_more_than_spread"]
    assert e["mix_change"] == pytest.approx(1.5) and e["mix_spread"] == 2.0 and e["mix_within_spread"] and e["shown"]
    within_noise = {"mix": {"mean": 40.0, "std": 1.0}, "a": {"mean": 52.5, "std": 1.0}}  # +2.5 < spread 3
    assert not paper_effect(base, within_noise)["shown"]
    mix_drops = {"mix": {"mean": 37.0, "std": 1.0}, "a": {"mean": 60.0, "std": 1.0}}  # Mix -3 > spread 2
    e = paper_effect(base, mix_drops)
    assert e["a_beats_by_more_than_spread"] and not e["mix_within_spread"] and not e["shown"]


def test_scene_task_sizes_per_split_and_read_back(tmp_path):
    task = heartask.write_hear_task(tmp_path / "t", labels=["rain", "bell", "siren"], n_per_label={"train": 3, "test": 1},
                                    splits=("train", "test"), duration=0.5, seed=1)
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
    heartask.write_hear_task(task, labels=labels, n_per_label={"train": 12, "valid": 2, "test": 6}, duration=0.25, seed=2)
    _, splits = heartask.read_scene_task(task)
    truth = {p.name + p.parent.name: labels.index(lab) for items in splits.values() for p, lab in items}
    from hear_diffbyola.audio import write_audio

    for items in splits.values():  # rewrite each clip as a constant whose level encodes its class
        for p, lab in items:
            write_audio(p, np.full(4000, 0.1 * (1 + labels.index(lab)), np.float32), 16000)

    def level(waves: torch.Tensor) -> torch.Tensor:  # one-hot of the level: 0.1 -> class 0, 0.2 -> 1, 0.3 -> 2
        return torch.nn.functional.one_hot((waves.mean(dim=1) * 10).round().long() - 1, 3).float()

    oracle = Embedder(level, name="level", sample_rate=16000, identity="level")
    result = evaluate_scene_task(task, oracle, seeds=(0, 1), config=LinearEvalConfig(lr=0.05, max_epochs=200, patience=200),
                                 progress=False)
    assert result["accuracy"]["mean"] == 100.0 and result["n_train"] == 3 * 14 and result["n_test"] == 18
    assert len(truth) == 3 * 20
    rng = np.random.default_rng(0)
    noise = Embedder(lambda w: rng.normal(size=(w.shape[0], 8)).astype(np.float32), name="noise", sample_rate=16000,
                     identity="noise")
    assert evaluate_scene_task(task, noise, seeds=(0,), progress=False)["accuracy"]["mean"] < 70.0


def _fake_results(pretrain_seed: int, bg: dict[str, dict[str, float]]) -> dict:
    """A results.json skeleton with just what seeds_table reads; bg: {model key: {condition: eval-seed mean}}."""
    return {"budget": {"name": "full"}, "text_encoder": "hash", "seed": 0, "pretrain_seed": pretrain_seed,
            "models": {k: {"title": k, "bgknown": {c: {"mean": m, "std": 0.5} for c, m in means.items()}}
                       for k, means in bg.items()}}


def test_seeds_table_pools_pretraining_seeds_by_hand(tmp_path, capsys):
    conds = ("mix", "a", "b", "c")
    r0 = _fake_results(0, {"lam0": dict(zip(conds, (50.0, 50.0, 40.0, 30.0))),
                           "lam0.5": dict(zip(conds, (49.0, 56.0, 41.0, 31.0)))})
    r1 = _fake_results(1, {"lam0": dict(zip(conds, (46.0, 48.0, 40.0, 30.0))),
                           "lam0.5": dict(zip(conds, (47.0, 54.0, 41.0, 31.0)))})
    rows = [line for line in seeds_table([r1, r0]).splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| 0", "| 0", "| 1", "| 1", "| all (2)", "| all (2)"]
    # λ = 0: Mix (50, 46) -> 48 ± 2, (a) (50, 48) -> 49 ± 1; λ = 0.5: Mix 48 ± 1, (a) 55 ± 1
    assert "| all (2) | lam0 | 48.0 ± 2.0 | 49.0 ± 1.0 |" in rows[4] and "| 48.0 ± 1.0 | 55.0 ± 1.0 |" in rows[5]
    text = seeds_table([r0, r1])
    assert "(a) changes by +6.0 points (spread 1.0) and Mix by +0.0 (spread 2.0): effect shown" in text
    with pytest.raises(DemoError, match="same pretraining seed"):
        seeds_table([r0, r0])
    other = {**r1, "text_encoder": "minilm"}
    with pytest.raises(DemoError, match="more than the pretraining seed"):
        seeds_table([r0, other])
    for i, r in enumerate((r0, r1)):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "results.json").write_text(json.dumps(r))
    assert main(["demo-seeds", str(tmp_path / "d0"), str(tmp_path / "d1" / "results.json")]) == 0
    assert "effect shown" in capsys.readouterr().out
    assert main(["demo-seeds", str(tmp_path / "d0")]) == 2
    assert "at least two demos" in capsys.readouterr().err
