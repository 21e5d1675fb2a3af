"""s3prl upstream: layer frames, the expert, S3PRLUpstream, s3prl's downstream runner through our
command, s3prl-install round trips, and the upstream shipping inside the wheel.

Tests that need s3prl skip when it is not installed, except under CI (CI=true), where the
``test`` extra installs it and a missing s3prl is a failure, not a skip.
"""

import argparse
import builtins
import filecmp
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hear_diffbyola import weights as weights_mod
from hear_diffbyola.audio import write_audio
from hear_diffbyola.cli import main
from hear_diffbyola.corpus.synthetic import render_event
from hear_diffbyola.embed import FrameGrid, dense_frames, min_samples
from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022, EncoderConfig
from hear_diffbyola.frontend import FrontendConfig
from hear_diffbyola.s3prl_upstream import hubconf
from hear_diffbyola.s3prl_upstream.expert import UpstreamExpert
from hear_diffbyola.weights import load_pretrained, make_header, save_weights

REPO = Path(__file__).resolve().parents[1]
HAVE_S3PRL = importlib.util.find_spec("s3prl") is not None
if not HAVE_S3PRL and os.environ.get("CI"):
    raise RuntimeError("CI: s3prl is not installed; the 'test' extra must install it (hear-diffbyola[s3prl])")
needs_s3prl = pytest.mark.skipif(not HAVE_S3PRL, reason="s3prl not installed (pip install -e '.[s3prl]')")
D = 64  # tiny encoder: every layer is brought to d = 64 features (one mel bin x 64 channels)


def random_encoder(d: int, seed: int = 0) -> AudioNTT2020:
    torch.manual_seed(seed)
    enc = AudioNTT2020(64, d)
    for m in enc.modules():  # non-trivial BN statistics, so eval-mode BN is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return enc.eval()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    header = make_header(
        FrontendConfig(), (-6.0, 4.0), EncoderConfig(arch="audiontt2020", n_mels=64, d=D), 0.5, {"source": "test_s3prl"}
    )
    save_weights(path, random_encoder(D).state_dict(), header)
    return path


def waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.1 for n in lengths]


# ---------------------------------------------------------------------------------------------------
# core helper: encoder.layer_frames


