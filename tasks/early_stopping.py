"""One early-stopping training loop for every trainable head of the tasks (linear evaluation, APwD adapters).

Per epoch: ``model.train()``, ``train_epoch(epoch)`` (the caller's optimiser steps; returns the mean
training loss or ``None``), ``model.eval()``, ``validate()`` (a validation loss, or a dict of validation
metrics). The epoch is *better* when its rank (by default the validation loss, smaller is better) is
strictly below the best so far; ties keep the earlier epoch. Training stops once ``patience`` epochs in a
row were not better (``patience=0``: never early), or after ``max_epochs``. The model ends with the
weights of the best epoch, in eval mode.

A validation loss that is NaN or infinite never counts as better; if no epoch had a finite one, a
``TaskError`` says so (diverged training or bad features), rather than scoring untrained weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import TaskError

__all__ = ["FitResult", "fit_early_stopping"]

Metrics = Mapping[str, float]


@dataclass
class FitResult:
    best_epoch: int  # 1-based epoch whose weights the model now holds
    epochs_run: int
    best_state: dict[str, torch.Tensor]  # copy of the model's state dict at best_epoch
    curve: list[dict[str, float]] = field(default_factory=list)  # one record per epoch run

    @property
    def best(self) -> dict[str, float]:
        """The curve record of the best epoch."""
        return self.curve[self.best_epoch - 1]


def _finite(rank: Any) -> bool:
    values = rank if isinstance(rank, tuple) else (rank,)
    return all(math.isfinite(float(v)) for v in values)


def _by_val_loss(record: Mapping[str, float]) -> float:
    return record["val_loss"]


def fit_early_stopping(
    model: nn.Module,
    train_epoch: Callable[[int], float | None],
    validate: Callable[[], float | Metrics],
    patience: int,
    max_epochs: int,
    *,
    rank: Callable[[Mapping[str, float]], Any] = _by_val_loss,
    progress: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` with early stopping; returns the best epoch, its state (already loaded) and the curve.

    ``validate()`` returning a float records it as ``val_loss``; a dict is recorded as it is. ``rank``
    maps an epoch's record ({"epoch", "train_loss", **validation metrics}) to what is minimised (a float,
    or a tuple compared in order).
    """
    from tqdm import tqdm

    if max_epochs < 1 or patience < 0:
        raise TaskError(f"early stopping needs max_epochs >= 1 and patience >= 0, got {max_epochs} and {patience}")
    best_rank: Any = None
    best_epoch, best_state, curve = 0, None, []
    bar = tqdm(range(1, max_epochs + 1), desc=desc, disable=not progress, leave=False, unit="epoch")
    for epoch in bar:
        model.train()
        train_loss = train_epoch(epoch)
        model.eval()
        with torch.no_grad():
            metrics = validate()
        record: dict[str, float] = {"epoch": epoch}
        if train_loss is not None:
            record["train_loss"] = float(train_loss)
        record.update({"val_loss": float(metrics)} if isinstance(metrics, (int, float)) else dict(metrics))
        curve.append(record)
        r = rank(record)
        if _finite(r) and (best_rank is None or r < best_rank):
            best_rank, best_epoch = r, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif patience and epoch - best_epoch >= patience:
            break
        bar.set_postfix(best=best_epoch)
    if best_state is None:
        raise TaskError(
            f"{desc}: the validation loss was never finite in {len(curve)} epoch(s) "
            f"(last record {curve[-1]}); the training diverged or the features hold extreme values"
        )
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch=best_epoch, epochs_run=len(curve), best_state=best_state, curve=curve)
