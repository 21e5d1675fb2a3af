"""tasks.embedders: our weights and HEAR modules behind one Embedder; batching, padding, identity, errors."""

import hashlib
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from hear_diffbyola.embed import clip_embedding, min_samples
from hear_diffbyola.tasks import TaskError
from hear_diffbyola.tasks.embedders import Embedder, embed_audio_files, embed_waves, hear_module, make_embedder, ours
from hear_diffbyola.weights import WeightsError, load_pretrained


def tiny_weights(path: Path, seed: int = 0) -> Path:
    """A random-init small (BYOL-A v1 layout, d=64) encoder exported as our .safetensors (norm stats -6 / 5)."""
    from hear_diffbyola.encoder import AudioNTT2020, EncoderConfig
    from hear_diffbyola.frontend import FrontendConfig
    from hear_diffbyola.weights import make_header, save_weights

    torch.manual_seed(seed)
    enc = AudioNTT2020(n_mels=64, d=64)
    config = EncoderConfig(arch="audiontt2020", n_mels=64, d=64)
    header = make_header(FrontendConfig(), (-6.0, 5.0), config, 0.5, {"note": "random init"})
    save_weights(path, enc.state_dict(), header)
    return path


def install_module(monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> types.ModuleType:
    """Make ``source`` importable as ``name`` for one test; monkeypatch removes it from sys.modules after."""
    mod = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def noise(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# our weights


def test_ours_is_the_core_clip_embedding_and_is_identified_by_file_content_and_norm(tmp_path):
    path = tiny_weights(tmp_path / "tiny.safetensors")
    emb = ours(path)
    model = load_pretrained(path)
    x = noise(2, 16000)
    np.testing.assert_allclose(emb.embed(x), clip_embedding(model, torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert emb.embed(x).dtype == np.float32
    assert (emb.name, emb.sample_rate, emb.min_samples) == ("tiny", 16000, min_samples(model, 1))
    assert hashlib.sha256(path.read_bytes()).hexdigest() in emb.identity
    # a renamed copy is the same model (its cache entries stay valid); new weights or norm stats are not
    copy = ours(shutil.copy(path, tmp_path / "renamed.safetensors"))
    assert copy.identity == emb.identity and copy.name == "renamed"
    assert ours(tiny_weights(tmp_path / "other.safetensors", seed=1)).identity != emb.identity
    renorm = ours(path, norm_mean=-4.0)
    assert renorm.identity != emb.identity
    assert not np.allclose(renorm.embed(x), emb.embed(x))
    assert make_embedder(path).identity == emb.identity


def test_ours_reports_a_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="missing.safetensors does not exist"):
        ours(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="missing.safetensors does not exist"):
        make_embedder(tmp_path / "missing.safetensors")


def test_embed_waves_short_clip_from_ours_is_padded_not_rejected(tmp_path):
    emb = ours(tiny_weights(tmp_path / "tiny.safetensors"))
    short = noise(emb.min_samples - 100)
    with pytest.raises(ValueError, match="too short"):  # the core refuses it; embed_waves pads it
        emb.embed(short[None])
    padded = np.concatenate([short, np.zeros(100, np.float32)])
    np.testing.assert_array_equal(embed_waves(emb, [short]), emb.embed(padded[None]))


# ----------------------------------------------------------------------------------------------------------
# Embedder and embed_waves with a recording model


def recorder(min_len: int = 1) -> tuple[Embedder, list[torch.Tensor]]:
    """An embedder whose embedding of a clip is (length, sum); it keeps every batch it is given."""
    seen = []

    def fn(audio):
        seen.append(audio.clone())
        return torch.stack([torch.full((audio.shape[0],), float(audio.shape[1])), audio.sum(1)], 1)

    return Embedder(fn, name="rec", sample_rate=100, identity="rec", min_samples=min_len), seen


def test_embed_waves_stacks_equal_lengths_pads_short_clips_and_keeps_order():
    emb, seen = recorder(min_len=4)
    waves = [noise(n, seed=i) for i, n in enumerate((5, 5, 3, 7, 7))]
    out = embed_waves(emb, waves, batch_size=2)
    # batches of 2: [5, 5] stacked; [3 -> 4 padded, 7] ragged: clip by clip; [7] alone
    assert [tuple(b.shape) for b in seen] == [(2, 5), (1, 4), (1, 7), (1, 7)]
    np.testing.assert_array_equal(seen[1][0].numpy(), np.concatenate([waves[2], [0.0]]))  # zeros at the end
    expected = np.array([[max(w.size, 4), w.sum(dtype=np.float64)] for w in waves])
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.dtype == np.float32
    assert embed_waves(emb, []).shape == (0, 0)
    with pytest.raises(TaskError, match=r"clip 1 has shape \(2, 5\); embed_waves takes 1-D"):
        embed_waves(emb, [waves[0], np.stack(waves[:2])])
    with pytest.raises(TaskError, match="batch_size must be at least 1"):
        embed_waves(emb, waves, batch_size=0)


def test_embed_audio_files_reads_at_the_model_rate_in_batches_and_names_an_unreadable_file(tmp_path):
    import soundfile as sf

    emb, seen = recorder()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], noise(200, seed=i), 200)  # 1 s at 200 Hz -> 100 samples at the embedder's 100 Hz

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    out = embed_audio_files(emb, paths, batch_size=2, bar=bar)
    assert out.shape == (3, 2) and np.all(out[:, 0] == 100) and bar.n == 3
    assert [tuple(b.shape) for b in seen] == [(2, 100), (1, 100)]
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(TaskError, match=r"bad\.wav.*; rebuild the folder"):
        embed_audio_files(emb, [paths[0], tmp_path / "bad.wav"], damaged_hint="rebuild the folder")


def test_embed_runs_without_autograd_and_checks_the_output_shape():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 3)
    grad_on = []

    def fn(audio):
        grad_on.append(torch.is_grad_enabled())
        return lin(audio)

    out = Embedder(fn, name="lin", sample_rate=8, identity="lin").embed(noise(2, 8))
    assert grad_on == [False] and out.shape == (2, 3) and out.dtype == np.float32
    with pytest.raises(TaskError, match=r"lin returned shape \(2,\) for a batch of 2 clips; expected \(2, d\)"):
        Embedder(lambda a: a.sum(1), name="lin", sample_rate=8, identity="x").embed(noise(2, 8))
    with pytest.raises(TaskError, match=r"returned shape \(3, 8\) for a batch of 2 clips"):
        Embedder(lambda a: torch.zeros(3, 8), name="lin", sample_rate=8, identity="x").embed(noise(2, 8))
    with pytest.raises(TaskError, match=r"takes a batch of waveforms \(B, N\), got shape \(8,\)"):
        Embedder(fn, name="lin", sample_rate=8, identity="x").embed(noise(8))


