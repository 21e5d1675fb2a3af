"""BgKnown from a user's own recordings: a folder of labelled foreground clips, a folder of long backgrounds.

Layout::

    FG/<class>/**/*.wav|flac|ogg|mp3     foreground clips; the subfolder's name is the class
    BG/**/*.wav|flac|ogg|mp3             background recordings, each at least ``params.min_bg_seconds``
                                         (at least twice the clip length, so crop (c) fits beside (a))

Items are made exactly as the ESC-50 + FSD50K source makes them (``build.make_item``): the foreground
cut or zero-padded to the clip length, crops (a), (b) half overlapping (a), (c) disjoint from (a) of one
background, (a) mixed under the foreground at an SNR drawn in ``params.snr_db`` (LUFS, Scaper's
definition), one common gain for mixture and references. Splits:

- test side: a class-stratified share ``test_fraction`` of each class's clips (at least one per class,
  never all), drawn with the build seed; the rest is the training side, of which the HEAR 'valid' split
  is held out as for the other sources;
- backgrounds: the recordings are divided between the two sides (the same share, at least one each), so
  no test mixture shares a background recording with a training mixture, as FSD50K dev/eval keep them
  apart. Within a side, recordings are used in turn in a seeded order (a user rarely has one per clip);
  every use draws its own crops and SNR.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hear_diffbyola.audio import AUDIO_EXTENSIONS, AudioReadError, audio_info

from .. import TaskError
from .build import POOL_STREAM, Job, _build
from .manifest import BuildParams

__all__ = [
    "DEFAULT_TEST_FRACTION",
    "FolderClip",
    "build_from_folders",
    "folder_jobs",
    "read_background_folder",
    "read_foreground_folder",
    "split_by_class",
]

DEFAULT_TEST_FRACTION = 1 / 3
BG_SIDE_STREAM = 12  # generator stream of the background side split (the build's other streams: build.py)


@dataclass(frozen=True)
class FolderClip:
    rel: str  # path relative to the foreground folder
    label: str  # its class folder's name


def _audio_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_foreground_folder(root: str | Path, min_per_class: int = 3) -> list[FolderClip]:
    """Every audio file under ``root/<class>/``, sorted; each class needs ``min_per_class`` clips (test, train, valid)."""
    root = Path(root)
    fix = "give --fg-folder a folder whose subfolders are the classes, each holding that class's clips"
    if not root.is_dir():
        raise TaskError(f"foreground folder {root} does not exist; {fix}")
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        raise TaskError(
            f"foreground folder {root}: {len(loose)} audio file(s) lie directly in it, outside a class "
            f"folder (first: {min(loose)}); move each into the subfolder of its class"
        )
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        clips += [FolderClip(str(f.relative_to(root)), folder.name) for f in _audio_files(folder)]
    counts = {label: sum(c.label == label for c in clips) for label in sorted({c.label for c in clips})}
    if len(counts) < 2:
        raise TaskError(
            f"foreground folder {root}: found {len(counts)} class folder(s) with audio "
            f"({', '.join(AUDIO_EXTENSIONS)}); a classification task needs at least 2; {fix}"
        )
    few = {label: n for label, n in counts.items() if n < min_per_class}
    if few:
        raise TaskError(
            f"foreground folder {root}: class(es) with fewer than {min_per_class} clips (one for test, "
            f"one for training, one for validation): "
            + ", ".join(f"{label} ({n})" for label, n in few.items())
            + "; add clips or remove the folder"
        )
    for clip in clips:
        try:
            audio_info(root / clip.rel)
        except AudioReadError as e:
            raise TaskError(f"foreground: {e}; replace or remove the file") from None
    return clips


def read_background_folder(root: str | Path, min_seconds: float) -> list[dict[str, Any]]:
    """Every audio file under ``root`` of at least ``min_seconds`` ({"file", "seconds"}), sorted; shorter ones are
    an error (they would give crops (a) and (c) that overlap), naming them."""
    root = Path(root)
    if not root.is_dir():
        raise TaskError(f"background folder {root} does not exist; give --bg-folder a folder of long recordings")
    found, short = [], []
    for path in _audio_files(root):
        try:
            frames, sr = audio_info(path)
        except AudioReadError as e:
            raise TaskError(f"background: {e}; replace or remove the file") from None
        rel = str(path.relative_to(root))
        (found if frames >= min_seconds * sr else short).append({"file": rel, "seconds": round(frames / sr, 3)})
    if short:
        raise TaskError(
            f"background folder {root}: {len(short)} recording(s) shorter than {min_seconds:g} s (at least "
            f"twice the clip length is needed so that crop (c) does not overlap (a)): "
            + ", ".join(f"{b['file']} ({b['seconds']:g} s)" for b in short[:5])
            + ("…" if len(short) > 5 else "")
            + "; remove them or use longer recordings"
        )
    if len(found) < 2:
        raise TaskError(
            f"background folder {root}: {len(found)} recording(s) found; at least 2 are needed (one for "
            "the training side, one for the test side, so test backgrounds are never seen in training)"
        )
    return found


def split_by_class(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training-side indices, test-side indices): round(fraction · n_c) of each class to test, at least 1, never all."""
    from ..linear_eval import stratified_split

    index = {label: i for i, label in enumerate(sorted(set(labels)))}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    train, test = stratified_split(y, fraction, np.random.default_rng([seed, POOL_STREAM]))
    return train.tolist(), test.tolist()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "class"


