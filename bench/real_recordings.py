"""Assemble a BgKnown folder set (and a disjoint pretraining corpus) from real recordings that Debian ships.

Nothing here is shipped with the package: the script copies and converts sounds that are already on the
machine into OUT, with OUT/SOURCES.tsv naming every file's origin, package and licence.

    apt-get install -y minetest-data fluidsynth fluid-soundfont-gm    # once (sound-theme-freedesktop: optional)
    python bench/real_recordings.py --out data/real
    hear-diffbyola bgknown build --fg-folder data/real/eval/fg --bg-folder data/real/eval/bg \\
        --clip-seconds 2 --out data/bgknown-real
    hear-diffbyola pretrain --corpus data/real/pretrain ...          # optional: a corpus disjoint from eval

Sources (licences from each package's /usr/share/doc/PACKAGE/copyright):

- ``minetest-data`` (Minetest Game sound effects; CC-BY-SA-3.0, some CC0-1.0 / CC-BY-3.0): recorded
  footsteps, digging, doors, glass, metal; long ambient loops (water, lava, fire, furnace) as backgrounds.
- ``fluid-soundfont-gm`` (FluidR3_GM, MIT; sampled from recorded instruments), rendered with ``fluidsynth``
  from MIDI written here: single notes of eight GM instruments as foreground classes, long sustained
  ensemble passages as backgrounds, and notes of *other* GM programs for the pretraining corpus.
- ``sound-theme-freedesktop`` (CC-BY-SA-3.0, CC-BY-3.0, GPL-2+), if installed: pretraining corpus only.

Disjointness: every source file and every GM program is used in one role only (evaluation foreground,
evaluation background, or pretraining); the script checks it before writing and fails otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

MT = Path("/usr/share/games/minetest/games/minetest_game/mods")
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SR = 16000
MT_LICENCE = "CC-BY-SA-3.0 / CC0-1.0 / CC-BY-3.0 per file, see /usr/share/doc/minetest-data/copyright"

# foreground classes from Minetest Game: class -> file stems (mod/sounds/<stem>.ogg)
MT_CLASSES = {
    "glass": [
        "default/default_break_glass.1",
        "default/default_break_glass.2",
        "default/default_break_glass.3",
        "default/default_glass_footstep",
        "doors/doors_glass_door_open",
        "doors/doors_glass_door_close",
    ],
    "snow_steps": [f"default/default_snow_footstep.{i}" for i in range(1, 6)],
    "gravel": [f"default/default_gravel_footstep.{i}" for i in range(1, 5)]
    + [f"default/default_gravel_dig.{i}" for i in (1, 2)]
    + [f"default/default_gravel_dug.{i}" for i in (1, 2, 3)],
    "ice": [f"default/default_ice_dig.{i}" for i in (1, 2, 3)]
    + ["default/default_ice_dug"]
    + [f"default/default_ice_footstep.{i}" for i in (1, 2, 3)],
    "metal": ["default/default_dig_metal", "default/default_dug_metal.1", "default/default_dug_metal.2"]
    + [f"default/default_metal_footstep.{i}" for i in (1, 2, 3)]
    + [
        "default/default_place_node_metal.1",
        "default/default_place_node_metal.2",
        "doors/doors_steel_door_open",
        "doors/doors_steel_door_close",
        "xpanes/xpanes_steel_bar_door_open",
        "xpanes/xpanes_steel_bar_door_close",
    ],
    "wood": [f"default/default_dig_choppy.{i}" for i in (1, 2, 3)]
    + [
        "default/default_wood_footstep.1",
        "default/default_wood_footstep.2",
        "doors/doors_door_open",
        "doors/doors_door_close",
        "doors/doors_fencegate_open",
        "doors/doors_fencegate_close",
        "default/default_chest_open",
        "default/default_chest_close",
    ],
    "stone": [f"default/default_dig_cracky.{i}" for i in (1, 2, 3)]
    + [f"default/default_hard_footstep.{i}" for i in (1, 2, 3)]
    + ["default/default_place_node_hard.1", "default/default_place_node_hard.2"],
    "soft_ground": [f"default/default_grass_footstep.{i}" for i in (1, 2, 3)]
    + ["default/default_dirt_footstep.1", "default/default_dirt_footstep.2", "default/default_dig_crumbly"]
    + [f"default/default_sand_footstep.{i}" for i in (1, 2, 3)],
}
# long Minetest ambient loops: backgrounds
MT_BACKGROUNDS = [
    "default/default_furnace_active",
    "env_sounds/env_sounds_lava.1",
    "env_sounds/env_sounds_lava.2",
    "env_sounds/env_sounds_water.1",
    "env_sounds/env_sounds_water.2",
    "env_sounds/env_sounds_water.3",
    "env_sounds/env_sounds_water.4",
    "fire/fire_large",
    "fire/fire_small",
    "fire/fire_fire.1",
    "fire/fire_fire.2",
    "fire/fire_fire.3",
]
# Minetest sounds in neither list above go to the pretraining corpus

# GM programs (0-based) -> foreground class: single notes
GM_CLASSES = {
    0: "piano",
    40: "violin",
    56: "trumpet",
    73: "flute",
    24: "nylon_guitar",
    13: "xylophone",
    12: "marimba",
    22: "harmonica",
}
# (MIDI pitch, velocity) per clip: two octaves and a half, loud and soft
GM_NOTES = [(p, v) for p, v in zip(range(50, 86, 3), (100, 70, 110, 85, 60, 95, 120, 75, 90, 65, 105, 80))]
# GM programs for backgrounds: sustained chord progressions (long "scenes" of music)
GM_BACKGROUNDS = {48: "strings", 19: "church_organ", 52: "choir", 89: "warm_pad", 61: "brass_section", 46: "harp"}
BG_SECONDS = 12.0
# GM programs for the pretraining corpus: none of the above
GM_PRETRAIN = [
    1,
    4,
    6,
    8,
    11,
    16,
    21,
    25,
    27,
    32,
    33,
    38,
    41,
    42,
    57,
    60,
    64,
    65,
    68,
    70,
    71,
    75,
    80,
    81,
    87,
    105,
    108,
    114,
    115,
    116,
    117,
    118,
]


# ---------------------------------------------------------------- MIDI (format 0, one track)


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_file(program: int, notes: list[tuple[float, float, int, int]], ticks: int = 480) -> bytes:
    """A format-0 MIDI file: one program on channel 0, notes as (start s, duration s, pitch, velocity) at 120 bpm."""
    per_s = 2 * ticks  # 120 bpm: 2 quarter notes per second
    events = []
    for start, dur, pitch, vel in notes:
        events.append((round(start * per_s), bytes([0x90, pitch, vel])))
        events.append((round((start + dur) * per_s), bytes([0x80, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1][0] == 0x90))  # note-offs before note-ons at the same tick
    track, now = bytearray(_vlq(0) + bytes([0xC0, program])), 0
    for tick, msg in events:
        track += _vlq(tick - now) + msg
        now = tick
    track += _vlq(0) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render(program: int, notes: list[tuple[float, float, int, int]], seconds: float, work: Path) -> np.ndarray:
    """The notes rendered by fluidsynth with FluidR3_GM at 16 kHz, mono, cut or padded to ``seconds``."""
    mid, wav = work / "x.mid", work / "x.wav"
    mid.write_bytes(midi_file(program, notes))
    subprocess.run(
        [
            "fluidsynth",
            "-ni",
            "-q",
            "-R",
            "0",
            "-C",
            "0",
            "-g",
            "0.6",
            "-r",
            str(SR),
            "-F",
            str(wav),
            str(SOUNDFONT),
            str(mid),
        ],
        check=True,
        capture_output=True,
    )
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SR, sr
    x = x.mean(axis=1)
    n = int(seconds * SR)
    return np.pad(x, (0, max(0, n - x.size)))[:n]


def chords(seconds: float, rng: np.random.Generator) -> list[tuple[float, float, int, int]]:
    """A slow progression of triads, 2 s each, over ``seconds``: sustained, never silent."""
    roots = [48, 53, 55, 57, 50, 52]
    out, t = [], 0.0
    while t < seconds:
        root = int(rng.choice(roots))
        third = 3 if rng.random() < 0.5 else 4
        for p in (root, root + third, root + 7, root + 12):
            out.append((t, 2.05, p, int(rng.integers(60, 90))))
        t += 2.0
    return out


# ---------------------------------------------------------------- assembling


def _to_wav(src: Path, dst: Path) -> None:
    """Any soundfile-readable file as 16-bit mono WAV at its own rate (the build resamples)."""
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, x.mean(axis=1), sr, subtype="PCM_16")


def assemble(out: Path, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    for p in (MT, SOUNDFONT):
        if not p.exists():
            raise SystemExit(f"{p} is missing: apt-get install -y minetest-data fluidsynth fluid-soundfont-gm")
    if shutil.which("fluidsynth") is None:
        raise SystemExit("fluidsynth is not installed: apt-get install -y fluidsynth")
    mt_fg = {stem for stems in MT_CLASSES.values() for stem in stems}
    mt_bg = set(MT_BACKGROUNDS)
    all_mt = {f"{p.parent.parent.name}/{p.name[:-4]}" for p in MT.glob("*/sounds/*.ogg")}
    missing = (mt_fg | mt_bg) - all_mt
    if missing:
        raise SystemExit(f"minetest-data lacks {sorted(missing)[:3]}...: another version? adjust MT_CLASSES")
    programs = [set(GM_CLASSES), set(GM_BACKGROUNDS), set(GM_PRETRAIN)]
    # disjoint roles: no file and no GM program in two of them
    assert not mt_fg & mt_bg and not any(a & b for i, a in enumerate(programs) for b in programs[i + 1 :])
    if out.exists():
        shutil.rmtree(out)
    rows = ["file\trole\tsource\tpackage\tlicence"]
    counts = {"eval_fg": 0, "eval_bg": 0, "pretrain": 0}

    def add(rel: str, role: str, source: str, package: str, licence: str) -> None:
        rows.append(f"{rel}\t{role}\t{source}\t{package}\t{licence}")
        counts[role] += 1

    for label, stems in MT_CLASSES.items():
        for stem in stems:
            rel = f"eval/fg/{label}/{stem.replace('/', '__')}.wav"
            _to_wav(MT / stem.split("/")[0] / "sounds" / f"{stem.split('/')[1]}.ogg", out / rel)
            add(
                rel,
                "eval_fg",
                f"{MT}/{stem.split('/')[0]}/sounds/{stem.split('/')[1]}.ogg",
                "minetest-data",
                MT_LICENCE,
            )
    for stem in MT_BACKGROUNDS:
        rel = f"eval/bg/{stem.replace('/', '__')}.wav"
        _to_wav(MT / stem.split("/")[0] / "sounds" / f"{stem.split('/')[1]}.ogg", out / rel)
        add(rel, "eval_bg", f"{MT}/{stem.split('/')[0]}/sounds/{stem.split('/')[1]}.ogg", "minetest-data", MT_LICENCE)
    sf_licence = "MIT (FluidR3_GM), rendered with fluidsynth (LGPL-2.1+)"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for program, label in GM_CLASSES.items():
            for pitch, vel in GM_NOTES:
                rel = f"eval/fg/{label}/gm{program:03d}_note{pitch}.wav"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(out / rel, render(program, [(0.05, 1.2, pitch, vel)], 2.0, work), SR, subtype="PCM_16")
                add(
                    rel,
                    "eval_fg",
                    f"GM program {program}, note {pitch}, velocity {vel}",
                    "fluid-soundfont-gm",
                    sf_licence,
                )
        for program, label in GM_BACKGROUNDS.items():
            rel = f"eval/bg/gm{program:03d}_{label}.wav"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(out / rel, render(program, chords(BG_SECONDS, rng), BG_SECONDS, work), SR, subtype="PCM_16")
            add(rel, "eval_bg", f"GM program {program}, triads, {BG_SECONDS:g} s", "fluid-soundfont-gm", sf_licence)
        for program in GM_PRETRAIN:
            notes = [
                (0.05 + 0.5 * k, float(rng.uniform(0.3, 1.2)), int(rng.integers(40, 84)), int(rng.integers(50, 120)))
                for k in range(4)
            ]
            rel = f"pretrain/gm{program:03d}.wav"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(out / rel, render(program, notes, 3.0, work), SR, subtype="PCM_16")
            add(rel, "pretrain", f"GM program {program}, 4 random notes", "fluid-soundfont-gm", sf_licence)
    for stem in sorted(all_mt - mt_fg - mt_bg):
        rel = f"pretrain/mt__{stem.replace('/', '__')}.wav"
        _to_wav(MT / stem.split("/")[0] / "sounds" / f"{stem.split('/')[1]}.ogg", out / rel)
        add(rel, "pretrain", f"{MT}/{stem.split('/')[0]}/sounds/{stem.split('/')[1]}.ogg", "minetest-data", MT_LICENCE)
    if FREEDESKTOP.is_dir():
        for src in sorted(FREEDESKTOP.glob("*.oga")):
            rel = f"pretrain/fd__{src.stem}.wav"
            _to_wav(src, out / rel)
            add(
                rel,
                "pretrain",
                str(src),
                "sound-theme-freedesktop",
                "CC-BY-SA-3.0 / CC-BY-3.0 / GPL-2+ per file, see /usr/share/doc/sound-theme-freedesktop/copyright",
            )
    sources = [r.split("\t")[2] for r in rows[1:]]
    assert len(set(sources)) == len(sources), "a source was used twice"
    (out / "SOURCES.tsv").write_text("\n".join(rows) + "\n")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", required=True, help="folder to (re)create: OUT/eval/fg/<class>/, OUT/eval/bg/, OUT/pretrain/"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the rendered chords and pretraining notes")
    args = ap.parse_args()
    counts = assemble(Path(args.out), args.seed)
    classes = sorted(p.name for p in (Path(args.out) / "eval" / "fg").iterdir())
    print(
        f"wrote {args.out}: {counts['eval_fg']} foreground clips in {len(classes)} classes ({', '.join(classes)}), "
        f"{counts['eval_bg']} backgrounds, {counts['pretrain']} pretraining files; origins in SOURCES.tsv"
    )


if __name__ == "__main__":
    main()
