"""The compiled first block (hear_diffbyola/fused.py) against the modules and the uncompiled path.

conftest.py turns compiling off for the rest of the suite; each test here turns it on, so each compiles
its own shapes (a few seconds each with inductor's cache warm)."""

import copy
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_objectives import small_learner, views

from hear_diffbyola import fused, runtime
from hear_diffbyola.encoder import conv3x3_one_channel_pooled
from hear_diffbyola.learner import _PooledFirstConv, first_block


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setattr(fused, "ENABLED", True)
    monkeypatch.setattr(fused, "_failed", [])
    monkeypatch.setattr(fused, "_compiled", {})
    monkeypatch.setattr(fused, "_warm", set())


def block_modules(seed=3):
    torch.manual_seed(seed)
    conv, bn, pool = torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.MaxPool2d(2)
    return conv.double(), bn.double(), pool


def test_compiled_pooled_conv_equals_the_slice_path_and_records_the_window_maximum(compiled):
    padded = F.pad(torch.randn(3, 64, 21, generator=torch.Generator().manual_seed(0)), (1, 1, 1, 1))
    taps = torch.randn(9, 64, generator=torch.Generator().manual_seed(1))
    ref = conv3x3_one_channel_pooled(padded, taps)  # (3, 32, 10, 64): the odd last column dropped
    torch.testing.assert_close(fused.pooled(padded, taps), ref, rtol=1e-5, atol=1e-5)
    out, choice = fused.pooled_and_choice(padded, taps)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the choice is max_pool2d's index within its window, computed here from the whole conv map
    y = F.conv2d(padded[:, None], taps.t().reshape(64, 1, 3, 3))  # (3, 64, 64, 21)
    _, idx = F.max_pool2d(y, 2, return_indices=True)  # flat index h * 21 + w into the map
    h, w = idx // 21, idx % 21
    expect = ((h % 2) * 2 + w % 2).permute(0, 2, 3, 1).float()
    assert (choice == expect).float().mean() > 0.9999  # a near-tie may round the other way in float32


def test_compiled_first_block_matches_the_modules_on_ties_values_gradients_statistics(compiled):
    # piecewise-constant input: every pool window inside a constant patch has 4 equal conv outputs, where
    # max_pool2d passes the gradient to the first; float64, so only real ties are ties
    conv, bn, pool = block_modules()
    ref_conv, ref_bn = copy.deepcopy(conv), copy.deepcopy(bn)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 16, 24, generator=g, dtype=torch.float64).repeat_interleave(4, 2).repeat_interleave(4, 3)
    grad = torch.randn(2, 64, 32, 48, generator=g, dtype=torch.float64)
    y = first_block(conv, bn, pool, x)
    y_ref = torch.relu(pool(ref_bn(ref_conv(x))))
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    (y * grad).sum().backward()
    (y_ref * grad).sum().backward()
    for a, b in ((conv.weight, ref_conv.weight), (bn.weight, ref_bn.weight), (bn.bias, ref_bn.bias)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, rtol=1e-12, atol=1e-12)
    assert "choice" in fused._compiled and "taps_grad" in fused._compiled  # it did run compiled


def test_taps_gradient_of_the_compiled_path_equals_the_slice_path(compiled, monkeypatch):
    padded = F.pad(torch.randn(4, 64, 30, generator=torch.Generator().manual_seed(5)), (1, 1, 1, 1))
    taps = torch.randn(9, 64, generator=torch.Generator().manual_seed(6))
    grad = torch.randn(4, 32, 15, 64, generator=torch.Generator().manual_seed(7))
    grads = {}
    for on in (True, False):
        monkeypatch.setattr(fused, "ENABLED", on)
        t = taps.clone().requires_grad_()
        (_PooledFirstConv.apply(padded, t) * grad).sum().backward()
        grads[on] = t.grad
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-3)


def test_a_failed_compile_warns_once_and_training_goes_on_uncompiled(compiled, monkeypatch):
    def broken(fn, **kw):
        def call(*a):
            raise RuntimeError("no C++ compiler found\nsecond line")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    learner, v = small_learner(0.0), views()
    eager = copy.deepcopy(learner)
    torch.manual_seed(0)  # the same dropout draws for both
    with pytest.warns(RuntimeWarning, match="no C.. compiler found.*uncompiled path"):
        loss = learner(*v)["loss"]
    assert fused._failed and not fused.usable(v[0].device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        learner(*v)
    monkeypatch.setattr(fused, "ENABLED", False)
    torch.manual_seed(0)
    torch.testing.assert_close(loss, eager(*v)["loss"], rtol=0, atol=0)


def test_compiled_training_steps_repeat_bit_for_bit_and_follow_the_uncompiled_ones(compiled, monkeypatch):
    # resume relies on a step being a function of its state: two runs from one state give the same bits.
    # SGD, not Adam: Adam turns the rounding noise of a ~0 gradient (the conv bias's) into steps of lr.
    def steps(on):
        monkeypatch.setattr(fused, "ENABLED", on)
        learner = small_learner(0.5, seed=2)
        opt = torch.optim.SGD(learner.parameters(), lr=0.05)
        torch.manual_seed(11)
        for s in range(2):
            v1, v2 = views(seed=20 + s)
            loss = learner(v1, v2, torch.full((4,), 0.5))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            learner.update_target()
        return torch.cat([p.detach().flatten() for p in learner.state_dict().values() if p.is_floating_point()])

    a, b, eager = steps(True), steps(True), steps(False)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, eager, rtol=1e-4, atol=1e-5)


