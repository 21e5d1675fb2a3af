"""APwD's scenes, event labels and the text modifiers derived from them.

Label names are those of the published APwD-Dataset JAMS files (``birds``, ``church_bells``...). The
generator's ESC-50 categories and the embedded corpus's synthetic classes map onto them as below.

The dataset's text modifiers were never published, so they are derived here from the event labels
with fixed templates, in both directions: a pair (s1 = scene + events, s2 = the same scene without
them) gives the query (s1, "remove ...") -> s2 and the query (s2, "add ...") -> s1. Each direction has
four paraphrase templates; which one a pair gets is a pure function of the pair's id (stable across
runs and machines), so the text encoder cannot key on one fixed wording.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .. import TaskError


class APwDError(TaskError):
    """An APwD folder, file or setting is not usable; the message says what, where and what to do."""


@dataclass(frozen=True)
class Scene:
    name: str  # our name and the folder name: apwd_<name>_sc
    jams_label: str  # background label in the published JAMS files
    fsd50k_label: str  # FSD50K vocabulary label whose clips are the backgrounds
    synthetic: str  # embedded-corpus scene used by --synthetic


SCENES: dict[str, Scene] = {
    "rain": Scene("rain", "rain", "Rain", "rain"),
    "traffic": Scene("traffic", "car_passing", "Car_passing_by", "traffic"),
}

# APwD event label -> ESC-50 category (the paper's six classes)
ESC50_CATEGORY: dict[str, str] = {
    "thunder": "thunder",
    "dog": "dog",
    "footsteps": "footsteps",
    "birds": "chirping_birds",
    "car_horn": "car_horn",
    "church_bells": "church_bell",
}
APWD_EVENTS: tuple[str, ...] = tuple(ESC50_CATEGORY)

# APwD event label -> embedded-corpus class standing in for it in --synthetic builds. Chosen for a similar
# acoustic role: a broadband burst for thunder, the bark-like call for dog, knocks for footsteps, a rising
# chirp for birds, a tonal siren for the car horn and the struck bell for church bells.
SYNTHETIC_EVENT: dict[str, str] = {
    "thunder": "noise_burst",
    "dog": "bark_like",
    "footsteps": "knock",
    "birds": "chirp_up",
    "car_horn": "siren",
    "church_bells": "bell",
}
SYNTHETIC_EVENTS: tuple[str, ...] = tuple(SYNTHETIC_EVENT.values())

# How each label is said in a modifier. Every label a JAMS file may carry must be here (an unknown label
# is an error, not a silent fallback): APwD's, ESC-50's spellings, and every embedded-corpus class.
PHRASES: dict[str, str] = {
    "thunder": "thunder",
    "dog": "a dog barking",
    "footsteps": "footsteps",
    "birds": "birds chirping",
    "car_horn": "a car horn",
    "church_bells": "church bells ringing",
    # embedded corpus (hear_diffbyola.corpus.synthetic.EVENT_CLASSES)
    "harmonic_vibrato": "a vibrato tone",
    "chirp_up": "a rising chirp",
    "chirp_down": "a falling chirp",
    "noise_burst": "a burst of noise",
    "click_train": "a train of clicks",
    "am_tone": "a pulsing tone",
    "fm_texture": "a metallic warble",
    "bell": "a bell",
    "dripping": "water dripping",
    "bark_like": "a bark-like call",
    "knock": "knocking",
    "siren": "a siren",
}

# other spellings found in the wild -> our label
ALIASES: dict[str, str] = {"chirping_birds": "birds", "church_bell": "church_bells", "dog_bark": "dog"}

ADD_TEMPLATES: tuple[str, ...] = (
    "add {x}",
    "the same scene with {x} added",
    "insert the sound of {x}",
    "{x} added to the background",
)
REMOVE_TEMPLATES: tuple[str, ...] = (
    "remove {x}",
    "the same scene without {x}",
    "take out the sound of {x}",
    "{x} removed from the background",
)
DIRECTIONS = ("add", "remove")


def canonical_label(label: str, where: str = "") -> str:
    """Our spelling of an event label; APwDError naming the file and the known labels if it is unknown."""
    name = ALIASES.get(label, label)
    if name not in PHRASES:
        at = f" in {where}" if where else ""
        raise APwDError(
            f"unknown event label {label!r}{at}; known labels: {', '.join(sorted(PHRASES))} "
            f"(and aliases {', '.join(sorted(ALIASES))}). Add a phrase for it to "
            "hear_diffbyola.tasks.apwd.vocab.PHRASES if it is a new class"
        )
    return name


def join_phrases(labels: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c' from labels (in the given order)."""
    words = [PHRASES[canonical_label(x)] for x in labels]
    if not words:
        raise APwDError("a modifier needs at least one event label")
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def template_variant(key: str) -> int:
    """Which paraphrase a pair gets: a stable hash of its id (crc32, not Python's salted hash)."""
    return zlib.crc32(key.encode("utf-8")) % len(ADD_TEMPLATES)


def modifier_text(added: Sequence[str] = (), removed: Sequence[str] = (), variant: int = 0) -> str:
    """Text describing the change from a query clip to its target: events ``added`` and/or ``removed``.

    APwD pairs change in one direction only; a change both ways joins the two clauses with 'and'.
    """
    if not added and not removed:
        raise APwDError("query and target have the same events: there is no difference to describe")
    parts = []
    if removed:
        parts.append(REMOVE_TEMPLATES[variant % len(REMOVE_TEMPLATES)].format(x=join_phrases(removed)))
    if added:
        parts.append(ADD_TEMPLATES[variant % len(ADD_TEMPLATES)].format(x=join_phrases(added)))
    return " and ".join(parts)
