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
