"""Build a BgKnown task folder from local ESC-50 + FSD50K copies, or from the embedded corpus.

For every foreground clip (an ESC-50 clip, or a synthetic event) one background recording of at least
10 s is chosen (FSD50K dev for ESC-50 folds 1-3, FSD50K eval for folds 4-5, each clip used once), and
three 5 s crops are cut from it: (a), (b) overlapping (a) by exactly half, (c) sharing no sample with
(a). (a) is mixed under the foreground at an SNR ~ U(0, 3) dB as Scaper defines it (see
``tasks.mixing``); the mixture and the three references are written as 16 kHz mono 16-bit WAV with one
common background gain. Labels are the foreground's.

Everything random is drawn from ``numpy.random.default_rng([seed, pool, index, stream])`` per item
(pool 0 = training side, 1 = test side), so an item does not depend on the number of worker processes
or on the order in which they finish, and train and test never share a seed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hear_diffbyola import __version__
from hear_diffbyola.audio import AudioReadError, audio_info, read_audio, write_audio

from .. import TaskError
from ..build_folder import building
from ..mixing import LUFS_FLOOR, crop, draw_reference_crops, event_loudness, mix_at_snr
from .manifest import (
    DEFAULT_TEST_PER_CLASS,
    DEFAULT_TRAIN_PER_CLASS,
    FORMAT,
    MANIFEST,
    REFS,
    SPLITS,
    BuildParams,
    audio_paths,
    compute_build_id,
)

__all__ = [
    "Esc50Clip",
    "read_esc50",
    "read_fsd50k",
    "build_from_datasets",
    "build_synthetic",
    "DEFAULT_TRAIN_PER_CLASS",
    "DEFAULT_TEST_PER_CLASS",
]

ESC50_COLUMNS = ("filename", "fold", "target", "category")
FSD50K_COLUMNS = ("fname", "labels")
TRAIN_FOLDS, TEST_FOLDS = (1, 2, 3), (4, 5)
# streams of the per-item generator
FG_STREAM, BG_STREAM, MIX_STREAM = 0, 1, 2
POOL_STREAM, VALID_STREAM = 10, 11
MAX_CROP_DRAWS = 20  # redraws when a background crop happens to be silent
SYNTHETIC_BG_EXTRA_S = 2.0  # synthetic backgrounds last U(min_bg_seconds, min_bg_seconds + this) s


# ----------------------------------------------------------------------------------------------------------
# reading the datasets


@dataclass(frozen=True)
class Esc50Clip:
    name: str  # file stem, e.g. "1-100032-A-0"
    rel: str  # path relative to the ESC-50 root
    fold: int
    target: int
    category: str


def _read_csv(path: Path, required: Sequence[str], what: str, fix: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise TaskError(f"{what}: {path} is missing; {fix}")
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TaskError(f"{what}: {path} is unreadable ({e}); {fix}") from e
    missing = [c for c in required if c not in header]
    if missing:
        raise TaskError(
            f"{what}: {path} lacks column(s) {', '.join(missing)} (has: {', '.join(header) or 'none'}); {fix}"
        )
    if not rows:
        raise TaskError(f"{what}: {path} has no rows; {fix}")
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_esc50(root: str | Path) -> list[Esc50Clip]:
    """ESC-50 clips listed in ``meta/esc50.csv`` whose audio is under ``audio/``, sorted by name.
    Checks folds (1-5), that each target has one category, and that every file's header is readable."""
    root = Path(root)
    fix = "point --esc50 at the ESC-50 folder that holds audio/ and meta/esc50.csv (github.com/karolpiczak/ESC-50)"
    if not (root / "audio").is_dir():
        raise TaskError(f"ESC-50: folder {root / 'audio'} is missing; {fix}")
    rows = _read_csv(root / "meta" / "esc50.csv", ESC50_COLUMNS, "ESC-50", fix)
    clips, categories, missing = [], {}, []
    for i, r in enumerate(rows, start=2):
        try:
            fold, target = int(r["fold"]), int(r["target"])
        except ValueError:
            raise TaskError(
                f"ESC-50: meta/esc50.csv line {i}: fold {r['fold']!r} / target {r['target']!r} are not integers; {fix}"
            ) from None
        if fold not in TRAIN_FOLDS + TEST_FOLDS:
            raise TaskError(f"ESC-50: meta/esc50.csv line {i}: fold {fold} is not one of 1-5; {fix}")
        if categories.setdefault(target, r["category"]) != r["category"]:
            raise TaskError(
                f"ESC-50: target {target} has two categories ({categories[target]!r}, {r['category']!r}) in meta/esc50.csv"
            )
        path = root / "audio" / r["filename"]
        if not path.is_file():
            missing.append(r["filename"])
            continue
        clips.append(Esc50Clip(Path(r["filename"]).stem, f"audio/{r['filename']}", fold, target, r["category"]))
    if missing:
        raise TaskError(
            f"ESC-50: {len(missing)} files listed in meta/esc50.csv are not in {root / 'audio'} "
            f"(first: {missing[0]}); restore them or use a complete copy of ESC-50"
        )
    for clip in clips:
        try:
            audio_info(root / clip.rel)
        except AudioReadError as e:
            raise TaskError(f"ESC-50: {e}; replace the file with a good copy") from None
    return sorted(clips, key=lambda c: c.name)


