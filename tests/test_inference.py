"""The fast frozen inference path (hear_diffbyola.inference) against the unoptimised module path.

References are computed here with the encoder modules themselves (eval mode, whole clip, no chunking),
on a deep copy, so the model under test is never switched to eval by the test either.
"""

import copy
import threading

import pytest
import torch
import torch.nn.functional as F

import hear_diffbyola
from hear_diffbyola import embed, encoder
from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022
from hear_diffbyola.frontend import Frontend, FrontendConfig
from hear_diffbyola.inference import inference_encoder
from hear_diffbyola.weights import PretrainedModel


def make_model(arch: str, seed: int = 0) -> PretrainedModel:
    """Shipped layouts (v2 d = 3072, v1 d = 512), BN statistics far from identity, official front ends."""
    torch.manual_seed(seed)
    enc = AudioNTT2022(64, 3072) if arch == "v2" else AudioNTT2020(64, 512)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    fe = FrontendConfig.byola_v2() if arch == "v2" else FrontendConfig.byola_v1()
    model = PretrainedModel(Frontend(fe, -4.0, 3.0), enc, {})
    model.scene_embedding_size = model.timestamp_embedding_size = enc.d
    return model


def noise(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, int(16000 * seconds), generator=torch.Generator().manual_seed(seed)) * 2 - 1) * 0.3


def reference_frames(model: PretrainedModel, wave: torch.Tensor, shift: int = 0) -> torch.Tensor:
    """The unoptimised path: the eval-mode modules on the whole (shifted) log-mel: (B, T', d)."""
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        return ref.encoder.frames(ref.frontend(wave)[..., shift:])


def reference_dense(model: PretrainedModel, wave: torch.Tensor) -> torch.Tensor:
    """40 ms frames: v2 one native pass; v1 its pass and the pass on the log-mel shifted by 4, interleaved."""
    if model.encoder.time_reduction == 4:
        return reference_frames(model, wave)
    a, b = reference_frames(model, wave), reference_frames(model, wave, 4)
    out = torch.empty(a.shape[0], a.shape[1] + b.shape[1], a.shape[2])
    out[:, 0::2], out[:, 1::2] = a, b
    return out


def assert_exact(fast: torch.Tensor, ref: torch.Tensor) -> None:
    assert fast.shape == ref.shape
    cos = F.cosine_similarity(
        fast.reshape(-1, fast.shape[-1]).double(), ref.reshape(-1, ref.shape[-1]).double(), dim=-1
    )
    assert cos.min().item() > 0.9999
    assert (fast - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


@pytest.fixture(scope="module", params=["v2", "v1"])
def model(request):
    return make_model(request.param)


@pytest.mark.parametrize("seconds,tile,chunk", [(10.0, 1024, 512), (7.31, 1024, 9), (3.3, 10**6, 10**6), (0.2, 64, 3)])
def test_scene_and_dense_frames_match_the_module_path(model, seconds, tile, chunk):
    w = noise(3, seconds, seed=int(seconds * 10))
    frames = reference_frames(model, w)
    assert_exact(embed.clip_embedding(model, w, chunk_frames=chunk, tile_frames=tile), frames.mean(1) + frames.amax(1))
    (dense,), times = embed.dense_frames(model, w, chunk_frames=chunk, tile_frames=tile)
    ref = reference_dense(model, w)
    assert len(times) == dense.shape[1] == ref.shape[1]
    assert_exact(dense, ref)


@pytest.mark.parametrize("slice_elements", [1, 3 * 64 * 64 * 7])  # slices of 2 log-mel frames; of 6 (uneven end)
def test_first_block_in_slices_equals_the_whole_map_pooled(model, slice_elements, monkeypatch):
    monkeypatch.setattr(encoder, "POOLED_SLICE_ELEMENTS", slice_elements)
    fast = inference_encoder(model.encoder)
    x = model.frontend(noise(3, 0.5, seed=3)).transpose(2, 3).contiguous(memory_format=torch.channels_last)
    assert x.shape[2] % 2 == 1  # an odd last frame, dropped by the pool
    whole = F.max_pool2d(fast._conv1(x), 2).relu_()  # bias before the pool, one matmul with it (addmm)
    torch.testing.assert_close(fast._conv1_pooled(x), whole, rtol=1e-6, atol=1e-6)


def test_hear_api_matches_the_module_path(model):
    w = noise(2, 4.0, seed=5)
    frames = reference_frames(model, w)
    assert_exact(hear_diffbyola.get_scene_embeddings(w, model), frames.mean(1) + frames.amax(1))
    emb, _ = hear_diffbyola.get_timestamp_embeddings(w, model)
    ref = reference_dense(model, w)
    # frames whose receptive field stays clear of the clip's end (HEAR pads the end far enough for the last one)
    assert_exact(emb[:, : ref.shape[1] - 3], ref[:, : ref.shape[1] - 3])


def test_layer_frames_match_the_module_path(model):
    x = model.frontend(noise(2, 2.0, seed=7))  # (2, 1, 64, 201)
    ref = copy.deepcopy(model.encoder).eval()
    with torch.no_grad():
        expected = ref.layer_frames(x)
    got = inference_encoder(model.encoder).layer_frames(x.transpose(2, 3))
    assert len(got) == len(expected) == 4
    for g, e in zip(got, expected):
        assert_exact(g, e)


def test_reflect_segments_equal_padding_the_whole_clip():
    w = torch.randn(2, 3000)
    padded = F.pad(w[:, None], (512, 512), mode="reflect")[:, 0]
    for a, b in [(0, 1), (0, 5), (3, 9), (8, 19), (0, 19)]:  # 19 = 1 + 3000 // 160 log-mel frames
        seg = embed._segment(w, a, b, 160, 1024)
        assert torch.equal(seg, padded[:, a * 160 : (b - 1) * 160 + 1024])
    inside = embed._segment(w, 5, 9, 160, 1024)
    assert inside.data_ptr() == w[:, 5 * 160 - 512].data_ptr()  # a view inside the clip, no copy


def state_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().clone().numpy().tobytes() for k, v in model.state_dict().items()}


