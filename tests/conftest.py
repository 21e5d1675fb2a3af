import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The compiled first block (hear_diffbyola/fused.py) compiles once per input shape, 5-25 s each; the suite
# runs dozens of shapes, so it runs the uncompiled path and tests/test_fused.py switches compiling on.
# Set before the package is imported, and inherited by the CLI subprocesses.
os.environ.setdefault("HEAR_DIFFBYOLA_COMPILE", "0")
# The workers' fc picks its BLAS by timing (hear_diffbyola/blas.py); the suite pins torch's so results do
# not depend on the machine's timings, and tests/test_blas.py sets each mode itself.
os.environ.setdefault("HEAR_DIFFBYOLA_BLAS", "torch")

import torch  # noqa: E402

# Tests run on 2 cores; keep torch from oversubscribing when pytest-xdist is not used.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, source copy): the package built once per session from a copy of the checkout, so the
    build's own build/ and egg-info do not touch the working tree. The packaging tests share it."""
    repo = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    skip = (".git", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks")
    shutil.copytree(repo, src, ignore=shutil.ignore_patterns(*skip))
    (src / "weights").mkdir(exist_ok=True)
    for name in ("diffbyola_lam0.5.safetensors", "README.md"):  # stand-ins until the shipped files exist:
        if not (src / "weights" / name).is_file():  # the tests are about the packaging, not the weights
            (src / "weights" / name).write_bytes(b"stand-in")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(root / "dist"),
        str(src),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (root / "dist").glob("hear_diffbyola-*.whl")
    return wheel, src