def read_fsd50k(root: str | Path, which: str) -> list[tuple[str, list[str]]]:
    """(path relative to the FSD50K root, labels) of every clip in ``FSD50K.ground_truth/<which>.csv``, sorted."""
    root = Path(root)
    fix = (
        "point --fsd50k at the FSD50K folder that holds FSD50K.dev_audio/, FSD50K.eval_audio/ and "
        "FSD50K.ground_truth/ (zenodo.org/record/4060432)"
    )
    audio_dir = root / f"FSD50K.{which}_audio"
    if not audio_dir.is_dir():
        raise TaskError(f"FSD50K: folder {audio_dir} is missing; {fix}")
    rows = _read_csv(root / "FSD50K.ground_truth" / f"{which}.csv", FSD50K_COLUMNS, "FSD50K", fix)
    return sorted((f"FSD50K.{which}_audio/{r['fname']}.wav", r["labels"].split(",")) for r in rows)


def pick_backgrounds(
    root: Path, candidates: list[tuple[str, list[str]]], n: int, min_seconds: float, rng: np.random.Generator, what: str
) -> list[dict[str, Any]]:
    """``n`` distinct clips of at least ``min_seconds``, scanned in a seeded random order (headers only),
    so a build reads a few thousand headers rather than all 51k."""
    chosen = []
    for k in rng.permutation(len(candidates)):
        rel, labels = candidates[int(k)]
        try:
            frames, sr = audio_info(root / rel)
        except AudioReadError as e:
            raise TaskError(f"FSD50K: {e}; restore the file (it is listed in FSD50K.ground_truth)") from None
        if frames >= min_seconds * sr:
            chosen.append({"file": rel, "labels": labels, "seconds": frames / sr})
            if len(chosen) == n:
                return chosen
    raise TaskError(
        f"FSD50K {what}: only {len(chosen)} of {len(candidates)} clips are {min_seconds:g} s or longer, "
        f"{n} are needed (one distinct background per foreground); use the complete FSD50K {what} set"
    )


# ----------------------------------------------------------------------------------------------------------
# one item (runs in worker processes)


@dataclass(frozen=True)
class Job:
    name: str
    label: str
    pool: int  # 0: training side (train/valid), 1: test side
    index: int  # position within the pool: the item's seed
    fg: dict[str, Any]  # {"file": rel, ...} or {"synthetic_event": label}
    bg: dict[str, Any]  # {"file": rel, ...} or {"synthetic_scene": True}
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the record (e.g. the ESC-50 fold)


@dataclass(frozen=True)
class Context:
    out: str
    seed: int
    params: BuildParams
    roots: dict[str, str]  # "fg"/"bg" -> dataset root for file sources
    splits: dict[str, str]  # item name -> split


