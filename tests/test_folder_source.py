"""BgKnown from a user's own folders (tasks/bgknown/folder_source.py), on sounds this test writes itself:
per class tones / noise bursts / clicks, and long hum-and-noise backgrounds. Checks the written files
against the sources (crops, SNR, labels), the class-stratified split, background sides, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from hear_diffbyola.audio import read_audio
from hear_diffbyola.cli import main
from hear_diffbyola.tasks import TaskError
from hear_diffbyola.tasks.bgknown.folder_source import (
    build_from_folders,
    folder_jobs,
    read_foreground_folder,
)
from hear_diffbyola.tasks.bgknown.manifest import BuildParams, load_task
from hear_diffbyola.tasks.mixing import event_loudness, overlap_samples

SR = 16000
CLIP_S = 1.0
PARAMS = BuildParams(clip_seconds=CLIP_S, min_bg_seconds=2 * CLIP_S)


def _sound(kind: str, rng: np.random.Generator, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    if kind == "tone":
        x = np.sin(2 * np.pi * rng.uniform(400, 900) * t) * np.exp(-2 * t)
    elif kind == "noise":
        x = rng.normal(size=t.size) * (t < seconds * 0.6)
    else:  # clicks
        x = np.zeros(t.size)
        x[rng.choice(t.size, 12, replace=False)] = 1.0
        x = np.convolve(x, np.hanning(64), mode="same")
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def make_folders(root, per_class: int = 4, bg_seconds: tuple[float, ...] = (2.6, 3.0, 3.4, 2.2)):
    rng = np.random.default_rng(0)
    fg, bg = root / "fg", root / "bg"
    for kind in ("tone", "noise", "clicks"):
        for i in range(per_class):
            # mixed formats, rates and lengths: read_audio resamples, the build cuts or pads to the clip length
            if kind == "noise" and i == 0:
                path, sr = fg / kind / "deep" / f"{kind}{i}.flac", 22050
            else:
                path, sr = fg / kind / f"{kind}{i}.wav", SR
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _sound(kind, rng, 0.7 + 0.2 * i, sr), sr)
    bg.mkdir(parents=True)
    for j, seconds in enumerate(bg_seconds):
        t = np.arange(int(seconds * SR)) / SR
        hum = 0.1 * np.sin(2 * np.pi * (50 + 20 * j) * t) + 0.05 * rng.normal(size=t.size)
        sf.write(bg / f"room{j}.wav", hum.astype(np.float32), SR)
    return fg, bg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    fg, bg = make_folders(root)
    out = build_from_folders(fg, bg, root / "task", seed=3, params=PARAMS, workers=0, progress=False)
    return fg, bg, load_task(out)


def test_split_is_class_stratified_and_labels_follow_their_class_folder(built):
    fg, _, task = built
    # 4 clips per class: round(4/3) = 1 to test; of the 3 left, 1 to valid (at least one), 2 to train
    for split, per_class in (("test", 1), ("valid", 1), ("train", 2)):
        labels = [it.label for it in task.items[split]]
        assert sorted(labels) == sorted(["clicks", "noise", "tone"] * per_class), split
    assert task.labels == ["clicks", "noise", "tone"]
    used = [it.record["foreground"]["file"] for s in task.items.values() for it in s]
    assert sorted(used) == sorted(str(p.relative_to(fg)) for p in fg.rglob("*.*"))  # every clip once
    for items in task.items.values():
        for it in items:
            assert it.record["foreground"]["file"].split("/")[0] == it.label
    hear_test = json.loads((task.root / "test.json").read_text())
    assert {k: v[0] for k, v in hear_test.items()} == {it.mix.name: it.label for it in task.items["test"]}


def test_test_backgrounds_are_never_used_in_training(built):
    _, _, task = built
    train_bg = {it.record["background"]["file"] for s in ("train", "valid") for it in task.items[s]}
    test_bg = {it.record["background"]["file"] for it in task.items["test"]}
    assert train_bg and test_bg and not train_bg & test_bg
    sides = task.manifest["sources"]["folders"]["backgrounds"]
    assert set(sides["train"]) == train_bg and set(sides["test"]) == test_bg
    assert len(train_bg | test_bg) == 4  # 4 recordings: round(4/3) = 1 on the test side, 3 for training (all used)


def test_written_items_are_the_sources_cropped_and_mixed_at_the_drawn_snr(built):
    fg, bg, task = built
    n = int(CLIP_S * SR)
    for it in task.items["train"] + task.items["test"]:
        rec = it.record
        a, b, c = (rec["crops"][k] for k in "abc")
        assert overlap_samples(a, b, n) == n // 2 and overlap_samples(a, c, n) == 0
        source_bg = read_audio(bg / rec["background"]["file"], SR)
        mix = read_audio(it.mix, SR)
        refs = {k: read_audio(p, SR) for k, p in it.refs.items()}
        for k, start in (
            ("a", a),
            ("b", b),
            ("c", c),
        ):  # each reference: its crop of the recording, one gain (peak guard included)
            assert np.allclose(refs[k], rec["bg_gain"] * source_bg[start : start + n], atol=2e-4)
        residual = mix - refs["a"]  # the foreground, as mixed
        source_fg = read_audio(fg / rec["foreground"]["file"], SR)
        fitted = np.pad(source_fg, (0, max(0, n - source_fg.size)))[:n]
        assert np.corrcoef(residual, fitted)[0, 1] > 0.999
        assert 0.0 <= rec["snr_db"] <= 3.0
        # loudness of the foreground part over the background part, measured on the written files
        assert event_loudness(residual, SR) - event_loudness(refs["a"], SR) == pytest.approx(rec["snr_db"], abs=0.05)


def test_same_inputs_same_build_and_cli_builds_it(built, tmp_path, capsys):
    fg, bg, task = built
    again = build_from_folders(fg, bg, tmp_path / "again", seed=3, params=PARAMS, workers=0, progress=False)
    assert load_task(again).build_id == task.build_id
    other = build_from_folders(fg, bg, tmp_path / "other", seed=4, params=PARAMS, workers=0, progress=False)
    assert load_task(other).build_id != task.build_id
    assert (
        main(
            [
                "bgknown",
                "build",
                "--fg-folder",
                str(fg),
                "--bg-folder",
                str(bg),
                "--clip-seconds",
                "1",
                "--out",
                str(tmp_path / "cli"),
                "--seed",
                "3",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "wrote bgknown-folders" in capsys.readouterr().out
    assert load_task(tmp_path / "cli").build_id == task.build_id
    assert main(["bgknown", "build", "--fg-folder", str(fg), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "needs both --fg-folder DIR and --bg-folder DIR" in capsys.readouterr().err


def test_folder_errors_name_what_is_wrong(tmp_path):
    fg, bg = make_folders(tmp_path)
    with pytest.raises(TaskError, match=r"shorter than 2 s.*room3\.wav \(1\.5 s\)"):
        short = tmp_path / "bg_short"
        short.mkdir()
        for p in bg.iterdir():
            (short / p.name).write_bytes(p.read_bytes())
        sf.write(short / "room3.wav", np.zeros(int(1.5 * SR), np.float32), SR)
        build_from_folders(fg, short, tmp_path / "t1", params=PARAMS, workers=0, progress=False)
    (fg / "tone" / "tone3.wav").unlink()
    (fg / "tone" / "tone2.wav").unlink()
    with pytest.raises(TaskError, match=r"fewer than 3 clips.*tone \(2\)"):
        read_foreground_folder(fg)
    sf.write(fg / "loose.wav", np.zeros(100, np.float32), SR)
    with pytest.raises(TaskError, match="outside a class folder.*loose.wav"):
        read_foreground_folder(fg)
    with pytest.raises(TaskError, match="overlap"):
        build_from_folders(tmp_path, bg, tmp_path / "t2", params=PARAMS, workers=0, progress=False)
    one_bg = tmp_path / "one_bg"
    one_bg.mkdir()
    (one_bg / "room0.wav").write_bytes((bg / "room0.wav").read_bytes())
    (fg / "loose.wav").unlink()
    sf.write(fg / "tone" / "tone2.wav", _sound("tone", np.random.default_rng(1), 0.8), SR)
    with pytest.raises(TaskError, match="at least 2 are needed"):
        build_from_folders(fg, one_bg, tmp_path / "t3", params=PARAMS, workers=0, progress=False)


def test_backgrounds_cycle_within_their_side():
    from hear_diffbyola.tasks.bgknown.folder_source import FolderClip

    clips = [FolderClip(f"{c}/{i}.wav", c) for c in ("x", "y") for i in range(6)]
    bgs = [{"file": f"b{j}.wav", "seconds": 30.0} for j in range(3)]
    jobs = folder_jobs(clips, bgs, 1 / 3, seed=0)
    train = [j for j in jobs if j.pool == 0]
    test = [j for j in jobs if j.pool == 1]
    assert len(test) == 4 and len(train) == 8  # 2 of 6 per class to test
    assert (
        len({j.bg["file"] for j in test}) == 1 and len({j.bg["file"] for j in train}) == 2
    )  # 1 of 3 recordings to test
    counts = [sum(j.bg["file"] == f for j in train) for f in {j.bg["file"] for j in train}]
    assert sorted(counts) == [4, 4]  # used in turn
    assert len({j.name for j in jobs}) == len(jobs)
    with pytest.raises(TaskError, match="--test-fraction"):
        folder_jobs(clips, bgs, 1.0, seed=0)
