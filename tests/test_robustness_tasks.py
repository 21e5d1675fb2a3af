"""Issue 15, the rows outside the trainer: non-finite embeddings never score, builds never mix, caches heal,
one audio check for every entry point, one-line errors from the CLI. (The trainer, loader and corpus rows
are in test_robustness.py.)"""

import errno
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from test_embedders import install_module, tiny_weights

from hear_diffbyola.audio import read_audio
from hear_diffbyola.cli import main
from hear_diffbyola.inputs import (
    AudioTypeError,
    AudioValueError,
    LoudAudioWarning,
    check_audio,
    check_model_dtype,
)
from hear_diffbyola.tasks import TaskError
from hear_diffbyola.tasks.apwd.build import BuildConfig, build
from hear_diffbyola.tasks.apwd.dataset import read_pairs
from hear_diffbyola.tasks.apwd.embeddings import embed_files
from hear_diffbyola.tasks.apwd.retrieval import (
    RetrievalConfig,
    recall_at_k,
    target_rank,
)
from hear_diffbyola.tasks.apwd.text import HashTextEncoder
from hear_diffbyola.tasks.bgknown.build import build_synthetic
from hear_diffbyola.tasks.bgknown.features import cache_path, task_embeddings
from hear_diffbyola.tasks.bgknown.manifest import BuildParams, load_task
from hear_diffbyola.tasks.cache import CacheWarning
from hear_diffbyola.tasks.embedders import (
    Embedder,
    NonFiniteEmbeddingsError,
    embed_audio_files,
    embed_waves,
    hear_module,
    ours,
)
from hear_diffbyola.tasks.linear_eval import LinearEvalConfig
from hear_diffbyola.weights import HEADER_KEY, make_header, save_weights

SMALL = BuildParams(clip_seconds=1.0, min_bg_seconds=2.0)
QUICK = LinearEvalConfig(max_epochs=3)
APWD_SMALL = dict(duration=1.0, onset_max=0.5, bg_offset_max=0.5)

# A broken HEAR model: NaN embeddings for every clip whose first sample is positive (recomputable below).
NAN_HEAR = """
import torch

class M(torch.nn.Module):
    sample_rate = 16000

def load_model(path=""):
    return M()

def get_scene_embeddings(audio, model):
    out = torch.stack([audio.mean(1), audio.std(1), audio.abs().amax(1)], 1)
    out[audio[:, 0] > 0] = float("nan")
    return out
"""
FINE_HEAR = NAN_HEAR.replace('out[audio[:, 0] > 0] = float("nan")', "calls.append(audio.shape[0])").replace(
    "import torch", "import torch\ncalls = []", 1
)


def nan_items(paths) -> int:
    """How many of these files the broken model embeds as NaN, from the files themselves."""
    return sum(float(read_audio(p, 16000)[0]) > 0 for p in paths)


