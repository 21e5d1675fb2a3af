"""Installing the HEAR evaluation tools (heareval, hearvalidator) and patching heareval.

``install_eval_tools`` installs heareval 2021.1.3 and hearvalidator 2021.0.6 with ``--no-deps``: their
declared pins (numpy==1.19.2, numba==0.48, Python < 3.9) cannot install on Python 3.11, while the
modules they import install fine (pyproject extra ``hear-eval``). It then patches one line of
heareval (``patch_heareval``) so its event-task scoring runs with pytorch-lightning 1.9.5.
HEAR task folders themselves are written and read by ``hear_diffbyola.tasks.heartask``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from .errors import DiffByolaError

__all__ = ["install_eval_tools", "patch_heareval", "missing_eval_imports", "EvalToolsError"]

HEAREVAL = "heareval==2021.1.3"
HEARVALIDATOR = "hearvalidator==2021.0.6"
# hear-eval-kit issue #432: Lightning >= 1.6 made fit_loop.current_epoch read-only, so scoring an
# event task dies with KeyError/AttributeError. The replacement sets the counter it reads from.
_HEAREVAL_BUG = "trainer.fit_loop.current_epoch = grid_point.epoch"
_HEAREVAL_FIX = (
    "trainer.fit_loop.epoch_progress.current.completed = grid_point.epoch"
    "  # patched by hear-diffbyola install-eval-tools (hear-eval-kit#432)"
)
# What heareval/hearvalidator import at module level, from the `hear-eval` extra.
_EVAL_IMPORTS = (
    "tensorflow",
    "pytorch_lightning",
    "sed_eval",
    "dcase_util",
    "intervaltree",
    "slugify",
    "sklearn",
    "pandas",
    "torchinfo",
    "more_itertools",
    "click",
)


class EvalToolsError(DiffByolaError, RuntimeError):
    """Installing or patching the evaluation tools failed; the message says why and what to do."""


def _module_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin) if spec and spec.origin else None


def patch_heareval() -> str:
    """Apply the one-line event-scoring fix to the installed heareval; idempotent.

    Returns 'patched', 'already patched'; raises EvalToolsError when heareval is missing or its
    source differs from 2021.1.3.
    """
    try:
        path = _module_file("heareval.predictions.task_predictions")
    except ModuleNotFoundError:
        path = None
    if path is None:
        raise EvalToolsError("heareval is not installed; run 'hear-diffbyola install-eval-tools'")
    text = path.read_text()
    if _HEAREVAL_FIX in text:
        return "already patched"
    if text.count(_HEAREVAL_BUG) != 1:
        raise EvalToolsError(
            f"{path}: expected exactly one line '{_HEAREVAL_BUG}' ({HEAREVAL}); found "
            f"{text.count(_HEAREVAL_BUG)}: another heareval version? Reinstall {HEAREVAL}"
        )
    path.write_text(text.replace(_HEAREVAL_BUG, _HEAREVAL_FIX))
    return "patched"


def install_eval_tools(patch: bool = True) -> list[list[str]]:
    """pip-install heareval and hearvalidator (no deps) into this Python's environment, then patch heareval.

    Returns the pip commands run. Their imports come from the ``hear-eval`` extra:
    ``pip install "hear-diffbyola[hear-eval]"``.
    """
    commands = [
        [sys.executable, "-m", "pip", "install", "--no-deps", HEAREVAL],
        # 2021.0.6 declares Python < 3.9 but is pure Python and runs on 3.11; pip alone would pick 2021.0.2.
        [sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-requires-python", HEARVALIDATOR],
    ]
    for cmd in commands:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise EvalToolsError(f"'{' '.join(cmd)}' failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    if patch:
        importlib.invalidate_caches()  # heareval was just installed into this process's site-packages
        patch_heareval()
    return commands


def missing_eval_imports() -> list[str]:
    """Modules heareval/hearvalidator import that this environment lacks (the ``hear-eval`` extra)."""
    return [m for m in _EVAL_IMPORTS if importlib.util.find_spec(m) is None]
