"""The retrieval system of the paper's Fig. 3 (after Takeuchi et al., Interspeech 2022), and R@K.

Frozen inputs: clip embeddings from the audio encoder and sentence embeddings from the text encoder.
Trainable parts (sizes are ours; the paper does not give them):

* each branch standardises its input with training-set statistics, then a residual MLP adapter
  ``x + W2 GELU(W1 x)`` (hidden ``adapter_hidden``, dropout ``dropout``), then a linear head to
  ``joint_dim``; the audio branch A is shared by queries and targets, the text branch T is separate;
* query ``q = normalise(A(query audio) + T(modifier))``: the text moves the audio embedding, as a
  difference; target ``k = normalise(A(target audio))``; similarity = cosine ``q . k``;
* a linear event classifier on A's output (before normalisation), for query and target clips.

Loss = InfoNCE over the batch (query i against the batch's targets, temperature ``temperature``) +
``cls_weight`` * BCE of the multi-label event classifier on query and target clips. In-batch columns
that are the query's own clip, or the same clip as its target, are masked out (never false negatives).
Adam (``lr``), ``epochs`` epochs at most; after every epoch the model is scored on the validation set and
the best epoch is kept (``tasks.early_stopping``, the loop the linear evaluation uses too); training stops
after ``patience`` epochs without improvement (0 = never). ``select`` says what "best" is:

* ``"val-loss"`` (default; the paper keeps "the model with the smallest validation loss"): the training
  loss on the validation set, with every validation clip as a candidate target: InfoNCE of each query
  against the whole validation gallery (its own clip left out) + ``cls_weight`` * BCE of the event
  classifier on the query and target clips;
* ``"val-recall"``: the mean of R@1/5/10 on validation, ties broken by the validation InfoNCE.

Nothing is chosen on the test split: sizes are settings, and the selection sees validation only.

Evaluation ranks, for every query, all clips of the split except the query clip itself (APwD test:
2 x 1,000 queries against 1,999 clips). Ties count against the target (pessimistic rank).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..early_stopping import fit_early_stopping
from .vocab import APwDError

KS = (1, 5, 10)
SELECTIONS = ("val-loss", "val-recall")  # how the kept epoch is chosen; see the module docstring


@dataclass(frozen=True)
class RetrievalConfig:
    joint_dim: int = 128
    adapter_hidden: int = 256
    dropout: float = 0.1
    temperature: float = 0.07
    cls_weight: float = 1.0
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 300
    patience: int = 50
    val_fraction: float = 0.1
    use_text: bool = True  # False: the audio-only ablation (the modifier is ignored)
    threads: int = 1  # torch threads while training: see torch_threads()
    select: str = "val-loss"  # epoch kept: smallest validation loss, or best validation mean R@K (SELECTIONS)

    def __post_init__(self) -> None:
        checks = [
            (self.joint_dim > 0, "joint_dim > 0"),
            (self.adapter_hidden > 0, "adapter_hidden > 0"),
            (0.0 <= self.dropout < 1.0, "0 <= dropout < 1"),
            (self.temperature > 0, "temperature > 0"),
            (self.cls_weight >= 0, "cls_weight >= 0"),
            (self.lr > 0, "lr > 0"),
            (self.batch_size >= 2, "batch_size >= 2"),
            (self.epochs >= 1, "epochs >= 1"),
            (self.patience >= 0, "patience >= 0"),
            (0.0 < self.val_fraction < 1.0, "0 < val_fraction < 1"),
            (self.threads >= 1, "threads >= 1"),
            (self.select in SELECTIONS, f"select in {SELECTIONS}"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise APwDError(f"retrieval settings: need {', '.join(bad)} (got {asdict(self)})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QuerySet:
    """Queries over a gallery of clips, all as tensors.

    clips (C, Da) audio embeddings; labels (C, L) multi-hot events; text_emb (T, Dt) modifier embeddings;
    query, text, target, group (Q,) long: query clip, modifier, target clip, and the group (pair) a query
    belongs to (validation splits keep groups whole).
    """

    clips: torch.Tensor
    labels: torch.Tensor
    text_emb: torch.Tensor
    query: torch.Tensor
    text: torch.Tensor
    target: torch.Tensor
    group: torch.Tensor
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        q = self.query.shape[0]
        if not (self.text.shape[0] == self.target.shape[0] == self.group.shape[0] == q):
            raise APwDError("QuerySet: query, text, target and group must have one entry per query")
        if q and (self.query == self.target).any():
            raise APwDError("QuerySet: a query's target is the query clip itself")
        if self.labels.shape[0] != self.clips.shape[0]:
            raise APwDError("QuerySet: labels need one row per clip")

    def __len__(self) -> int:
        return int(self.query.shape[0])

    def subset(self, keep: torch.Tensor) -> QuerySet:
        """The queries where ``keep`` (Q,) is True, with only the clips they use (indices remapped)."""
        used = torch.unique(torch.cat([self.query[keep], self.target[keep]]))
        remap = torch.full((self.clips.shape[0],), -1, dtype=torch.long)
        remap[used] = torch.arange(used.numel())
        return QuerySet(
            self.clips[used],
            self.labels[used],
            self.text_emb,
            remap[self.query[keep]],
            self.text[keep],
            remap[self.target[keep]],
            self.group[keep],
            self.texts,
        )

    def split(self, fraction: float, generator: torch.Generator) -> tuple[QuerySet, QuerySet]:
        """(rest, held-out) with about ``fraction`` of the groups held out (at least one, never all)."""
        groups = torch.unique(self.group)
        n_val = min(max(1, round(fraction * groups.numel())), groups.numel() - 1)
        if n_val < 1:
            raise APwDError(f"cannot hold out a validation set from {groups.numel()} pair(s); need at least 2")
        val_groups = groups[torch.randperm(groups.numel(), generator=generator)[:n_val]]
        held = torch.isin(self.group, val_groups)
        return self.subset(~held), self.subset(held)


class ResidualAdapter(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, D) -> (B, D)
        return x + self.fc2(self.drop(F.gelu(self.fc1(x))))


class Branch(nn.Module):
    """Standardise (fixed training statistics) -> residual adapter -> linear head."""

    def __init__(self, inputs: torch.Tensor, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        std = inputs.std(0, unbiased=False) if inputs.shape[0] > 1 else torch.ones(inputs.shape[1])
        # a floor keeps a dimension that barely varies in training from blowing up on new inputs
        self.register_buffer("mean", inputs.mean(0))
        self.register_buffer("std", std.clamp_min(1e-2 * float(std.mean()) + 1e-8))
        self.adapter = ResidualAdapter(inputs.shape[1], hidden, dropout)
        self.head = nn.Linear(inputs.shape[1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, D_in) -> (B, joint_dim)
        return self.head(self.adapter((x - self.mean) / self.std))


class RetrievalModel(nn.Module):
    def __init__(self, train: QuerySet, config: RetrievalConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = Branch(train.clips, config.adapter_hidden, config.joint_dim, config.dropout)
        self.text = Branch(
            train.text_emb[torch.unique(train.text)], config.adapter_hidden, config.joint_dim, config.dropout
        )
        self.classifier = nn.Linear(config.joint_dim, max(1, train.labels.shape[1]))

    def queries(self, qs: QuerySet, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised query embeddings (B, J), audio branch output of the query clips (B, J))."""
        a = self.audio(qs.clips[qs.query[idx]])
        q = a + self.text(qs.text_emb[qs.text[idx]]) if self.config.use_text else a
        return F.normalize(q, dim=1), a

    def gallery(self, qs: QuerySet) -> torch.Tensor:
        """Normalised embeddings of every clip: (C, J)."""
        return F.normalize(self.audio(qs.clips), dim=1)

    def loss(self, qs: QuerySet, idx: torch.Tensor) -> torch.Tensor:
        q, a_q = self.queries(qs, idx)  # (B, J)
        a_t = self.audio(qs.clips[qs.target[idx]])  # (B, J)
        logits = q @ F.normalize(a_t, dim=1).T / self.config.temperature  # (B, B)
        t_clip, q_clip = qs.target[idx], qs.query[idx]
        eye = torch.eye(len(idx), dtype=torch.bool)
        clash = ((t_clip[None, :] == t_clip[:, None]) & ~eye) | (t_clip[None, :] == q_clip[:, None])
        contrastive = F.cross_entropy(logits.masked_fill(clash, float("-inf")), torch.arange(len(idx)))
        if self.config.cls_weight == 0 or qs.labels.shape[1] == 0:
            return contrastive
        cls_logits = self.classifier(torch.cat([a_q, a_t]))  # (2B, L)
        cls_target = torch.cat([qs.labels[q_clip], qs.labels[t_clip]])
        return contrastive + self.config.cls_weight * F.binary_cross_entropy_with_logits(cls_logits, cls_target)

    @torch.no_grad()
    def similarity(self, qs: QuerySet) -> torch.Tensor:
        """Cosine similarity of every query to every clip: (Q, C)."""
        q, _ = self.queries(qs, torch.arange(len(qs)))
        return q @ self.gallery(qs).T


