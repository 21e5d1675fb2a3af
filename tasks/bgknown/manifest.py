"""The BgKnown task folder: its format, its manifest, and the one reader every consumer uses.

A task folder is a HEAR task (task_metadata.json, labelvocabulary.csv, train/valid/test.json with the
mixtures, audio under ``16000/<split>/``) plus, beside each mixture ``<name>.wav``, its three background
references ``<name>.bg_a.wav``, ``<name>.bg_b.wav``, ``<name>.bg_c.wav``, and ``manifest.json``: format
version, seed, build parameters, source files, crop offsets, drawn SNRs and gains of every item.

``build_id`` is a hash of the manifest's content: two builds with the same inputs and seed have the same
id, any difference in content gives another one, and embeddings are cached under it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import TaskError

FORMAT = "hear-diffbyola/bgknown/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
REFS = ("a", "b", "c")
# synthetic variant sizes: 12 classes x (40 + 20) = 720 items, built in well under a minute on 2 cores
DEFAULT_TRAIN_PER_CLASS, DEFAULT_TEST_PER_CLASS = 40, 20
BUILD_HINT = (
    "rebuild it with 'hear-diffbyola bgknown build --esc50 DIR --fsd50k DIR --out TASK_DIR' "
    "(or 'hear-diffbyola bgknown build --synthetic --out TASK_DIR')"
)


@dataclass(frozen=True)
class BuildParams:
    """What every item is made with; stored in the manifest."""

    sample_rate: int = 16000
    clip_seconds: float = 5.0  # mixture and reference length
    snr_db: tuple[float, float] = (0.0, 3.0)  # SNR ~ U(lo, hi), Scaper's definition (LUFS difference)
    ref_lufs: float = -12.0  # background loudness before the peak guard (Scaper's default ref_db)
    peak_limit: float = 0.99  # common gain keeps mixture and references under this (16-bit WAV)
    min_bg_seconds: float = 10.0  # backgrounds must be at least this long
    valid_fraction: float = 0.1  # stratified share of the training pool written as the HEAR 'valid' split

    def __post_init__(self) -> None:
        lo, hi = self.snr_db
        n = self.clip_seconds * self.sample_rate
        if not (self.sample_rate > 0 and n == int(n) and int(n) % 2 == 0 and n > 0):
            raise TaskError(f"clip_seconds * sample_rate must be a positive even number of samples, got {n}")
        if not lo <= hi:
            raise TaskError(f"snr_db range must be (low, high) with low <= high, got {self.snr_db}")
        if self.min_bg_seconds < 2 * self.clip_seconds:
            raise TaskError(
                f"min_bg_seconds ({self.min_bg_seconds}) must be at least twice clip_seconds "
                f"({self.clip_seconds}) so that a non-overlapping crop (c) fits"
            )
        if not 0.0 < self.valid_fraction < 1.0:
            raise TaskError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")

    @property
    def clip_samples(self) -> int:
        return int(self.clip_seconds * self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["snr_db"] = list(self.snr_db)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildParams:
        return cls(**{**d, "snr_db": tuple(d["snr_db"])})


def audio_paths(sample_rate: int, split: str, name: str) -> dict[str, str]:
    """Paths, relative to the task folder, of an item's mixture ('mix') and references ('a', 'b', 'c')."""
    base = f"{sample_rate}/{split}/{name}"
    return {"mix": base + ".wav", **{r: f"{base}.bg_{r}.wav" for r in REFS}}


def compute_build_id(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "build_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TaskItem:
    name: str
    split: str
    label: str
    mix: Path
    refs: dict[str, Path]
    record: dict[str, Any] = field(repr=False)


@dataclass
class BgKnownTask:
    root: Path
    manifest: dict[str, Any]
    labels: list[str]  # label vocabulary in index order
    items: dict[str, list[TaskItem]]  # split -> items in manifest order

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def params(self) -> BuildParams:
        return BuildParams.from_dict(self.manifest["params"])

    @property
    def name(self) -> str:
        return self.manifest["task_name"]

    def label_indices(self, split: str) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[it.label] for it in self.items[split]]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TaskError(
            f"{path.parent} is not a complete BgKnown task folder: {path.name} ({what}) is missing; " + BUILD_HINT
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise TaskError(f"{path} ({what}) is unreadable or corrupt ({e}); " + BUILD_HINT) from e


def load_task(task_dir: str | Path, check_files: bool = True) -> BgKnownTask:
    """Read and check a task folder: format version, build id, HEAR files consistent with the manifest,
    and (``check_files``) every audio file present."""
    root = Path(task_dir)
    if not root.is_dir():
        raise TaskError(
            f"task folder {root} does not exist; build one first: " + BUILD_HINT.replace("rebuild it", "run")
        )
    if not (root / MANIFEST).is_file():
        raise TaskError(f"{root} is not a BgKnown task folder (no {MANIFEST}); " + BUILD_HINT)
    manifest = _read_json(root / MANIFEST, "the build manifest")
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise TaskError(
            f"{root} was built by an older or different builder (manifest format {fmt!r}; this version "
            f"reads {FORMAT!r}); " + BUILD_HINT
        )
    if manifest.get("build_id") != compute_build_id(manifest):
        raise TaskError(
            f"{root / MANIFEST} does not match its build id (edited after the build, or a partial copy); " + BUILD_HINT
        )
    meta = _read_json(root / "task_metadata.json", "HEAR task metadata")
    if meta.get("build_id") != manifest["build_id"]:
        raise TaskError(
            f"{root}: task_metadata.json (build {meta.get('build_id')!r}) and {MANIFEST} (build "
            f"{manifest['build_id']!r}) come from different builds; " + BUILD_HINT
        )
    labels = manifest["labels"]
    vocab_path = root / "labelvocabulary.csv"
    try:
        vocab_rows = vocab_path.read_text().splitlines()
    except OSError as e:
        raise TaskError(f"{vocab_path} is unreadable ({e}); " + BUILD_HINT) from e
    if vocab_rows != ["idx,label"] + [f"{i},{label}" for i, label in enumerate(labels)]:
        raise TaskError(f"{vocab_path} does not match the labels of {MANIFEST}; " + BUILD_HINT)
    items: dict[str, list[TaskItem]] = {s: [] for s in SPLITS}
    for rec in manifest["items"]:
        paths = {k: root / v for k, v in rec["files"].items()}
        items[rec["split"]].append(
            TaskItem(rec["name"], rec["split"], rec["label"], paths["mix"], {r: paths[r] for r in REFS}, rec)
        )
    for split in SPLITS:
        listed = _read_json(root / f"{split}.json", f"the HEAR {split} split")
        expected = {it.mix.name: [it.label] for it in items[split]}
        if listed != expected:
            raise TaskError(f"{root / (split + '.json')} does not list the {split} items of {MANIFEST}; " + BUILD_HINT)
    if check_files:
        missing = [p for its in items.values() for it in its for p in (it.mix, *it.refs.values()) if not p.is_file()]
        if missing:
            raise TaskError(
                f"{root}: {len(missing)} audio files of the build are missing (first: {missing[0]}); " + BUILD_HINT
            )
    return BgKnownTask(root=root, manifest=manifest, labels=list(labels), items=items)
