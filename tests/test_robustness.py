"""Run folders are owned, resumes are checked, writes fail loudly, bad weights and bad corpora are refused
(issue 15 rows that concern the core: the trainer, the weights loader, the corpus reader)."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from test_train import TINY_ARGS, tiny_config

from hear_diffbyola.corpus import CorpusError, FileCorpus
from hear_diffbyola.encoder import AudioNTT2022
from hear_diffbyola.errors import DiffByolaError, OutOfSpaceError
from hear_diffbyola.frontend import FrontendConfig
from hear_diffbyola.train import CHECKPOINT, TrainingError, lock_run_folder, pretrain, save_checkpoint
from hear_diffbyola.weights import HEADER_KEY, WeightsError, atomic_write, load_pretrained, make_header, save_weights


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, except .lock: it records who holds the folder now, not the run."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def tone_folder(root: Path, n: int = 6, seconds: float = 1.0) -> Path:
    root.mkdir(parents=True)
    t = np.arange(int(16000 * seconds)) / 16000
    for i in range(n):
        sf.write(root / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16000)
    return root


# ------------------------------------------------------------------------------------------ run folders


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from hear_diffbyola.train import lock_run_folder; "
            "h = lock_run_folder(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=rf"in use by another pretraining process \(pid {holder.pid}\)"):
            pretrain(tiny_config("train.steps=1"), out, progress=False)
        assert not (out / CHECKPOINT).exists()
    finally:
        holder.kill()
        holder.wait()
    pretrain(tiny_config("train.steps=1"), out, progress=False)  # free again once the holder is gone


def test_the_lock_is_not_kept_by_forked_children(tmp_path):
    # DataLoader workers are forked from the trainer: a killed trainer's workers must not keep its lock.
    out = tmp_path / "run"
    fh = lock_run_folder(out)
    pid = os.fork()
    if pid == 0:  # the child inherits the open file but not the lock
        __import__("time").sleep(3)
        os._exit(0)
    try:
        fh.close()  # the trainer is gone; the child still has the file open
        lock_run_folder(out).close()  # free at once
    finally:
        os.waitpid(pid, 0)


def test_two_cli_processes_into_one_out_one_is_refused(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "hear_diffbyola",
        "pretrain",
        "--no-progress",
        *TINY_ARGS,
        "--out",
        str(out),
        "--steps",
        "40",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # wait until the first holds the lock
            if (out / ".lock").is_file() and (out / ".lock").read_text().strip():
                break
            first.poll()
            assert first.returncode is None, first.stderr.read()
            __import__("time").sleep(0.05)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"in use by another pretraining process (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(tiny_config("train.steps=2"), out, progress=False)
    before = snapshot(out)
    summary = pretrain(tiny_config("train.steps=2"), out, resume=True, progress=False)
    assert summary["already_finished"] and summary["steps"] == 2 and summary["final"]["step"] == 2
    assert "already finished (2 of 2 steps); nothing to do" in capsys.readouterr().out
    assert snapshot(out) == before


def test_stale_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config("train.steps=2"), out, progress=False)
    stale = out / "checkpoints" / "last.pt.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    pretrain(tiny_config("train.steps=3"), out, resume=True, progress=False)
    assert not stale.exists()


def test_resume_accepts_the_same_corpus_written_differently_and_refuses_another(tmp_path, monkeypatch):
    good = tone_folder(tmp_path / "a" / "good", n=8)
    other = tone_folder(tmp_path / "b" / "good", n=9)
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "a")
    pretrain(tiny_config("train.steps=2", "train.corpus=good"), out, progress=False)
    assert tiny_config().train.corpus == "embedded"
    saved = json.loads(json.dumps(__import__("yaml").safe_load((out / "config.yaml").read_text())))
    assert saved["train"]["corpus"] == str(good.resolve())  # the run records the place, not the spelling
    # the same folder, absolute and from elsewhere: fine
    monkeypatch.chdir(tmp_path)
    pretrain(tiny_config("train.steps=3", f"train.corpus={good}"), out, resume=True, progress=False)
    # 'good' from another working directory is another folder: refused, both named
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(DiffByolaError, match=rf"train.corpus: checkpoint '{good.resolve()}', now '{other.resolve()}'"):
        pretrain(tiny_config("train.steps=4", "train.corpus=good"), out, resume=True, progress=False)
    # the run's own folder, but its files changed since: refused
    sf.write(good / "new.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(TrainingError, match="not the one this run trained on"):
        pretrain(tiny_config("train.steps=4", f"train.corpus={good}"), out, resume=True, progress=False)


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TrainingError, match="is an existing file, not a folder"):
        pretrain(tiny_config("train.steps=1"), f, progress=False)


# ------------------------------------------------------------------------------------------ writes


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    good = path.read_bytes()
    real = Path.write_bytes

    def full(self, data):
        real(self, bytes(data)[:10])  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(
        OutOfSpaceError,
        match=r"no space left on device: writing .*last.pt failed; the previous "
        r"last.pt is intact",
    ):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    with pytest.raises(OutOfSpaceError, match="no new.bin was written"):
        atomic_write(tmp_path / "new.bin", lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))


# ------------------------------------------------------------------------------------------ weights


def test_weights_with_a_nan_are_refused_naming_the_tensor(tmp_path):
    enc = AudioNTT2022(64, 1088, hidden=32)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    state["fc.3.weight"][0, 0] = float("nan")
    header = make_header(FrontendConfig(), (-6.0, 4.0), enc.config, 0.5, {})
    with pytest.raises(WeightsError, match=r"refusing to write: fc.3.weight \(1 values\)"):
        save_weights(tmp_path / "w.safetensors", state, header)
    path = tmp_path / "nan.safetensors"  # written by something else that did not check
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(WeightsError, match=r"1 tensor\(s\) hold NaN or Inf, cannot load it: fc.3.weight \(1 values\)"):
        load_pretrained(path)
    pth = tmp_path / "nan.pth"
    state["features.1.running_var"][:2] = float("inf")
    torch.save(state, pth)
    with pytest.raises(
        WeightsError,
        match=r"2 tensor\(s\).*fc.3.weight \(1 values\), features.1.running_var \(2 values\)"
        r"|2 tensor\(s\).*features.1.running_var \(2 values\), fc.3.weight \(1 values\)",
    ):
        load_pretrained(pth)


# ------------------------------------------------------------------------------------------ corpus


def test_bad_files_are_all_listed_with_their_reason_and_a_bom_csv_works(tmp_path):
    root = tone_folder(tmp_path / "c", n=2, seconds=2.0)
    (root / "text.wav").write_text("this is not audio")
    x = (0.3 * np.sin(np.arange(64000) / 10)).astype(np.float32)
    sf.write(root / "cut.flac", x, 16000)
    data = (root / "cut.flac").read_bytes()
    (root / "cut.flac").write_bytes(data[: len(data) // 2])  # a download cut off: header fine, data stops
    lst = root / "list.csv"
    lst.write_bytes("\ufeffpath,label\nt0.wav,a\nt1.wav,b\nmissing.wav,c\ntext.wav,d\ncut.flac,e\n".encode("utf-8"))
    corpus = FileCorpus(lst, max_bad_fraction=1.0)
    reasons = dict(corpus.bad)
    assert [p.name for p in corpus.files] == ["t0.wav", "t1.wav"]
    assert reasons[str(root / "missing.wav")] == "not found"
    assert reasons[str(root / "text.wav")].startswith("not audio")
    assert reasons[str(root / "cut.flac")].startswith("truncated or corrupt audio data")
    assert len(corpus.bad) == 3  # the BOM'd header is a header, not a bad file
    # a run that fails on them still leaves the complete list
    out = tmp_path / "run"
    with pytest.raises(CorpusError, match=r"All 3 are listed in .*bad_files.txt"):
        pretrain(tiny_config("train.steps=1", f"train.corpus={lst}"), out, progress=False)
    listed = (out / "bad_files.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(reasons)
