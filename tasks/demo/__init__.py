"""``hear-diffbyola demo``: the paper's comparison end to end, on data that ships with the package, as a
paired design over pretraining seeds.

1. for every pretraining seed (``--pretrain-seeds``, default the budget's) pretrain every λ
   (``--lambdas``, default 0 and 0.5) on the embedded corpus with that seed's data order and
   initialisation; export each to ``OUT/weights/seed{S}/lam{λ}.safetensors``;
2. build the synthetic BgKnown task, the synthetic APwD task (both scenes) and a synthetic HEAR-format
   multiclass scene task over all 17 embedded classes (the general-purpose check, the paper's Table 3 role);
3. evaluate every model: BgKnown Mix/(a)/(b)/(c) and the 17-class task with the linear protocol, APwD
   R@1/5/10 with the retrieval system (text encoder 'hash' by default, so the numbers do not depend on
   which optional text models are installed);
4. per λ the mean over pretraining seeds, per λ > 0 the paired difference to λ = 0 per seed with a 95 %
   t interval over seeds, and the verdict (shown / not shown / reversed) read from the (a) and Mix
   intervals; ``OUT/results.json``, ``OUT/report.md`` and ``OUT/plots/*.png`` (always rewritten; cheap),
   with the paper's own numbers (shipped in ``paper_numbers.json``) beside ours, labelled as the paper's.

Stages run as: the three builds, then seed by seed its pretrainings and their evaluations, so an
interrupted demo holds whole seeds (rerun the command to continue it).

Modules: ``settings`` (budgets, the models compared), ``pipeline`` (the resumable stages, ``run_demo``),
``stats`` (t intervals, paired differences, the verdict), ``results`` (results.json, the paired analysis,
combining demos), ``report`` (report.md, plots, the paper's numbers, the table across demos), ``cli`` (the
``demo`` and ``demo-seeds`` commands).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule; loaded on first use so that registering the commands (cli) stays import-light
_EXPORTS = {
    "run_demo": "pipeline",
    "seeds_table": "report",
    "combine_results": "results",
    "t_interval": "stats",
    "verdict": "stats",
    "BUDGETS": "settings",
    "LAMBDAS": "settings",
    "DemoBudget": "settings",
    "DemoError": "settings",
    "model_key": "settings",
    "read_paper_numbers": "report",
}

__all__ = [
    "BUDGETS",
    "LAMBDAS",
    "DemoBudget",
    "DemoError",
    "combine_results",
    "model_key",
    "read_paper_numbers",
    "run_demo",
    "seeds_table",
    "t_interval",
    "verdict",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