def folder_jobs(
    clips: Sequence[FolderClip], backgrounds: Sequence[dict[str, Any]], test_fraction: float, seed: int
) -> list[Job]:
    """One job per foreground clip: its side (class-stratified), its background (from that side's recordings,
    used in turn in a seeded order)."""
    if not 0.0 < test_fraction < 1.0:
        raise TaskError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    train_idx, test_idx = split_by_class([c.label for c in clips], test_fraction, seed)
    order = np.random.default_rng([seed, BG_SIDE_STREAM]).permutation(len(backgrounds))
    n_test_bg = min(max(round(test_fraction * len(backgrounds)), 1), len(backgrounds) - 1)
    sides = {1: [backgrounds[int(i)] for i in order[:n_test_bg]], 0: [backgrounds[int(i)] for i in order[n_test_bg:]]}
    jobs = []
    for pool, idx, prefix in ((0, train_idx, "dev"), (1, test_idx, "eval")):
        bgs = sides[pool]
        for i, k in enumerate(idx):
            clip = clips[k]
            bg = bgs[i % len(bgs)]
            jobs.append(
                Job(
                    f"{prefix}-{i:05d}-{_slug(clip.label)}",
                    clip.label,
                    pool,
                    i,
                    {"file": clip.rel},
                    {**bg, "side": "test" if pool else "train"},
                )
            )
    return jobs


def _listing_digest(root: Path, rels: Sequence[str]) -> str:
    """sha256 over the sorted relative paths and sizes: a rebuild from other files gets another build id."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        h.update(f"{rel}\t{(root / rel).stat().st_size}\n".encode())
    return h.hexdigest()


def build_from_folders(
    fg_folder: str | Path,
    bg_folder: str | Path,
    out: str | Path,
    seed: int = 0,
    params: BuildParams = BuildParams(),
    test_fraction: float = DEFAULT_TEST_FRACTION,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    task_name: str = "bgknown-folders",
) -> Path:
    """BgKnown from ``fg_folder/<class>/`` clips over ``bg_folder`` recordings (see the module docstring)."""
    fg_root, bg_root = Path(fg_folder).resolve(), Path(bg_folder).resolve()
    if fg_root == bg_root or bg_root in fg_root.parents or fg_root in bg_root.parents:
        raise TaskError(f"--fg-folder {fg_root} and --bg-folder {bg_root} overlap; give two separate folders")
    clips = read_foreground_folder(fg_root)
    backgrounds = read_background_folder(bg_root, params.min_bg_seconds)
    jobs = folder_jobs(clips, backgrounds, test_fraction, seed)
    labels = sorted({c.label for c in clips})
    sources = {
        "folders": {
            "foreground_root": str(fg_root),
            "background_root": str(bg_root),
            "test_fraction": test_fraction,
            "classes": {label: sum(c.label == label for c in clips) for label in labels},
            "foreground_listing_sha256": _listing_digest(fg_root, [c.rel for c in clips]),
            "background_listing_sha256": _listing_digest(bg_root, [b["file"] for b in backgrounds]),
            "backgrounds": {
                "train": sorted({j.bg["file"] for j in jobs if j.pool == 0}),
                "test": sorted({j.bg["file"] for j in jobs if j.pool == 1}),
            },
        }
    }
    return _build(
        jobs,
        out,
        task_name,
        labels,
        seed,
        params,
        "folders",
        sources,
        {"fg": str(fg_root), "bg": str(bg_root)},
        workers,
        progress,
        force,
    )
