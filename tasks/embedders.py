"""Clip embeddings for the task evaluators: our weights through the core, or any HEAR-API module.

One :class:`Embedder` class serves every task (BgKnown, APwD, HEAR scene tasks). It is built by
:func:`ours` (``weights.load_pretrained`` + ``embed.clip_embedding``: BYOL-A's mean + max pooling of the
whole clip, in bounded memory) or :func:`hear_module` (``load_model`` / ``get_scene_embeddings`` of any
module that implements the HEAR API); :func:`make_embedder` picks one from command-line style arguments.

``Embedder.identity`` names the model for caches: the sha256 of the weights file and the norm stats for
ours; the module name, its ``__version__`` and the model file's sha256 for a HEAR module. A cache keyed
on it (``tasks.cache``) is invalidated by a retrained or re-normalised model, never by a renamed or moved
file.

Log-mel normalisation as BYOL-A's evaluation (and EVAR's) does it: the evaluators normalise our model's
log-mels with the mean and std of the *task's own training audio* (:func:`task_norm_stats`, over every
log-mel value of the training clips, never test data) rather than the pretraining corpus's statistics in
the weights file; :func:`task_normalised` gives the evaluators an embedder so normalised (``norm="task"``)
or the one with the file's statistics (``norm="weights"``). ``Embedder.norm`` (a :class:`NormStats`)
says which was used, for the results. A HEAR module normalises its input itself: it cannot be
re-normalised, and its ``norm`` says so (source ``"hear-module"``).
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hear_diffbyola.audio import AudioReadError, read_audio
from hear_diffbyola.inputs import check_audio
from hear_diffbyola.weights import file_sha256

from . import TaskError

if TYPE_CHECKING:
    from hear_diffbyola.weights import PretrainedModel

__all__ = [
    "Embedder",
    "NonFiniteEmbeddingsError",
    "WeightsEmbedder",
    "NormStats",
    "NORM_CHOICES",
    "ours",
    "hear_module",
    "make_embedder",
    "embed_waves",
    "embed_audio_files",
    "task_norm_stats",
    "task_normalised",
    "norm_record",
    "describe_norm",
]

ClipFn = Callable[[torch.Tensor], Any]  # (B, N) float32 CPU tensor -> (B, d) tensor or array
NORM_CHOICES = ("task", "weights")  # the evaluators' --norm: the task's training audio, or the weights file


@dataclass(frozen=True)
class NormStats:
    """The log-mel normalisation an embedder applies, and where its numbers come from.

    ``source``: "task-train" (computed on the task's training clips; ``clips`` of them), "weights" (the
    weights file's header: the pretraining corpus), "given" (passed to :func:`ours`), "hear-module" or
    "embedder" (the model normalises its input itself; ``mean``/``std`` are unknown here).
    """

    source: str
    mean: float | None = None
    std: float | None = None
    clips: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cache_key(self) -> dict[str, float | None]:
        """What embeddings depend on: the numbers, not where they came from."""
        return {"mean": self.mean, "std": self.std}


class Embedder:
    """One model's clip embeddings, (B, N) waveforms at ``sample_rate`` -> (B, d), with what callers need
    to batch (``min_samples``), cache (``identity``) and report (``name``) them. Build it with :func:`ours`,
    :func:`hear_module` or :func:`make_embedder`; the constructor is for tests and new model kinds."""

    def __init__(
        self,
        fn: ClipFn,
        *,
        name: str,
        sample_rate: int,
        identity: str,
        min_samples: int = 1,
        source: str | None = None,
        norm: NormStats = NormStats("embedder"),
    ) -> None:
        self._fn = fn
        self.name = name  # row name in result tables
        self.sample_rate = int(sample_rate)
        self.identity = identity  # stable across renames; changes when the embeddings could change
        self.min_samples = int(min_samples)  # shorter clips must be zero-padded (embed_waves does it)
        self._source = source or name  # what produced the output, for error messages
        self.norm = norm  # the log-mel normalisation it applies (for results)

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, sample_rate={self.sample_rate}, identity={self.identity!r})"

    def embed(self, waves: np.ndarray, names: Sequence[Any] | None = None) -> np.ndarray:
        """(B, N) floating-point waveforms at ``sample_rate`` -> (B, d) float32, without autograd.

        The audio passes the HEAR module's checks first (``hear_diffbyola.inputs.check_audio``): integer
        PCM, NaN and Inf are refused, audio peaking far above full scale is warned about; ``names`` (one
        per clip, e.g. file paths) label the clips in those messages."""
        waves = np.asarray(waves)
        if waves.ndim != 2:
            raise TaskError(
                f"{self.name}: embed() takes a batch of waveforms (B, N), got shape {waves.shape}; "
                "embed a list of clips with embed_waves()"
            )
        audio = torch.from_numpy(np.ascontiguousarray(waves))
        check_audio(audio, f"Embedder {self.name!r}", names, stacklevel=2)
        with torch.no_grad():
            out = self._fn(audio.to(torch.float32))
        out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if out.ndim != 2 or out.shape[0] != waves.shape[0]:
            raise TaskError(
                f"{self._source} returned shape {out.shape} for a batch of {waves.shape[0]} clips; "
                f"expected ({waves.shape[0]}, d): a clip-level (scene) embedding per clip"
            )
        return out.astype(np.float32, copy=False)

    def check_finite(self, parts: Mapping[str, np.ndarray], names: Mapping[str, Sequence[Any]] | None = None) -> None:
        """Refuse embeddings holding NaN or Inf before anything scores them (a NaN similarity or feature
        gives meaningless, often perfect-looking, numbers). ``parts``: {what: (n, d) embeddings}, e.g.
        {"train/mix": ...}; ``names``: optional {what: one label per row} for the message. Raises
        :class:`NonFiniteEmbeddingsError` naming the model and how many items of how many are bad."""
        bad: list[tuple[str, int, int, Any]] = []  # (part, bad rows, rows, first bad label)
        total = 0
        for part, emb in parts.items():
            emb = np.asarray(emb)
            rows = ~np.isfinite(emb.reshape(emb.shape[0], -1)).all(axis=1) if emb.ndim else np.zeros(0, bool)
            total += rows.size
            if rows.any():
                first = int(np.flatnonzero(rows)[0])
                label = names[part][first] if names and part in names else f"item {first}"
                bad.append((part, int(rows.sum()), rows.size, label))
        if bad:
            n_bad = sum(b[1] for b in bad)
            listed = "; ".join(f"{part}: {n} of {size} (first: {label})" for part, n, size, label in bad[:6])
            raise NonFiniteEmbeddingsError(
                f"model {self.name} ({self._source}) gave NaN or Inf embeddings for {n_bad} of {total} items "
                f"({listed}{'; ...' if len(bad) > 6 else ''}); nothing is scored with them. The weights or the "
                "model are broken (a diverged run?): re-export an earlier checkpoint or fix the model"
            )


class NonFiniteEmbeddingsError(TaskError):
    """A model gave NaN or Inf embeddings; the evaluation refuses to score them."""


class WeightsEmbedder(Embedder):
    """Our weights through the core: ``clip_embedding`` of a ``PretrainedModel`` (``.model``) loaded from
    ``.weights``, whose log-mel normalisation can be replaced (:meth:`with_norm`)."""

    def __init__(self, model: PretrainedModel, weights: Path, sha256: str, device: str, norm: NormStats) -> None:
        from hear_diffbyola.embed import clip_embedding, min_samples

        self.model, self.weights, self.device, self.sha256 = model, weights, device, sha256
        self.weights_identity = f"ours:sha256={sha256}"  # the file alone, without its normalisation
        # the norm stats belong to the identity: other stats change every embedding of the same file
        identity = f"{self.weights_identity}:norm={float(norm.mean)!r},{float(norm.std)!r}"
        super().__init__(
            lambda audio: clip_embedding(model, audio.to(device)),
            name=weights.stem,
            sample_rate=model.sample_rate,
            identity=identity,
            min_samples=min_samples(model, 1),
            source=f"clip_embedding of {weights}",
            norm=norm,
        )

    def with_norm(self, norm: NormStats) -> WeightsEmbedder:
        """The same weights with the log-mel normalisation ``norm`` (a new model; this one is unchanged)."""
        from hear_diffbyola.weights import load_pretrained

        model = load_pretrained(self.weights, norm_mean=norm.mean, norm_std=norm.std, device=self.device)
        return WeightsEmbedder(model, self.weights, self.sha256, self.device, norm)


def ours(
    weights: str | Path | None = None,
    device: str = "cpu",
    norm_mean: float | None = None,
    norm_std: float | None = None,
) -> WeightsEmbedder:
    """Our ``.safetensors`` export (or an official BYOL-A .pth; ``None`` = the shipped weights) through the
    core loader and ``clip_embedding``. Raises ``WeightsError`` for a missing or unreadable file."""
    from hear_diffbyola.weights import DEFAULT_WEIGHTS, load_pretrained

    model = load_pretrained(weights, norm_mean=norm_mean, norm_std=norm_std, device=device)
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    norm = model.header["norm"]
    given = norm_mean is not None or norm_std is not None
    stats = NormStats("given" if given else "weights", float(norm["mean"]), float(norm["std"]))
    return WeightsEmbedder(model, path, file_sha256(path), device, stats)


def _model_device(model: Any, default: str) -> torch.device | str:
    """Where a HEAR model's weights are (the audio must go there); ``default`` for a model without any."""
    first = (
        next(itertools.chain(model.parameters(), model.buffers()), None) if isinstance(model, torch.nn.Module) else None
    )
    return default if first is None else first.device


def hear_module(module: str, model_path: str | Path | None = None, device: str = "cpu") -> Embedder:
    """Any module with the HEAR API, by import name: ``load_model(model_path)`` (or ``load_model()``) -> a
    model with an integer ``sample_rate``; ``get_scene_embeddings(audio (B, N) tensor, model)`` -> (B, d)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise TaskError(
            f"cannot import HEAR module {module!r} ({e}); install it or put its folder on PYTHONPATH, or check the name"
        ) from e
    for attr in ("load_model", "get_scene_embeddings"):
        if not callable(getattr(mod, attr, None)):
            raise TaskError(
                f"{module!r} is not a HEAR module: it has no {attr}() "
                "(the HEAR API needs load_model and get_scene_embeddings)"
            )
    path = Path(model_path) if model_path else None
    if path is not None and not path.exists():
        raise TaskError(
            f"model file {path} for HEAR module {module!r} does not exist; give an existing file "
            "with --model, or no --model if the module loads its own default"
        )
    model = mod.load_model(str(path)) if path is not None else mod.load_model()
    if isinstance(model, torch.nn.Module):  # the HEAR API returns one; .to is only safe on a Module
        model = model.to(device)
    rate = getattr(model, "sample_rate", None)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise TaskError(
            f"HEAR module {module!r}: the model from load_model() has no positive integer "
            f"sample_rate attribute (got {rate!r}); the HEAR API requires one"
        )
    version = str(getattr(mod, "__version__", "") or "unknown")
    if path is None:
        model_part = "default model"
    elif path.is_file():
        model_part = f"sha256={file_sha256(path)}"
    else:  # a model folder: its path is the best identity we can afford to compute
        model_part = f"path={path.resolve()}"
    return Embedder(
        lambda audio: mod.get_scene_embeddings(audio.to(_model_device(model, device)), model),
        name=module if path is None else f"{module}:{path.stem}",
        sample_rate=int(rate),
        identity=f"hear:{module}:version={version}:{model_part}",
        source=f"HEAR module {module!r}: get_scene_embeddings",
        norm=NormStats("hear-module"),
    )


_hear_module = hear_module  # make_embedder's parameter of the same name hides the function


def make_embedder(model: str | Path | None = None, hear_module: str | None = None, device: str = "cpu") -> Embedder:
    """Command-line style choice: ``hear_module`` given -> that module with ``model`` as its model file;
    otherwise ``model`` is our weights file (``None`` = the shipped weights)."""
    return _hear_module(hear_module, model, device) if hear_module else ours(model, device)


def _as_clip(wave: np.ndarray, index: int, embedder: Embedder) -> np.ndarray:
    wave = np.asarray(wave)  # its own dtype: Embedder.embed refuses integer PCM instead of converting it
    if wave.ndim != 1:
        raise TaskError(
            f"clip {index} has shape {wave.shape}; embed_waves takes 1-D (mono) waveforms at {embedder.sample_rate} Hz"
        )
    # zeros at the end: only clips too short for one encoder frame are touched
    return np.pad(wave, (0, max(0, embedder.min_samples - wave.size)))


def embed_waves(
    embedder: Embedder, waves: Sequence[np.ndarray], batch_size: int = 16, names: Sequence[Any] | None = None
) -> np.ndarray:
    """1-D floating-point clips at ``embedder.sample_rate`` -> (len(waves), d) float32 in order ((0, 0) for
    no clips). ``names`` (one per clip; default: their indices) label the clips in input-check messages.

    Clips shorter than ``embedder.min_samples`` are zero-padded to it. A batch of ``batch_size`` clips of
    equal length and dtype is embedded in one call; a batch of ragged lengths goes clip by clip, since
    padding clips to a common length would change their pooled embeddings.
    """
    if batch_size < 1:
        raise TaskError(f"batch_size must be at least 1, got {batch_size}")
    labels = list(range(len(waves))) if names is None else list(names)
    out: list[np.ndarray] = []
    for i in range(0, len(waves), batch_size):
        idx = range(i, min(i + batch_size, len(waves)))
        batch = [_as_clip(waves[j], j, embedder) for j in idx]
        if len({(w.size, w.dtype) for w in batch}) == 1:
            out.append(embedder.embed(np.stack(batch), [labels[j] for j in idx]))
        else:
            out.extend(embedder.embed(w[None], [labels[j]]) for j, w in zip(idx, batch, strict=True))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_audio_files(
    embedder: Embedder, paths: Sequence[str | Path], batch_size: int = 16, bar: Any = None, damaged_hint: str = ""
) -> np.ndarray:
    """Audio files -> (len(paths), d) float32, read ``batch_size`` at a time (memory: one batch of audio).

    ``bar``: anything with ``update(n)`` (a tqdm bar), advanced per batch. An unreadable file raises
    ``TaskError`` naming it, followed by ``damaged_hint`` (what the user should do about it).
    """
    out: list[np.ndarray] = []
    for i in range(0, len(paths), batch_size):
        waves = []
        for p in paths[i : i + batch_size]:
            try:
                waves.append(read_audio(p, embedder.sample_rate))
            except AudioReadError as e:
                raise TaskError(f"{e}; {damaged_hint}" if damaged_hint else str(e)) from None
        out.append(embed_waves(embedder, waves, batch_size, [str(p) for p in paths[i : i + batch_size]]))
        if bar is not None:
            bar.update(len(waves))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ----------------------------------------------------------------------------------------------------------
# log-mel normalisation statistics of a task's training audio


def _stats_model(weights_or_model: Any, device: str) -> PretrainedModel:
    from hear_diffbyola.weights import PretrainedModel, load_pretrained

    if isinstance(weights_or_model, WeightsEmbedder):
        return weights_or_model.model
    if isinstance(weights_or_model, PretrainedModel):
        return weights_or_model
    if isinstance(weights_or_model, Embedder):
        raise TaskError(
            f"{weights_or_model.name}: log-mel statistics need our weights (a PretrainedModel); "
            "a HEAR module or other embedder normalises its input itself"
        )
    return load_pretrained(weights_or_model, device=device)


def task_norm_stats(
    weights_or_model: str | Path | PretrainedModel | WeightsEmbedder | None,
    waves: Iterable[np.ndarray],
    sample_rate: int,
    device: str = "cpu",
) -> NormStats:
    """Mean and std over every log-mel value of ``waves`` (1-D clips at ``sample_rate``), computed with the
    model's own front end before normalisation (``model.frontend.logmel``), as BYOL-A's and EVAR's
    evaluations normalise a task's log-mels. Give it the task's *training* clips only.

    ``weights_or_model``: a weights file (``None`` = the shipped weights, loaded on ``device``), a
    ``PretrainedModel`` or a :class:`WeightsEmbedder`. Clips shorter than one encoder frame are
    zero-padded at the end, as the embedding pads them. Streams: one clip's log-mel in memory at a time.
    """
    from hear_diffbyola.embed import min_samples
    from hear_diffbyola.frontend import running_stats

    model = _stats_model(weights_or_model, device)
    if int(sample_rate) != model.sample_rate:
        raise TaskError(
            f"task_norm_stats: the clips are at {sample_rate} Hz but the model's front end expects "
            f"{model.sample_rate} Hz; read them at the model's rate"
        )
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    where = first.device if first is not None else torch.device("cpu")
    pad = min_samples(model, 1)
    count = 0

    def logmels() -> Iterable[torch.Tensor]:
        nonlocal count
        for i, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1:
                raise TaskError(f"task_norm_stats: clip {i} has shape {wave.shape}; give 1-D (mono) waveforms")
            wave = np.pad(wave, (0, max(0, pad - wave.size)))
            count += 1
            with torch.no_grad():
                yield model.frontend.logmel(torch.from_numpy(wave)[None].to(where))  # (1, n_mels, T)

    try:
        mean, std = running_stats(logmels())
    except TaskError:
        raise
    except ValueError:
        if count:
            raise
        raise TaskError("no training clips to compute the log-mel normalisation statistics from") from None
    if not (np.isfinite(mean) and np.isfinite(std)) or std <= 0:
        raise TaskError(
            f"task_norm_stats: the {count} training clips give unusable log-mel statistics (mean {mean}, "
            f"std {std}); some hold NaN or Inf: check the task's training audio"
        )
    return NormStats("task-train", float(mean), float(std), count)


def _read_files(paths: Sequence[str | Path], sample_rate: int, damaged_hint: str, bar: Any) -> Iterable[np.ndarray]:
    for p in paths:
        try:
            wave = read_audio(p, sample_rate)
        except AudioReadError as e:
            raise TaskError(f"{e}; {damaged_hint}" if damaged_hint else str(e)) from None
        # the embeddings' own input check, so a NaN file is named here and not as NaN statistics
        check_audio(torch.from_numpy(wave)[None], "log-mel statistics of the training audio", [str(p)], stacklevel=3)
        yield wave
        if bar is not None:
            bar.update(1)


def task_normalised(
    embedder: Embedder,
    train_files: Sequence[str | Path],
    norm: str = "task",
    *,
    cache_dir: str | Path | None = None,
    data_id: str | None = None,
    damaged_hint: str = "",
    progress: bool = False,
) -> Embedder:
    """The embedder an evaluator uses, per ``norm`` (one of :data:`NORM_CHOICES`):

    * ``"task"`` with our weights: the same weights normalised with :func:`task_norm_stats` of
      ``train_files`` (the task's training audio, read at the model's rate); any statistics the embedder
      had are replaced;
    * ``"weights"``: ``embedder`` as it is (the weights file's statistics, or those given to :func:`ours`);
    * a HEAR module or other embedder: itself, whatever ``norm`` says (it normalises its own input).

    With ``cache_dir`` and ``data_id`` (a name that changes whenever ``train_files``' content does, such as a
    task build id) the statistics are cached there (``tasks.cache``), so a repeated evaluation need not read
    the training audio again. The result's ``norm`` says what it applies: :func:`norm_record` for results.
    """
    from tqdm import tqdm

    from .cache import cache_file, cached_arrays

    if norm not in NORM_CHOICES:
        raise TaskError(
            f"unknown normalisation {norm!r}; choose 'task' (statistics of the task's training audio, "
            "as BYOL-A evaluates) or 'weights' (the weights file's pretraining statistics)"
        )
    if norm == "weights" or not isinstance(embedder, WeightsEmbedder):
        return embedder
    key = {
        "format": "hear-diffbyola/norm-stats/1",
        "weights": embedder.weights_identity,
        "data": data_id,
        "clips": len(train_files),
    }
    path = cache_file(cache_dir, f"norm-{embedder.name}", key) if cache_dir is not None and data_id else None

    def compute() -> dict[str, np.ndarray]:
        with tqdm(
            total=len(train_files), desc=f"norm stats ({embedder.name})", unit="clip", disable=not progress
        ) as bar:
            stats = task_norm_stats(
                embedder, _read_files(train_files, embedder.sample_rate, damaged_hint, bar), embedder.sample_rate
            )
        return {"mean": np.float64(stats.mean), "std": np.float64(stats.std), "clips": np.int64(stats.clips)}

    arrays = cached_arrays(path, key, compute)
    return embedder.with_norm(
        NormStats("task-train", float(arrays["mean"]), float(arrays["std"]), int(arrays["clips"]))
    )


def norm_record(embedder: Embedder, requested: str, train_splits: Sequence[str] | None = None) -> dict[str, Any]:
    """What goes into a results file: the normalisation asked for, and the one the embedder applies
    (with ``train_splits``, the splits task statistics came from, when they were used)."""
    rec: dict[str, Any] = {"requested": requested, **embedder.norm.to_dict()}
    if train_splits is not None and embedder.norm.source == "task-train":
        rec["splits"] = list(train_splits)
    if embedder.norm.source in ("hear-module", "embedder"):
        rec["note"] = "the model normalises its own input; the task's statistics cannot be applied to it"
    return rec


def describe_norm(rec: dict[str, Any]) -> str:
    """One phrase for a results file's ``norm`` record (:func:`norm_record`), for tables."""
    source = rec.get("source")
    if source == "task-train":
        return f"task training audio (mean {rec['mean']:.4f}, std {rec['std']:.4f}, {rec['clips']} clips)"
    if source in ("weights", "given"):
        what = "weights file" if source == "weights" else "given statistics"
        return f"{what} (mean {rec['mean']:.4f}, std {rec['std']:.4f})"
    return "the model's own (it normalises its input itself)"