# ----------------------------------------------------------------------------------------------------------
# HEAR modules

FAKE_HEAR = """
import pathlib

import torch

__version__ = "1.0"
devices = []

class Model(torch.nn.Module):
    sample_rate = 8000

    def __init__(self, scale):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

def load_model(model_file_path=""):
    if not model_file_path:
        return Model(1.0)
    p = pathlib.Path(model_file_path)
    return Model(float((p / "scale.txt" if p.is_dir() else p).read_text()))  # a file, or a model folder

def get_scene_embeddings(audio, model):
    # (B, N) -> (B, 2): length and scaled mean square, easy to recompute by hand
    devices.append(audio.device)
    if audio.device.type == "meta":
        return torch.zeros(audio.shape[0], 2)
    n = torch.full((audio.shape[0],), float(audio.shape[1]))
    return torch.stack([n, model.scale * (audio ** 2).mean(dim=1)], dim=1)
"""


@pytest.fixture
def fake(monkeypatch):
    return install_module(monkeypatch, "fake_hear_embedders", FAKE_HEAR)


def test_hear_module_embeds_through_its_api_and_identity_follows_module_version_and_model_file(tmp_path, fake):
    (tmp_path / "m1.txt").write_text("2.0")
    emb = hear_module("fake_hear_embedders", tmp_path / "m1.txt")
    assert (emb.name, emb.sample_rate, emb.min_samples) == ("fake_hear_embedders:m1", 8000, 1)
    x = noise(3, 40)
    np.testing.assert_allclose(
        emb.embed(x), np.stack([np.full(3, 40.0), 2.0 * (x.astype(np.float64) ** 2).mean(1)], 1), rtol=1e-5
    )
    assert hashlib.sha256(b"2.0").hexdigest() in emb.identity and "1.0" in emb.identity
    assert make_embedder(tmp_path / "m1.txt", hear_module="fake_hear_embedders").identity == emb.identity

    (tmp_path / "copy.txt").write_text("2.0")
    (tmp_path / "m2.txt").write_text("3.0")
    same = hear_module("fake_hear_embedders", tmp_path / "copy.txt")
    assert same.identity == emb.identity and same.name == "fake_hear_embedders:copy"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "scale.txt").write_text("2.0")
    identities = {
        emb.identity,
        hear_module("fake_hear_embedders", tmp_path / "m2.txt").identity,
        hear_module("fake_hear_embedders").identity,
        hear_module("fake_hear_embedders", tmp_path / "folder").identity,
    }
    assert len(identities) == 4  # other weights, the module's default, a model folder: four models
    assert hear_module("fake_hear_embedders").name == "fake_hear_embedders"
    fake.__version__ = "1.1"  # an upgraded module may embed differently
    assert hear_module("fake_hear_embedders", tmp_path / "m1.txt").identity != emb.identity