def target_rank(sim: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Rank (0 = first) of each row's ``target`` column among the other columns, ``exclude`` left out: (Q,).

    The rank is the number of other candidates scoring at least as high as the target: ties count against it.
    NaN is the worst score: a NaN target ranks last (behind every candidate, NaN ones included), a NaN
    candidate never outranks a target (a NaN similarity must never make a broken model look perfect).
    """
    rows = torch.arange(sim.shape[0])
    # -inf for NaN: comparisons with NaN are all False, which would rank a NaN target first
    sim = torch.nan_to_num(sim, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    rivals = torch.ones_like(sim, dtype=torch.bool)  # (Q, C): the candidates besides the target
    rivals[rows, target] = False
    if exclude is not None:
        if (exclude == target).any():
            raise ValueError("recall_at_k: a query's excluded column is its target")
        rivals[rows, exclude] = False
    s_t = sim[rows, target][:, None]  # (Q, 1)
    return ((sim >= s_t) & rivals).sum(1)


def recalls(rank: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K from target ranks (Q,)."""
    return {f"R@{k}": float((rank < k).float().mean()) for k in ks}


def recall_at_k(
    sim: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None, ks: Sequence[int] = KS
) -> dict[str, float]:
    """R@K of similarity rows ``sim`` (Q, C) with correct column ``target`` (Q,), column ``exclude`` (Q,) left out:
    the share of queries whose target ranks below K (see target_rank)."""
    return recalls(target_rank(sim, target, exclude), ks)


@torch.no_grad()
def _ranks_and_nce(model: RetrievalModel, qs: QuerySet, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Target ranks (Q,) and per-query InfoNCE against the whole gallery (Q,), a chunk of queries at a time
    (the paper's 50,000-pair dev split would otherwise need a 10^4 x 10^4 matrix per validation)."""
    model.eval()
    gallery = model.gallery(qs)  # (C, J)
    ranks, nces = [], []
    for i in range(0, len(qs), chunk):
        idx = torch.arange(i, min(i + chunk, len(qs)))
        q, _ = model.queries(qs, idx)
        sim = q @ gallery.T  # (chunk, C)
        ranks.append(target_rank(sim, qs.target[idx], qs.query[idx]))
        sim[torch.arange(len(idx)), qs.query[idx]] = float("-inf")
        nces.append(F.cross_entropy(sim / model.config.temperature, qs.target[idx], reduction="none"))
    return torch.cat(ranks), torch.cat(nces)


@torch.no_grad()
def query_ranks(model: RetrievalModel, qs: QuerySet) -> torch.Tensor:
    """Target rank of every query of ``qs`` (every clip but the query's own is a candidate): (Q,)."""
    return _ranks_and_nce(model, qs)[0]


@torch.no_grad()
def evaluate(model: RetrievalModel, qs: QuerySet, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K over all queries of ``qs``."""
    return recalls(query_ranks(model, qs), ks)


@torch.no_grad()
def _classifier_bce(model: RetrievalModel, qs: QuerySet) -> torch.Tensor:
    """The loss's event-classification term over every query's query and target clip (0 without labels)."""
    if model.config.cls_weight == 0 or qs.labels.shape[1] == 0 or len(qs) == 0:
        return torch.zeros(())
    clips = torch.cat([qs.query, qs.target])
    return F.binary_cross_entropy_with_logits(model.classifier(model.audio(qs.clips[clips])), qs.labels[clips])


@torch.no_grad()
def validation_metrics(model: RetrievalModel, val: QuerySet) -> dict[str, float]:
    """{"val_recall": mean R@1/5/10, "val_nce": mean InfoNCE of each query against the whole validation
    gallery, "val_loss": val_nce + cls_weight * the classifier's BCE}: the training loss with every
    validation clip as a candidate instead of a batch's."""
    rank, nce = _ranks_and_nce(model, val)
    val_nce = float(nce.mean())
    return {
        "val_recall": sum(recalls(rank).values()) / len(KS),
        "val_nce": val_nce,
        "val_loss": val_nce + model.config.cls_weight * float(_classifier_bce(model, val)),
    }


def selection_rank(select: str) -> Callable[[Mapping[str, float]], Any]:
    """What the early-stopping loop minimises for ``select``: the validation loss, or (-mean R@K, InfoNCE)."""
    if select == "val-loss":
        return lambda r: r["val_loss"]
    if select == "val-recall":
        return lambda r: (-r["val_recall"], r["val_nce"])
    raise APwDError(f"unknown checkpoint selection {select!r}; choose one of {', '.join(SELECTIONS)}")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore. The adapters are small (batch x ~512 matmuls): a second
    thread gains little, and on a busy CPU OpenMP's spin-waiting made a 2-thread step 13x slower than a
    1-thread one (0.24 s vs 0.018 s, measured with other jobs on both cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_retrieval(
    train: QuerySet, val: QuerySet, config: RetrievalConfig, seed: int = 0, progress: bool = False, desc: str = "train"
) -> tuple[RetrievalModel, dict[str, Any]]:
    """Train on ``train``, keep the epoch best on ``val``; returns (model, history)."""
    if len(train) < 2:
        raise APwDError(f"need at least 2 training queries, got {len(train)}")
    # init and dropout draw from the global RNG: seed it for this run only, leaving the caller's state alone
    with torch.random.fork_rng(), torch_threads(config.threads):
        torch.manual_seed(seed)
        model = RetrievalModel(train, config)
        return _fit(model, train, val, config, seed, progress, desc)


def _fit(
    model: RetrievalModel, train: QuerySet, val: QuerySet, config: RetrievalConfig, seed: int, progress: bool, desc: str
) -> tuple[RetrievalModel, dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    n = len(train)

    def train_epoch(epoch: int) -> float:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]
            if len(idx) < 2:  # a lone query has no negatives
                continue
            loss = model.loss(train, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        return total / n

    fit = fit_early_stopping(
        model,
        train_epoch,
        lambda: validation_metrics(model, val),
        config.patience,
        config.epochs,
        rank=selection_rank(config.select),
        progress=progress,
        desc=desc,
    )
    best = fit.best
    return model, {
        "selected_by": config.select,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "best_val_loss": best["val_loss"],
        "best_val_recall": best["val_recall"],
        "history": fit.curve,
    }
