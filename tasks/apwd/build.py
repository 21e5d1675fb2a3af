"""Generator of APwD folders: from local ESC-50 + FSD50K, or (``synthetic``) from the embedded corpus.

It follows the published APwD recipe (nttcslab/apwd-dataset), with our own mixing because Scaper does
not run on Python 3.11 + numpy 2 (see ``tasks/mixing.py``):

* backgrounds: FSD50K clips labelled ``Rain`` (scene rain) or ``Car_passing_by`` (scene traffic); FSD50K
  dev -> our dev split, FSD50K eval -> eval. Each clip is tiled until it is at least ``duration +
  bg_offset_max`` long. A pair draws two different clips and a loudness ``ref_db``; s1 and s2 each take
  their own crop of both (source_time ~ U(0, bg_offset_max)), each crop normalised to ``ref_db`` LUFS
  (SNR 0, as in the dataset's JAMS).
* events (s1 only): 1 or 2 (equally likely), class uniform over the six, file uniform over that class
  in the split (ESC-50 fold 5 -> eval, folds 1-4 -> dev), trimmed to its active part (20 ms frames
  within 20 dB of the loudest, 10 ms fades), onset ~ U(0, onset_max), duration ~ U(3, 5) s cut to the
  file's length, and moved earlier if it would run past the clip end (as Scaper). Loudness
  ``ref_db + snr``, snr ~ U(6, 10) dB: the range of the published JAMS files (the recipe does not state it).
* a common gain on s1 and s2 keeps both under ``peak_limit`` (16-bit WAV) without changing their levels
  relative to each other. Loudness is Scaper's (``mixing.event_loudness``: BS.1770, short clips tiled).

``synthetic=True`` first renders small source pools from ``hear_diffbyola.corpus.synthetic`` into
``<out>/source/<split>/{background,foreground}/<label>/`` (scenes ``rain`` and ``traffic``; events as in
``vocab.SYNTHETIC_EVENT``; dev and eval pools from different seeds) and then runs the same recipe on them.
Pair ``i`` of a split depends only on (seed, scene, split, i).
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hear_diffbyola.audio import AudioReadError, read_audio, write_audio

from ..mixing import LUFS_FLOOR, event_loudness, gain_to, peak_scale
from .jams_io import Source, write_jams
from .vocab import ESC50_CATEGORY, SCENES, SYNTHETIC_EVENT, APwDError

SPLIT_NAMES = ("dev", "eval")


@dataclass(frozen=True)
class BuildConfig:
    """Every parameter of a build; written to each ``apwd_<scene>_sc/apwd_build.json``. Defaults: the paper's sizes."""

    sample_rate: int = 44100
    duration: float = 10.0
    n_dev: int = 50000
    n_eval: int = 1000
    n_backgrounds: int = 2
    events_per_clip: tuple[int, int] = (1, 2)
    onset_max: float = 8.0
    event_duration: tuple[float, float] = (3.0, 5.0)
    snr_db: tuple[float, float] = (6.0, 10.0)
    ref_db: tuple[float, float] = (-40.0, -25.0)  # loudness of each background crop; our choice
    bg_offset_max: float = 10.0
    peak_limit: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_dev < 1 or self.n_eval < 1:
            raise APwDError(f"need at least one pair per split, got n_dev={self.n_dev}, n_eval={self.n_eval}")
        if not 0 < self.onset_max < self.duration:
            raise APwDError(f"onset_max ({self.onset_max} s) must lie in (0, duration={self.duration} s)")
        if not 1 <= self.events_per_clip[0] <= self.events_per_clip[1]:
            raise APwDError(f"events_per_clip must be (lo, hi) with 1 <= lo <= hi, got {self.events_per_clip}")
        if self.n_backgrounds < 1:
            raise APwDError(f"n_backgrounds must be >= 1, got {self.n_backgrounds}")

    def n_pairs(self, split: str) -> int:
        return self.n_dev if split == "dev" else self.n_eval

    @classmethod
    def synthetic(cls, **overrides: Any) -> BuildConfig:
        """Small defaults for --synthetic: 16 kHz, 4 s clips (onset range scaled with the clip), 160/80 pairs."""
        base = cls(sample_rate=16000, duration=4.0, n_dev=160, n_eval=80, onset_max=2.0, bg_offset_max=4.0)
        return replace(base, **overrides)


@dataclass(frozen=True)
class SourceFile:
    name: str  # as written to the JAMS 'source_file'
    path: Path  # on disk
    label: str  # as written to the JAMS 'label'


