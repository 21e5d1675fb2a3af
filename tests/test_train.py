import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hear_diffbyola import train as train_mod
from hear_diffbyola.cli import main
from hear_diffbyola.config import PretrainConfig, apply_overrides
from hear_diffbyola.learner import DiffBYOLA
from hear_diffbyola.train import TrainingError, load_checkpoint, pretrain, state_digest
from hear_diffbyola.weights import export_run, load_pretrained, read_safetensors

# A tiny but complete configuration: the real code paths, small enough for 2 CPU cores.
TINY = [
    "encoder.d=1088",
    "encoder.hidden=32",
    "learner.proj_hidden=64",
    "learner.proj_dim=32",
    "augment.mixup_memory=64",
    "train.embedded_size=48",
    "train.embedded_duration=1.0",
    "train.batch_size=8",
    "train.norm_clips=16",
    "train.num_workers=0",
    "train.log_every=1",
]
TINY_ARGS = [a for kv in TINY for a in ("--set", kv)]


def tiny_config(*extra: str) -> PretrainConfig:
    return PretrainConfig.from_dict(apply_overrides({}, TINY + list(extra)))


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_short_run_on_embedded_corpus_learns_and_writes_its_outputs(tmp_path):
    run = tmp_path / "run"
    summary = pretrain(
        tiny_config("train.steps=30", "train.checkpoint_every=10", "learner.lam=0.5"), run, progress=False
    )
    rows = read_metrics(run)
    assert list(rows[0]) == ["step", "l_byol", "l_diff", "loss", "lr", "clips_per_s"]
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    first = sum(float(r["loss"]) for r in rows[:5]) / 5
    last = sum(float(r["loss"]) for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    for r in rows:
        assert float(r["loss"]) == pytest.approx(0.5 * float(r["l_byol"]) + 0.5 * float(r["l_diff"]), rel=1e-4)
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        summary["steps"] == 30
        and json.loads((run / "summary.json").read_text())["rank_digests"][0] == summary["rank_digests"][0]
    )
    assert PretrainConfig.from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text())).learner.lam == 0.5

    # export -> weights file -> loader: same encoder tensors, header carries the config
    weights = tmp_path / "w.safetensors"
    header = export_run(run, weights)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    tensors, header2 = read_safetensors(weights)
    assert header2 == json.loads(json.dumps(header))
    for k, v in tensors.items():
        assert torch.equal(v, ckpt["model"]["encoder." + k])
    assert header["lam"] == 0.5 and header["encoder"] == {"arch": "audiontt2022", "n_mels": 64, "d": 1088, "hidden": 32}
    assert header["norm"]["mean"] == summary["norm"]["mean"] and header["provenance"]["steps"] == 30
    assert oct(weights.stat().st_mode & 0o777) != oct(0o600)
    model = load_pretrained(weights)
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        lm = model.frontend.logmel(wave)
        x = ((lm - header["norm"]["mean"]) / header["norm"]["std"]).unsqueeze(1)
        torch.testing.assert_close(model(wave), model.encoder(x))


def test_lambda_zero_run_logs_no_difference_loss(tmp_path):
    pretrain(tiny_config("train.steps=2", "learner.lam=0"), tmp_path / "r", progress=False)
    assert all(r["l_diff"] == "" for r in read_metrics(tmp_path / "r"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    class Exploding(DiffBYOLA):
        calls = 0

        def forward(self, *a, **k):
            out = super().forward(*a, **k)
            Exploding.calls += 1
            if Exploding.calls >= 5:
                out["loss"] = out["loss"] * float("nan")
                out["l_byol"] = out["l_byol"] * float("nan")
            return out

    monkeypatch.setattr(train_mod, "DiffBYOLA", Exploding)
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"loss became nan .*by step 5.*last good checkpoint .* is intact"):
        pretrain(tiny_config("train.steps=10", "train.checkpoint_every=2"), run, progress=False)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lam", "1.5"], "learner.lam"),
        (["--set", "train.batch_size=64"], "larger than the corpus"),
        (["--set", "learner.lambda=0.2"], "unknown key learner.lambda"),
        (["--set", "trainer.lr=1"], "unknown section 'trainer'"),
        (["--corpus", "/nonexistent/folder"], "does not exist"),
    ],
)
def test_bad_settings_give_errors_that_say_what_to_change(tmp_path, capsys, args, message):
    code = main(["pretrain", "--out", str(tmp_path / "x"), "--steps", "1", "--no-progress", *TINY_ARGS, *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_existing_run_needs_resume_and_resume_keeps_the_config(tmp_path, capsys):
    run = str(tmp_path / "r")
    assert main(["pretrain", "--out", run, "--steps", "2", "--no-progress", *TINY_ARGS]) == 0
    assert main(["pretrain", "--out", run, "--steps", "2", "--no-progress", *TINY_ARGS]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (
        main(["pretrain", "--out", run, "--steps", "3", "--lam", "0.2", "--resume", "--no-progress", *TINY_ARGS]) == 2
    )
    assert "learner.lam: checkpoint 0.5, now 0.2" in capsys.readouterr().err
    assert main(["pretrain", "--out", run, "--steps", "3", "--resume", "--no-progress", *TINY_ARGS]) == 0
    assert [int(r["step"]) for r in read_metrics(Path(run))] == [1, 2, 3]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hear_diffbyola", "pretrain", "--no-progress", *TINY_ARGS, *args]


@pytest.mark.slow
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
)
def test_sigkill_then_resume_ends_with_exactly_the_uninterrupted_weights(tmp_path, device):
    common = ["--steps", "14", "--checkpoint-every", "3", "--set", "train.num_workers=2", "--set", "train.log_every=2"]
    common += ["--device", device]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli("--out", str(ref), *common), check=True, env=env, capture_output=True)
    ref_digest = json.loads((ref / "summary.json").read_text())["rank_digests"][0]

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli("--out", str(run), *common), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and load_checkpoint(ckpt)["step"] >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 6 <= killed_at < 14, "the run was not interrupted mid-way"
    assert not (run / "summary.json").exists()
    subprocess.run(_cli("--out", str(run), *common, "--resume"), check=True, env=env, capture_output=True)
    assert json.loads((run / "summary.json").read_text())["rank_digests"][0] == ref_digest
    # metrics of the resumed run line up with the reference (no duplicated or missing rows)
    assert [r["step"] for r in read_metrics(run)] == [r["step"] for r in read_metrics(ref)]
    assert [r["loss"] for r in read_metrics(run)] == [r["loss"] for r in read_metrics(ref)]


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "hear_diffbyola",
        "pretrain",
        "--no-progress",
        *TINY_ARGS,
        "--out",
        str(run),
        "--steps",
        "4",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["rank_digests"]) == 2
    assert summary["rank_digests"][0] == summary["rank_digests"][1]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert len(ckpt["rank_states"]) == 2 and ckpt["step"] == 4
    learner = DiffBYOLA(
        __import__("hear_diffbyola.encoder", fromlist=["x"]).build_encoder(tiny_config().encoder), tiny_config().learner
    )
    learner.load_state_dict(ckpt["model"])
    assert state_digest(learner) == summary["rank_digests"][0]