def _rng(seed: int, pool: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, pool, index, stream])


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Pad with zeros or cut at the end to exactly n samples (ESC-50 clips are 5 s already)."""
    return np.pad(x, (0, n - x.shape[0])) if x.shape[0] < n else x[:n]


def _read_source(ctx: Context, role: str, name: str) -> np.ndarray:
    """A dataset file (role 'fg' = ESC-50, 'bg' = FSD50K) as mono audio at the task's rate."""
    try:
        return read_audio(Path(ctx.roots[role]) / name, ctx.params.sample_rate)
    except AudioReadError as e:
        side = "foreground" if role == "fg" else "background"
        raise TaskError(f"{side}: {e}; replace the file with a good copy") from None


def _foreground(job: Job, ctx: Context) -> tuple[np.ndarray, dict[str, Any]]:
    p = ctx.params
    if "file" in job.fg:
        return _fit(_read_source(ctx, "fg", job.fg["file"]), p.clip_samples), dict(job.fg)
    from hear_diffbyola.corpus.synthetic import render_event

    stream = [ctx.seed, job.pool, job.index, FG_STREAM]
    x = render_event(job.fg["synthetic_event"], np.random.default_rng(stream), p.sample_rate, p.clip_seconds)
    return x, {**job.fg, "seed": stream}


def _background(job: Job, ctx: Context) -> tuple[np.ndarray, dict[str, Any]]:
    p = ctx.params
    if "file" in job.bg:
        return _read_source(ctx, "bg", job.bg["file"]), dict(job.bg)
    from hear_diffbyola.corpus.synthetic import SCENE_CLASSES, render_scene

    stream = [ctx.seed, job.pool, job.index, BG_STREAM]
    rng = np.random.default_rng(stream)
    scene = SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
    seconds = round(float(rng.uniform(p.min_bg_seconds, p.min_bg_seconds + SYNTHETIC_BG_EXTRA_S)), 3)
    return render_scene(scene, rng, p.sample_rate, seconds), {
        "synthetic_scene": scene,
        "seconds": seconds,
        "seed": stream,
    }


def make_item(job: Job, ctx: Context) -> dict[str, Any]:
    """Render, mix and write one item; returns its manifest record."""
    p, n = ctx.params, ctx.params.clip_samples
    fg, fg_rec = _foreground(job, ctx)
    bg, bg_rec = _background(job, ctx)
    source = fg_rec.get("file") or f"synthetic event {job.label}"
    if event_loudness(fg, p.sample_rate) <= LUFS_FLOOR:
        raise TaskError(
            f"foreground {source} is silent (loudness at the {LUFS_FLOOR} LUFS floor): no SNR can be set; "
            "remove it from the foreground list"
        )
    if bg.shape[0] < 2 * n:
        raise TaskError(
            f"background {bg_rec.get('file', 'synthetic')} has {bg.shape[0]} samples at {p.sample_rate} Hz, "
            f"fewer than the {2 * n} that crops (a) and (c) need"
        )
    rng = _rng(ctx.seed, job.pool, job.index, MIX_STREAM)
    for _ in range(MAX_CROP_DRAWS):
        a, b, c = draw_reference_crops(rng, bg.shape[0], n)
        snr = float(rng.uniform(*p.snr_db))
        if event_loudness(crop(bg, a, n), p.sample_rate) > LUFS_FLOOR:
            break
    else:
        raise TaskError(
            f"background {bg_rec.get('file', 'synthetic')}: {MAX_CROP_DRAWS} random 5 s crops were all "
            "silent; remove the clip from the FSD50K ground-truth list"
        )
    mix = mix_at_snr(
        fg, crop(bg, a, n), snr, p.sample_rate, p.ref_lufs, p.peak_limit, companions=(crop(bg, b, n), crop(bg, c, n))
    )
    split = ctx.splits[job.name]
    files = audio_paths(p.sample_rate, split, job.name)
    for key, wave in zip(("mix", *REFS), (mix.mixture, mix.background, *mix.companions)):
        write_audio(Path(ctx.out) / files[key], wave, p.sample_rate)
    return {
        "name": job.name,
        "split": split,
        "label": job.label,
        **job.extra,
        "foreground": fg_rec,
        "background": {**bg_rec, "samples": int(bg.shape[0])},
        "crops": {"a": a, "b": b, "c": c},
        "crop_samples": n,
        "snr_db": snr,
        "fg_lufs": mix.fg_lufs,
        "bg_lufs": mix.bg_lufs,
        "fg_gain": mix.fg_gain,
        "bg_gain": mix.bg_gain,
        "peak_scale": mix.peak_scale,
        "files": files,
    }