def one_line_error(argv: list[str], capsys) -> str:
    """Run the CLI; it must exit 2 with one line on stderr and no traceback. Returns the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def bgtask(tmp_path_factory):
    out = tmp_path_factory.mktemp("bg") / "task"
    return build_synthetic(
        out,
        seed=3,
        train_per_class=4,
        test_per_class=2,
        classes=["bell", "siren"],
        params=SMALL,
        workers=0,
        progress=False,
    )


def bg_files(task) -> list[Path]:
    return [p for items in task.items.values() for it in items for p in (it.mix, *it.refs.values())]


def poisoned(weights: Path) -> Embedder:
    """Our weights with one NaN parameter, set in memory (the loader refuses such files)."""
    e = ours(weights)
    with torch.no_grad():
        dict(e.model.encoder.named_parameters())["fc.0.weight"][0, 0] = float("nan")
    return e


# ------------------------------------------------------------------------------------------ row 1: NaN never scores


def test_bgknown_eval_and_heareval_export_refuse_nan_embeddings_naming_model_and_count(bgtask, tmp_path, monkeypatch):
    from hear_diffbyola.tasks.bgknown.evaluate import evaluate
    from hear_diffbyola.tasks.bgknown.heareval_export import export_heareval

    install_module(monkeypatch, "nan_hear", NAN_HEAR)
    task = load_task(bgtask)
    n_bad, total = nan_items(bg_files(task)), len(bg_files(task))
    assert 0 < n_bad < total  # the check counts, it does not just notice
    broken = hear_module("nan_hear")
    with pytest.raises(
        NonFiniteEmbeddingsError, match=rf"model nan_hear .* NaN or Inf embeddings for {n_bad} of {total} items"
    ):
        evaluate(task, broken, seeds=(0,), config=QUICK, cache_dir=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("*.npz"))  # a refused result is never cached
    with pytest.raises(NonFiniteEmbeddingsError, match=rf"for {n_bad} of {total} items"):
        export_heareval(task, broken, tmp_path / "emb", cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "emb").exists()
    # our weights with a NaN parameter: every item
    weights = tiny_weights(tmp_path / "tiny.safetensors")
    with pytest.raises(
        NonFiniteEmbeddingsError,
        match=rf"model tiny .*tiny.safetensors\) gave NaN or Inf embeddings "
        rf"for {total} of {total} items",
    ):
        evaluate(
            task, poisoned(weights), seeds=(0,), config=QUICK, cache_dir=tmp_path / "c", progress=False, norm="weights"
        )


def test_nan_embeddings_planted_in_a_cache_are_refused_too(bgtask, tmp_path):
    from hear_diffbyola.tasks.bgknown.features import cache_key
    from hear_diffbyola.tasks.cache import write_arrays

    task = load_task(bgtask)
    planted = Embedder(
        lambda a: (_ for _ in ()).throw(AssertionError("cache should answer")),
        name="old",
        sample_rate=16000,
        identity="old",
    )
    flat = {
        f"{s}/{k}": np.ones((len(task.items[s]), 4), np.float32) for s in task.items for k in ("mix", "a", "b", "c")
    }
    flat["test/b"][1, 2] = np.inf
    write_arrays(cache_path(task, planted, tmp_path), cache_key(task, planted), flat)
    name = task.items["test"][1].refs["b"].name
    with pytest.raises(
        NonFiniteEmbeddingsError,
        match=rf"for 1 of {len(bg_files(task))} items \(test/b: 1 of 4 "
        rf"\(first: {name}\)\)",
    ):
        task_embeddings(task, planted, tmp_path, progress=False)


def test_apwd_eval_refuses_nan_embeddings_and_the_cli_refuses_a_nan_weights_file(tmp_path, monkeypatch, capsys):
    from hear_diffbyola.tasks.apwd.evaluate import evaluate_apwd

    install_module(monkeypatch, "nan_hear", NAN_HEAR)
    build(
        tmp_path / "data",
        ["rain"],
        BuildConfig.synthetic(n_dev=4, n_eval=2, **APWD_SMALL),
        synthetic=True,
        progress=False,
    )
    dev = [w for p in read_pairs(tmp_path / "data" / "apwd_rain_sc", "dev") for w in (p.wav1, p.wav2)]
    n_bad = nan_items(dev)
    assert n_bad > 0
    config = RetrievalConfig(epochs=1, patience=0, joint_dim=4, adapter_hidden=4, batch_size=4)
    with pytest.raises(NonFiniteEmbeddingsError, match=rf"model nan_hear .* for {n_bad} of {len(dev)} items"):
        evaluate_apwd(
            tmp_path / "data",
            hear_module("nan_hear"),
            HashTextEncoder(),
            seeds=(0,),
            config=config,
            cache_dir=tmp_path / "cache",
            progress=False,
        )
    weights = tiny_weights(tmp_path / "tiny.safetensors")
    with pytest.raises(NonFiniteEmbeddingsError, match=rf"for {len(dev)} of {len(dev)} items"):
        evaluate_apwd(
            tmp_path / "data",
            poisoned(weights),
            HashTextEncoder(),
            seeds=(0,),
            config=config,
            cache_dir=None,
            progress=False,
            norm="weights",
        )
    # a weights file with one NaN tensor, written without our checks: refused at load, naming the tensor
    from hear_diffbyola.weights import read_safetensors

    state, header = read_safetensors(weights)
    state["fc.0.weight"][1, 1] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"), metadata={HEADER_KEY: json.dumps(header)})
    line = one_line_error(
        [
            "apwd",
            "eval",
            "--data",
            str(tmp_path / "data"),
            "--model",
            str(tmp_path / "nan.safetensors"),
            "--text-encoder",
            "hash",
            "--no-cache",
            "--no-progress",
        ],
        capsys,
    )
    assert "hold NaN or Inf, cannot load it: fc.0.weight (1 values)" in line


def test_scene_task_refuses_nan_embeddings(tmp_path, monkeypatch):
    from hear_diffbyola.tasks import heartask
    from hear_diffbyola.tasks.scene_task import evaluate_scene_task

    install_module(monkeypatch, "nan_hear", NAN_HEAR)
    task = tmp_path / "t"
    heartask.write_hear_task(
        task, labels=["bell", "siren"], n_per_label={"train": 4, "valid": 1, "test": 2}, duration=0.5, seed=3
    )
    _, splits = heartask.read_scene_task(task)
    files = [p for items in splits.values() for p, _ in items]
    n_bad = nan_items(files)
    if n_bad == 0:  # every clip starting at or below zero: make one start above it
        x = read_audio(files[0], 16000)
        x[0] = 0.25
        sf.write(files[0], x, 16000, subtype="FLOAT")
        n_bad = 1
    with pytest.raises(NonFiniteEmbeddingsError, match=rf"for {n_bad} of {len(files)} items"):
        evaluate_scene_task(task, hear_module("nan_hear"), seeds=(0,), config=QUICK, progress=False)
    weights = tiny_weights(tmp_path / "tiny.safetensors")
    with pytest.raises(NonFiniteEmbeddingsError, match=rf"for {len(files)} of {len(files)} items"):
        evaluate_scene_task(task, poisoned(weights), seeds=(0,), config=QUICK, progress=False, norm="weights")


def test_a_nan_score_ranks_last_never_first():
    nan = float("nan")
    sim = torch.tensor(
        [
            [nan, 0.5, 0.2, 0.1],  # target 0 is NaN: behind its 3 rivals -> rank 3
            [0.1, nan, 0.3, 0.2],  # target 0; column 2 is the query (excluded); NaN col 1 is no rival
            [nan, nan, nan, nan],
        ]
    )  # all NaN, target 1, col 0 excluded: last of 2 rivals -> rank 2
    target, exclude = torch.tensor([0, 0, 1]), torch.tensor([3, 2, 0])
    assert target_rank(sim, target, exclude).tolist() == [2, 1, 2]
    assert recall_at_k(sim, target, exclude, ks=(1, 2, 3)) == pytest.approx({"R@1": 0.0, "R@2": 1 / 3, "R@3": 1.0})
    # finite scores keep the pessimistic tie rule
    assert target_rank(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([0])).tolist() == [1]


def test_linear_probe_refuses_non_finite_features_as_a_task_error():
    from hear_diffbyola.tasks.linear_eval import linear_eval

    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    x[[2, 5], 1] = np.nan
    with pytest.raises(TaskError, match="2 of 20 feature rows contain NaN or Inf"):
        linear_eval(x, np.arange(20) % 2, x[:4], np.arange(4) % 2, seed=0, config=QUICK)


# ------------------------------------------------------------------------------------------ row 3: builds never mix


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_apwd_build_into_another_build_is_refused_and_force_replaces_it_whole(tmp_path, capsys, monkeypatch):
    import hear_diffbyola.tasks.apwd.build as apwd_build

    out = tmp_path / "data"
    build(out, ["rain"], BuildConfig.synthetic(n_dev=4, n_eval=2, **APWD_SMALL), synthetic=True, progress=False)
    old = snapshot(out)
    for extra in (["--n-dev", "3"], ["--seed", "1"]):  # fewer pairs, another seed: refused, nothing touched
        line = one_line_error(["apwd", "build", "--synthetic", "--scene", "rain", "--out", str(out), *extra], capsys)
        assert "already exists and is not empty" in line and "--force" in line
    assert snapshot(out) == old
    # a build that dies half-way (^C after two pairs) leaves the old one as it was
    real, calls = apwd_build.render_pair, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(apwd_build, "render_pair", dies)
    with pytest.raises(KeyboardInterrupt):
        build(
            out,
            ["rain"],
            BuildConfig.synthetic(n_dev=3, seed=1, **APWD_SMALL),
            synthetic=True,
            progress=False,
            force=True,
        )
    monkeypatch.undo()
    assert snapshot(out) == old and staging(tmp_path) == []
    # --force: the new build alone, as a fresh build of it into an empty folder
    cfg = BuildConfig.synthetic(n_dev=3, n_eval=2, seed=1, **APWD_SMALL)
    build(out, ["rain"], cfg, synthetic=True, progress=False, force=True)
    build(tmp_path / "fresh", ["rain"], cfg, synthetic=True, progress=False)
    assert snapshot(out) == snapshot(tmp_path / "fresh")
    assert len(read_pairs(out / "apwd_rain_sc", "dev")) == 3
    info = json.loads((out / "apwd_rain_sc" / "apwd_build.json").read_text())
    assert info["config"]["n_dev"] == 3 and info["config"]["seed"] == 1
    assert staging(tmp_path) == []
    # --force never deletes a folder that is not an APwD build
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TaskError, match="is not a APwD build folder; refusing to delete it"):
        build(tmp_path / "mine", ["rain"], cfg, synthetic=True, progress=False, force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bgknown_force_replaces_a_build_whole_and_a_killed_build_is_cleaned_up(bgtask, tmp_path, monkeypatch, capsys):
    import shutil

    import hear_diffbyola.tasks.bgknown.build as bg_build

    out = tmp_path / "task"
    shutil.copytree(bgtask, out, ignore=shutil.ignore_patterns("embeddings"))
    old = snapshot(out)
    args = [
        "bgknown",
        "build",
        "--synthetic",
        "--out",
        str(out),
        "--seed",
        "4",
        "--train-per-class",
        "3",
        "--test-per-class",
        "1",
        "--classes",
        "bell,siren",
        "--workers",
        "0",
        "--no-progress",
        "--snr-low",
        "0",
        "--snr-high",
        "3",
    ]
    assert "already exists and is not empty" in one_line_error(args, capsys)
    real, calls = bg_build.make_item, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bg_build, "make_item", dies)
    with pytest.raises(KeyboardInterrupt):
        build_synthetic(
            out,
            seed=4,
            train_per_class=3,
            test_per_class=1,
            classes=["bell", "siren"],
            params=SMALL,
            workers=0,
            progress=False,
            force=True,
        )
    monkeypatch.undo()
    assert snapshot(out) == old and staging(tmp_path) == []
    # a build killed outright (SIGKILL) leaves its staging folder: the next build removes it
    pid = dead_pid()
    (tmp_path / f".task.building-{pid}" / "16000").mkdir(parents=True)
    new = build_synthetic(
        out,
        seed=4,
        train_per_class=3,
        test_per_class=1,
        classes=["bell", "siren"],
        params=SMALL,
        workers=0,
        progress=False,
        force=True,
    )
    fresh = build_synthetic(
        tmp_path / "fresh",
        seed=4,
        train_per_class=3,
        test_per_class=1,
        classes=["bell", "siren"],
        params=SMALL,
        workers=0,
        progress=False,
    )
    assert snapshot(new) == snapshot(fresh)  # only the new build's files
    assert load_task(new).manifest["seed"] == 4 and staging(tmp_path) == []


def test_an_old_build_renamed_aside_by_a_killed_swap_comes_back(tmp_path):
    from hear_diffbyola.tasks.build_folder import building

    aside = tmp_path / f".out.old-{dead_pid()}"  # killed between "old build aside" and "new build in"
    aside.mkdir()
    (aside / "apwd_rain_sc").mkdir()
    (aside / "apwd_rain_sc" / "x").write_text("old")
    with pytest.raises(TaskError, match="already exists and is not empty"):
        with building(tmp_path / "out", False, lambda p: True, "APwD"):
            pass
    assert (tmp_path / "out" / "apwd_rain_sc" / "x").read_text() == "old" and not aside.exists()


# ------------------------------------------------------------------------------------------ row 5: caches heal


def test_truncated_bgknown_and_apwd_cache_files_are_recomputed_with_one_warning(bgtask, tmp_path, monkeypatch):
    mod = install_module(monkeypatch, "fine_hear", FINE_HEAR)
    task = load_task(bgtask)
    embedder = hear_module("fine_hear")
    first = task_embeddings(task, embedder, tmp_path / "bg", progress=False)
    entry = cache_path(task, embedder, tmp_path / "bg")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 3])  # a full disk or a killed copy
    before = len(mod.calls)
    with pytest.warns(CacheWarning, match="unreadable.*recomputing it") as rec:
        again = task_embeddings(task, embedder, tmp_path / "bg", progress=False)
    assert len([w for w in rec if issubclass(w.category, CacheWarning)]) == 1 and len(mod.calls) > before
    np.testing.assert_array_equal(again["test"]["b"], first["test"]["b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # healed: read back quietly, nothing recomputed
        task_embeddings(task, embedder, tmp_path / "bg", progress=False)

    files = [it.mix for it in task.items["train"]]
    e1 = embed_files(embedder, files, tmp_path / "ap", progress=False)
    (entry,) = (tmp_path / "ap").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(CacheWarning, match="unreadable") as rec:
        e2 = embed_files(embedder, files, tmp_path / "ap", progress=False)
    assert len([w for w in rec if issubclass(w.category, CacheWarning)]) == 1
    torch.testing.assert_close(e1, e2)


# ------------------------------------------------------------------------------------------ row 6: one input check


def int16_batch() -> torch.Tensor:
    return torch.full((2, 16000), 1000, dtype=torch.int16)  # PCM nobody scaled


def nan_batch() -> torch.Tensor:
    x = torch.zeros(2, 16000)
    x[1, 7] = float("nan")
    return x


BAD_INPUTS = [  # (what, batch, expected exception, message after the caller's name)
    (
        "int16",
        int16_batch,
        TypeError,
        "audio must be floating point in [-1, 1], got torch.int16; scale integer PCM first",
    ),
    ("nan", nan_batch, ValueError, "audio contains NaN or Inf in sound(s) [1]"),
]


def _message(e: BaseException | warnings.WarningMessage) -> str:
    text = str(e.message if isinstance(e, warnings.WarningMessage) else e)
    return text.split(": ", 1)[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.mark.parametrize("what,make,kind,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_s3prl_and_task_embedders_refuse_what_hear_refuses_with_the_same_message(tiny, what, make, kind, expected):
    from hear_diffbyola.hear import get_scene_embeddings, load_model
    from hear_diffbyola.s3prl_upstream.expert import UpstreamExpert

    audio = make()
    with pytest.raises(kind) as hear_err:
        get_scene_embeddings(audio, load_model(str(tiny)))
    with pytest.raises(kind) as s3prl_err:
        UpstreamExpert(str(tiny))([w for w in audio])
    with pytest.raises(kind) as task_err:
        ours(tiny).embed(audio.numpy())
    assert _message(hear_err.value) == _message(s3prl_err.value) == _message(task_err.value)
    assert _message(task_err.value).startswith(expected)
    assert isinstance(s3prl_err.value, (AudioTypeError, AudioValueError))  # DiffByolaError: one line in a CLI


def test_loud_audio_warns_the_same_on_every_path_and_is_embedded_unclipped(tiny):
    from hear_diffbyola.hear import get_scene_embeddings, load_model
    from hear_diffbyola.s3prl_upstream.expert import UpstreamExpert

    audio = torch.zeros(2, 8000)
    audio[1, ::50] = 100.0  # peak 100: unscaled PCM, or a bug upstream
    got = {}
    for name, call in (
        ("hear", lambda: get_scene_embeddings(audio, load_model(str(tiny)))),
        ("s3prl", lambda: UpstreamExpert(str(tiny))([w for w in audio])),
        ("task", lambda: ours(tiny).embed(audio.numpy())),
    ):
        with pytest.warns(UserWarning, match=r"peak at up to 100") as rec:
            call()
        got[name] = [_message(w) for w in rec if "peak" in str(w.message)]
    assert got["hear"] == got["s3prl"] == got["task"] and len(got["task"]) == 1
    assert got["task"][0].startswith("sound(s) [1] peak at up to 100, far outside the HEAR range [-1, 1]")


def test_task_embedder_names_the_file_and_never_converts_integer_pcm(tmp_path):
    seen = []
    emb = Embedder(lambda a: (seen.append(a.dtype), a[:, :2])[1], name="rec", sample_rate=16000, identity="rec")
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, np.full(1600, 0.1, np.float32), 16000, subtype="FLOAT")
    x = np.full(1600, 0.1, np.float32)
    x[100] = np.nan
    sf.write(bad, x, 16000, subtype="FLOAT")  # a float WAV can hold NaN
    with pytest.raises(AudioValueError, match=rf"Embedder 'rec': audio contains NaN or Inf in sound\(s\) \[{bad}\]"):
        embed_audio_files(emb, [good, bad], batch_size=2)
    with pytest.raises(AudioTypeError, match="got torch.int16; scale integer PCM first"):
        embed_waves(emb, [np.zeros(1600, np.float32), np.full(1600, 3000, np.int16)])  # mixed batch: no silent upcast
    out = embed_waves(emb, [np.full(1600, 0.5, np.float64)])
    assert seen[-1] == torch.float32 and out.dtype == np.float32 and out[0, 0] == 0.5  # floats of any width are fine


def test_check_audio_directly_and_a_half_precision_model_is_a_clear_error(tiny):
    from hear_diffbyola.s3prl_upstream.expert import UpstreamExpert

    with pytest.raises(AudioTypeError, match=r"f: waveform 1 must be a torch.Tensor, got ndarray"):
        check_audio([torch.zeros(3), np.zeros(3)], "f")
    with pytest.raises(AudioValueError, match=r"\[a.wav, c.wav\]"):
        check_audio(torch.tensor([[float("inf")], [0.0], [float("nan")]]), "f", names=["a.wav", "b.wav", "c.wav"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_audio(torch.full((1, 10), 1.9), "f")  # resampling overshoot: quiet
        check_audio([torch.zeros(0), torch.zeros(5)], "f")  # an empty wav in an s3prl batch is padding, not an error
    with pytest.warns(LoudAudioWarning):
        check_audio([torch.zeros(5), torch.full((5,), -2.5)], "f")
    up = UpstreamExpert(str(tiny))
    up.model.half()
    with pytest.raises(
        AudioTypeError, match=r"diffbyola upstream: the model's weights are torch.float16; .*model.float\(\)"
    ):
        up([torch.zeros(16000)])
    up.model.float()
    assert up([torch.zeros(16000)])["hidden_states"][0].dtype == torch.float32
    with pytest.raises(AudioTypeError, match="float64"):
        check_model_dtype(torch.nn.Linear(2, 2).double(), "g")


# ------------------------------------------------------------------------------------------ row 7: one-line errors


def tiny_checkpoint(run: Path, drop: tuple[str, ...] = ()) -> Path:
    """A pretraining run folder whose last.pt holds what export reads, minus the keys in ``drop``."""
    from test_train import tiny_config

    from hear_diffbyola.encoder import build_encoder
    from hear_diffbyola.train import CHECKPOINT_FORMAT

    cfg = tiny_config("train.steps=1")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "step": 1,
        "norm": {"mean": -6.0, "std": 5.0},
        "model": {f"encoder.{k}": v for k, v in build_encoder(cfg.encoder).state_dict().items()},
    }
    for k in drop:
        del ckpt[k]
    (run / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    return run


def test_config_errors_are_one_line(tmp_path, capsys):
    from test_train import TINY_ARGS

    pre = ["pretrain", "--no-progress", "--out", str(tmp_path / "run")]
    assert "train.steps must be int or null, got 3.7" in one_line_error(pre + ["--set", "train.steps=3.7"], capsys)
    (tmp_path / "section.yaml").write_text("train: 5\n")
    line = one_line_error(pre + ["--config", str(tmp_path / "section.yaml")], capsys)
    assert f"config file {tmp_path / 'section.yaml'}: section 'train' must be a mapping" in line
    (tmp_path / "broken.yaml").write_text("train:\n  lr: 0.001\n  steps: [1, 2\nlearner:\n  lam: 0.5\n")
    line = one_line_error(pre + ["--config", str(tmp_path / "broken.yaml")], capsys)
    assert f"config file {tmp_path / 'broken.yaml'} is not valid YAML at line 4" in line
    (tmp_path / "tabs.yaml").write_text("train:\n\tlr: 0.001\n")
    assert "is not valid YAML at line 2" in one_line_error(pre + ["--config", str(tmp_path / "tabs.yaml")], capsys)
    assert "is a folder; give a YAML file" in one_line_error(pre + ["--config", str(tmp_path)], capsys)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert "binary.yaml" in one_line_error(pre + ["--config", str(tmp_path / "binary.yaml")], capsys)
    for item, message in (
        ("encoder.d=100", "encoder.d must exceed the 1024 conv features"),
        ("train.lr=.inf", "train.lr must be a finite number, got inf"),
        ("augment.fader_gain=.nan", "augment.fader_gain must be a finite number"),
        ("train.device=gpu", "train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("train.embedded_size=0", "train.embedded_size must be >= 1"),
        ("train.seed=-1", "train.seed must be >= 0"),
    ):
        assert message in one_line_error(pre + ["--set", item], capsys)
    (tmp_path / "file").write_text("x")
    line = one_line_error(
        ["pretrain", "--no-progress", *TINY_ARGS, "--steps", "1", "--out", str(tmp_path / "file")], capsys
    )
    assert "is an existing file, not a folder" in line
    assert not list(tmp_path.glob("run*"))  # nothing started


def test_weights_header_norm_std_zero_or_nan_is_a_one_line_error(bgtask, tmp_path, capsys):
    from hear_diffbyola.encoder import AudioNTT2020, EncoderConfig
    from hear_diffbyola.frontend import FrontendConfig
    from hear_diffbyola.weights import WeightsError, load_pretrained

    enc = AudioNTT2020(n_mels=64, d=64)
    for name, std in (("zero", 0.0), ("nan", float("nan"))):
        path = tmp_path / f"{name}.safetensors"
        save_weights(
            path,
            enc.state_dict(),
            make_header(FrontendConfig(), (-6.0, std), EncoderConfig("audiontt2020", 64, 64), 0.5, {}),
        )
        line = one_line_error(["bgknown", "eval", "--task", str(bgtask), "--model", str(path), "--no-progress"], capsys)
        assert f"{path}: unusable log-mel normalisation: the header's norm.std is {std!r}" in line
        load_pretrained(path, norm_std=4.0)  # a valid override fixes it
    good = tiny_weights(tmp_path / "good.safetensors")
    with pytest.raises(WeightsError, match=r"norm_std=0.0 given is 0.0"):
        load_pretrained(good, norm_std=0.0)


def test_export_of_a_checkpoint_missing_keys_or_onto_a_full_disk_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from hear_diffbyola.weights import load_pretrained

    run = tiny_checkpoint(tmp_path / "broken", drop=("model", "norm"))
    line = one_line_error(["export", str(run), "--out", str(tmp_path / "w.safetensors")], capsys)
    assert f"checkpoint {run / 'checkpoints' / 'last.pt'} lacks model, norm" in line
    assert not (tmp_path / "w.safetensors").exists()

    run = tiny_checkpoint(tmp_path / "good")
    assert main(["export", str(run), "--out", str(tmp_path / "w.safetensors")]) == 0
    assert load_pretrained(tmp_path / "w.safetensors").encoder.d == 1088
    before = (tmp_path / "w.safetensors").read_bytes()
    real = Path.write_bytes

    def full(self, data):
        real(self, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    line = one_line_error(["export", str(run), "--out", str(tmp_path / "w.safetensors")], capsys)
    monkeypatch.undo()
    assert "no space left on device" in line and "the previous w.safetensors is intact" in line
    assert (tmp_path / "w.safetensors").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_output_paths_that_cannot_be_written_fail_before_any_work(bgtask, tmp_path, capsys, monkeypatch):
    install_module(monkeypatch, "fine_hear", FINE_HEAR)
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "adir").mkdir()
    run = tiny_checkpoint(tmp_path / "run")
    for out, message in (
        (tmp_path / "adir", "is a folder; give a file path"),
        (afile / "w.safetensors", f"{afile} is a file, not a folder"),
        (tmp_path / "w.st", "must end in .safetensors"),
    ):
        assert message in one_line_error(["export", str(run), "--out", str(out)], capsys)
    assert f"{afile} is a file, not a folder" in one_line_error(
        [
            "apwd",
            "eval",
            "--data",
            str(tmp_path),
            "--hear-module",
            "fine_hear",
            "--text-encoder",
            "hash",
            "--out",
            str(afile),
            "--no-progress",
        ],
        capsys,
    )
    assert "--json" in one_line_error(
        [
            "bgknown",
            "eval",
            "--task",
            str(bgtask),
            "--hear-module",
            "fine_hear",
            "--json",
            str(tmp_path / "adir"),
            "--no-progress",
        ],
        capsys,
    )
    assert f"{afile} is a file, not a folder" in one_line_error(
        [
            "bgknown",
            "export-heareval",
            "--task",
            str(bgtask),
            "--hear-module",
            "fine_hear",
            "--out",
            str(afile / "x"),
            "--no-progress",
        ],
        capsys,
    )
    assert not (bgtask / "embeddings").exists() or not any(
        (bgtask / "embeddings").glob("fine_hear*")
    )  # nothing embedded


def test_a_nan_training_file_is_named_before_it_can_become_nan_statistics(tiny, tmp_path):
    from hear_diffbyola.tasks import heartask
    from hear_diffbyola.tasks.embedders import task_norm_stats
    from hear_diffbyola.tasks.scene_task import evaluate_scene_task

    task = tmp_path / "t"
    heartask.write_hear_task(
        task, labels=["bell", "siren"], n_per_label={"train": 2, "valid": 1, "test": 1}, duration=0.5, seed=3
    )
    _, splits = heartask.read_scene_task(task)
    bad = splits["train"][1][0]
    x = read_audio(bad, 16000)
    x[10] = np.nan
    sf.write(bad, x, 16000, subtype="FLOAT")
    with pytest.raises(
        AudioValueError,
        match=rf"log-mel statistics of the training audio: audio contains NaN or Inf "
        rf"in sound\(s\) \[{bad}\]",
    ):
        evaluate_scene_task(task, ours(tiny), seeds=(0,), config=QUICK, progress=False)
    with pytest.raises(TaskError, match="the 2 training clips give unusable log-mel statistics"):
        task_norm_stats(tiny, [np.zeros(8000, np.float32), np.full(8000, np.nan, np.float32)], 16000)


def test_a_build_never_replaces_the_current_folder(tmp_path, monkeypatch):
    from hear_diffbyola.tasks.build_folder import building

    (tmp_path / "here" / "sub").mkdir(parents=True)
    for where in ("here", "here/sub"):
        monkeypatch.chdir(tmp_path / where)
        for out in (".", str(tmp_path / "here")):
            with (
                pytest.raises(TaskError, match="is or holds the current folder"),
                building(out, True, lambda p: True, "X"),
            ):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]
