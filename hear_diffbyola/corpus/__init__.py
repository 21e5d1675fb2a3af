"""Pretraining corpora and the step-indexed sampling that makes runs exactly resumable.

Every random choice of the data path is a pure function of (seed, stream, epoch, index), so any
step of a run can be reproduced without replaying the steps before it, in any worker process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from .files import CorpusError, FileCorpus, fit_length, list_audio_files

__all__ = [
    "ClipSource",
    "CorpusError",
    "EmbeddedSource",
    "FileCorpus",
    "CropDataset",
    "StepBatchSampler",
    "open_corpus",
    "list_audio_files",
    "fit_length",
]

TRAIN_STREAM = 0
NORM_STREAM = 1


class ClipSource(Protocol):
    def __len__(self) -> int: ...
    def segment(self, index: int, n_samples: int, rng: np.random.Generator) -> np.ndarray: ...
    def describe(self) -> str: ...


class EmbeddedSource:
    """The embedded procedural corpus as a ClipSource: random crops of its generated clips."""

    def __init__(self, size: int = 2000, sample_rate: int = 16000, duration: float = 2.0, seed: int = 0) -> None:
        from .synthetic import EmbeddedCorpus

        self.corpus = EmbeddedCorpus(size=size, sample_rate=sample_rate, duration=duration, seed=seed)

    def __len__(self) -> int:
        return len(self.corpus)

    def segment(self, index: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        return fit_length(self.corpus[index], n_samples, rng)

    def describe(self) -> str:
        return "embedded corpus: " + self.corpus.describe()


def open_corpus(
    spec: str,
    sample_rate: int = 16000,
    *,
    embedded_size: int = 2000,
    embedded_duration: float = 2.0,
    seed: int = 0,
    max_bad_fraction: float = 0.01,
) -> ClipSource:
    """'embedded' -> the procedural corpus; a folder or a .csv/.txt list -> FileCorpus."""
    if spec == "embedded":
        return EmbeddedSource(embedded_size, sample_rate, embedded_duration, seed)
    return FileCorpus(spec, sample_rate=sample_rate, max_bad_fraction=max_bad_fraction)


class CropDataset(torch.utils.data.Dataset):
    """Item (stream, epoch, index) -> float32 waveform crop (n_samples,), seeded by (seed, stream, epoch, index)."""

    def __init__(self, source: ClipSource, n_samples: int, seed: int) -> None:
        self.source = source
        self.n_samples = n_samples
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> torch.Tensor:
        stream, epoch, index = key
        rng = np.random.default_rng([self.seed, stream, epoch, index])
        x = self.source.segment(index, self.n_samples, rng)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for steps start..stop-1, this rank's share of the global batch as (stream, epoch, index) keys.

    Epoch e visits a permutation of the corpus drawn from (seed, e); step s is batch s % steps_per_epoch
    of epoch s // steps_per_epoch; the last incomplete batch of an epoch is dropped (as BYOL-A).
    Rank r of W takes slice [r*B/W, (r+1)*B/W) of each global batch, so ranks never share a clip.
    """

    def __init__(
        self, n_items: int, global_batch: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if global_batch > n_items:
            raise CorpusError(
                f"batch size {global_batch} is larger than the corpus ({n_items} clips); lower train.batch_size "
                "or use a larger corpus (train.embedded_size for the embedded one)"
            )
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world_size} processes")
        self.n_items, self.global_batch, self.seed = n_items, global_batch, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.steps_per_epoch = n_items // global_batch
        self._perm_epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n_items, generator=g), epoch
        return self._perm

    def batch_keys(self, step: int) -> list[tuple[int, int, int]]:
        epoch, k = divmod(step, self.steps_per_epoch)
        per_rank = self.global_batch // self.world_size
        lo = k * self.global_batch + self.rank * per_rank
        idx = self.permutation(epoch)[lo : lo + per_rank].tolist()
        return [(TRAIN_STREAM, epoch, i) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.stop):
            yield self.batch_keys(step)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)
