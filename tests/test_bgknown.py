import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly
from test_embedders import install_module, tiny_weights

from hear_diffbyola.cli import main
from hear_diffbyola.tasks import TaskError
from hear_diffbyola.tasks.bgknown import BuildParams, build_from_datasets, build_synthetic, load_task
from hear_diffbyola.tasks.bgknown.evaluate import evaluate, markdown_table
from hear_diffbyola.tasks.bgknown.features import cache_key, cache_path, task_embeddings, train_audio
from hear_diffbyola.tasks.cache import write_arrays
from hear_diffbyola.tasks.embedders import Embedder, hear_module, ours
from hear_diffbyola.tasks.linear_eval import LinearEvalConfig


def pyln():
    """pyloudnorm (the `test` extra) for the cross-checks; only the tests that use it skip without it."""
    return pytest.importorskip("pyloudnorm")


SR_SRC = 44100
CLASSES = ("dog", "rain")
N = 80000  # 5 s at 16 kHz
HALF = N // 2


# ----------------------------------------------------------------------------------------------------------
# tiny fake datasets in the real layouts


def write_wav(path: Path, x: np.ndarray, sr: int = SR_SRC) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")


def make_esc50(root: Path, per_fold: int = 1) -> Path:
    """5 folds x 2 classes x per_fold clips of 5 s at 44.1 kHz: a class-specific tone burst over faint noise."""
    rng = np.random.default_rng(100)
    t = np.arange(5 * SR_SRC) / SR_SRC
    rows = []
    for fold in range(1, 6):
        for target, category in enumerate(CLASSES):
            for k in range(per_fold):
                name = f"{fold}-{1000 + 10 * target + k}-A-{target}.wav"
                x = 0.003 * rng.standard_normal(t.size)
                on = slice(int(rng.uniform(0.2, 2.0) * SR_SRC), int(rng.uniform(3.0, 4.8) * SR_SRC))
                x[on] += rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * (440 if target == 0 else 2200) * t[on])
                write_wav(root / "audio" / name, x)
                rows.append([name, fold, target, category, "False", f"src{k}", "A"])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