@pytest.mark.parametrize("d", [512, 2048])
def test_layer_frames_are_the_conv_maps_max_pooled_and_the_encoder_frames(d):
    enc = random_encoder(d)
    x = torch.randn(2, 1, 64, 83)  # 83 log-mel frames -> 10 encoder frames; odd lengths drop the tail
    with torch.no_grad():
        layers = enc.layer_frames(x)
        maps = enc.conv_maps(x)  # (2, 64, 32, 41), (2, 64, 16, 20), (2, 64, 8, 10)
        frames = enc.frames(x)
    n, bins = 83 // 8, d // 64
    assert [tuple(h.shape) for h in layers] == [(2, n, d)] * 4
    torch.testing.assert_close(layers[3], frames, rtol=0, atol=0)
    for k, m in enumerate(maps):
        f_k, step = m.shape[2], 2 ** (2 - k)
        t = m[..., : n * step].reshape(2, 64, f_k, n, step).amax(dim=4)  # max over each encoder frame's span
        if bins <= f_k:  # max over groups of adjacent mel bins
            expect = t.reshape(2, 64, bins, f_k // bins, n).amax(dim=3)
        else:  # each mel bin repeated
            expect = t.repeat_interleave(bins // f_k, dim=2)
        # feature index = mel bin * 64 + channel (mel-major, like fc's input)
        torch.testing.assert_close(layers[k], expect.permute(0, 3, 2, 1).reshape(2, n, d), rtol=0, atol=0)


def test_v1_rejects_a_d_the_conv_maps_cannot_fill_at_config_time():
    with pytest.raises(ValueError, match="multiple of 64 for audiontt2020"):
        AudioNTT2020(64, 100)


def test_layer_frames_in_chunks_equal_the_whole_clip(tiny_weights):
    model = load_pretrained(tiny_weights)
    w = torch.randn(2, 16000 * 3) * 0.1
    fn = model.encoder.layer_frames
    whole, t1 = dense_frames(model, w, shifts=2, fn=fn, chunk_frames=1000)
    chunked, t2 = dense_frames(model, w, shifts=2, fn=fn, chunk_frames=3)
    assert torch.equal(t1, t2) and len(whole) == 4
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# the expert, without s3prl


def test_expert_pads_a_mixed_batch_and_keeps_each_items_frames(tiny_weights):
    up = UpstreamExpert(ckpt=str(tiny_weights))
    model = up.model
    lengths = [16000, 23456, min_samples(model, 2) - 1, 100]
    wavs = waves(lengths)
    with torch.no_grad():
        out = up(wavs)
    hs = out["hidden_states"]
    # s3prl's convention: one frame per 640-sample step that starts inside the longest wav
    t = len(range(0, 23456, 640))
    assert t == 37 and len(hs) == 4 and all(tuple(h.shape) == (4, t, D) for h in hs)
    assert out["last_hidden_state"] is hs[-1]
    # timestamps: a frame every downsample_rate samples = 40 ms, the first centred at 35 ms (HEAR module)
    assert up.get_downsample_rates("hidden_states") == 640
    times = FrameGrid.of(model).centres_ms(t)
    assert times[0].item() == 35.0 and (times[1:] - times[:-1]).eq(640 / 16).all()
    # the frames are dense_frames' own: the same as computed from the zero-padded batch directly
    padded = torch.zeros(4, 640 * t + 480)  # dense frame t - 1 reads log-mel frames up to 4 (t - 1) + 7
    for i, w in enumerate(wavs):
        padded[i, : len(w)] = w
    direct, _ = dense_frames(model, padded, shifts=2, fn=model.encoder.layer_frames)
    assert all(d.shape[1] == t for d in direct)
    for d, h in zip(direct, hs):  # the expert runs the BN-folded inference copy: equal to float rounding
        torch.testing.assert_close(h, d, atol=1e-5, rtol=1e-5)
    # zero padding does not leak into an item's frames whose receptive field lies inside it: dense
    # frame j reads log-mel frames [4j - 7, 4j + 15); frame m's 400-sample window ends at 160 m + 200
    with torch.no_grad():
        alone = up([wavs[0]])["hidden_states"]
    keep = ((16000 - 200) // 160 - 14) // 4 + 1
    for a, b in zip(hs, alone):
        assert b.shape[1] == 25
        torch.testing.assert_close(a[0, :keep], b[0, :keep], atol=1e-5, rtol=1e-5)
    # an input shorter than one frame gets one, the first frame of that input zero-padded by hand
    with torch.no_grad():
        tiny = up([wavs[3]])["hidden_states"]
        by_hand = up([torch.cat([wavs[3], torch.zeros(1280 - 100)])])["hidden_states"]
    assert all(a.shape[1] == 1 and b.shape[1] == 2 and torch.equal(a, b[:, :1]) for a, b in zip(tiny, by_hand))


def test_expert_stays_frozen_in_eval_mode(tiny_weights):
    up = UpstreamExpert(ckpt=tiny_weights)
    up.train()  # what S3PRLUpstream does after its probe: dropout / batch statistics must stay off
    assert up.training and not up.model.training and not any(m.training for m in up.model.modules())
    w = waves([16000, 12000])
    with torch.no_grad():
        a, b = up(w)["hidden_states"], up(w)["hidden_states"]
        direct = up.model.encoder.frames(up.model.frontend(w[0][None]))  # eval-mode encoder, shift 0
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # shift-0 frames 0..10 (dense 0..20) lie inside the 1 s item, so padding does not touch them
    torch.testing.assert_close(a[-1][0, 0::2][:11], direct[0, :11], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_v2_weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    enc = AudioNTT2022(64, 1088, hidden=32)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("w2") / "tiny_v2.safetensors"
    save_weights(path, enc.state_dict(), make_header(FrontendConfig(), (-6.0, 4.0), enc.config, 0.5, {"source": "v2"}))
    return path


def test_v2_expert_is_one_native_pass_with_v2_layers(tiny_v2_weights, monkeypatch):
    up = UpstreamExpert(ckpt=str(tiny_v2_weights))
    assert up.layer_names == ("conv1", "conv2", "fc", "all")
    assert up.get_downsample_rates("hidden_states") == 640 and up.grid.shifts == 1
    from hear_diffbyola.inference import InferenceEncoder

    calls = []
    # block 0 of the inference copy the expert runs: once per encoder pass
    block = InferenceEncoder._block
    monkeypatch.setattr(
        InferenceEncoder,
        "_block",
        lambda self, x, k, pool=True: (k == 0 and calls.append(x.shape[0])) or block(self, x, k, pool),
    )
    wavs = waves([16000, 9000])
    with torch.no_grad():
        out = up(wavs)
    assert calls == [2]  # one pass over the padded batch
    hs = out["hidden_states"]
    t = len(range(0, 16000, 640))
    assert [tuple(h.shape) for h in hs] == [(2, t, 1088)] * 4
    torch.testing.assert_close(hs[1] + hs[2], hs[3])  # conv2 and fc fill disjoint slots of the frame
    # the last layer is the encoder's native frames of the zero-padded batch, centred at 15 + 40 i ms
    padded = torch.zeros(2, max(16000, FrameGrid.of(up.model).samples_for(t)))
    for i, w in enumerate(wavs):
        padded[i, : len(w)] = w
    with torch.no_grad():
        direct = up.model.frames(padded)[:, :t]
    torch.testing.assert_close(hs[3], direct, atol=1e-5, rtol=1e-5)
    assert FrameGrid.of(up.model).centres_ms(2).tolist() == [15.0, 55.0]


def test_hub_entries_take_keywords_and_give_clear_errors(tiny_weights, tmp_path, monkeypatch):
    up = hubconf.diffbyola_local(ckpt=str(tiny_weights), model_config=None, refresh=True)
    assert up.model.header["norm"] == {"mean": -6.0, "std": 4.0}
    with pytest.raises(ValueError, match="diffbyola_local needs a weights file: pass ckpt=PATH"):
        hubconf.diffbyola_local(ckpt=None, model_config=None, refresh=False)
    with pytest.raises(TypeError, match=r"unexpected arguments \['window_secs'\]"):
        hubconf.diffbyola_local(ckpt=str(tiny_weights), window_secs=1.0)
    # -g: a YAML file overriding the normalisation statistics
    cfg = tmp_path / "norm.yaml"
    cfg.write_text("norm_mean: -5.0\nnorm_std: 2.5\n")
    assert hubconf.diffbyola_local(ckpt=str(tiny_weights), model_config=str(cfg)).model.header["norm"] == {
        "mean": -5.0,
        "std": 2.5,
    }
    cfg.write_text("window_secs: 1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['window_secs'\]"):
        hubconf.diffbyola_local(ckpt=str(tiny_weights), model_config=str(cfg))
    # an official BYOL-A checkpoint (a plain AudioNTT2020 state dict): BYOL-A v1's front end and stats
    pth = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(random_encoder(512).state_dict(), pth)
    official = hubconf.diffbyola_local(ckpt=str(pth))
    assert official.model.header["format"] == "byol-a-v1" and official.model.frontend.config.n_fft == 1024
    with torch.no_grad():
        assert [tuple(h.shape) for h in official(waves([8000]))["hidden_states"]] == [
            (1, 13, 512)
        ] * 4  # ceil(8000/640)
    # diffbyola: the shipped default (here pointed at the tiny file) unless ckpt is given
    monkeypatch.setattr(weights_mod, "DEFAULT_WEIGHTS", tiny_weights)
    assert (
        hubconf.diffbyola(ckpt=None, model_config=None, refresh=False).model.header["provenance"]["source"]
        == "test_s3prl"
    )
    monkeypatch.setattr(weights_mod, "DEFAULT_WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(weights_mod.WeightsError, match="missing.safetensors does not exist"):
        hubconf.diffbyola()


# ---------------------------------------------------------------------------------------------------
# with s3prl


@needs_s3prl
def test_s3prl_upstream_after_register(tiny_weights, monkeypatch):
    from hear_diffbyola.s3prl import APPLIED
    from hear_diffbyola.s3prl_upstream.integration import register

    assert register() == register() == ["diffbyola", "diffbyola_local"]  # idempotent
    import torchaudio
    from s3prl import hub
    from s3prl.nn import S3PRLUpstream

    assert hub.diffbyola is hubconf.diffbyola and "diffbyola_local" in S3PRLUpstream.available_names()
    assert callable(torchaudio.set_audio_backend)  # s3prl calls it; the shim only where torchaudio lacks it
    assert set(APPLIED) <= {
        "torchaudio-cpu-extension",
        "torchaudio.set_audio_backend",
        "torchaudio.sox_effects",
        "torchaudio.load",
        "torch.load-namespace",
    }

    up = S3PRLUpstream("diffbyola_local", path_or_url=str(tiny_weights))
    assert up.num_layers == 4 and up.hidden_sizes == [D] * 4 and up.downsample_rates == [640] * 4
    lengths = [16000, 23456, 800, 100]  # 100 samples: shorter than one 40 ms frame
    wavs = torch.zeros(4, max(lengths))
    for i, w in enumerate(waves(lengths)):
        wavs[i, : lengths[i]] = w
    with torch.no_grad():
        hs, hs_len = up(wavs, torch.LongTensor(lengths))
        ours = up.upstream([w[:n] for w, n in zip(wavs, lengths)])["hidden_states"]
    expect_len = [math.ceil(n / 640) for n in lengths]  # frames starting inside each item
    assert len(hs) == len(hs_len) == 4
    for h, n, o in zip(hs, hs_len, ours):
        assert n.tolist() == expect_len and tuple(h.shape) == (4, max(expect_len), D)
        assert torch.equal(h, o)  # our T is what S3PRLUpstream expects: it passes our frames through untouched
    # a batch of only sub-frame inputs: S3PRLUpstream pads to 50 ms, we pad further to min_samples
    with torch.no_grad():
        hs, hs_len = up(torch.randn(2, 100) * 0.1, torch.LongTensor([100, 60]))
    assert [n.tolist() for n in hs_len] == [[1, 1]] * 4 and all(h.shape[:2] == (2, 1) for h in hs)

    # lengths around frame boundaries, and the 0.12-0.15 s range where a native frame count would be
    # under half of what S3PRLUpstream expects (its assertion): T is always len(range(0, n, 640))
    for n in (640, 641, 1760, 1921, 2399, 2400, 3201, 16000):
        with torch.no_grad():
            hs, hs_len = up(torch.randn(1, n) * 0.1, torch.LongTensor([n]))
        assert hs[0].shape[1] == hs_len[0].item() == len(range(0, n, 640))
    # "diffbyola" is the shipped default: point the default at the tiny file
    monkeypatch.setattr(weights_mod, "DEFAULT_WEIGHTS", tiny_weights)
    assert S3PRLUpstream("diffbyola").hidden_sizes == [D] * 4


@needs_s3prl
def test_shipped_default_loads_when_present():
    if not weights_mod.DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {weights_mod.DEFAULT_WEIGHTS}")
    from hear_diffbyola.s3prl_upstream.integration import register

    register()
    from s3prl.nn import S3PRLUpstream

    d = load_pretrained().header["encoder"]["d"]
    assert S3PRLUpstream("diffbyola").hidden_sizes == [d] * 4


@needs_s3prl
def test_in_process_runner_sees_the_entries_and_restores_isinstance(capsys):
    from hear_diffbyola.s3prl_upstream.integration import run_downstream

    before = builtins.isinstance
    assert run_downstream(["--help"]) == 0  # s3prl's own argparse: prints help (upstream list), exits 0
    assert builtins.isinstance is before
    out = capsys.readouterr().out
    assert "'diffbyola'" in out and "'diffbyola_local'" in out


def make_emotion_task(root: Path, classes=("siren", "noise_burst", "click_train"), n_train=12, n_test=6) -> dict:
    """s3prl's emotion (IEMOCAP) layout, a generic utterance classifier: audio under root/audio,
    root/meta/Session1/{train,test}_meta_data.json = {labels: {name: idx}, meta_data: [{path, label}]}."""
    rng = np.random.default_rng(0)
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        items = []
        for i in range(n):
            label = classes[i % len(classes)]
            path = f"{split}/{label}_{i:03d}.wav"
            write_audio(root / "audio" / path, render_event(label, rng, 16000, float(rng.uniform(0.6, 1.4))), 16000)
            items.append({"path": path, "label": label})
            if split == "test":
                truth[Path(path).stem] = label
        meta = root / "meta" / "Session1"
        meta.mkdir(parents=True, exist_ok=True)
        labels = {c: k for k, c in enumerate(classes)}
        (meta / f"{split}_meta_data.json").write_text(json.dumps({"labels": labels, "meta_data": items}))
    return truth


EMOTION_CONFIG = """\
runner:
  total_steps: 6
  gradient_clipping: 1
  gradient_accumulate_steps: 1
  log_step: 3
  eval_step: 6
  save_step: 6
  max_keep: 1
  eval_dataloaders: [dev]
optimizer:
  name: TorchOptim
  torch_optim_name: Adam
  lr: 1.0e-2
downstream_expert:
  datarc:
    root: {root}/audio
    meta_data: {root}/meta
    test_fold: fold1
    pre_load: true
    train_batch_size: 4
    eval_batch_size: 4
    num_workers: 0
    valid_ratio: 0.25
  modelrc:
    projector_dim: 16
    select: UtteranceLevel
    UtteranceLevel:
      pooling: MeanPooling
"""


@needs_s3prl
@pytest.mark.slow
def test_downstream_runner_trains_and_evaluates_through_our_command(tiny_weights, tmp_path):
    truth = make_emotion_task(tmp_path)
    (tmp_path / "config.yaml").write_text(EMOTION_CONFIG.format(root=tmp_path))
    exp = tmp_path / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hear_diffbyola", "s3prl"]
    train = subprocess.run(
        cmd
        + [
            "-m",
            "train",
            "-u",
            "diffbyola_local",
            "-k",
            str(tiny_weights),
            "-d",
            "emotion",
            "-c",
            str(tmp_path / "config.yaml"),
            "-p",
            str(exp),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt_path = exp / "states-6.ckpt"
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["Step"] == 6 and ckpt["Args"].upstream == "diffbyola_local"
    assert ckpt["Featurizer"]["weights"].shape == (4,)  # a weighted sum over our 4 layers was trained
    assert ckpt["Downstream"]["projector.weight"].shape == (16, D)

    ev = subprocess.run(
        cmd + ["-m", "evaluate", "-e", str(ckpt_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    pred = dict(line.split() for line in (exp / "test_fold1_predict.txt").read_text().splitlines())
    got_truth = dict(line.split() for line in (exp / "test_fold1_truth.txt").read_text().splitlines())
    assert got_truth == truth and set(pred) == set(truth) and set(pred.values()) <= set(truth.values())
    # the accuracy s3prl reports is the one its prediction file gives
    acc = sum(pred[k] == truth[k] for k in truth) / len(truth)
    reported = [line for line in ev.stdout.splitlines() if line.startswith("test acc:")]
    assert len(reported) == 1 and float(reported[0].split(":")[1]) == pytest.approx(acc, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# s3prl-install


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (b"->" + os.readlink(p).encode()) if p.is_symlink() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if "__pycache__" not in p.parts and (p.is_symlink() or p.is_file())
    }


@needs_s3prl
def test_s3prl_install_then_uninstall_leaves_a_copy_of_s3prl_byte_identical(tmp_path, capsys):
    from hear_diffbyola.s3prl import HUB_LINE, find_s3prl_package
    from hear_diffbyola.s3prl_upstream.integration import upstream_source

    tree = tmp_path / "checkout"
    shutil.copytree(find_s3prl_package(), tree / "s3prl", ignore=shutil.ignore_patterns("__pycache__"))
    before = snapshot(tree)
    hub_before = (tree / "s3prl" / "hub.py").read_bytes()

    assert main(["s3prl-install", "--s3prl-root", str(tree)]) == 0
    link = tree / "s3prl" / "upstream" / "diffbyola"
    assert link.is_symlink() and link.resolve() == upstream_source()
    assert (link / "hubconf.py").is_file() and (link / "expert.py").is_file()
    hub_after = (tree / "s3prl" / "hub.py").read_bytes()
    assert hub_after == hub_before + HUB_LINE.encode() + b"\n"
    assert main(["s3prl-install", "--s3prl-root", str(tree)]) == 0  # idempotent
    assert (tree / "s3prl" / "hub.py").read_bytes() == hub_after
    assert "nothing to do: already installed" in capsys.readouterr().out

    # the linked tree works as s3prl: its own hub knows diffbyola, from s3prl.upstream.diffbyola
    probe = (
        "from hear_diffbyola.s3prl import apply_shims; apply_shims()\n"
        "import s3prl, s3prl.hub as hub\n"
        "print(s3prl.__file__); print(hub.diffbyola_local.__module__); print('diffbyola' in hub.options())\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.split()
    assert lines[-3] == str(tree / "s3prl" / "__init__.py") and lines[-2:] == [
        "s3prl.upstream.diffbyola.hubconf",
        "True",
    ]

    assert main(["s3prl-install", "--s3prl-root", str(tree / "s3prl"), "--uninstall"]) == 0
    assert snapshot(tree) == before
    assert main(["s3prl-install", "--s3prl-root", str(tree), "--uninstall"]) == 0  # idempotent
    assert snapshot(tree) == before


def fake_s3prl(root: Path, hub_text: str) -> Path:
    (root / "s3prl" / "upstream").mkdir(parents=True)
    (root / "s3prl" / "hub.py").write_text(hub_text)
    return root


@pytest.mark.parametrize("hub_text", ["from s3prl.upstream.apc.hubconf import *", "", "x = 1\n"])
def test_copy_install_and_hub_without_final_newline_round_trip(tmp_path, hub_text):
    from hear_diffbyola.s3prl_upstream.integration import upstream_source

    tree = fake_s3prl(tmp_path, hub_text)
    before = snapshot(tree)
    assert main(["s3prl-install", "--s3prl-root", str(tree), "--copy"]) == 0
    copied = tree / "s3prl" / "upstream" / "diffbyola"
    assert not copied.is_symlink()
    assert filecmp.cmp(copied / "hubconf.py", upstream_source() / "hubconf.py", shallow=False)
    text = (tree / "s3prl" / "hub.py").read_text()
    assert text.startswith(hub_text) and text.endswith("\n")
    assert text.count("from s3prl.upstream.diffbyola.hubconf import *") == 1
    assert main(["s3prl-install", "--s3prl-root", str(tree), "--copy"]) == 0
    assert (tree / "s3prl" / "hub.py").read_text() == text
    assert main(["s3prl-install", "--s3prl-root", str(tree), "--uninstall"]) == 0
    assert snapshot(tree) == before


def test_install_refuses_a_foreign_upstream_folder_and_a_wrong_root(tmp_path, capsys):
    tree = fake_s3prl(tmp_path, "x = 1\n")
    (tree / "s3prl" / "upstream" / "diffbyola").mkdir()
    before = snapshot(tree)
    assert main(["s3prl-install", "--s3prl-root", str(tree)]) == 2
    assert "was not installed by hear-diffbyola" in capsys.readouterr().err
    assert main(["s3prl-install", "--s3prl-root", str(tree), "--uninstall"]) == 2
    assert snapshot(tree) == before
    assert main(["s3prl-install", "--s3prl-root", str(tmp_path / "nowhere")]) == 2
    assert "no s3prl package at" in capsys.readouterr().err
    # a link and a copy do not silently replace each other
    other = fake_s3prl(tmp_path / "other", "x = 1\n")
    before = snapshot(other)
    assert main(["s3prl-install", "--s3prl-root", str(other)]) == 0
    assert main(["s3prl-install", "--s3prl-root", str(other), "--copy"]) == 2
    assert "--uninstall first to switch to a copy" in capsys.readouterr().err
    assert main(["s3prl-install", "--s3prl-root", str(other), "--uninstall"]) == 0
    assert snapshot(other) == before


# ---------------------------------------------------------------------------------------------------
# packaging


@pytest.mark.slow
def test_the_wheel_ships_the_upstream_folder(built_wheel):
    wheel, _ = built_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("__init__.py", "expert.py", "hubconf.py"):
        assert f"hear_diffbyola/s3prl_upstream/{f}" in names
        assert (
            zipfile.ZipFile(wheel).read(f"hear_diffbyola/s3prl_upstream/{f}")
            == (REPO / "upstream/diffbyola" / f).read_bytes()
        )
    assert "hear_diffbyola/s3prl.py" in names