def test_a_model_in_train_mode_gives_eval_embeddings_and_is_never_changed(model):
    w = noise(2, 2.0, seed=3)
    expected = reference_frames(model, w)
    before = state_bytes(model)
    model.train()
    try:
        scene = hear_diffbyola.get_scene_embeddings(w, model)
        emb, _ = hear_diffbyola.get_timestamp_embeddings(w, model)
        assert model.training and all(m.training for m in model.modules())  # the caller's mode, untouched
    finally:
        model.eval()
    assert state_bytes(model) == before  # BatchNorm running statistics byte-identical
    assert_exact(scene, expected.mean(1) + expected.amax(1))
    assert_exact(emb[:, :20], reference_dense(model, w)[:, :20])


def test_concurrent_calls_on_a_train_mode_model_agree_and_change_nothing():
    model = make_model("v1", seed=2)
    waves = [noise(2, 1.5, seed=s) for s in range(4)]
    expected = []
    for w in waves:
        frames = reference_frames(model, w)
        expected.append(frames.mean(1) + frames.amax(1))
    before = state_bytes(model)
    model.train()
    results, errors = {}, []

    def work(i: int) -> None:
        try:
            for r in range(3):
                j = (i + r) % len(waves)
                results[(i, r)] = (
                    j,
                    hear_diffbyola.get_scene_embeddings(waves[j], model),
                    hear_diffbyola.get_timestamp_embeddings(waves[j], model)[0],
                )
        except Exception as e:  # noqa: BLE001 - any failure in a thread is reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    assert model.training and state_bytes(model) == before
    stamps = {}
    for j, scene, emb in results.values():
        assert_exact(scene, expected[j])
        stamps.setdefault(j, emb)
        assert torch.equal(emb, stamps[j])  # every thread, the same frames


def test_the_copy_is_cached_and_follows_new_weights():
    model = make_model("v2", seed=4)
    w = noise(1, 1.0, seed=9)
    fast = inference_encoder(model.encoder)
    assert inference_encoder(model.encoder) is fast  # built once per weights state
    other = make_model("v2", seed=5)
    model.encoder.load_state_dict(other.encoder.state_dict())  # in-place copies: same tensors, new versions
    assert inference_encoder(model.encoder) is not fast
    torch.testing.assert_close(
        hear_diffbyola.get_scene_embeddings(w, model), hear_diffbyola.get_scene_embeddings(w, other)
    )
    with torch.no_grad():
        model.encoder.features[1].running_mean.add_(1.0)  # any in-place change of a buffer, too
    frames = reference_frames(model, w)
    assert_exact(embed.clip_embedding(model, w), frames.mean(1) + frames.amax(1))
    fc = model.encoder.fc[3]  # replaced parameters (new tensors): the fc part becomes ReLU(0 x + 1) = 1
    fc.weight, fc.bias = torch.nn.Parameter(torch.zeros_like(fc.weight)), torch.nn.Parameter(torch.ones_like(fc.bias))
    scene = embed.clip_embedding(model, w)
    assert torch.equal(
        scene[:, model.encoder.config.conv_d :], torch.full_like(scene[:, 3072 - 2048 :], 2.0)
    )  # mean + max
    frames = reference_frames(model, w)
    assert_exact(scene, frames.mean(1) + frames.amax(1))