def test_a_backward_whose_kernel_fails_to_compile_still_gives_the_gradient(compiled):
    # the forward compiled (its choices saved), then the gradient kernel fails: its eager form is used
    padded = F.pad(torch.randn(2, 64, 12, generator=torch.Generator().manual_seed(8)), (1, 1, 1, 1))
    taps = torch.randn(9, 64, generator=torch.Generator().manual_seed(9))
    grad = torch.randn(2, 32, 6, 64, generator=torch.Generator().manual_seed(10))
    _, choice = fused.pooled_and_choice(padded, taps)

    def broken(*a):
        raise RuntimeError("codegen failed")

    fused._compiled["taps_grad"] = broken
    with pytest.warns(RuntimeWarning, match="codegen failed"):
        got = fused.taps_grad(padded, choice, grad)
    fused._failed.clear()
    fused._compiled.clear()
    t = taps.clone().requires_grad_()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, "ENABLED", False)
        (_PooledFirstConv.apply(padded, t) * grad).sum().backward()
    torch.testing.assert_close(got, t.grad, rtol=1e-4, atol=1e-3)


def test_a_cpu_pretraining_says_it_compiles_and_uses_the_compiled_block(compiled, tmp_path, capsys):
    from test_train import tiny_config

    from hear_diffbyola.train import pretrain

    pretrain(tiny_config("train.steps=1", "train.device=cpu"), tmp_path / "r", progress=False)
    assert "the first step compiles the first conv block" in capsys.readouterr().out
    assert {"choice", "pooled", "taps_grad"} <= set(fused._compiled) and not fused._failed


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the inference kernel serves single-threaded callers (the fast path's workers)
    yield
    torch.set_num_threads(saved)


def test_inference_kernel_equals_the_slice_path_for_every_batch_and_length_with_one_compile(compiled, one_thread):
    from torch._dynamo.utils import counters

    taps = torch.randn(9, 64, generator=torch.Generator().manual_seed(12))
    bias = torch.randn(64, generator=torch.Generator().manual_seed(13))
    graphs = None
    for B, H, W in [(2, 40, 64), (1, 41, 64), (3, 9, 64), (5, 128, 64), (1, 8, 64), (2, 7, 64)]:
        x = torch.randn(B, H, W, generator=torch.Generator().manual_seed(B * H))
        got = fused.pooled_relu(x, taps, bias)
        ref = conv3x3_one_channel_pooled(F.pad(x, (1, 1, 1, 1)), taps).add_(bias).relu_()
        assert got.shape == ref.shape == (B, H // 2, W // 2, 64) and got.is_contiguous()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        if graphs is None:  # after the first call's compile, no other shape compiles again
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs


def test_inference_kernel_is_left_to_the_slice_path_with_several_threads(compiled):
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert fused.pooled_relu(torch.randn(1, 8, 64), torch.randn(9, 64), torch.randn(64)) is None
    finally:
        torch.set_num_threads(saved)
    assert "pooled_relu" not in fused._compiled


def test_inference_falls_back_to_the_slice_path_when_its_kernel_fails_to_compile(compiled, one_thread, monkeypatch):
    from test_inference import make_model, noise

    from hear_diffbyola.inference import inference_encoder

    def broken(fn, **kw):
        def call(*a):
            raise RuntimeError("inductor codegen failed")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = make_model("v2")
    fast = inference_encoder(model.encoder)
    x = model.frontend(noise(2, 0.5, seed=15)).transpose(2, 3).contiguous(memory_format=torch.channels_last)
    with pytest.warns(RuntimeWarning, match="inductor codegen failed.*uncompiled path"):
        got = runtime.parallel_map(fast._conv1_pooled, [x, x], 2)  # on the workers, where it would compile
    monkeypatch.setattr(fused, "ENABLED", False)
    for g in got:
        torch.testing.assert_close(g, fast._conv1_pooled(x), rtol=0, atol=0)


def test_only_the_fast_paths_workers_run_the_inference_kernel(compiled, one_thread):
    # a single-threaded caller of its own (a forked DataLoader worker, say) keeps the slice path
    from test_inference import make_model, noise

    from hear_diffbyola.inference import inference_encoder

    model = make_model("v2")
    fast = inference_encoder(model.encoder)
    x = model.frontend(noise(1, 0.5, seed=16)).transpose(2, 3).contiguous(memory_format=torch.channels_last)
    fast._conv1_pooled(x)
    assert "pooled_relu" not in fused._compiled


@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_embeddings_on_workers_with_the_compiled_first_block_match_the_module_path(compiled, arch, monkeypatch):
    from test_inference import assert_exact, make_model, noise, reference_dense, reference_frames

    from hear_diffbyola import embed

    monkeypatch.setattr(embed, "WORKERS", 2)  # tiles on single-threaded workers, whatever the machine
    model, w = make_model(arch), noise(3, 6.3, seed=14)
    frames = reference_frames(model, w)
    assert_exact(embed.clip_embedding(model, w, chunk_frames=64, tile_frames=300), frames.mean(1) + frames.amax(1))
    (dense,), _ = embed.dense_frames(model, w, chunk_frames=64, tile_frames=300)
    assert_exact(dense, reference_dense(model, w))
    assert "pooled_relu" in fused._warm  # the workers ran the compiled kernel


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_a_held_compile_lock():
    with fused._first_call:  # held at the fork, as a compiling worker of the parent might hold it
        pid = os.fork()
        if pid == 0:  # the child: no torch ops here
            os._exit(0 if fused._first_call.acquire(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