@dataclass
class SourcePool:
    """Source files of one scene: backgrounds[split] and events[split][label]."""

    backgrounds: dict[str, list[SourceFile]] = field(default_factory=dict)
    events: dict[str, dict[str, list[SourceFile]]] = field(default_factory=dict)

    def check(self, scene: str) -> None:
        for split in SPLIT_NAMES:
            if not self.backgrounds.get(split):
                raise APwDError(f"scene {scene}: no background clips for the {split} split")
            empty = [k for k, v in self.events.get(split, {}).items() if not v]
            if not self.events.get(split) or empty:
                raise APwDError(
                    f"scene {scene}: no event clips for the {split} split{' of ' + ', '.join(empty) if empty else ''}"
                )


# ----------------------------------------------------------------------------------------------------------
# source lists


def esc50_events(esc50_dir: str | Path) -> dict[str, dict[str, list[SourceFile]]]:
    """{split: {APwD label: files}} from ESC-50's meta/esc50.csv (fold 5 -> eval, folds 1-4 -> dev)."""
    root = Path(esc50_dir)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise APwDError(f"{meta} not found: --esc50 must be the ESC-50 folder holding meta/esc50.csv and audio/")
    label_of = {cat: label for label, cat in ESC50_CATEGORY.items()}
    out: dict[str, dict[str, list[SourceFile]]] = {s: {label: [] for label in ESC50_CATEGORY} for s in SPLIT_NAMES}
    with open(meta, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"filename", "fold", "category"}
    if not rows or not need <= set(rows[0]):
        raise APwDError(f"{meta}: expected columns {sorted(need)}, got {sorted(rows[0]) if rows else 'no rows'}")
    for row in rows:
        label = label_of.get(row["category"])
        if label is None:
            continue
        split = "eval" if int(row["fold"]) == 5 else "dev"
        path = root / "audio" / row["filename"]
        if not path.is_file():
            raise APwDError(f"{path} is listed in {meta} but missing; is --esc50 a complete ESC-50 copy?")
        out[split][label].append(SourceFile(f"esc50/audio/{row['filename']}", path, label))
    return out


def fsd50k_backgrounds(fsd50k_dir: str | Path, fsd_label: str, jams_label: str) -> dict[str, list[SourceFile]]:
    """{split: files} of FSD50K clips carrying ``fsd_label`` (FSD50K dev -> dev, FSD50K eval -> eval)."""
    root = Path(fsd50k_dir)
    out: dict[str, list[SourceFile]] = {s: [] for s in SPLIT_NAMES}
    for split, csv_name, audio_dir in (
        ("dev", "dev.csv", "FSD50K.dev_audio"),
        ("eval", "eval.csv", "FSD50K.eval_audio"),
    ):
        gt = root / "FSD50K.ground_truth" / csv_name
        if not gt.is_file():
            raise APwDError(
                f"{gt} not found: --fsd50k must be the FSD50K folder holding FSD50K.ground_truth/, "
                "FSD50K.dev_audio/ and FSD50K.eval_audio/"
            )
        with open(gt, newline="") as fh:
            for row in csv.DictReader(fh):
                if fsd_label in row.get("labels", "").split(","):
                    path = root / audio_dir / f"{row['fname']}.wav"
                    if not path.is_file():
                        raise APwDError(f"{path} is listed in {gt} but missing; is --fsd50k a complete FSD50K copy?")
                    out[split].append(SourceFile(f"fsd50k/{audio_dir}/{row['fname']}.wav", path, jams_label))
    return out


def real_pool(esc50_dir: str | Path, fsd50k_dir: str | Path, scene: str) -> SourcePool:
    sc = SCENES[scene]
    pool = SourcePool(
        backgrounds=fsd50k_backgrounds(fsd50k_dir, sc.fsd50k_label, sc.jams_label), events=esc50_events(esc50_dir)
    )
    pool.check(scene)
    return pool


def synthetic_pool(
    out: Path, scene: str, config: BuildConfig, n_backgrounds: int = 8, n_events: int = 12
) -> SourcePool:
    """Render background and event source files from the embedded corpus into ``out/source``."""
    from hear_diffbyola.corpus.synthetic import render_event, render_scene

    sr, pool = config.sample_rate, SourcePool()
    bg_seconds = config.duration + config.bg_offset_max
    event_seconds = config.event_duration[1]
    for si, split in enumerate(SPLIT_NAMES):
        bg_dir = out / "source" / split / "background" / SCENES[scene].synthetic
        pool.backgrounds[split] = []
        for k in range(n_backgrounds):
            path = bg_dir / f"{k:03d}.wav"
            rng = np.random.default_rng([config.seed, 7, si, sorted(SCENES).index(scene), k])
            write_audio(path, render_scene(SCENES[scene].synthetic, rng, sr, bg_seconds), sr)
            pool.backgrounds[split].append(SourceFile(path.relative_to(out).as_posix(), path, SCENES[scene].synthetic))
        pool.events[split] = {}
        for ci, label in enumerate(SYNTHETIC_EVENT.values()):
            ev_dir = out / "source" / split / "foreground" / label
            files = []
            for k in range(n_events):
                path = ev_dir / f"{k:03d}.wav"
                rng = np.random.default_rng([config.seed, 11, si, ci, k])
                write_audio(path, render_event(label, rng, sr, event_seconds), sr)
                files.append(SourceFile(path.relative_to(out).as_posix(), path, label))
            pool.events[split][label] = files
    pool.check(scene)
    return pool