# ----------------------------------------------------------------------------------------------------------
# orchestration


def _run(jobs: list[Job], ctx: Context, workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    work = partial(make_item, ctx=ctx)
    bar = tqdm(total=len(jobs), desc="bgknown build", unit="item", disable=not progress)
    try:
        if workers <= 1:
            records = []
            for job in jobs:
                records.append(work(job))
                bar.update()
            return records
        # spawn: workers must not inherit a parent's torch/OpenMP thread state (fork can deadlock there)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            records = []
            for rec in pool.imap(work, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
                records.append(rec)
                bar.update()
            return records
    finally:
        bar.close()


def _valid_names(jobs: list[Job], fraction: float, seed: int) -> set[str]:
    from ..linear_eval import stratified_split

    train = [j for j in jobs if j.pool == 0]
    index = {label: i for i, label in enumerate(sorted({j.label for j in train}))}
    labels = np.array([index[j.label] for j in train], dtype=np.int64)
    _, valid = stratified_split(labels, fraction, np.random.default_rng([seed, VALID_STREAM]))
    return {train[i].name for i in valid}


def _is_task_folder(out: Path) -> bool:
    """What --force may replace: a BgKnown build (it has a manifest)."""
    return (out / MANIFEST).is_file()


def _write_task(
    tmp: Path,
    task_name: str,
    labels: list[str],
    records: list[dict[str, Any]],
    seed: int,
    params: BuildParams,
    variant: str,
    sources: dict[str, Any],
) -> None:
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "task_name": task_name,
        "variant": variant,
        "built_by": f"hear-diffbyola {__version__}",
        "seed": seed,
        "params": params.to_dict(),
        "sources": sources,
        "labels": labels,
        "items": records,
    }
    manifest["build_id"] = compute_build_id(manifest)
    meta = {
        "task_name": task_name,
        "version": FORMAT,
        "build_id": manifest["build_id"],
        "embedding_type": "scene",
        "prediction_type": "multiclass",
        "split_mode": "trainvaltest",
        "sample_duration": params.clip_seconds,
        "evaluation": ["top1_acc"],
        "mode": "full",
        "default_mode": "full",
        "splits": list(SPLITS),
        "sample_rates": [params.sample_rate],
    }
    (tmp / "task_metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "labelvocabulary.csv").write_text(
        "\n".join(["idx,label"] + [f"{i},{lb}" for i, lb in enumerate(labels)]) + "\n"
    )
    for split in SPLITS:
        listed = {Path(r["files"]["mix"]).name: [r["label"]] for r in records if r["split"] == split}
        (tmp / f"{split}.json").write_text(json.dumps(listed, indent=1) + "\n")
        (tmp / str(params.sample_rate) / split).mkdir(parents=True, exist_ok=True)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _build(
    jobs: list[Job],
    out: str | Path,
    task_name: str,
    labels: list[str],
    seed: int,
    params: BuildParams,
    variant: str,
    sources: dict[str, Any],
    roots: dict[str, str],
    workers: int | None,
    progress: bool,
    force: bool,
) -> Path:
    out = Path(out)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise TaskError("two foreground clips share a name; item names must be unique")
    valid = _valid_names(jobs, params.valid_fraction, seed)
    splits = {j.name: ("test" if j.pool else "valid" if j.name in valid else "train") for j in jobs}
    # built beside --out and swapped in whole when complete: never two builds mixed, the old one kept until then
    with building(out, force, _is_task_folder, "BgKnown") as tmp:
        ctx = Context(out=str(tmp), seed=seed, params=params, roots=roots, splits=splits)
        workers = (os.cpu_count() or 1) if workers is None else workers
        records = _run(jobs, ctx, workers, progress)
        _write_task(tmp, task_name, labels, records, seed, params, variant, sources)
    return out


def build_from_datasets(
    esc50: str | Path,
    fsd50k: str | Path,
    out: str | Path,
    seed: int = 0,
    params: BuildParams = BuildParams(),
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """BgKnown ESC-50: ESC-50 folds 1-3 (+ FSD50K dev) -> train/valid, folds 4-5 (+ FSD50K eval) -> test."""
    esc50, fsd50k = Path(esc50).resolve(), Path(fsd50k).resolve()
    clips = read_esc50(esc50)
    labels_by_target = {c.target: c.category for c in clips}
    labels = [labels_by_target[t] for t in sorted(labels_by_target)]
    jobs: list[Job] = []
    sources: dict[str, Any] = {
        "esc50": {"root": str(esc50), "meta_sha256": _sha256(esc50 / "meta" / "esc50.csv")},
        "fsd50k": {"root": str(fsd50k)},
    }
    for pool, folds, which in ((0, TRAIN_FOLDS, "dev"), (1, TEST_FOLDS, "eval")):
        fg = [c for c in clips if c.fold in folds]
        if not fg:
            raise TaskError(f"ESC-50: no clips in folds {folds}; use the complete dataset")
        candidates = read_fsd50k(fsd50k, which)
        sources["fsd50k"][f"{which}_sha256"] = _sha256(fsd50k / "FSD50K.ground_truth" / f"{which}.csv")
        bgs = pick_backgrounds(
            fsd50k, candidates, len(fg), params.min_bg_seconds, np.random.default_rng([seed, pool, POOL_STREAM]), which
        )
        for i, (clip, bg) in enumerate(zip(fg, bgs)):
            jobs.append(
                Job(clip.name, clip.category, pool, i, {"file": clip.rel}, {**bg, "set": which}, {"fold": clip.fold})
            )
    return _build(
        jobs,
        out,
        "bgknown-esc50",
        labels,
        seed,
        params,
        "esc50-fsd50k",
        sources,
        {"fg": str(esc50), "bg": str(fsd50k)},
        workers,
        progress,
        force,
    )


def build_synthetic(
    out: str | Path,
    seed: int = 0,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: int = DEFAULT_TEST_PER_CLASS,
    classes: Iterable[str] | None = None,
    params: BuildParams = BuildParams(),
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """The same construction from the embedded corpus: events as foregrounds, rendered scenes as backgrounds."""
    from hear_diffbyola.corpus.synthetic import EVENT_CLASSES, SCENE_CLASSES

    labels = list(EVENT_CLASSES if classes is None else classes)
    unknown = [c for c in labels if c not in EVENT_CLASSES]
    if unknown or not labels or len(set(labels)) != len(labels):
        raise TaskError(f"synthetic classes must be distinct names from {', '.join(EVENT_CLASSES)}; got {labels}")
    if train_per_class < 2 or test_per_class < 1:
        raise TaskError(
            f"need at least 2 training and 1 test clip per class (a validation split is held out), got "
            f"{train_per_class} and {test_per_class}"
        )
    jobs = []
    for pool, per_class, prefix in ((0, train_per_class, "dev"), (1, test_per_class, "eval")):
        for i in range(per_class * len(labels)):
            label = labels[i // per_class]
            jobs.append(
                Job(f"{prefix}-{i:05d}-{label}", label, pool, i, {"synthetic_event": label}, {"synthetic_scene": True})
            )
    sources = {
        "synthetic": {
            "event_classes": labels,
            "scene_classes": list(SCENE_CLASSES),
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "bg_seconds": [params.min_bg_seconds, params.min_bg_seconds + SYNTHETIC_BG_EXTRA_S],
        }
    }
    return _build(
        jobs, out, "bgknown-synthetic", labels, seed, params, "synthetic", sources, {}, workers, progress, force
    )
