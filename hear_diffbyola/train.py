"""The pretraining loop: devices, DDP, bf16 autocast, atomic checkpoints, exact resume, metrics.

Run layout (``out``):
  config.yaml               the full configuration of the run
  checkpoints/last.pt       latest checkpoint (atomic; tensors and plain types only)
  metrics.csv               step, l_byol, l_diff, loss, lr, clips_per_s (means over log_every steps)
  loss_curve.png            written at the end of the run
  bad_files.txt             unreadable corpus files that were left out (folder corpora)
  summary.json              steps, wall time, hardware, final losses, per-rank weight digests
"""

from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from . import fused
from .augment import ViewAugmenter
from .config import ConfigError, PretrainConfig, with_train
from .corpus import NORM_STREAM, ClipSource, CorpusError, CropDataset, StepBatchSampler, open_corpus
from .encoder import build_encoder
from .errors import DiffByolaError
from .frontend import LogMelSpectrogram, Normalizer, running_stats
from .learner import DiffBYOLA
from .objectives import sample_gamma
from .runtime import tune_cpu_allocator
from .weights import atomic_write

METRIC_FIELDS = ["step", "l_byol", "l_diff", "loss", "lr", "clips_per_s"]
CHECKPOINT = Path("checkpoints") / "last.pt"
CHECKPOINT_FORMAT = 2  # 2: config carries encoder.arch
# Keys that may differ when resuming: they change no result, only how long or how it is observed.
RESUMABLE_CHANGES = {"steps", "epochs", "num_workers", "log_every", "checkpoint_every", "device"}


class TrainingError(DiffByolaError, RuntimeError):
    """Training cannot go on; the message says why and what was kept."""


# ---------------------------------------------------------------- environment


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec!r} but CUDA is not available; use train.device=cpu or auto")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def hardware_description(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        return f"{world_size} x {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{world_size} process(es) on CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def git_commit() -> str:
    """HEAD of the source checkout this package runs from, with "+dirty" when tracked files differ from it
    (provenance should not claim a commit the code was not at); "unknown" outside a checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        if not head:
            return "unknown"
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer, in name order: equal digests = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    # Serialised in memory first, so a full disk is a plain OSError of the file write (atomic_write
    # names it) and not torch's opaque "enforce fail at inline_container.cc".
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getbuffer()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of this or an earlier version; earlier ones (no ``format``) predate ``encoder.arch``
    and all hold an AudioNTT2020, which their config then says explicitly."""
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path} to resume from; start without --resume")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"checkpoint {path} is unreadable ({e}); it may come from another version") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise TrainingError(
            f"checkpoint {path} holds no run configuration; it was not written by 'hear-diffbyola pretrain'"
        )
    if ckpt.get("format") is None:
        enc = dict(ckpt["config"].get("encoder") or {})
        enc.setdefault("arch", "audiontt2020")
        ckpt["config"] = {**ckpt["config"], "encoder": enc}
        ckpt["format"] = CHECKPOINT_FORMAT
    return ckpt


# ---------------------------------------------------------------- metrics


def write_metrics_header(path: Path, keep_until_step: int | None) -> None:
    """Start metrics.csv, or on resume keep only rows up to the checkpoint step."""
    rows = []
    if keep_until_step is not None and path.exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(rows)


def plot_loss_curve(metrics_csv: Path, out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "l_byol", "l_diff"):
        vals = [float(r[key]) if r[key] not in ("", None) else math.nan for r in rows]
        if not all(math.isnan(v) for v in vals):
            ax.plot(step, vals, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (2 - 2 cos)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- the run


def compute_norm_stats(source: ClipSource, config: PretrainConfig, device: torch.device) -> tuple[float, float]:
    """BYOL-A pre-normalisation statistics: mean/std of log-mel over up to ``norm_clips`` random crops."""
    t = config.train
    n_samples = config.frontend.samples_for_frames(_crop_frames(config))
    ds = CropDataset(source, n_samples, t.seed)
    logmel = LogMelSpectrogram(config.frontend).to(device)
    n = min(t.norm_clips, len(source))
    keys = [(NORM_STREAM, 0, i) for i in np.random.default_rng([t.seed, NORM_STREAM]).permutation(len(source))[:n]]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=64, sampler=keys, num_workers=t.num_workers, generator=torch.Generator().manual_seed(t.seed)
    )
    with torch.no_grad():
        return running_stats(logmel(x.to(device)) for x in loader)


