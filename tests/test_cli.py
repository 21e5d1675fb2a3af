"""The command line: named flags reach the config typed, --set values are type-checked against the
config fields, one error handler for every command, and every command is still there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hear_diffbyola import evaltools
from hear_diffbyola.cli import build_config, main, make_parser, parse_args, registered_commands
from hear_diffbyola.config import ConfigError, PretrainConfig

REPO = Path(__file__).resolve().parents[1]


def config(*argv: str) -> PretrainConfig:
    return build_config(parse_args(["pretrain", *argv]))


# ---------------------------------------------------------------- named flags: typed, no YAML


def test_lr_flag_arrives_as_the_float_given():
    c = config("--lr", "0.00001")  # str(1e-05) read back as YAML would be the text '1e-05'
    assert type(c.train.lr) is float and c.train.lr == 1e-5


@pytest.mark.parametrize("corpus", ["/data/set #2", "on", "null", "[a, b]"])
def test_corpus_flag_stays_the_string_given(corpus):
    assert config("--corpus", corpus).train.corpus == corpus


def test_named_flags_set_their_keys():
    c = config("--lam", "0.25", "--steps", "7", "--batch-size", "4", "--seed", "3", "--d", "2048", "--device", "cpu")
    assert (c.learner.lam, c.train.steps, c.train.batch_size, c.train.seed, c.encoder.d, c.train.device) == (
        0.25,
        7,
        4,
        3,
        2048,
        "cpu",
    )
    assert config().train == PretrainConfig().train  # no flag: the defaults


def test_pretrain_defaults_to_byol_a_v2_and_arch_selects_v1():
    c = config()
    assert (c.encoder.arch, c.encoder.d, c.encoder.hidden, c.augment.mixup_ratio) == ("audiontt2022", 3072, 2048, 0.2)
    v1 = config("--arch", "audiontt2020", "--d", "512")
    assert (v1.encoder.arch, v1.encoder.d, v1.encoder.hidden) == ("audiontt2020", 512, 512)
    with pytest.raises(ConfigError, match="exceed the 1024 conv features"):
        config("--d", "512")  # v2 concatenates 1024 conv features: d must be larger


def test_config_file_then_flags_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("learner:\n  lam: 0.2\ntrain:\n  lr: 1e-5\n  steps: 9\n")  # YAML 1.1 reads 1e-5 as text
    c = config("--config", str(f))
    assert (c.learner.lam, c.train.lr, c.train.steps) == (0.2, 1e-5, 9)
    assert config("--config", str(f), "--lam", "0.3").learner.lam == 0.3
    assert config("--config", str(f), "--lam", "0.3", "--set", "learner.lam=0.4").learner.lam == 0.4


# ---------------------------------------------------------------- --set: YAML, then checked against the field


def test_set_values_convert_to_the_field_type():
    c = config(
        "--set",
        "train.lr=1e-5",
        "--set",
        "learner.lam=1",
        "--set",
        "train.steps=null",
        "--set",
        "augment.freq_scale=[0.5, 2]",
        "--set",
        "augment.post_norm=false",
    )
    assert c.train.lr == 1e-5 and type(c.learner.lam) is float and c.learner.lam == 1.0
    assert c.train.steps is None and c.augment.freq_scale == (0.5, 2.0) and c.augment.post_norm is False


@pytest.mark.parametrize("value", ["/data/set #2", "on", "yes", "123"])
def test_set_text_field_keeps_the_text(value):
    assert config("--set", f"train.corpus={value}").train.corpus == value


@pytest.mark.parametrize(
    "item, expected",
    [
        ("train.steps=3.7", "train.steps must be int or null, got 3.7 (float)"),
        ("train.steps=true", "train.steps must be int or null, got True (bool)"),  # a bool is no int
        ("learner.lam=on", "learner.lam must be float, got True (bool)"),
        ("train.lr=fast", "train.lr must be float, got 'fast' (str)"),
        ("augment.freq_scale=[1]", "augment.freq_scale must be a list of 2 values (float, float), got [1] (list)"),
    ],
)
def test_set_value_of_the_wrong_type_names_key_value_and_type(item, expected):
    with pytest.raises(ConfigError) as e:
        config("--set", item)
    assert expected in str(e.value)


def test_set_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key train\.stpes; valid keys: \[.*'steps'"):
        config("--set", "train.stpes=3")


# ---------------------------------------------------------------- one handler, every command


@pytest.mark.parametrize(
    "argv, command, message",
    [
        (["pretrain", "--set", "train.steps=3.7"], "pretrain", "train.steps must be int or null, got 3.7"),
        (["apwd", "table", "no-such-results.json"], "apwd table", "cannot read results file no-such-results.json"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, argv, command, message):
    res = subprocess.run(
        [sys.executable, "-m", "hear_diffbyola", *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hear-diffbyola {command}: error: ") and message in lines[0]
    assert "Traceback" not in res.stderr


def test_a_multi_line_error_message_is_printed_on_one_line(monkeypatch, capsys):
    def failing_pip(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: first problem\n\nERROR: second problem\n")

    monkeypatch.setattr(evaltools.subprocess, "run", failing_pip)
    assert main(["install-eval-tools"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("hear-diffbyola install-eval-tools: error: ")
    assert line.endswith("ERROR: first problem | ERROR: second problem")


def test_every_command_is_there_and_the_task_commands_come_from_entry_points():
    parser_actions = [a for a in make_parser()._actions if a.dest == "command"]
    assert set(parser_actions[0].choices) == {
        "pretrain",
        "export",
        "config",
        "install-eval-tools",
        "demo",
        "demo-seeds",
        "bgknown",
        "apwd",
        "s3prl",
        "s3prl-install",
    }
    eps = {ep.name: ep.value for ep in registered_commands()}
    assert set(eps) == {"apwd", "bgknown", "demo", "s3prl"}
    assert all(v.startswith(("hear_diffbyola.tasks.", "hear_diffbyola.s3prl_upstream.")) for v in eps.values())
