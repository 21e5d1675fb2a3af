"""HEAR-format task folders: written from the embedded corpus, and read back as heareval reads them.

``write_hear_task`` writes the layout hear-eval-kit's embedding runner reads::

    <task>/task_metadata.json       task_name, embedding_type, prediction_type, split_mode, splits, ...
    <task>/labelvocabulary.csv      idx,label
    <task>/<split>.json             scene: {file: [label]}; event: {file: [{label, start, end}]} (ms)
    <task>/<rate>/<split>/<file>    16-bit mono WAV

``read_scene_task`` reads a multiclass scene task of that layout (ours or hear-eval-kit's) back as
file lists. Installing heareval itself is the core's business (``hear_diffbyola.evaltools``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hear_diffbyola.audio import write_audio
from hear_diffbyola.corpus.synthetic import EVENT_CLASSES, SCENE_CLASSES, render_event, render_scene
from hear_diffbyola.errors import DiffByolaError

from . import TaskError

__all__ = ["write_hear_task", "read_scene_task", "HeartaskError"]

# An event's annotated extent: where it rises above this level relative to its own peak. The
# embedded corpus puts events over a -60 dB floor, so -30 dB separates them cleanly.
_EVENT_THRESHOLD_DB = -30.0
_BACKGROUND_PEAK = 0.05  # quiet scene under event-task clips


class HeartaskError(DiffByolaError, RuntimeError):
    """A HEAR task folder cannot be read as asked; the message says what is missing or wrong."""


def _render(label: str, rng: np.random.Generator, sample_rate: int, duration: float) -> np.ndarray:
    if label in SCENE_CLASSES:
        return render_scene(label, rng, sample_rate, duration)
    return render_event(label, rng, sample_rate, duration)


def _event_extent(x: np.ndarray) -> tuple[int, int]:
    """[first, last] sample of a rendered event clip above _EVENT_THRESHOLD_DB of its peak."""
    above = np.flatnonzero(np.abs(x) >= np.abs(x).max() * 10.0 ** (_EVENT_THRESHOLD_DB / 20.0))
    return int(above[0]), int(above[-1])


def write_hear_task(
    out_dir: str | Path,
    *,
    kind: str = "scene",
    labels: Sequence[str] | None = None,
    n_per_label: int | Mapping[str, int] = 4,
    duration: float = 2.0,
    events_per_clip: int = 2,
    splits: Sequence[str] = ("train", "valid", "test"),
    sample_rate: int = 16000,
    seed: int = 0,
    task_name: str | None = None,
) -> Path:
    """Write a small HEAR task rendered from the embedded corpus into ``out_dir`` (the task folder).

    ``kind="scene"``: one clip of ``duration`` s per item, multiclass, ``n_per_label`` clips per label
    and split (an int, or a {split: count} mapping for splits of different sizes); labels default to
    the corpus's scene classes and may be any event or scene class.
    ``kind="event"``: clips of ``duration`` s, each holding ``events_per_clip`` events in disjoint
    slots over a quiet scene, multilabel, each label ``n_per_label`` times per split; an event's
    start/end are where it exceeds -30 dB of its own peak. Deterministic in ``seed``.
    Returns ``out_dir``.
    """
    if kind not in ("scene", "event"):
        raise TaskError(f"write_hear_task: kind must be 'scene' or 'event', got {kind!r}")
    valid = (*SCENE_CLASSES, *EVENT_CLASSES) if kind == "scene" else EVENT_CLASSES
    labels = list(labels) if labels is not None else list(SCENE_CLASSES if kind == "scene" else EVENT_CLASSES[:4])
    if not labels or len(set(labels)) != len(labels) or any(lab not in valid for lab in labels):
        raise TaskError(
            f"write_hear_task: labels of a {kind} task must be distinct names from {sorted(valid)}; got {labels}"
        )
    per_split = dict(n_per_label) if isinstance(n_per_label, Mapping) else {s: n_per_label for s in splits}
    if set(per_split) != set(splits):
        raise TaskError(
            f"write_hear_task: n_per_label gives counts for {sorted(per_split)}, the splits are {list(splits)}"
        )
    if min(per_split.values(), default=0) < 1 or events_per_clip < 1 or duration <= 0 or not splits:
        raise TaskError(
            f"write_hear_task: need n_per_label >= 1, events_per_clip >= 1, duration > 0 and at least "
            f"one split; got {n_per_label}, {events_per_clip}, {duration}, {list(splits)}"
        )
    out = Path(out_dir)
    slot = int(round(duration * sample_rate)) // events_per_clip  # samples per event slot (event tasks)
    if kind == "event" and slot < sample_rate // 20:
        raise TaskError(f"write_hear_task: {events_per_clip} events in {duration} s leaves slots under 50 ms")
    for s, split in enumerate(splits):
        rng = np.random.default_rng([seed, s])
        plan = [lab for lab in labels for _ in range(per_split[split])]
        rng.shuffle(plan)
        items: dict[str, object] = {}
        if kind == "scene":
            for i, label in enumerate(plan):
                name = f"{split}_{i:04d}.wav"
                write_audio(
                    out / str(sample_rate) / split / name, _render(label, rng, sample_rate, duration), sample_rate
                )
                items[name] = [label]
        else:
            for i in range(math.ceil(len(plan) / events_per_clip)):
                scene = SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
                x = render_scene(scene, rng, sample_rate, duration)
                x *= _BACKGROUND_PEAK / np.abs(x).max()
                events = []
                for k, label in enumerate(plan[i * events_per_clip : (i + 1) * events_per_clip]):
                    ev = render_event(label, rng, sample_rate, slot / sample_rate)
                    x[k * slot : (k + 1) * slot] += ev
                    a, b = _event_extent(ev)
                    events.append(
                        {
                            "label": label,
                            "start": (k * slot + a) * 1000.0 / sample_rate,
                            "end": (k * slot + b + 1) * 1000.0 / sample_rate,
                        }
                    )
                name = f"{split}_{i:04d}.wav"
                write_audio(out / str(sample_rate) / split / name, np.clip(x, -1.0, 1.0), sample_rate)
                items[name] = events
        (out / f"{split}.json").write_text(json.dumps(items, indent=1))
    with open(out / "labelvocabulary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["idx", "label"])
        w.writerows(enumerate(labels))
    metadata = {
        "task_name": task_name or out.name,
        "version": "hear-diffbyola-synthetic",
        "mode": "full",
        "embedding_type": kind,
        "prediction_type": "multiclass" if kind == "scene" else "multilabel",
        "split_mode": "trainvaltest" if list(splits) == ["train", "valid", "test"] else "presplit_kfold",
        "splits": list(splits),
        "sample_duration": float(duration),
        "sample_rate": sample_rate,
        "evaluation": ["top1_acc"] if kind == "scene" else ["event_onset_200ms_fms", "segment_1s_er"],
        "source": f"hear_diffbyola.tasks.heartask.write_hear_task(seed={seed}) from the embedded corpus",
    }
    (out / "task_metadata.json").write_text(json.dumps(metadata, indent=1))
    return out


def read_scene_task(task_dir: str | Path) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
    """A HEAR multiclass scene task as (label vocabulary, {split: [(wav path, label)]}), in file order.

    Reads what heareval reads: ``task_metadata.json`` (its ``splits`` and ``sample_rate``),
    ``labelvocabulary.csv`` and ``<split>.json``; audio under ``<sample_rate>/<split>/``.
    """
    root = Path(task_dir)
    try:
        meta = json.loads((root / "task_metadata.json").read_text())
        with open(root / "labelvocabulary.csv", newline="") as fh:
            vocab = [row["label"] for row in csv.DictReader(fh)]
    except (OSError, ValueError, KeyError) as e:
        raise HeartaskError(
            f"{root} is not a readable HEAR task folder ({e}); it needs task_metadata.json and "
            "labelvocabulary.csv (write one with write_hear_task)"
        ) from e
    if meta.get("embedding_type") != "scene" or meta.get("prediction_type") != "multiclass":
        raise HeartaskError(
            f"{root}: a multiclass scene task is needed, this one is "
            f"{meta.get('embedding_type')}/{meta.get('prediction_type')}"
        )
    splits: dict[str, list[tuple[Path, str]]] = {}
    for split in meta.get("splits", []):
        try:
            items = json.loads((root / f"{split}.json").read_text())
        except (OSError, ValueError) as e:
            raise HeartaskError(f"{root}: cannot read {split}.json ({e})") from e
        bad = sorted({lab for labs in items.values() for lab in labs if lab not in vocab})
        if bad or any(len(labs) != 1 for labs in items.values()):
            raise HeartaskError(
                f"{root}/{split}.json: every clip needs exactly one label from labelvocabulary.csv (unknown: {bad})"
            )
        splits[split] = [(root / str(meta["sample_rate"]) / split / name, labs[0]) for name, labs in items.items()]
    return vocab, splits
