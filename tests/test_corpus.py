import numpy as np
import pytest
import soundfile as sf
import torch

from hear_diffbyola.audio import read_audio, resample
from hear_diffbyola.corpus import CorpusError, CropDataset, FileCorpus, StepBatchSampler, fit_length, list_audio_files


def tone(sr, seconds, hz=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


@pytest.fixture
def audio_dir(tmp_path):
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    sf.write(d / "a.wav", tone(16000, 1.0), 16000)
    sf.write(d / "sub" / "b.flac", tone(44100, 2.0, channels=2), 44100)
    sf.write(d / "sub" / "c.ogg", tone(22050, 0.5), 22050)
    (d / "notes.txt").write_text("not audio")
    return d


def test_folder_is_scanned_recursively_with_any_rate_and_channels(audio_dir):
    corpus = FileCorpus(audio_dir, sample_rate=16000)
    assert [p.name for p in corpus.files] == ["a.wav", "b.flac", "c.ogg"]
    assert corpus.rates == [16000, 44100, 22050]
    rng = np.random.default_rng(0)
    seg = corpus.segment(1, 8000, rng)
    assert seg.dtype == np.float32 and seg.shape == (8000,)
    # a 440 Hz tone stays a 440 Hz tone after downmix + resampling
    spec = np.abs(np.fft.rfft(seg))
    assert abs(np.argmax(spec) * 16000 / 8000 - 440) <= 2
    short = corpus.segment(2, 16000, rng)  # 0.5 s file -> zero padded to 1 s
    assert short.shape == (16000,) and (short == 0).sum() >= 7000


def test_unreadable_files_are_counted_reported_and_bounded(audio_dir):
    (audio_dir / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(CorpusError, match=r"1 of 4 files \(25.0%\).*broken.wav.*max_bad_fraction"):
        FileCorpus(audio_dir, max_bad_fraction=0.1)
    corpus = FileCorpus(audio_dir, max_bad_fraction=0.5)
    assert len(corpus) == 3 and len(corpus.bad) == 1 and corpus.bad[0][0].endswith("broken.wav")
    assert "1 unreadable left out" in corpus.describe()


def test_empty_folder_and_missing_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no audio files .* under folder .*empty"):
        FileCorpus(tmp_path / "empty")
    with pytest.raises(CorpusError, match="does not exist"):
        FileCorpus(tmp_path / "nope")


def test_csv_and_txt_lists(audio_dir, tmp_path):
    (audio_dir / "list.txt").write_text("# comment\na.wav\n\nsub/c.ogg\n")
    assert [p.name for p in list_audio_files(audio_dir / "list.txt")] == ["a.wav", "c.ogg"]
    (audio_dir / "list.csv").write_text("label,path\nx,sub/b.flac\ny,a.wav\n")
    assert [p.name for p in list_audio_files(audio_dir / "list.csv")] == ["b.flac", "a.wav"]
    (tmp_path / "l.json").write_text("{}")
    with pytest.raises(CorpusError, match="expected a folder, a .txt or a .csv"):
        list_audio_files(tmp_path / "l.json")


def test_resample_and_read_audio(tmp_path):
    x = tone(48000, 1.0, hz=1000.0)
    y = resample(x, 48000, 16000)
    assert len(y) == 16000
    sf.write(tmp_path / "t.wav", x, 48000)
    z = read_audio(tmp_path / "t.wav", 16000, start=24000, frames=24000)
    assert len(z) == 8000


def test_fit_length_crops_and_pads():
    rng = np.random.default_rng(0)
    x = np.arange(10, dtype=np.float32)
    c = fit_length(x, 4, rng)
    assert len(c) == 4 and np.all(np.diff(c) == 1)
    p = fit_length(x, 15, rng)
    assert len(p) == 15 and p.sum() == x.sum()


def test_sampler_is_step_indexed_and_splits_ranks():
    full = StepBatchSampler(20, 8, seed=3, start=0, stop=6)
    batches = list(full)
    assert len(batches) == 6 and full.steps_per_epoch == 2
    # each epoch is a permutation prefix without repeats, epochs differ
    e0 = [i for b in batches[:2] for (_, _, i) in b]
    assert len(set(e0)) == 16 and {e for b in batches for (_, e, _) in b} == {0, 1, 2}
    # resuming at step 3 yields exactly the remaining batches
    assert list(StepBatchSampler(20, 8, seed=3, start=3, stop=6)) == batches[3:]
    # two ranks take disjoint halves of each global batch
    r0 = list(StepBatchSampler(20, 8, 3, 0, 6, rank=0, world_size=2))
    r1 = list(StepBatchSampler(20, 8, 3, 0, 6, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == batches
    with pytest.raises(CorpusError, match="larger than the corpus"):
        StepBatchSampler(4, 8, 0, 0, 1)


class _Source:
    def __len__(self):
        return 3

    def segment(self, index, n, rng):
        return rng.standard_normal(n).astype(np.float32) + index

    def describe(self):
        return "toy"


def test_crop_dataset_items_depend_only_on_their_key():
    ds = CropDataset(_Source(), 100, seed=1)
    a = ds[(0, 2, 1)]
    _ = ds[(0, 0, 0)]
    assert torch.equal(ds[(0, 2, 1)], a) and a.dtype == torch.float32
    assert not torch.equal(ds[(0, 3, 1)], a)
    assert not torch.equal(CropDataset(_Source(), 100, seed=2)[(0, 2, 1)], a)