def make_fsd50k(root: Path, dev_long: int = 8, eval_long: int = 6, short: int = 2) -> tuple[Path, set[str]]:
    """Long (10-11 s) and short (< 10 s) clips in dev and eval; returns the root and the short clips' paths."""
    rng = np.random.default_rng(200)
    shorts = set()
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    for which, n_long, first_id in (("dev", dev_long, 1000), ("eval", eval_long, 5000)):
        rows = []
        for i in range(n_long + short):
            fname = str(first_id + i)
            seconds = rng.uniform(10.0, 11.0) if i < n_long else rng.uniform(3.0, 9.9)
            x = rng.standard_normal(int(seconds * SR_SRC)) * rng.uniform(0.02, 0.2)
            x = np.convolve(x, np.ones(8) / 8, mode="same")  # a little colour
            write_wav(root / f"FSD50K.{which}_audio" / f"{fname}.wav", x)
            rows.append([fname, "Rain,Water", "/m/06mb1,/m/0838f"] + (["train"] if which == "dev" else []))
            if i >= n_long:
                shorts.add(f"FSD50K.{which}_audio/{fname}.wav")
        with open(gt / f"{which}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["fname", "labels", "mids"] + (["split"] if which == "dev" else []))
            w.writerows(rows)
    return root, shorts


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    esc50 = make_esc50(base / "ESC-50")
    fsd50k, shorts = make_fsd50k(base / "FSD50K")
    return esc50, fsd50k, shorts


@pytest.fixture(scope="module")
def built(datasets, tmp_path_factory):
    esc50, fsd50k, _ = datasets
    out = tmp_path_factory.mktemp("tasks") / "bgknown"
    build_from_datasets(esc50, fsd50k, out, seed=7, workers=0, progress=False)
    return out


def read16(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="int16")
    assert sr == 16000 and x.ndim == 1
    return x


def as_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 32768.0


# ----------------------------------------------------------------------------------------------------------
# the builder


def test_folds_map_to_splits_and_dev_eval_backgrounds_stay_apart(built, datasets):
    task = load_task(built)
    _, _, shorts = datasets
    assert task.labels == list(CLASSES)
    assert {s: len(v) for s, v in task.items.items()} == {"train": 4, "valid": 2, "test": 4}
    used = []
    for split, items in task.items.items():
        for it in items:
            rec = it.record
            fold = int(it.name.split("-")[0])
            assert rec["fold"] == fold and (fold <= 3) == (split != "test")
            assert it.label == CLASSES[int(it.name.split("-")[-1])]
            which = "eval" if split == "test" else "dev"
            assert rec["background"]["set"] == which and rec["background"]["file"].startswith(f"FSD50K.{which}_audio/")
            assert rec["background"]["file"] not in shorts and rec["background"]["seconds"] >= 10.0
            used.append(rec["background"]["file"])
    assert len(set(used)) == len(used)  # one distinct background per clip
    # HEAR files: vocabulary and split lists
    assert (built / "labelvocabulary.csv").read_text() == "idx,label\n0,dog\n1,rain\n"
    meta = json.loads((built / "task_metadata.json").read_text())
    assert meta["splits"] == ["train", "valid", "test"] and meta["split_mode"] == "trainvaltest"
    assert meta["embedding_type"] == "scene" and meta["sample_duration"] == 5.0
    listed = json.loads((built / "test.json").read_text())
    assert listed == {f"{it.name}.wav": [it.label] for it in task.items["test"]}


def test_references_overlap_exactly_half_and_zero(built):
    for its in load_task(built).items.values():
        for it in its:
            cr = it.record["crops"]
            a, b = read16(it.refs["a"]), read16(it.refs["b"])
            assert a.size == b.size == N
            assert abs(cr["b"] - cr["a"]) == HALF and abs(cr["c"] - cr["a"]) >= N
            if cr["b"] > cr["a"]:
                np.testing.assert_array_equal(a[HALF:], b[:HALF])
            else:
                np.testing.assert_array_equal(b[HALF:], a[:HALF])


def test_drawn_snr_measured_back_with_pyloudnorm(built):
    meter = pyln().Meter(16000)
    for its in load_task(built).items.values():
        for it in its:
            mix, bg = as_float(read16(it.mix)), as_float(read16(it.refs["a"]))
            snr = meter.integrated_loudness(mix - bg) - meter.integrated_loudness(bg)
            assert 0.0 <= it.record["snr_db"] <= 3.0
            assert snr == pytest.approx(it.record["snr_db"], abs=0.1)


def test_manifest_matches_the_audio(built, datasets):
    esc50, fsd50k, _ = datasets
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["params"]["snr_db"] == [0.0, 3.0]
    lsb = 1.5 / 32768
    for rec in manifest["items"]:
        fg, sr = sf.read(str(esc50 / rec["foreground"]["file"]), dtype="float64")
        bg, sr2 = sf.read(str(fsd50k / rec["background"]["file"]), dtype="float64")
        assert sr == sr2 == SR_SRC
        fg16, bg16 = resample_poly(fg, 160, 441), resample_poly(bg, 160, 441)
        assert bg16.size == rec["background"]["samples"]
        for ref in ("a", "b", "c"):
            start = rec["crops"][ref]
            expect = bg16[start : start + N] * rec["bg_gain"]
            np.testing.assert_allclose(as_float(read16(built / rec["files"][ref])), expect, atol=lsb)
        a = rec["crops"]["a"]
        expect_mix = fg16[:N] * rec["fg_gain"] + bg16[a : a + N] * rec["bg_gain"]
        np.testing.assert_allclose(as_float(read16(built / rec["files"]["mix"])), expect_mix, atol=lsb)


@pytest.mark.slow
def test_build_is_deterministic_under_a_seed_and_independent_of_workers(built, datasets, tmp_path):
    esc50, fsd50k, _ = datasets
    again = build_from_datasets(esc50, fsd50k, tmp_path / "again", seed=7, workers=2, progress=False)
    assert (again / "manifest.json").read_text() == (built / "manifest.json").read_text()
    for f in sorted((built / "16000").rglob("*.wav")):
        assert f.read_bytes() == (again / f.relative_to(built)).read_bytes(), f
    other = build_from_datasets(esc50, fsd50k, tmp_path / "other", seed=8, workers=0, progress=False)
    a, b = load_task(built).manifest["items"], load_task(other).manifest["items"]
    assert [r["snr_db"] for r in a] != [r["snr_db"] for r in b]
    assert load_task(other).build_id != load_task(built).build_id


# ----------------------------------------------------------------------------------------------------------
# bad input


def test_missing_folders_and_columns_are_named(datasets, tmp_path):
    esc50, fsd50k, _ = datasets
    with pytest.raises(TaskError, match=r"ESC-50: folder .*audio is missing"):
        build_from_datasets(tmp_path / "nowhere", fsd50k, tmp_path / "o1", progress=False)
    bad = tmp_path / "esc"
    (bad / "meta").mkdir(parents=True)
    (bad / "audio").symlink_to(esc50 / "audio")
    text = (esc50 / "meta" / "esc50.csv").read_text().replace("fold,", "folds,", 1)
    (bad / "meta" / "esc50.csv").write_text(text)
    with pytest.raises(TaskError, match=r"lacks column\(s\) fold "):
        build_from_datasets(bad, fsd50k, tmp_path / "o2", progress=False)
    with pytest.raises(TaskError, match=r"FSD50K: folder .*FSD50K.dev_audio is missing"):
        build_from_datasets(esc50, tmp_path, tmp_path / "o3", progress=False)
    assert not any(tmp_path.glob("o*"))  # nothing half-built is left behind


def test_too_few_long_backgrounds(datasets, tmp_path):
    esc50, _, _ = datasets
    fsd50k, _ = make_fsd50k(tmp_path / "small", dev_long=5, eval_long=6)  # 6 training clips need 6
    with pytest.raises(TaskError, match=r"FSD50K dev: only 5 of 7 clips are 10 s or longer, 6 are needed"):
        build_from_datasets(esc50, fsd50k, tmp_path / "out", progress=False)


def test_unreadable_audio_is_named(datasets, tmp_path):
    esc50, fsd50k, _ = datasets
    broken = tmp_path / "esc"
    (broken / "meta").mkdir(parents=True)
    (broken / "meta" / "esc50.csv").write_text((esc50 / "meta" / "esc50.csv").read_text())
    (broken / "audio").mkdir()
    for f in (esc50 / "audio").iterdir():
        (broken / "audio" / f.name).write_bytes(f.read_bytes())
    (broken / "audio" / "2-1000-A-0.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(TaskError, match=r"cannot read audio file .*2-1000-A-0.wav"):
        build_from_datasets(broken, fsd50k, tmp_path / "out", progress=False)


def test_task_folder_from_another_build_is_refused(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": "hear-diffbyola/bgknown/0"}))
    with pytest.raises(TaskError, match="older or different builder"):
        load_task(copy)
    manifest["items"][0]["snr_db"] += 1.0  # edited after the build
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TaskError, match="does not match its build id"):
        load_task(copy)
    shutil.copy(built / "manifest.json", copy / "manifest.json")
    meta = json.loads((copy / "task_metadata.json").read_text())
    (copy / "task_metadata.json").write_text(json.dumps({**meta, "build_id": "0123456789abcdef"}))
    with pytest.raises(TaskError, match="come from different builds"):
        load_task(copy)
    with pytest.raises(TaskError, match="not a BgKnown task folder"):
        load_task(tmp_path)


def test_cli_reports_errors_with_exit_status_2(datasets, tmp_path, capsys):
    esc50, fsd50k, _ = datasets
    assert main(["bgknown", "build", "--esc50", str(esc50), "--out", str(tmp_path / "o")]) == 2
    assert "give both --esc50 DIR and --fsd50k DIR" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["bgknown", "build", "--synthetic", "--out", str(tmp_path / "full")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["bgknown", "eval", "--task", str(tmp_path / "full"), "--model", "w.safetensors"]) == 2
    assert "not a BgKnown task folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# synthetic variant and evaluation

SMALL = BuildParams(clip_seconds=1.0, min_bg_seconds=2.0)
SYN_CLASSES = ["bell", "chirp_up", "click_train", "siren"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "task"
    return build_synthetic(
        out, seed=3, train_per_class=10, test_per_class=5, classes=SYN_CLASSES, params=SMALL, workers=0, progress=False
    )


def test_synthetic_task_layout_and_disjoint_seeds(synthetic, tmp_path):
    task = load_task(synthetic)
    assert task.labels == SYN_CLASSES and task.manifest["variant"] == "synthetic"
    assert {s: len(v) for s, v in task.items.items()} == {"train": 36, "valid": 4, "test": 20}
    recs = task.manifest["items"]
    train_seeds = {tuple(r["foreground"]["seed"]) for r in recs if r["split"] != "test"}
    test_seeds = {tuple(r["foreground"]["seed"]) for r in recs if r["split"] == "test"}
    assert not train_seeds & test_seeds
    for r in recs:
        assert r["background"]["seconds"] >= 2.0 and r["background"]["synthetic_scene"]
        assert abs(r["crops"]["b"] - r["crops"]["a"]) == 8000 and abs(r["crops"]["c"] - r["crops"]["a"]) >= 16000
    again = build_synthetic(
        tmp_path / "again",
        seed=3,
        train_per_class=10,
        test_per_class=5,
        classes=SYN_CLASSES,
        params=SMALL,
        workers=0,
        progress=False,
    )
    assert load_task(again).build_id == task.build_id
    assert (again / "16000/test/eval-00007-chirp_up.bg_c.wav").read_bytes() == (
        synthetic / "16000/test/eval-00007-chirp_up.bg_c.wav"
    ).read_bytes()


def constructed() -> Embedder:
    """An embedder that is never called: its embeddings are planted in the cache."""

    def fail(audio):
        raise AssertionError("the cache should have answered")

    return Embedder(fail, name="constructed", sample_rate=16000, identity="constructed")


def test_evaluator_on_features_where_only_the_difference_knows_the_label(synthetic):
    task = load_task(synthetic)
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((len(task.labels), 8)) * 2.0
    emb = {}
    for split in task.items:
        y = np.array(task.label_indices(split))
        mix = rng.standard_normal((y.size, 8))
        emb[split] = {
            "mix": mix.astype(np.float32),
            "a": (mix - codes[y]).astype(np.float32),  # y_mix - y_a = the label's code
            "b": (mix - 0.5 * codes[y] - rng.standard_normal(mix.shape)).astype(np.float32),
            "c": (mix - rng.standard_normal(mix.shape)).astype(np.float32),
        }  # no label anywhere
    write_arrays(
        cache_path(task, constructed()),
        cache_key(task, constructed()),
        {f"{split}/{k}": v for split, kinds in emb.items() for k, v in kinds.items()},
    )
    res = evaluate(task, constructed(), seeds=(0, 1), progress=False)
    r = {k: v["mean"] for k, v in res["results"].items()}
    assert r["a"] >= 95.0, r
    assert r["mix"] <= 25.0 + 25.0 and r["c"] <= 25.0 + 25.0, r  # chance 25 %, 20 test items
    assert res["n_train"] == 40 and res["n_test"] == 20 and res["chance"] == 25.0
    table = markdown_table([res])
    assert table.splitlines()[0] == "| Model | Mix | (a) | (b) | (c) |"
    assert table.splitlines()[2].startswith(f"| constructed | {r['mix']:.1f} ± ")


def reference_norm(weights: Path, files: list[Path]) -> tuple[float, float]:
    """Mean and std over every log-mel value of ``files``, by numpy, with the model's own front end."""
    from hear_diffbyola.weights import load_pretrained

    model = load_pretrained(weights)
    values = []
    for f in files:
        wave, sr = sf.read(str(f), dtype="float32")
        assert sr == model.sample_rate
        with torch.no_grad():
            values.append(model.frontend.logmel(torch.from_numpy(wave)[None]).numpy().ravel())
    v = np.concatenate(values).astype(np.float64)
    return float(v.mean()), float(v.std())


def test_end_to_end_eval_caches_embeddings_and_exports_heareval_folders(synthetic, tmp_path, monkeypatch, capsys):
    weights = tiny_weights(tmp_path / "tiny.safetensors")
    args = [
        "bgknown",
        "eval",
        "--task",
        str(synthetic),
        "--model",
        str(weights),
        "--seeds",
        "2",
        "--max-epochs",
        "40",
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        "--no-progress",
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results[0]["model"] == "tiny" and results[0]["seeds"] == [0, 1]
    for cond in ("mix", "a", "b", "c"):
        accs = results[0]["results"][cond]["accuracies"]
        assert len(accs) == 2 and all(0.0 <= a <= 100.0 for a in accs)
    table = (tmp_path / "r.md").read_text()
    assert table in capsys.readouterr().out

    # default normalisation: the log-mel statistics of the 40 training-side mixtures, not the file's -6 / 5
    task = load_task(synthetic)
    norm = results[0]["norm"]
    mean, std = reference_norm(weights, [it.mix for s in ("train", "valid") for it in task.items[s]])
    assert norm["requested"] == "task" and norm["source"] == "task-train" and norm["clips"] == 40
    assert norm["mean"] == pytest.approx(mean, rel=1e-6) and norm["std"] == pytest.approx(std, rel=1e-6)
    assert f"task training audio (mean {mean:.4f}, std {std:.4f}, 40 clips)" in table

    # the cache holds the core's embedding of each written file, under those statistics
    embedder = ours(weights, norm_mean=norm["mean"], norm_std=norm["std"])
    assert results[0]["model_identity"] == embedder.identity
    cached = np.load(cache_path(task, embedder))
    for split, k, i in (("train", "mix", 0), ("test", "c", 3)):
        item = task.items[split][i]
        wave, _ = sf.read(str(item.mix if k == "mix" else item.refs[k]), dtype="float32")
        with torch.no_grad():
            direct = embedder.embed(wave[None])[0]
        np.testing.assert_allclose(cached[f"{split}/{k}"][i], direct, rtol=1e-4, atol=1e-5)

    # a second evaluation and the export read the caches (statistics and embeddings): computing would raise
    real_embed = Embedder.embed
    monkeypatch.setattr(Embedder, "embed", lambda self, w: (_ for _ in ()).throw(AssertionError("recomputed")))
    monkeypatch.setattr(
        "hear_diffbyola.tasks.embedders.task_norm_stats",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("stats recomputed")),
    )
    assert main(args) == 0
    out = tmp_path / "emb"
    assert (
        main(
            [
                "bgknown",
                "export-heareval",
                "--task",
                str(synthetic),
                "--model",
                str(weights),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    emb = task_embeddings(task, embedder, progress=False)
    folder = out / "bgknown-synthetic-diff-a"
    for split in ("train", "valid", "test"):
        n, d = json.loads((folder / f"{split}.embedding-dimensions.json").read_text())
        x = np.memmap(folder / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=(n, d))
        np.testing.assert_array_equal(x, emb[split]["mix"] - emb[split]["a"])
        labels = pickle.loads((folder / f"{split}.target-labels.pkl").read_bytes())
        assert labels == [[it.label] for it in task.items[split]]
        first = task.items[split][0].mix.name
        np.testing.assert_array_equal(np.load(folder / split / f"{first}.embedding.npy"), x[0])
    meta = json.loads((folder / "task_metadata.json").read_text())
    assert meta["task_name"] == "bgknown-synthetic-diff-a" and meta["split_mode"] == "trainvaltest"
    assert meta["norm"] == norm
    assert sorted(p.name for p in out.iterdir()) == [
        f"bgknown-synthetic-{c}" for c in ("diff-a", "diff-b", "diff-c", "mix")
    ]

    # --norm weights: the old behaviour, the file's statistics, in a cache entry of its own
    monkeypatch.setattr(Embedder, "embed", real_embed)
    assert main(args + ["--norm", "weights", "--json", str(tmp_path / "w.json")]) == 0
    plain = json.loads((tmp_path / "w.json").read_text())[0]
    assert plain["norm"] == {"requested": "weights", "source": "weights", "mean": -6.0, "std": 5.0, "clips": 0}
    assert plain["model_identity"] == ours(weights).identity != results[0]["model_identity"]
    assert cache_path(task, ours(weights)) != cache_path(task, embedder) and cache_path(task, ours(weights)).is_file()
    item = task.items["test"][1]
    wave, _ = sf.read(str(item.mix), dtype="float32")
    np.testing.assert_allclose(
        np.load(cache_path(task, ours(weights)))["test/mix"][1],
        ours(weights).embed(wave[None])[0],
        rtol=1e-4,
        atol=1e-5,
    )


def test_norm_stats_come_from_training_mixtures_only(synthetic, tmp_path):
    import shutil

    from hear_diffbyola.tasks.bgknown.features import normalised

    weights = tiny_weights(tmp_path / "tiny.safetensors")
    copy = tmp_path / "task"
    shutil.copytree(synthetic, copy, ignore=shutil.ignore_patterns("embeddings"))
    task = load_task(copy)
    assert train_audio(task) == [it.mix for s in ("train", "valid") for it in task.items[s]]

    def stats(cache):
        e = normalised(task, ours(weights), "task", cache_dir=tmp_path / cache)
        return e.norm.mean, e.norm.std

    before = stats("c1")
    assert before == pytest.approx(reference_norm(weights, train_audio(task)), rel=1e-6)
    for it in task.items["test"]:  # test audio changed beyond recognition: the statistics do not move
        sf.write(str(it.mix), np.random.default_rng(0).normal(0, 0.5, 16000).astype(np.float32), 16000)
        sf.write(str(it.refs["a"]), np.zeros(16000, np.float32), 16000)
    assert stats("c2") == before
    sf.write(str(task.items["valid"][0].mix), np.random.default_rng(1).normal(0, 0.5, 16000).astype(np.float32), 16000)
    assert stats("c3") != before  # a training clip did change them
    assert stats("c1") == before  # cached (keyed on the build): the file was not read again


FAKE_HEAR = """
import numpy as np
import torch

class Model(torch.nn.Module):
    sample_rate = 8000
    scene_embedding_size = 3

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

def load_model(model_file_path=""):
    return Model(float(open(model_file_path).read()))

def get_scene_embeddings(audio, model):
    # (B, N) -> (B, 3): length, scaled mean square, peak: easy to recompute independently
    n = torch.full((audio.shape[0],), float(audio.shape[1]))
    return torch.stack([n, model.scale * (audio ** 2).mean(dim=1), audio.abs().amax(dim=1)], dim=1)
"""


def test_any_hear_module_can_be_evaluated(synthetic, tmp_path, monkeypatch):
    install_module(monkeypatch, "fake_hear_bgknown", FAKE_HEAR)
    (tmp_path / "model.txt").write_text("2.0")
    task = load_task(synthetic)
    embedder = hear_module("fake_hear_bgknown", tmp_path / "model.txt")
    res = evaluate(task, embedder, seeds=(0,), config=LinearEvalConfig(max_epochs=5), progress=False)
    assert set(res["results"]) == {"mix", "a", "b", "c"} and res["embedding_dim"] == 3
    assert res["model"] == "fake_hear_bgknown:model" and res["model_identity"] == embedder.identity
    # a HEAR module cannot take the task's statistics; the results say it used its own
    assert res["norm"]["requested"] == "task" and res["norm"]["source"] == "hear-module" and res["norm"]["mean"] is None
    assert "the model's own" in markdown_table([res])
    emb = task_embeddings(task, embedder, progress=False)
    item = task.items["valid"][1]
    wave, _ = sf.read(str(item.refs["b"]), dtype="float64")
    wave8k = resample_poly(wave, 1, 2)  # the module asked for 8 kHz
    np.testing.assert_allclose(
        emb["valid"]["b"][1], [wave8k.size, 2.0 * np.mean(wave8k**2), np.abs(wave8k).max()], rtol=1e-4
    )
    # another model file is another cache entry, with its own embeddings
    (tmp_path / "model2.txt").write_text("3.0")
    other = hear_module("fake_hear_bgknown", tmp_path / "model2.txt")
    assert cache_path(task, other) != cache_path(task, embedder)
    emb3 = task_embeddings(task, other, progress=False)
    np.testing.assert_allclose(emb3["valid"]["b"][:, 1], 1.5 * emb["valid"]["b"][:, 1], rtol=1e-5)
    assert cache_path(task, other).is_file() and cache_path(task, embedder).is_file()