def test_hear_module_audio_goes_to_the_models_device(monkeypatch, fake):
    # "meta" stands in for an accelerator on a CPU-only machine: the model is moved there, the audio follows
    hear_module("fake_hear_embedders", device="meta").embed(noise(2, 40))
    no_weights = install_module(
        monkeypatch,
        "fake_hear_noweights",
        FAKE_HEAR.replace("self.scale = torch.nn.Parameter(torch.tensor(scale))", "self.scale = scale"),
    )
    hear_module("fake_hear_noweights", device="meta").embed(noise(2, 40))
    hear_module("fake_hear_embedders").embed(noise(2, 40))
    assert [d.type for d in fake.devices] == ["meta", "cpu"] and [d.type for d in no_weights.devices] == ["meta"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hear_module_on_cuda_gets_its_audio_on_cuda(fake):
    out = hear_module("fake_hear_embedders", device="cuda").embed(noise(2, 40))
    assert fake.devices[-1].type == "cuda" and out.shape == (2, 2)
    np.testing.assert_allclose(out, hear_module("fake_hear_embedders").embed(noise(2, 40)), rtol=1e-4)


def test_hear_module_errors_say_what_is_wrong(tmp_path, monkeypatch, fake):
    with pytest.raises(TaskError, match="cannot import HEAR module 'no_such_module_xyz'"):
        hear_module("no_such_module_xyz")
    (tmp_path / "needs_missing_dep.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskError, match="cannot import HEAR module 'needs_missing_dep'.*no_such_dependency_xyz"):
        hear_module("needs_missing_dep")
    with pytest.raises(TaskError, match=r"'json' is not a HEAR module: it has no load_model\(\)"):
        hear_module("json")
    install_module(monkeypatch, "fake_no_scene", "def load_model(p=''):\n    return None\n")
    with pytest.raises(TaskError, match=r"'fake_no_scene' is not a HEAR module: it has no get_scene_embeddings\(\)"):
        hear_module("fake_no_scene")
    with pytest.raises(TaskError, match="model file .*missing.pt for HEAR module 'fake_hear_embedders' does not exist"):
        hear_module("fake_hear_embedders", tmp_path / "missing.pt")
    for rate, shown in (("16000.0", "16000.0"), ("True", "True"), ("0", "0")):
        install_module(monkeypatch, "fake_bad_rate", FAKE_HEAR.replace("sample_rate = 8000", f"sample_rate = {rate}"))
        with pytest.raises(
            TaskError, match=rf"'fake_bad_rate'.*no positive integer sample_rate attribute \(got {shown}\)"
        ):
            hear_module("fake_bad_rate")
    install_module(
        monkeypatch,
        "fake_frames",
        FAKE_HEAR + "\ndef get_scene_embeddings(audio, model):\n"
        "    return torch.zeros(audio.shape[0], 4, 3)  # frames, not one vector per clip\n",
    )
    with pytest.raises(TaskError, match=r"HEAR module 'fake_frames': get_scene_embeddings returned shape \(2, 4, 3\)"):
        hear_module("fake_frames").embed(noise(2, 40))
    with pytest.raises(TaskError, match="cannot import HEAR module 'no_such_module_xyz'"):
        make_embedder(None, hear_module="no_such_module_xyz")


def test_our_own_hear_module_through_hear_module_matches_ours(tmp_path):
    # two routes to one model: the HEAR API (as hear-eval-kit embeds) and the core loader
    path = tiny_weights(tmp_path / "tiny.safetensors")
    via_hear, direct = hear_module("hear_diffbyola", path), ours(path)
    assert via_hear.sample_rate == direct.sample_rate and via_hear.name == "hear_diffbyola:tiny"
    x = noise(2, 16000)
    np.testing.assert_allclose(via_hear.embed(x), direct.embed(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# log-mel normalisation from the task's training audio


def numpy_logmel_stats(model, waves) -> tuple[float, float]:
    """Reference: mean and std of every log-mel value of ``waves`` (the model's front end), in numpy float64."""
    with torch.no_grad():
        v = np.concatenate([model.frontend.logmel(torch.from_numpy(w)[None]).numpy().ravel() for w in waves])
    return float(v.astype(np.float64).mean()), float(v.astype(np.float64).std())


def test_task_norm_stats_are_the_log_mel_mean_and_std_of_the_given_clips(tmp_path):
    from hear_diffbyola.tasks.embedders import task_norm_stats

    path = tiny_weights(tmp_path / "tiny.safetensors")
    model = load_pretrained(path)
    waves = [noise(16000, seed=1), 3.0 * noise(12000, seed=2), noise(20000, seed=3) + 0.05]
    mean, std = numpy_logmel_stats(model, waves)
    for source in (path, model, ours(path)):  # a file, a loaded model, an embedder: the same numbers
        stats = task_norm_stats(source, iter(waves), 16000)
        assert (stats.source, stats.clips) == ("task-train", 3)
        assert stats.mean == pytest.approx(mean, rel=1e-9) and stats.std == pytest.approx(std, rel=1e-9)
    assert (mean, std) != pytest.approx((-6.0, 5.0))  # not the weights file's
    with pytest.raises(TaskError, match="no training clips"):
        task_norm_stats(model, [], 16000)
    with pytest.raises(TaskError, match="clips are at 8000 Hz but the model's front end expects 16000 Hz"):
        task_norm_stats(model, waves, 8000)
    with pytest.raises(TaskError, match=r"clip 1 has shape \(2, 5\)"):
        task_norm_stats(model, [waves[0], np.zeros((2, 5), np.float32)], 16000)
    with pytest.raises(TaskError, match="normalises its input itself"):
        task_norm_stats(recorder()[0], waves, 100)


def test_task_normalised_uses_the_training_files_and_norm_weights_keeps_the_file(tmp_path, fake):
    import soundfile as sf

    from hear_diffbyola.tasks.embedders import norm_record, task_normalised

    path = tiny_weights(tmp_path / "tiny.safetensors")
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], noise(16000, seed=10 + i), 16000, subtype="FLOAT")
    base = ours(path)
    assert base.norm.to_dict() == {"source": "weights", "mean": -6.0, "std": 5.0, "clips": 0}
    task = task_normalised(base, files[:2])
    mean, std = numpy_logmel_stats(base.model, [sf.read(f, dtype="float32")[0] for f in files[:2]])
    assert task.norm.source == "task-train" and task.norm.clips == 2
    assert task.norm.mean == pytest.approx(mean, rel=1e-9) and task.norm.std == pytest.approx(std, rel=1e-9)
    # the embedding is the core's with those statistics; the identity (cache key) carries them
    same = ours(path, norm_mean=task.norm.mean, norm_std=task.norm.std)
    x = noise(1, 16000, seed=5)
    np.testing.assert_allclose(task.embed(x), same.embed(x), rtol=1e-6)
    assert task.identity == same.identity != base.identity and task.weights_identity == base.weights_identity
    assert not np.allclose(task.embed(x), base.embed(x))
    assert task_normalised(base, files[:2], "weights") is base
    assert norm_record(task, "task", ["train"]) == {
        "requested": "task",
        "source": "task-train",
        "mean": task.norm.mean,
        "std": task.norm.std,
        "clips": 2,
        "splits": ["train"],
    }
    # cached by (weights, data id): a second call with the same id does not read the files
    first = task_normalised(base, files[:2], cache_dir=tmp_path / "c", data_id="set-1")
    assert len(list((tmp_path / "c").glob("norm-tiny-*.npz"))) == 1
    gone = [tmp_path / "gone0.wav", tmp_path / "gone1.wav"]  # unreadable: only the cache can answer
    assert task_normalised(base, gone, cache_dir=tmp_path / "c", data_id="set-1").identity == first.identity
    with pytest.raises(TaskError, match=r"gone0\.wav.*; rebuild it"):
        task_normalised(base, gone, cache_dir=tmp_path / "c", data_id="set-2", damaged_hint="rebuild it")
    # a HEAR module keeps its own normalisation, and says so
    hear = hear_module("fake_hear_embedders")
    assert task_normalised(hear, files) is hear
    rec = norm_record(hear, "task", ["train"])
    assert rec["source"] == "hear-module" and rec["mean"] is None and "splits" not in rec and "own input" in rec["note"]
    with pytest.raises(TaskError, match="unknown normalisation 'pretraining'"):
        task_normalised(base, files, "pretraining")


def test_scene_task_normalises_with_the_non_test_splits_only(tmp_path):
    from hear_diffbyola.audio import read_audio, write_audio
    from hear_diffbyola.tasks import heartask
    from hear_diffbyola.tasks.linear_eval import LinearEvalConfig
    from hear_diffbyola.tasks.scene_task import evaluate_scene_task

    path = tiny_weights(tmp_path / "tiny.safetensors")
    task = tmp_path / "t"
    heartask.write_hear_task(
        task, labels=["bell", "siren"], n_per_label={"train": 4, "valid": 1, "test": 2}, duration=0.5, seed=3
    )
    _, splits = heartask.read_scene_task(task)
    train = [read_audio(p, 16000) for s in ("train", "valid") for p, _ in splits[s]]
    mean, std = numpy_logmel_stats(load_pretrained(path), train)
    config = LinearEvalConfig(max_epochs=3)
    res = evaluate_scene_task(task, ours(path), seeds=(0,), config=config, progress=False)
    assert res["norm"]["source"] == "task-train" and res["norm"]["splits"] == ["train", "valid"]
    assert res["norm"]["clips"] == 10 and res["norm"]["mean"] == pytest.approx(mean, rel=1e-6)
    assert res["norm"]["std"] == pytest.approx(std, rel=1e-6)
    assert res["model_identity"] == ours(path, norm_mean=res["norm"]["mean"], norm_std=res["norm"]["std"]).identity
    for p, _ in splits["test"]:  # test clips play no part in the statistics
        write_audio(p, np.random.default_rng(0).normal(0, 0.5, 8000).astype(np.float32), 16000)
    again = evaluate_scene_task(task, ours(path), seeds=(0,), config=config, progress=False)
    assert (again["norm"]["mean"], again["norm"]["std"]) == (res["norm"]["mean"], res["norm"]["std"])
    old = evaluate_scene_task(task, ours(path), seeds=(0,), config=config, progress=False, norm="weights")
    assert old["norm"] == {"requested": "weights", "source": "weights", "mean": -6.0, "std": 5.0, "clips": 0}
    assert old["model_identity"] == ours(path).identity


# ----------------------------------------------------------------------------------------------------------
# the shared cache (tasks.cache)


def counting(arrays):
    calls = []

    def compute():
        calls.append(1)
        return arrays

    return compute, calls


def test_cache_round_trip_and_file_name_follows_the_key(tmp_path):
    import warnings

    from hear_diffbyola.tasks.cache import cache_file, cached_arrays

    key = {"embedder": "m", "build_id": "b1", "norm": {"mean": -5.0, "std": 4.0}}
    arrays = {"train/mix": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "b"])}
    path = cache_file(tmp_path, "my model!", key)
    assert path.parent == tmp_path and path.name.startswith("my_model_-") and path.suffix == ".npz"
    assert cache_file(tmp_path, "my model!", dict(reversed(list(key.items())))) == path  # key order is irrelevant
    assert cache_file(tmp_path, "my model!", {**key, "norm": {"mean": -4.0, "std": 4.0}}) != path
    compute, calls = counting(arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing entry is no reason to warn
        first = cached_arrays(path, key, compute)
        second = cached_arrays(path, key, compute)
    assert len(calls) == 1 and path.is_file() and not list(tmp_path.glob("*.tmp"))
    for got in (first, second):
        assert set(got) == set(arrays)
        np.testing.assert_array_equal(got["train/mix"], arrays["train/mix"])
        assert got["names"].tolist() == ["a", "b"]
    with np.load(path, allow_pickle=False) as z:  # plain arrays: readable without pickle
        assert z["train/mix"].dtype == np.float32
    assert cached_arrays(None, key, compute) is not None and len(calls) == 2  # no path: no cache


def test_cache_truncated_or_mismatched_file_is_reported_once_and_recomputed(tmp_path):
    from hear_diffbyola.tasks.cache import CacheWarning, cache_file, cached_arrays, write_arrays

    key = {"embedder": "m", "data": "d1"}
    path = cache_file(tmp_path, "m", key)
    good = {"x": np.ones((3, 2), np.float32)}
    write_arrays(path, key, good)
    path.write_bytes(path.read_bytes()[:40])  # truncated by a full disk or a killed copy
    compute, calls = counting(good)
    with pytest.warns(CacheWarning, match=rf"cache file {path} is unreadable") as rec:
        out = cached_arrays(path, key, compute)
    assert len(rec) == 1 and len(calls) == 1
    np.testing.assert_array_equal(out["x"], good["x"])
    assert cached_arrays(path, key, compute)["x"].shape == (3, 2) and len(calls) == 1  # rewritten, readable again

    write_arrays(path, {"embedder": "other", "data": "d1"}, {"x": np.zeros((3, 2), np.float32)})  # wrong contents
    with pytest.warns(CacheWarning, match=rf"cache file {path} was written for another embedder") as rec:
        out = cached_arrays(path, key, compute)
    assert len(rec) == 1 and len(calls) == 2
    np.testing.assert_array_equal(out["x"], good["x"])
    path.write_bytes(b"not an npz at all")
    with pytest.warns(CacheWarning, match="unreadable"):
        cached_arrays(path, key, compute)
    with open(path, "wb") as fh:  # a lone .npy under the name (no key inside)
        np.save(fh, np.zeros(3))
    with pytest.warns(CacheWarning, match="unreadable"):
        cached_arrays(path, key, compute)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="reserved"):
        write_arrays(path, key, {"__cache_key__": np.zeros(1)})
