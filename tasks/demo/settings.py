"""What the demo compares and what it costs: the two models, the seeds, the budgets, the table columns."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hear_diffbyola.config import PretrainConfig, apply_overrides, set_values
from hear_diffbyola.dictconfig import DictConfig
from hear_diffbyola.errors import DiffByolaError

__all__ = ["DemoError", "DemoBudget", "BUDGETS", "LAMBDAS", "SEED", "BG_COLUMNS", "KS", "GENERAL_SPLITS",
           "model_key", "model_title"]

LAMBDAS = (0.0, 0.5)
SEED = 0  # of the tasks (builds) and of the pretraining unless --pretrain-seed says otherwise
GENERAL_SPLITS = ("train", "valid", "test")
BG_COLUMNS = {"mix": "Mix", "a": "(a)", "b": "(b)", "c": "(c)"}  # BgKnown result key -> table column
KS = (1, 5, 10)  # APwD recall at K


class DemoError(DiffByolaError, RuntimeError):
    """The demo cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class DemoBudget(DictConfig):
    """Everything that sets the demo's cost. Both models get the same pretraining overrides."""

    section = "budget"

    name: str
    pretrain: tuple[str, ...]                 # SECTION.KEY=VALUE overrides of the pretraining config
    bgknown_train_per_class: int              # synthetic BgKnown: 12 classes x (train + test) items
    bgknown_test_per_class: int
    bgknown_clip_seconds: float               # mixture/reference length (real BgKnown: 5 s)
    apwd_dev: int                             # pairs per scene
    apwd_eval: int
    apwd_epochs: int                          # retrieval-system training epochs at most
    apwd_patience: int
    general_per_label: tuple[int, int, int]   # clips per label in train, valid, test
    general_seconds: float
    seeds: int                                # evaluation seeds (linear protocol, retrieval system)
    linear_max_epochs: int = 200
    linear_patience: int = 20

    def pretrain_config(self, lam: float, device: str = "auto", seed: int = SEED) -> PretrainConfig:
        data = apply_overrides({}, list(self.pretrain))
        return PretrainConfig.from_dict(set_values(data, {"learner.lam": lam, "train.seed": seed, "train.device": device}))

    def fingerprint(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.to_dict()))  # tuples -> lists, as read back from demo_state.json


BUDGETS = {
    # ~8 min on 2 CPU cores (measured with BYOL-A v1's encoder: README "Demo"); the numbers show the pipeline,
    # not the method. Both budgets pin the v1 encoder the paper used (AudioNTT2020; v2 needs d > 1024).
    "quick": DemoBudget(
        name="quick", pretrain=("encoder.arch=audiontt2020", "encoder.d=512", "train.batch_size=32", "train.steps=100", "train.norm_clips=200",
                                "train.checkpoint_every=50"),
        bgknown_train_per_class=12, bgknown_test_per_class=6, bgknown_clip_seconds=2.0,
        apwd_dev=64, apwd_eval=32, apwd_epochs=100, apwd_patience=20,
        general_per_label=(8, 2, 4), general_seconds=2.0, seeds=3),
    # the paper's encoder (d = 2048) and the tasks' default sizes; about an hour on 2 CPU cores
    "full": DemoBudget(
        name="full", pretrain=("encoder.arch=audiontt2020", "encoder.d=2048", "train.batch_size=64", "train.steps=450", "train.checkpoint_every=50"),
        bgknown_train_per_class=40, bgknown_test_per_class=20, bgknown_clip_seconds=5.0,
        apwd_dev=160, apwd_eval=80, apwd_epochs=300, apwd_patience=50,
        general_per_label=(24, 4, 12), general_seconds=2.0, seeds=3),
}


def model_key(lam: float) -> str:
    return f"lam{lam:g}"


def model_title(lam: float) -> str:
    return f"λ = {lam:g} (BYOL-A)" if lam == 0 else f"λ = {lam:g} (DiffBYOL-A)"
