"""The benchmark that fills the GPU rows runs end to end (on CPU here), so it is ready when a GPU is lent."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pretrain_loader_runs_the_loop_from_files_and_reports_both_settings():
    args = ["--files", "8", "--batch-size", "4", "--rounds", "1", "--steps", "1", "--warmup", "0", "--workers", "0"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pretrain_loader.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = re.findall(r"\| lambda = (0\.5|0) \| ([\d.]+) \| (\d+) ms \| (\d+) MiB \|", out)
    assert [r[0] for r in rows] == ["0", "0.5"]
    for _, clips_per_s, step_ms, _ in rows:  # clips/s is the batch over the step time it prints (both rounded)
        assert float(clips_per_s) == pytest.approx(4 / (int(step_ms) / 1000), abs=0.05 + 0.01 * float(clips_per_s))
    assert "B=4" in out and "8 noise wav files" in out
    assert re.search(r"HEAR embeddings on cpu: scene [\d.]+ audio-s/s, timestamps [\d.]+", out)


def test_official_augment_runs_the_checkouts_classes_and_skips_without_a_checkout(tmp_path):
    # stand-ins for the checkout's three classes, importing as the real module does (from .common), and
    # recording that they ran: the script must supply byol_a2.common without torchaudio
    pkg = tmp_path / "byol-a" / "v2" / "byol_a2"
    pkg.mkdir(parents=True)
    (pkg / "augmentations.py").write_text(
        "from .common import (torch, nn, F, torchaudio, AF, AT, np, random, logging)\n"
        "assert torchaudio is None\n"
        "class MixupBYOLA(nn.Module):\n"
        "    def __init__(self, ratio=0.2, n_memory=2048, log_mixup_exp=True):\n"
        "        super().__init__(); self.ratio, self.n = ratio, n_memory\n"
        "    def forward(self, x): return x\n"
        "class RandomResizeCrop(nn.Module):\n"
        "    def __init__(self, virtual_crop_scale, freq_scale, time_scale):\n"
        "        super().__init__(); self.scales = (virtual_crop_scale, freq_scale, time_scale)\n"
        "    def forward(self, x): return F.interpolate(x[None], size=x.shape[-2:], mode='bicubic')[0]\n"
        "class RandomLinearFader(nn.Module):\n"
        "    def __init__(self, gain=1.0):\n"
        "        super().__init__(); self.gain = gain\n"
        "    def forward(self, x): return x + torch.linspace(-self.gain, self.gain, x.shape[-1])\n"
    )
    script = str(ROOT / "bench" / "official_augment.py")
    args = ["--official", str(tmp_path / "byol-a"), "--batch-size", "4", "--workers", "0", "--batches", "2"]
    out = subprocess.run(
        [sys.executable, script, *args, "--rounds", "1"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    rows = re.findall(
        r"\| (official per-sample, 0 DataLoader workers|ours batched on cpu) \| ([\d.]+) \| ([\d.]+)x \|", out
    )
    assert [r[0] for r in rows] == ["official per-sample, 0 DataLoader workers", "ours batched on cpu"]
    (_, official, _), (_, ours, ratio) = rows
    assert float(ratio) == pytest.approx(float(ours) / float(official), rel=0.05, abs=0.01)
    skipped = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60, check=True).stdout
    assert skipped.startswith("skipped: give --official")


def test_gpu_script_parses_and_every_test_it_names_exists():
    script = ROOT / "bench" / "gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)  # syntax only: the script itself needs a GPU
    ids = re.findall(r"(tests/test_\w+\.py(?:::[\w\[\]]+)?)", script.read_text())
    assert len(ids) >= 4 and "tests/test_cuda.py" in ids
    # a renamed test would leave the GPU call with "not found"; collecting the ids fails the same way here
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    for node in ids:
        assert any(line == node or line.startswith(node + "::") for line in collected), node
