"""The paper's linear evaluation protocol (BYOL-A's): one linear layer on standardised features.

Per seed:
1. A stratified 10 % of the training set is held out as validation (drawn from the seed), so every
   class with at least two examples is represented on both sides.
2. Features are standardised with the mean and standard deviation of the remaining training part
   (features constant there get std 1, so they do not blow up); validation and test use the same stats.
3. One ``nn.Linear`` (PyTorch's default init, drawn from the seed) is trained with cross-entropy and
   Adam (lr 1e-3) in shuffled mini-batches of ``min(200, n)``, sklearn ``MLPClassifier``'s default
   batch size, which BYOL-A's evaluation mirrors. Full-batch training would take only one Adam step
   per epoch: with a thousand examples, 200 epochs would not converge at lr 1e-3. Training runs on one
   CPU thread (the layer is tiny; see ``_one_thread``).
4. Up to 200 epochs; early stopping on validation loss with a patience of 20 epochs (stop once the
   validation loss has not reached a new minimum for 20 epochs in a row), then the weights of the
   epoch with the lowest validation loss are restored and scored on the test set (the shared loop of
   ``tasks.early_stopping``).

Accuracies over seeds are summarised as mean and population standard deviation (numpy's default, as
BYOL-A's evaluate.py reports them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import TaskError
from .early_stopping import fit_early_stopping

__all__ = [
    "LinearEvalConfig",
    "LinearEvalResult",
    "SeedSummary",
    "stratified_split",
    "standardise",
    "linear_eval",
    "linear_eval_seeds",
]


@dataclass(frozen=True)
class LinearEvalConfig:
    lr: float = 1e-3
    max_epochs: int = 200
    patience: int = 20
    valid_fraction: float = 0.1
    batch_size: int = 200

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.max_epochs >= 1 and self.patience >= 1 and self.batch_size >= 1):
            raise ValueError(f"LinearEvalConfig: lr, max_epochs, patience and batch_size must be positive, got {self}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"LinearEvalConfig: valid_fraction must be in (0, 1), got {self.valid_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LinearEvalResult:
    accuracy: float  # test accuracy in [0, 1]
    best_epoch: int  # 1-based epoch whose weights were scored
    epochs_run: int
    best_valid_loss: float


@dataclass(frozen=True)
class SeedSummary:
    mean: float  # accuracy in %, over seeds
    std: float  # population std in %
    accuracies: list[float] = field(default_factory=list)  # in %, one per seed
    runs: list[LinearEvalResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "accuracies": self.accuracies,
            "runs": [asdict(r) for r in self.runs],
        }


def _check_xy(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"{what}: features must be (n, d), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{what}: labels must be ({x.shape[0]},) to match the features, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integer class indices, got dtype {y.dtype}")
    if not np.isfinite(x).all():
        rows = int((~np.isfinite(x)).any(axis=1).sum())
        raise TaskError(
            f"{what}: {rows} of {x.shape[0]} feature rows contain NaN or Inf; a linear probe on them "
            "would score garbage: check the model that computed them"
        )
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, valid indices): round(fraction * n_c) of each class c to validation, at least one
    when the class has two or more examples, never all of them."""
    valid = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(max(int(round(fraction * idx.size)), 1 if idx.size >= 2 else 0), idx.size - 1)
        valid.append(rng.permutation(idx)[:k])
    v = np.sort(np.concatenate(valid)) if valid else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(y.size), v), v


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise ``train`` and ``others`` with the per-feature mean/std of ``train`` (std 0 -> 1)."""
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std[std == 0.0] = 1.0
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def _fit(
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_va: torch.Tensor,
    y_va: torch.Tensor,
    n_classes: int,
    seed: int,
    config: LinearEvalConfig,
) -> tuple[nn.Linear, int, int, float]:
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # nn.Linear's init draws from the global generator
    layer = nn.Linear(x_tr.shape[1], n_classes)
    torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adam(layer.parameters(), lr=config.lr)
    bs = min(config.batch_size, x_tr.shape[0])

    def train_epoch(epoch: int) -> float:
        perm = torch.randperm(x_tr.shape[0], generator=gen)
        total = 0.0
        for i in range(0, x_tr.shape[0], bs):
            idx = perm[i : i + bs]
            loss = F.cross_entropy(layer(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        return total / x_tr.shape[0]

    def validate() -> float:
        return float(F.cross_entropy(layer(x_va), y_va))

    fit = fit_early_stopping(layer, train_epoch, validate, config.patience, config.max_epochs, desc="linear layer")
    return layer, fit.best_epoch, fit.epochs_run, fit.best["val_loss"]


@contextlib.contextmanager
def _one_thread():
    # The layer is tiny (d x classes): with several threads, thread hand-offs cost more than the maths
    # (3x slower with 2 threads than with 1 on this project's shared 2-core machines).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def linear_eval(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    seed: int = 0,
    config: LinearEvalConfig = LinearEvalConfig(),
    n_classes: int | None = None,
) -> LinearEvalResult:
    """One run of the protocol: x (n, d) features, y (n,) integer labels -> test accuracy and training facts."""
    x_train, y_train = _check_xy(x_train, y_train, "training set")
    x_test, y_test = _check_xy(x_test, y_test, "test set")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"training features have {x_train.shape[1]} dimensions, test features {x_test.shape[1]}")
    n_classes = n_classes or int(max(y_train.max(), y_test.max())) + 1
    rng = np.random.default_rng(seed)
    tr, va = stratified_split(y_train, config.valid_fraction, rng)
    if va.size == 0 or tr.size == 0:
        raise ValueError(f"training set of {y_train.size} examples is too small to hold out a validation set")
    xs_tr, xs_va, xs_te = standardise(x_train[tr], x_train[va], x_test)
    t = torch.from_numpy
    with torch.enable_grad(), _one_thread():
        layer, best_epoch, epochs_run, best_loss = _fit(
            t(xs_tr), t(y_train[tr]), t(xs_va), t(y_train[va]), n_classes, seed, config
        )
    with torch.no_grad():
        pred = layer(t(xs_te)).argmax(dim=1).numpy()
    return LinearEvalResult(
        accuracy=float((pred == y_test).mean()), best_epoch=best_epoch, epochs_run=epochs_run, best_valid_loss=best_loss
    )


def linear_eval_seeds(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    seeds: Sequence[int] = (0, 1, 2),
    config: LinearEvalConfig = LinearEvalConfig(),
    n_classes: int | None = None,
    progress: bool = False,
    desc: str = "linear evaluation",
) -> SeedSummary:
    """The protocol once per seed (validation split, init and batch order all follow the seed); accuracies in %."""
    from tqdm import tqdm

    if not seeds:
        raise ValueError("linear_eval_seeds: give at least one seed")
    runs = [
        linear_eval(x_train, y_train, x_test, y_test, seed=s, config=config, n_classes=n_classes)
        for s in tqdm(seeds, desc=desc, unit="seed", disable=not progress)
    ]
    acc = [100.0 * r.accuracy for r in runs]
    return SeedSummary(mean=float(np.mean(acc)), std=float(np.std(acc)), accuracies=acc, runs=runs)
