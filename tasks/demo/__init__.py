"""``hear-diffbyola demo``: the paper's comparison, end to end, on data that ships with the package.

1. pretrain λ = 0 (BYOL-A) and λ = 0.5 (DiffBYOL-A) on the embedded corpus, same seed, data and budget;
   export both to ``OUT/weights/lam{0,0.5}.safetensors``;
2. build the synthetic BgKnown task, the synthetic APwD task (both scenes) and a synthetic HEAR-format
   multiclass scene task over all 17 embedded classes (the general-purpose check, the paper's Table 3 role);
3. evaluate both models: BgKnown Mix/(a)/(b)/(c) and the 17-class task with the linear protocol, APwD
   R@1/5/10 with the retrieval system (text encoder 'hash' by default, so the numbers do not depend on
   which optional text models are installed);
4. ``OUT/results.json``, ``OUT/report.md`` and ``OUT/plots/*.png`` (always rewritten; cheap).

Modules: ``settings`` (budgets, the models compared), ``pipeline`` (the resumable stages, ``run_demo``),
``results`` (results.json, the effect check), ``report`` (report.md, plots, the table across
pretraining seeds), ``cli`` (the ``demo`` and ``demo-seeds`` commands).

The paper's own numbers (AudioSet pretraining, real ESC-50/FSD50K) are not shipped: this project is
built offline and could not obtain them. ``--paper-numbers FILE`` prints them beside ours, labelled as
the paper's (format: ``report.read_paper_numbers``).
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule; loaded on first use so that registering the commands (cli) stays import-light
_EXPORTS = {"run_demo": "pipeline", "seeds_table": "report", "paper_effect": "results", "BUDGETS": "settings",
            "LAMBDAS": "settings", "DemoBudget": "settings", "DemoError": "settings", "model_key": "settings"}

__all__ = ["BUDGETS", "LAMBDAS", "DemoBudget", "DemoError", "model_key", "paper_effect", "run_demo", "seeds_table"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
