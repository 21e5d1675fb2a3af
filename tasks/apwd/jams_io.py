"""JAMS files as Scaper writes them, read and written as plain JSON (no ``jams`` package needed).

What matters for APwD is one annotation with namespace ``scaper`` whose observations each have a
``value`` dict with ``label``, ``role`` ('background' or 'foreground'), ``source_file``,
``source_time``, ``event_time``, ``event_duration`` and ``snr``. We write the same fields, plus
Scaper's sandbox keys that describe the soundscape (duration, sr, ref_db, n_events), so files we
write read like the published ones and vice versa.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .vocab import APwDError, canonical_label

JAMS_VERSION = "0.3.4"  # the version string of the published APwD-Dataset files


@dataclass(frozen=True)
class Source:
    """One observation of a Scaper soundscape: a background track or a foreground event."""

    label: str
    role: str  # 'background' | 'foreground'
    source_file: str
    source_time: float  # s into the source file
    event_time: float  # s into the soundscape
    event_duration: float  # s
    snr: float  # dB relative to ref_db (LUFS difference, Scaper's definition)

    def to_observation(self) -> dict[str, Any]:
        return {
            "time": self.event_time,
            "duration": self.event_duration,
            "confidence": 1.0,
            "value": {
                "label": self.label,
                "source_file": self.source_file,
                "source_time": self.source_time,
                "event_time": self.event_time,
                "event_duration": self.event_duration,
                "snr": self.snr,
                "role": self.role,
                "pitch_shift": None,
                "time_stretch": None,
            },
        }


@dataclass(frozen=True)
class Soundscape:
    """What a JAMS file says about one clip."""

    path: Path
    duration: float
    backgrounds: tuple[Source, ...]
    events: tuple[Source, ...]  # in onset order, labels canonical

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(e.label for e in self.events)


def write_jams(
    path: str | Path,
    sources: list[Source],
    duration: float,
    sample_rate: int,
    ref_db: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a Scaper-style JAMS file (JSON) for a soundscape made of ``sources``."""
    path = Path(path)
    n_events = sum(s.role == "foreground" for s in sources)
    sandbox = {
        "duration": duration,
        "original_duration": duration,
        "sr": sample_rate,
        "ref_db": ref_db,
        "n_channels": 1,
        "n_events": n_events,
        "generator": "hear-diffbyola apwd build",
        **(extra or {}),
    }
    doc = {
        "annotations": [
            {
                "annotation_metadata": {
                    "curator": {"name": "", "email": ""},
                    "annotator": {},
                    "version": "",
                    "corpus": "",
                    "annotation_tools": "",
                    "annotation_rules": "",
                    "validation": "",
                    "data_source": "",
                },
                "namespace": "scaper",
                "data": [s.to_observation() for s in sources],
                "sandbox": {"scaper": sandbox},
                "time": 0,
                "duration": duration,
            }
        ],
        "file_metadata": {
            "title": "",
            "artist": "",
            "release": "",
            "duration": duration,
            "identifiers": {},
            "jams_version": JAMS_VERSION,
        },
        "sandbox": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


def _number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise APwDError(f"{where}: observation field {field!r} must be a number, got {value!r}")
    return float(value)


def read_jams(path: str | Path) -> Soundscape:
    """Read the ``scaper`` annotation of a JAMS file; APwDError naming the file if it is not one."""
    path = Path(path)
    hint = "it should be an APwD-Dataset JAMS file or one written by 'hear-diffbyola apwd build'"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APwDError(f"{path}: not a readable JSON/JAMS file ({e}); {hint}") from e
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    scaper = [a for a in anns or [] if isinstance(a, dict) and a.get("namespace") == "scaper"]
    if not scaper:
        found = sorted({str(a.get("namespace")) for a in anns or [] if isinstance(a, dict)})
        raise APwDError(f"{path}: no annotation with namespace 'scaper' (found: {found or 'no annotations'}); {hint}")
    ann = scaper[0]
    data = ann.get("data")
    if not isinstance(data, list):
        raise APwDError(f"{path}: the 'scaper' annotation has no 'data' list of observations; {hint}")
    backgrounds, events = [], []
    for i, obs in enumerate(data):
        where = f"{path} (observation {i})"
        value = obs.get("value") if isinstance(obs, dict) else None
        if not isinstance(value, dict) or "label" not in value or "role" not in value:
            raise APwDError(f"{where}: expected a 'value' with at least 'label' and 'role'; {hint}")
        role = value["role"]
        if role not in ("background", "foreground"):
            raise APwDError(f"{where}: role {role!r}, expected 'background' or 'foreground'")
        label = str(value["label"])
        if role == "foreground":
            label = canonical_label(label, where)
        src = Source(
            label=label,
            role=role,
            source_file=str(value.get("source_file", "")),
            source_time=_number(value.get("source_time", 0.0), "source_time", where),
            event_time=_number(value.get("event_time", obs.get("time", 0.0)), "event_time", where),
            event_duration=_number(value.get("event_duration", obs.get("duration", 0.0)), "event_duration", where),
            snr=_number(value.get("snr", 0.0), "snr", where),
        )
        (events if role == "foreground" else backgrounds).append(src)
    events.sort(key=lambda s: (s.event_time, s.label))
    sandbox = ann.get("sandbox", {}).get("scaper", {}) if isinstance(ann.get("sandbox"), dict) else {}
    duration = ann.get("duration", sandbox.get("duration", doc.get("file_metadata", {}).get("duration", 0.0)))
    return Soundscape(
        path=path,
        duration=_number(duration, "duration", str(path)),
        backgrounds=tuple(backgrounds),
        events=tuple(events),
    )