def _crop_frames(config: PretrainConfig) -> int:
    return 1 + int(round(config.train.crop_seconds * config.frontend.sample_rate)) // config.frontend.hop_length


def total_steps(config: PretrainConfig, n_items: int) -> int:
    t = config.train
    return t.steps if t.steps is not None else t.epochs * (n_items // t.batch_size)


def check_resume_config(saved: PretrainConfig, new: PretrainConfig) -> PretrainConfig:
    """On resume the checkpoint's config rules; only RESUMABLE_CHANGES may be changed."""
    diffs = []
    for sec, vals in new.to_dict().items():
        for k, v in vals.items():
            old = saved.to_dict()[sec][k]
            if old != v and not (sec == "train" and k in RESUMABLE_CHANGES):
                diffs.append(f"{sec}.{k}: checkpoint {old!r}, now {v!r}")
    if diffs:
        raise ConfigError(
            "cannot resume with a different configuration ("
            + "; ".join(diffs)
            + f"). Only train.{{{', '.join(sorted(RESUMABLE_CHANGES))}}} may change on resume."
        )
    return replace(saved, train=replace(saved.train, **{k: getattr(new.train, k) for k in RESUMABLE_CHANGES}))


def pretrain(config: PretrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pretrain on ``config.train.corpus`` and write the run into ``out``. Returns the summary.

    Under torchrun (WORLD_SIZE > 1) each process trains on its slice of every global batch with DDP;
    rank 0 alone logs and checkpoints.
    """
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    device = pick_device(config.train.device, local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _pretrain(config, Path(out), resume, progress, rank, world, device)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class StepParts:
    """Everything one optimisation step touches; shared by the trainer and bench/pretrain_throughput.py."""

    learner: DiffBYOLA
    model: torch.nn.Module  # the learner, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    logmel: LogMelSpectrogram
    prenorm: Normalizer
    augmenter: ViewAugmenter
    aug_gen: torch.Generator
    config: PretrainConfig
    amp: bool


def build_step_parts(
    config: PretrainConfig, norm: tuple[float, float], device: torch.device, rank: int = 0
) -> StepParts:
    t = config.train
    if t.amp == "bf16" and device.type != "cuda":
        raise ConfigError("train.amp=bf16 needs a CUDA device; use train.amp=auto or off on CPU")
    torch.manual_seed(t.seed)  # same initial weights on every rank
    learner = DiffBYOLA(build_encoder(config.encoder), config.learner).to(device)
    # channels_last: faster convolutions and pooling on CPU (oneDNN) and on GPU (cuDNN).
    learner = learner.to(memory_format=torch.channels_last)
    # fused: one kernel over all tensors; on CPU ~3x faster than the default per-tensor loop (22 M v2
    # parameters: bench/pretrain_throughput.py --micro), the same update
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam([p for p in learner.parameters() if p.requires_grad], lr=t.lr, fused=fused)
    aug_gen = torch.Generator().manual_seed(t.seed * 7919 + rank)
    torch.manual_seed(t.seed + 104729 * (rank + 1))  # dropout differs across ranks, as in any DDP run
    return StepParts(
        learner=learner,
        model=learner,
        optimizer=optimizer,
        logmel=LogMelSpectrogram(config.frontend).to(device),
        prenorm=Normalizer(*norm),
        augmenter=ViewAugmenter(config.augment),
        aug_gen=aug_gen,
        config=config,
        amp=device.type == "cuda" and t.amp in ("auto", "bf16"),
    )


def training_step(parts: StepParts, wave: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on a batch of waveforms (b, N): log-mel, views, losses, backward, Adam, EMA."""
    device = parts.logmel.mel_fb.device
    wave = wave.to(device, non_blocking=True)
    with torch.no_grad():
        x = parts.prenorm(parts.logmel(wave)).unsqueeze(1)  # (b, 1, F, T)
        v1, v2 = parts.augmenter(x, parts.aug_gen)
    return step_on_views(parts, v1, v2)


def step_on_views(parts: StepParts, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, torch.Tensor]:
    """The step after augmentation, on two views (b, 1, F, T) already on the device: gamma, losses, backward,
    Adam, EMA. byol-pytorch's step starts here too (its views come from the data loader), which is what
    bench/official_compare.py times side by side."""
    lc = parts.config.learner
    gamma = sample_gamma(v1.shape[0], lc.gamma_low, lc.gamma_high, parts.aug_gen) if lc.lam > 0 else None
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16) if parts.amp else nullcontext():
        terms = parts.model(v1, v2, gamma)
    parts.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    parts.optimizer.step()
    parts.learner.update_target()
    return terms


@dataclass
class Run:
    """Where a run is and who it is: the folder, this process's place in it, and what it resumes from."""

    out: Path
    config: PretrainConfig
    device: torch.device
    rank: int = 0
    world: int = 1
    ckpt: dict[str, Any] | None = None
    lock: Any = None  # the open lock file of rank 0, held for the run's lifetime

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _pretrain(
    config: PretrainConfig, out: Path, resume: bool, progress: bool, rank: int, world: int, device: torch.device
) -> dict[str, Any]:
    """The recipe, one named step per line (BYOL-A's train.py order: data, norm stats, model, fit, save)."""
    run = open_run(Run(out, config, device, rank, world), resume)
    try:
        return _train(run, progress)
    finally:
        if run.lock is not None:
            run.lock.close()  # releases the lock


def _train(run: Run, progress: bool) -> dict[str, Any]:
    device, rank = run.device, run.rank
    source = open_source(run)
    steps = total_steps(run.config, len(source))
    if run.ckpt is not None and int(run.ckpt["step"]) >= steps:
        return already_finished(run, steps)
    write_run_files(run, source)
    norm = norm_stats(run, source)
    parts = build_step_parts(run.config, norm, device, rank)
    if run.is_main and fused.usable(device):
        print(
            "[hear-diffbyola] CPU: the first step compiles the first conv block (5-25 s per batch shape, then cached)"
        )
    start, wall_before = restore_state(run, parts)
    if run.distributed:
        parts.model = torch.nn.parallel.DistributedDataParallel(
            parts.learner, device_ids=[device.index] if device.type == "cuda" else None
        )
    loader = make_loader(run, source, start, steps)
    log = MetricsLog(run, start)
    save = Checkpointer(run, parts, norm, source)
    step, wall = fit(run, parts, loader, start, steps, wall_before, log, save, progress)
    return finish(run, parts, step, wall, norm, log.last)


def open_run(run: Run, resume: bool) -> Run:
    """Own the run folder (exclusive lock, stale temp files removed), then resume from its checkpoint
    (its config rules) or refuse to overwrite one."""
    if run.out.exists() and not run.out.is_dir():
        raise TrainingError(f"--out {run.out} is an existing file, not a folder; choose a folder for the run")
    if run.is_main:
        run.lock = lock_run_folder(run.out)
        for stale in (run.out / CHECKPOINT).parent.glob(CHECKPOINT.name + ".*.tmp"):
            stale.unlink()  # left by a write that was killed; ours are never in flight here (we hold the lock)
    run.config = with_resolved_corpus(run.config)
    ckpt_path = run.out / CHECKPOINT
    if resume:
        run.ckpt = load_checkpoint(ckpt_path)
        run.config = check_resume_config(PretrainConfig.from_dict(run.ckpt["config"]), run.config)
    elif ckpt_path.exists():
        raise TrainingError(
            f"{run.out} already holds a run (checkpoint {ckpt_path}); pass --resume to continue it "
            "or choose another --out"
        )
    prepare_device(run.device)
    return run


def prepare_device(device: torch.device) -> None:
    """The process-wide settings a training step relies on (the trainer and the benchmarks call it).

    CUDA: deterministic kernels, because resume is bit-exact only if a step is: cuDNN's default backward
    algorithms and cuBLAS's split reductions may sum in any order (the step itself avoids the CUDA ops that
    have no deterministic kernel, such as cumsum: ``learner.tap_moments``); warn_only, so an op that
    has none warns instead of stopping a run.
    CPU: glibc keeps freed memory for the next step (:func:`runtime.tune_cpu_allocator`)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        tune_cpu_allocator()


def lock_run_folder(out: Path) -> Any:
    """An exclusive, non-blocking lock on ``out/.lock`` holding our pid; a second process is refused.

    A POSIX record lock (lockf), not flock: it belongs to this process alone, so DataLoader workers that
    inherit the file do not keep it after a killed trainer, and the next ``--resume`` gets it at once."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / ".lock", "a+")
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise TrainingError(
            f"{out} is in use by another pretraining process (pid {holder}); wait for it to end, "
            "or choose another --out"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def with_resolved_corpus(config: PretrainConfig) -> PretrainConfig:
    """A folder or list corpus as its absolute path, so a run (and its resume) means one place on disk
    whatever the working directory and however the path was written."""
    corpus = config.train.corpus
    if corpus == "embedded":
        return config
    return with_train(config, corpus=str(Path(corpus).expanduser().resolve()))


def corpus_fingerprint(source: ClipSource) -> str:
    """sha256 of what the run reads: every usable file's path and size (file corpora), or the corpus description."""
    h = hashlib.sha256()
    files = getattr(source, "files", None)
    if files is None:
        h.update(source.describe().encode())
    else:
        for path in files:
            h.update(f"{path}\0{Path(path).stat().st_size}\n".encode())
    return h.hexdigest()


def open_source(run: Run) -> ClipSource:
    """The corpus. A bad corpus still leaves its complete bad_files.txt in the run folder; on resume the
    corpus must be the checkpoint's (same files, same sizes)."""
    t = run.config.train
    try:
        source = open_corpus(
            t.corpus,
            run.config.frontend.sample_rate,
            embedded_size=t.embedded_size,
            embedded_duration=t.embedded_duration,
            seed=t.seed,
            max_bad_fraction=t.max_bad_fraction,
        )
    except CorpusError as e:
        if run.is_main and getattr(e, "bad", None):
            write_bad_files(run.out, e.bad)
            raise CorpusError(f"{e} All {len(e.bad)} are listed in {run.out / 'bad_files.txt'}.") from e
        raise
    saved = (run.ckpt or {}).get("corpus_fingerprint")
    if saved is not None and saved != corpus_fingerprint(source):
        raise TrainingError(
            f"cannot resume {run.out}: corpus {t.corpus} is not the one this run trained on (its "
            f"files or their sizes differ from the checkpoint's: {source.describe()}); resume with "
            "the run's own corpus, or start a new run with --out"
        )
    return source


def write_bad_files(out: Path, bad: list[tuple[str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bad_files.txt").write_text("".join(f"{p}\t{r}\n" for p, r in bad))


def write_run_files(run: Run, source: ClipSource) -> None:
    """Rank 0: config.yaml and the list of unreadable files that were left out."""
    if not run.is_main:
        return
    (run.out / "config.yaml").write_text(run.config.to_yaml())
    bad = getattr(source, "bad", [])
    if bad:
        write_bad_files(run.out, bad)
        print(f"[hear-diffbyola] {len(bad)} unreadable corpus files left out, listed in {run.out / 'bad_files.txt'}")
    print(f"[hear-diffbyola] corpus: {source.describe()}")


def already_finished(run: Run, steps: int) -> dict[str, Any]:
    """--resume of a run that reached its steps: say so, change nothing, return its summary."""
    done = int(run.ckpt["step"])
    if run.is_main:
        print(
            f"[hear-diffbyola] {run.out} is already finished ({done} of {steps} steps); nothing to do. To train "
            f"further, resume with a larger --steps."
        )
    path = run.out / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        summary = {"steps": done, "wall_time_s": float(run.ckpt.get("wall_time", 0.0)), "final": {}}
    return {**summary, "already_finished": True}


def norm_stats(run: Run, source: ClipSource) -> tuple[float, float]:
    """Pre-normalisation stats: computed once by rank 0 and broadcast, or carried by the checkpoint."""
    if run.ckpt is not None:
        return float(run.ckpt["norm"]["mean"]), float(run.ckpt["norm"]["std"])
    norm = compute_norm_stats(source, run.config, run.device) if run.is_main else (0.0, 1.0)
    if run.distributed:
        box = [norm]
        dist.broadcast_object_list(box, src=0)
        norm = box[0]
    return norm


def restore_state(run: Run, parts: StepParts) -> tuple[int, float]:
    """Weights, optimiser, Mixup memory and every RNG from the checkpoint: (start step, wall time so far)."""
    if run.ckpt is None:
        return 0, 0.0
    ckpt = run.ckpt
    parts.learner.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    rank_states = ckpt["rank_states"]
    if run.rank < len(rank_states):
        rs = rank_states[run.rank]
        parts.augmenter.mixup.set_state(rs["mixup"], run.device)
        parts.aug_gen.set_state(rs["aug_rng"])
        torch.set_rng_state(rs["torch_rng"])
        if run.device.type == "cuda" and rs.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(rs["cuda_rng"], run.device)
    elif run.is_main:
        print(
            f"[hear-diffbyola] checkpoint has {len(rank_states)} rank states, resuming with {run.world} processes: "
            "extra ranks start with a fresh Mixup memory"
        )
    return int(ckpt["step"]), float(ckpt.get("wall_time", 0.0))


def make_loader(run: Run, source: ClipSource, start: int, steps: int) -> torch.utils.data.DataLoader:
    """Batches of random crops in a seeded order that a resumed run continues at ``start``."""
    config, t = run.config, run.config.train
    n_samples = config.frontend.samples_for_frames(_crop_frames(config))
    sampler = StepBatchSampler(len(source), t.batch_size, t.seed, start, steps, run.rank, run.world)
    return torch.utils.data.DataLoader(
        CropDataset(source, n_samples, t.seed),
        batch_sampler=sampler,
        num_workers=t.num_workers,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(t.seed),
        persistent_workers=False,
    )


class MetricsLog:
    """Means of the loss terms over each ``log_every`` steps, appended to metrics.csv by rank 0."""

    def __init__(self, run: Run, start: int) -> None:
        self.run, self.path = run, run.out / "metrics.csv"
        self.lam = run.config.learner.lam
        if run.is_main:
            write_metrics_header(self.path, start if run.ckpt is not None else None)
        self.acc = torch.zeros(3, device=run.device)  # running sums of l_byol, l_diff, loss
        self.n, self.clips, self.t0 = 0, 0, time.perf_counter()
        self.last: dict[str, Any] = {}

    def add(self, terms: dict[str, torch.Tensor], clips: int) -> None:
        zero = torch.zeros((), device=self.run.device)
        self.acc += torch.stack([terms["l_byol"], terms.get("l_diff", zero), terms["loss"].detach()])
        self.n += 1
        self.clips += clips

    def write(self, step: int, lr: float) -> dict[str, Any]:
        means = (self.acc / self.n).tolist()
        if not all(math.isfinite(v) for v in means):
            raise TrainingError(
                f"loss became {means[2]} (l_byol={means[0]}, l_diff={means[1]}) by step {step}; stopped without "
                f"saving. The last good checkpoint ({self.run.out / CHECKPOINT}, if any) is intact. Try a lower train.lr."
            )
        now = time.perf_counter()
        self.last = {
            "step": step,
            "l_byol": means[0],
            "l_diff": means[1] if self.lam > 0 else "",
            "loss": means[2],
            "lr": lr,
            "clips_per_s": self.clips / max(now - self.t0, 1e-9),
        }
        if self.run.is_main:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=METRIC_FIELDS).writerow(self.last)
        self.acc.zero_()
        self.n, self.clips, self.t0 = 0, 0, now
        return self.last


class Checkpointer:
    """Writes checkpoints/last.pt atomically: weights, optimiser, every rank's RNG and Mixup state, provenance."""

    def __init__(self, run: Run, parts: StepParts, norm: tuple[float, float], source: ClipSource) -> None:
        self.run, self.parts, self.norm = run, parts, norm
        self.hardware = hardware_description(run.device, run.world)
        self.commit = git_commit()
        self.provenance = {
            "corpus": source.describe(),
            "seed": run.config.train.seed,
            "hardware": self.hardware,
            "git_commit": self.commit,
            "world_size": run.world,
        }
        self.fingerprint = corpus_fingerprint(source)

    def __call__(self, step: int, wall: float) -> None:
        run, parts, device = self.run, self.parts, self.run.device
        if run.distributed:
            _sync_buffers(parts.learner)
        rs = {
            "mixup": parts.augmenter.mixup.get_state(),
            "aug_rng": parts.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        states = [None] * run.world if run.distributed else [rs]
        if run.distributed:
            dist.all_gather_object(states, rs)
        if run.is_main:
            save_checkpoint(
                run.out / CHECKPOINT,
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": run.config.to_dict(),
                    "model": parts.learner.state_dict(),
                    "optimizer": parts.optimizer.state_dict(),
                    "rank_states": states,
                    "step": step,
                    "norm": {"mean": self.norm[0], "std": self.norm[1]},
                    "wall_time": wall,
                    "provenance": self.provenance,
                    "corpus_fingerprint": self.fingerprint,
                },
            )


def fit(
    run: Run,
    parts: StepParts,
    loader: torch.utils.data.DataLoader,
    start: int,
    steps: int,
    wall_before: float,
    log: MetricsLog,
    save: Checkpointer,
    progress: bool,
) -> tuple[int, float]:
    """The training loop: a step per batch, metrics every ``log_every`` steps, a checkpoint every
    ``checkpoint_every`` and at the end. Returns (last step, total wall time)."""
    t = run.config.train
    bar = tqdm(total=steps, initial=start, disable=not (progress and run.is_main), dynamic_ncols=True, desc="pretrain")
    t0 = log.t0 = time.perf_counter()
    step = start
    parts.learner.train()
    for wave in loader:
        terms = training_step(parts, wave)
        step += 1
        log.add(terms, wave.shape[0] * run.world)
        bar.update(1)
        if step % t.log_every == 0 or step % t.checkpoint_every == 0 or step == steps:
            last = log.write(step, parts.optimizer.param_groups[0]["lr"])
            bar.set_postfix(
                {k: f"{last[k]:.3f}" for k in ("l_byol", "l_diff", "loss") if last[k] != ""}
                | {"clips/s": f"{last['clips_per_s']:.0f}"}
            )
        if step % t.checkpoint_every == 0 or step == steps:
            save(step, wall_before + time.perf_counter() - t0)
    bar.close()
    return step, wall_before + time.perf_counter() - t0


def finish(
    run: Run, parts: StepParts, step: int, wall: float, norm: tuple[float, float], last: dict[str, Any]
) -> dict[str, Any]:
    """summary.json and the loss curve; checks that every DDP rank ended with the same weights."""
    if run.distributed:
        _sync_buffers(parts.learner)
    digest = state_digest(parts.learner)
    digests = [None] * run.world if run.distributed else [digest]
    if run.distributed:
        dist.all_gather_object(digests, digest)
    lam = run.config.learner.lam
    summary = {
        "steps": step,
        "wall_time_s": wall,
        "hardware": hardware_description(run.device, run.world),
        "git_commit": git_commit(),
        "world_size": run.world,
        "lam": lam,
        "final": last,
        "norm": {"mean": norm[0], "std": norm[1]},
        "rank_digests": digests,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if run.is_main:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_loss_curve(run.out / "metrics.csv", run.out / "loss_curve.png", f"pretraining, lambda={lam}")
        if len(set(digests)) != 1:
            raise TrainingError(f"DDP ranks ended with different weights: {digests}")
    return summary


def _sync_buffers(learner: DiffBYOLA) -> None:
    """BN running stats drift apart per rank after the last forward; take rank 0's, as DDP does each forward."""
    for b in learner.buffers():
        dist.broadcast(b, src=0)