# ----------------------------------------------------------------------------------------------------------
# signal preparation


def active_region(x: np.ndarray, sr: int, frame_s: float = 0.02, within_db: float = 20.0) -> tuple[int, int]:
    """[start, end) samples from the first to the last 20 ms frame whose RMS is within ``within_db`` of the loudest."""
    hop = max(1, int(round(frame_s * sr)))
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))  # (n,)
    active = np.flatnonzero(rms >= rms.max() * 10.0 ** (-within_db / 20.0))
    if active.size == 0 or rms.max() == 0.0:
        return 0, len(x)
    return int(active[0] * hop), int(min(len(x), (active[-1] + 1) * hop))


def fade(x: np.ndarray, sr: int, seconds: float = 0.01) -> np.ndarray:
    """Raised-cosine fade in and out so cut edges do not click."""
    n = min(int(seconds * sr), len(x) // 2)
    if n == 0:
        return x
    ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(x.dtype)
    y = x.copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


@functools.lru_cache(maxsize=256)
def _load(path: Path, sr: int) -> np.ndarray:
    try:
        x = read_audio(path, sr)
    except AudioReadError as e:
        raise APwDError(f"{e}; remove the file from the source folder or replace it") from e
    x.flags.writeable = False
    return x


def load_event(src: SourceFile, sr: int) -> np.ndarray:
    """The event's active part with 10 ms fades (cached)."""
    x = _load(src.path, sr)
    a, b = active_region(x, sr)
    return fade(np.array(x[a:b]), sr)


def load_background(src: SourceFile, sr: int, min_seconds: float) -> np.ndarray:
    """The background tiled to at least ``min_seconds`` (cached through _load)."""
    x = _load(src.path, sr)
    if len(x) == 0:
        raise APwDError(f"background {src.path} is empty; remove it from the source folder")
    need = int(math.ceil(min_seconds * sr))
    return np.tile(x, -(-need // len(x))) if len(x) < need else x


def _scaled(x: np.ndarray, sr: int, target_lufs: float, what: SourceFile) -> np.ndarray:
    lufs = event_loudness(x, sr)
    if lufs <= LUFS_FLOOR:
        raise APwDError(
            f"{what.path} is silent where it is used (loudness at the {LUFS_FLOOR} LUFS floor); "
            "remove it from the source folder"
        )
    return x.astype(np.float64) * gain_to(lufs, target_lufs)


# ----------------------------------------------------------------------------------------------------------
# pairs


def render_pair(
    rng: np.random.Generator, pool: SourcePool, split: str, config: BuildConfig
) -> tuple[np.ndarray, np.ndarray, list[Source], list[Source], float]:
    """(s1 audio, s2 audio, s1 sources, s2 sources, ref_db) of one pair, by the recipe in the module docstring."""
    sr, n = config.sample_rate, int(round(config.duration * config.sample_rate))
    bgs = pool.backgrounds[split]
    picks = rng.choice(len(bgs), size=config.n_backgrounds, replace=len(bgs) < config.n_backgrounds)
    ref_db = float(rng.uniform(*config.ref_db))
    sides, sources = [], []
    for _ in range(2):
        mix, srcs = np.zeros(n), []
        for i in picks:
            bg = load_background(bgs[i], sr, config.duration + config.bg_offset_max)
            start = int(rng.integers(0, min(len(bg) - n, int(config.bg_offset_max * sr)) + 1))
            mix += _scaled(bg[start : start + n], sr, ref_db, bgs[i])
            srcs.append(
                Source(
                    label=bgs[i].label,
                    role="background",
                    source_file=bgs[i].name,
                    source_time=start / sr,
                    event_time=0.0,
                    event_duration=config.duration,
                    snr=0.0,
                )
            )
        sides.append(mix)
        sources.append(srcs)
    labels = sorted(pool.events[split])
    for _ in range(int(rng.integers(config.events_per_clip[0], config.events_per_clip[1] + 1))):
        label = labels[int(rng.integers(len(labels)))]
        files = pool.events[split][label]
        src = files[int(rng.integers(len(files)))]
        ev = load_event(src, sr)
        length = max(1, min(len(ev), int(round(rng.uniform(*config.event_duration) * sr)), n))
        onset = min(int(round(rng.uniform(0.0, config.onset_max) * sr)), n - length)
        snr = float(rng.uniform(*config.snr_db))
        sides[0][onset : onset + length] += _scaled(ev[:length], sr, ref_db + snr, src)
        sources[0].append(
            Source(
                label=src.label,
                role="foreground",
                source_file=src.name,
                source_time=0.0,
                event_time=onset / sr,
                event_duration=length / sr,
                snr=snr,
            )
        )
    scale = peak_scale(sides, config.peak_limit)
    return (sides[0] * scale).astype(np.float32), (sides[1] * scale).astype(np.float32), sources[0], sources[1], ref_db


def pair_stem(scene: str, split: str, index: int, n: int) -> str:
    """APwD's file stem; the index is zero-padded to the split's width (at least 3 digits, as published)."""
    width = max(3, len(str(n - 1)))
    return f"apwd_{scene}_sc_{split}_{index:0{width}d}"


def build_scene(out: str | Path, scene: str, pool: SourcePool, config: BuildConfig, progress: bool = True) -> Path:
    """Write ``out/apwd_<scene>_sc/{dev,eval}/{jams,wav}/`` for one scene; returns the scene folder."""
    from tqdm import tqdm

    if scene not in SCENES:
        raise APwDError(f"unknown scene {scene!r}; APwD scenes: {', '.join(SCENES)}")
    scene_dir = Path(out) / f"apwd_{scene}_sc"
    si = sorted(SCENES).index(scene)
    for pi, split in enumerate(SPLIT_NAMES):
        n = config.n_pairs(split)
        for i in tqdm(range(n), desc=f"apwd build {scene}/{split}", disable=not progress, unit="pair"):
            rng = np.random.default_rng([config.seed, si, pi, i])
            a1, a2, src1, src2, ref_db = render_pair(rng, pool, split, config)
            stem = pair_stem(scene, split, i, n)
            for side, audio, srcs in (("s1", a1, src1), ("s2", a2, src2)):
                write_jams(
                    scene_dir / split / "jams" / f"{stem}_{side}.jams",
                    srcs,
                    config.duration,
                    config.sample_rate,
                    ref_db,
                )
                write_audio(scene_dir / split / "wav" / f"{stem}_{side}.wav", audio, config.sample_rate)
    return scene_dir


def is_build_folder(out: Path) -> bool:
    """What --force may replace: a folder holding only what :func:`build` writes (scene folders, ``source/``)."""
    children = list(out.iterdir())
    scenes = [c for c in children if c.is_dir() and c.name.startswith("apwd_") and c.name.endswith("_sc")]
    return bool(scenes) and all(c in scenes or (c.name == "source" and c.is_dir()) for c in children)


def build(
    out: str | Path,
    scenes: Iterable[str],
    config: BuildConfig,
    esc50: str | Path | None = None,
    fsd50k: str | Path | None = None,
    synthetic: bool = False,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Path]:
    """Build the APwD folder for ``scenes`` from ESC-50 + FSD50K, or from the embedded corpus if ``synthetic``.

    Each scene folder gets ``apwd_build.json``: the configuration and how many source files each split drew on.
    ``out`` holds one build: a folder that is not empty is refused unless ``force``, which replaces it whole
    once the new build is complete (``tasks.build_folder``: built beside it, then swapped in; a failed or
    killed build leaves the old one as it was).
    """
    from ..build_folder import building

    out = Path(out)
    scenes = list(scenes)
    for s in scenes:
        if s not in SCENES:
            raise APwDError(f"unknown scene {s!r}; APwD scenes: {', '.join(SCENES)}")
    if not synthetic and (esc50 is None or fsd50k is None):
        raise APwDError("a real build needs both --esc50 DIR and --fsd50k DIR (or pass --synthetic)")
    # the datasets are checked before --out is touched; synthetic pools are rendered into the new build
    pools = {} if synthetic else {scene: real_pool(esc50, fsd50k, scene) for scene in scenes}  # type: ignore[arg-type]
    _load.cache_clear()  # paths in the staging folder repeat from build to build; their audio does not
    with building(out, force, is_build_folder, "APwD") as tmp:
        for scene in scenes:
            pool = synthetic_pool(tmp, scene, config) if synthetic else pools[scene]
            scene_dir = build_scene(tmp, scene, pool, config, progress)
            info = {
                "format": "hear-diffbyola/apwd/1",
                "scene": scene,
                "synthetic": synthetic,
                "config": asdict(config),
                "esc50": None if esc50 is None else str(esc50),
                "fsd50k": None if fsd50k is None else str(fsd50k),
                "sources": {
                    split: {
                        "backgrounds": len(pool.backgrounds[split]),
                        "events": {k: len(v) for k, v in pool.events[split].items()},
                    }
                    for split in SPLIT_NAMES
                },
            }
            (scene_dir / "apwd_build.json").write_text(json.dumps(info, indent=1))
    return {scene: out / f"apwd_{scene}_sc" for scene in scenes}
