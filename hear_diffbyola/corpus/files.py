"""A user's own audio as a pretraining corpus: a folder (recursive) or a CSV/TXT list of files."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import AUDIO_EXTENSIONS, AudioReadError, audio_info, read_audio
from ..errors import DiffByolaError

PATH_COLUMNS = ("path", "filename", "file", "fname")


class CorpusError(DiffByolaError, ValueError):
    """The corpus cannot be used as given; the message says what and how to fix it. ``bad`` lists the
    unreadable files as (path, reason) when that is why."""

    def __init__(self, message: str, bad: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.bad = list(bad or [])


def bad_file_reason(path: Path) -> str | None:
    """Why ``path`` cannot serve as training audio ("not found", "not audio: ...", "truncated: ..."), or None."""
    if not path.exists():
        return "not found"
    if not path.is_file():
        return "not a file"
    try:
        n, sr = audio_info(path)
    except AudioReadError as e:
        return f"not audio (or an unsupported format): {str(e).split(': ', 1)[-1]}"
    if n <= 0:
        return "empty: no audio frames"
    try:
        read_audio(path, sr, 0, min(n, 1024))  # the header can be fine and the data not
        if n > 1024:
            read_audio(path, sr, n - 1024, 1024)  # a cut-off file fails at its end
    except AudioReadError as e:
        return f"truncated or corrupt audio data: {str(e).split(': ', 1)[-1]}"
    return None


def list_audio_files(spec: str | Path) -> list[Path]:
    """Files named by ``spec``: every audio file under a folder (recursive, sorted), or the entries of
    a .txt (one path per line) / .csv (column path|filename|file|fname, else the first) list.
    Relative paths in a list are relative to the list's folder."""
    spec = Path(spec)
    if spec.is_dir():
        files = sorted(p for p in spec.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise CorpusError(
                f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under folder {spec}; "
                "point --corpus at a folder that contains audio, or at a .csv/.txt list of files"
            )
        return files
    if not spec.exists():
        raise CorpusError(f"corpus {spec} does not exist; give a folder of audio, a .csv/.txt list, or 'embedded'")
    suffix = spec.suffix.lower()
    if suffix == ".txt":
        entries = [ln.strip() for ln in spec.read_text(encoding="utf-8-sig").splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
    elif suffix == ".csv":
        with open(spec, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: a BOM is not part of the header
            rows = list(csv.reader(fh))
        if not rows:
            raise CorpusError(f"corpus list {spec} is empty")
        header = [h.strip().lower() for h in rows[0]]
        col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
        body = rows[1:] if col is not None else rows
        entries = [r[col or 0].strip() for r in body if r and r[col or 0].strip()]
    else:
        raise CorpusError(
            f"corpus {spec}: expected a folder, a .txt or a .csv list, got a {suffix or 'suffix-less'} file"
        )
    if not entries:
        raise CorpusError(f"corpus list {spec} names no files")
    return [p if p.is_absolute() else spec.parent / p for p in map(Path, entries)]


@dataclass
class FileCorpus:
    """Audio files scanned once (header + first frames); unreadable ones are counted, listed and left out.

    ``segment`` reads only the frames it needs, so long recordings cost no more than short ones.
    """

    spec: str | Path
    sample_rate: int = 16000
    max_bad_fraction: float = 0.01
    files: list[Path] = field(init=False, default_factory=list)
    frames: list[int] = field(init=False, default_factory=list)
    rates: list[int] = field(init=False, default_factory=list)
    bad: list[tuple[str, str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise CorpusError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        listed = list_audio_files(self.spec)
        for path in listed:
            reason = bad_file_reason(path)
            if reason is not None:
                self.bad.append((str(path), reason))
                continue
            n, sr = audio_info(path)
            self.files.append(path)
            self.frames.append(n)
            self.rates.append(sr)
        frac = len(self.bad) / len(listed)
        if not self.files:
            raise CorpusError(
                f"none of the {len(listed)} files of corpus {self.spec} could be read; first: "
                f"{self.bad[0][0]}: {self.bad[0][1]}.",
                self.bad,
            )
        if frac > self.max_bad_fraction:
            first = "; ".join(f"{p}: {r}" for p, r in self.bad[:3])
            raise CorpusError(
                f"{len(self.bad)} of {len(listed)} files ({frac:.1%}) in corpus {self.spec} are unreadable, more than "
                f"max_bad_fraction={self.max_bad_fraction:.1%}. First: {first}. Fix or remove them, or raise "
                "train.max_bad_fraction.",
                self.bad,
            )

    def __len__(self) -> int:
        return len(self.files)

    def segment(self, index: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``n_samples`` stretch of file ``index`` at ``sample_rate`` (zero-padded when shorter)."""
        sr, total = self.rates[index], self.frames[index]
        need = int(np.ceil(n_samples * sr / self.sample_rate)) + 16  # margin for the resampler's rounding
        start = int(rng.integers(0, max(total - need, 0) + 1))
        x = read_audio(self.files[index], self.sample_rate, start, min(need, total - start))
        return fit_length(x, n_samples, rng)

    def describe(self) -> str:
        hours = sum(n / sr for n, sr in zip(self.frames, self.rates)) / 3600
        return f"{len(self.files)} audio files under {self.spec} ({hours:.2f} h), {len(self.bad)} unreadable left out"


def fit_length(x: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop to ``n_samples``, or zero-pad at a random offset when shorter (BYOL-A pads short clips)."""
    if len(x) >= n_samples:
        start = int(rng.integers(0, len(x) - n_samples + 1))
        return x[start : start + n_samples]
    out = np.zeros(n_samples, dtype=np.float32)
    start = int(rng.integers(0, n_samples - len(x) + 1))
    out[start : start + len(x)] = x
    return out
