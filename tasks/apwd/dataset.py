"""Reader of APwD folders: the user's rendered APwD-Dataset and the ones 'hear-diffbyola apwd build' writes.

Layout (the published one)::

    apwd_<scene>_sc/<split>/jams/apwd_<scene>_sc_<split>_<idx>_s1.jams   scene + 1-2 events
    apwd_<scene>_sc/<split>/jams/apwd_<scene>_sc_<split>_<idx>_s2.jams   the same scene, no events
    apwd_<scene>_sc/<split>/wav/<same stem>.wav                          rendered audio

with splits ``dev`` (training; we hold out a validation share of it) and ``eval`` (test). ``root`` may be
a scene folder, a folder holding scene folders (the dataset's ``datasets/``), or a folder holding that.
Pairs are matched by file name (``_s1``/``_s2``), not by index width, which differs between splits.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .jams_io import Soundscape, read_jams
from .vocab import APwDError, modifier_text, template_variant

SPLITS = ("dev", "eval")
SCENE_DIR_RE = re.compile(r"^apwd_(?P<scene>.+)_sc$")
JAMS_RE = re.compile(r"^(?P<stem>.+)_s(?P<side>[12])\.jams$")
RENDER_HINT = (
    "the APwD-Dataset ships JAMS only: render its audio with the dataset's synthesize_audio.py "
    "(Scaper), or build a folder with 'hear-diffbyola apwd build'"
)


def _multiset_minus(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """Labels of a not matched in b, in a's order (multiset difference)."""
    left = Counter(b)
    out = []
    for x in a:
        if left[x]:
            left[x] -= 1
        else:
            out.append(x)
    return tuple(out)


@dataclass(frozen=True)
class Pair:
    """s1 (scene + events) and s2 (the same scene without them), with their audio files."""

    id: str
    s1: Soundscape
    s2: Soundscape
    wav1: Path
    wav2: Path

    def modifier(self, direction: str) -> str:
        """Text for query s1 -> target s2 ('s1->s2', 'remove ...') or s2 -> s1 ('s2->s1', 'add ...')."""
        only1, only2 = _multiset_minus(self.s1.labels, self.s2.labels), _multiset_minus(self.s2.labels, self.s1.labels)
        variant = template_variant(self.id)
        if direction == "s1->s2":
            return modifier_text(added=only2, removed=only1, variant=variant)
        if direction == "s2->s1":
            return modifier_text(added=only1, removed=only2, variant=variant)
        raise ValueError(f"direction must be 's1->s2' or 's2->s1', got {direction!r}")


def scene_dirs(root: str | Path) -> dict[str, Path]:
    """{scene: folder} for every ``apwd_<scene>_sc`` folder at ``root``, inside it, or in ``root/datasets``."""
    root = Path(root)
    if not root.is_dir():
        raise APwDError(
            f"APwD folder {root} does not exist; pass the folder holding apwd_<scene>_sc/ "
            "(the APwD-Dataset's datasets/ folder) or the --out of 'hear-diffbyola apwd build'"
        )
    m = SCENE_DIR_RE.match(root.name)
    if m and any((root / s).is_dir() for s in SPLITS):
        return {m["scene"]: root}
    for base in (root, root / "datasets"):
        found = (
            {m["scene"]: d for d in sorted(base.iterdir()) if d.is_dir() and (m := SCENE_DIR_RE.match(d.name))}
            if base.is_dir()
            else {}
        )
        if found:
            return found
    raise APwDError(
        f"{root} holds no apwd_<scene>_sc folder (looked in {root} and {root / 'datasets'}); "
        "pass the APwD-Dataset's datasets/ folder or the --out of 'hear-diffbyola apwd build'"
    )


def read_pairs(scene_dir: str | Path, split: str, check_audio: bool = True) -> list[Pair]:
    """All pairs of one scene and split, sorted by id. Errors name the file and the fix."""
    if split not in SPLITS:
        raise APwDError(f"split must be one of {SPLITS}, got {split!r}")
    jams_dir = Path(scene_dir) / split / "jams"
    if not jams_dir.is_dir():
        raise APwDError(
            f"{jams_dir} does not exist: an APwD scene folder needs {split}/jams/*.jams ({', '.join(SPLITS)} splits)"
        )
    sides: dict[str, dict[str, Path]] = {}
    for p in sorted(jams_dir.glob("*.jams")):
        m = JAMS_RE.match(p.name)
        if not m:
            raise APwDError(f"{p}: JAMS file names must end in _s1.jams or _s2.jams (one pair = two files)")
        sides.setdefault(m["stem"], {})[m["side"]] = p
    if not sides:
        raise APwDError(f"{jams_dir} holds no .jams files")
    pairs = []
    for stem, files in sides.items():
        if len(files) != 2:
            have, want = next(iter(files.items()))
            missing = jams_dir / f"{stem}_s{'2' if have == '1' else '1'}.jams"
            raise APwDError(
                f"pair {stem}: {want.name} has no partner ({missing} is missing). Every pair needs "
                "both files (s1 = scene with events, s2 = the same scene without them): restore the "
                "missing file or delete the lone one"
            )
        s1, s2 = read_jams(files["1"]), read_jams(files["2"])
        wav1, wav2 = (Path(scene_dir) / split / "wav" / f"{stem}_s{k}.wav" for k in "12")
        if check_audio:
            for w in (wav1, wav2):
                if not w.is_file():
                    raise APwDError(f"pair {stem}: audio {w} is missing; {RENDER_HINT}")
        pair = Pair(stem, s1, s2, wav1, wav2)
        if Counter(s1.labels) == Counter(s2.labels):
            raise APwDError(
                f"pair {stem}: s1 and s2 have the same events {list(s1.labels)}, so no text can describe "
                f"a difference; check {files['1']} (s1 should hold the 1-2 events s2 lacks)"
            )
        pairs.append(pair)
    return pairs


def event_vocabulary(pairs: list[Pair]) -> tuple[str, ...]:
    """Sorted event labels occurring in the pairs (the targets of the classification heads)."""
    return tuple(sorted({x for p in pairs for s in (p.s1, p.s2) for x in s.labels}))
