"""hear_diffbyola.blas: OpenBLAS's sgemm next to torch's, chosen per shape by timing, for single-threaded callers."""

from __future__ import annotations

import platform
import threading
import time

import pytest
import torch

from hear_diffbyola import blas, embed, runtime


@pytest.fixture
def fresh(monkeypatch):
    """blas in auto mode with no choice made yet; put back afterwards."""
    monkeypatch.setattr(blas, "MODE", "auto")
    monkeypatch.setattr(blas, "_choice", {})
    return blas


def operands(M: int, K: int, N: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, generator=g), torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)


def reference(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (bias.double() + x.double() @ w.double()).float()


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"), reason="no scipy-openblas32 wheel"
)
def test_the_declared_wheel_loads():
    assert blas.openblas() is not None  # a dependency of the package where wheels exist (pyproject.toml)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (500, 1024, 2048), (37, 130, 65)])
def test_openblas_addmm_equals_the_float64_product(shape):
    if blas.openblas() is None:
        pytest.skip("scipy-openblas32 not installed")
    bias, x, w = operands(*shape)
    kept = bias.clone()
    got = blas._openblas_addmm(bias, x, w)
    assert torch.equal(bias, kept)  # the bias is read, never written (at M = 1 it is one row of the output)
    assert got.shape == (shape[0], shape[2]) and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, reference(bias, x, w), rtol=1e-5, atol=1e-4 * shape[1] ** 0.5)


def test_a_row_strided_input_is_read_through_its_stride():
    if blas.openblas() is None:
        pytest.skip("scipy-openblas32 not installed")
    bias, x, w = operands(20, 16, 8)
    wide = torch.zeros(20, 40)
    wide[:, 3:19] = x
    view = wide[:, 3:19]  # rows 40 apart: as a slice of a wider map reaches the fc
    assert not view.is_contiguous() and blas._eligible(bias, view, w)
    torch.testing.assert_close(blas._openblas_addmm(bias, view, w), reference(bias, x, w), rtol=1e-5, atol=1e-4)


def test_two_threads_may_call_it_at_once():
    if blas.openblas() is None:
        pytest.skip("scipy-openblas32 not installed")
    cases = [operands(300, 256, 512, seed=s) for s in range(2)]
    expected = [reference(*c) for c in cases]
    got: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(5):
            got[i].append(blas._openblas_addmm(*cases[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(got[i]) == 5
        for out in got[i]:
            torch.testing.assert_close(out, expected[i], rtol=1e-5, atol=1e-3)


def test_auto_times_both_once_per_shape_and_keeps_the_faster(fresh, monkeypatch):
    calls = {"openblas": 0}

    def slow_openblas(bias, x, w):  # a stand-in that is always slower: auto must keep torch
        calls["openblas"] += 1
        time.sleep(0.02)
        return torch.addmm(bias, x, w)

    monkeypatch.setattr(blas, "openblas", lambda: object())
    monkeypatch.setattr(blas, "_openblas_addmm", slow_openblas)
    bias, x, w = operands(100, 32, 16)
    out = blas.addmm(bias, x, w)
    torch.testing.assert_close(out, reference(bias, x, w), rtol=1e-5, atol=1e-4)
    assert calls["openblas"] == blas._TRIALS
    assert blas.choices() == {(128, 32, 16): "torch"}  # M = 100 rounds up to 128
    for m in (65, 100, 128):  # same bucket: no more timing, no openblas
        blas.addmm(*operands(m, 32, 16)[:1], torch.randn(m, 32), w)
    assert calls["openblas"] == blas._TRIALS
    blas.addmm(bias, torch.randn(129, 32), w)  # a new bucket is timed on its own
    assert calls["openblas"] == 2 * blas._TRIALS and set(blas.choices()) == {(128, 32, 16), (256, 32, 16)}


def test_auto_keeps_openblas_where_it_is_faster(fresh, monkeypatch):
    if blas.openblas() is None:
        pytest.skip("scipy-openblas32 not installed")
    real = torch.addmm

    def slow_torch(*args, **kwargs):
        time.sleep(0.02)
        return real(*args, **kwargs)

    bias, x, w = operands(64, 32, 16)
    monkeypatch.setattr(torch, "addmm", slow_torch)
    blas.addmm(bias, x, w)
    monkeypatch.setattr(torch, "addmm", real)
    assert blas.choices() == {(64, 32, 16): "openblas"}
    calls = []
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.testing.assert_close(blas.addmm(bias, x, w), reference(bias, x, w), rtol=1e-5, atol=1e-4)
    assert not calls  # served by OpenBLAS from now on


def test_concurrent_first_calls_make_one_decision(fresh, monkeypatch):
    timed = []
    real = blas._faster

    def counting(fns, trials=blas._TRIALS):
        timed.append(1)
        return real(fns, trials)

    monkeypatch.setattr(blas, "_faster", counting)
    bias, x, w = operands(200, 64, 64)
    outs = runtime.parallel_map(lambda _: blas.addmm(bias, x, w), [0, 1, 2, 3], 2)
    assert len(timed) == 1 and len(blas.choices()) == 1
    assert all(torch.equal(o, outs[0]) for o in outs)  # one library served every call of the shape


def test_pinned_modes(monkeypatch):
    bias, x, w = operands(10, 8, 4)
    used = []
    monkeypatch.setattr(blas, "_openblas_addmm", lambda b, x, w: used.append(1) or torch.addmm(b, x, w))
    monkeypatch.setattr(blas, "_choice", {})
    monkeypatch.setattr(blas, "MODE", "torch")
    blas.addmm(bias, x, w)
    assert not used and not blas.choices()
    if blas.openblas() is not None:
        monkeypatch.setattr(blas, "MODE", "openblas")
        blas.addmm(bias, x, w)
        assert used == [1] and not blas.choices()
    monkeypatch.setattr(blas, "MODE", "mkl")
    with pytest.raises(blas.BlasError, match="HEAR_DIFFBYOLA_BLAS must be one of"):
        blas.addmm(bias, x, w)


def test_without_the_wheel_it_is_torch_and_pinning_openblas_says_how_to_fix(fresh, monkeypatch):
    monkeypatch.setattr(blas, "_lib", [None])
    bias, x, w = operands(10, 8, 4)
    torch.testing.assert_close(blas.addmm(bias, x, w), torch.addmm(bias, x, w), rtol=0, atol=0)
    assert not blas.choices()
    monkeypatch.setattr(blas, "MODE", "openblas")
    with pytest.raises(blas.BlasError, match="pip install scipy-openblas32"):
        blas.addmm(bias, x, w)


@pytest.mark.parametrize(
    "case",
    [
        lambda b, x, w: (b.double(), x.double(), w.double()),  # float64
        lambda b, x, w: (b, x, w.t().contiguous().t()),  # a transposed weight
        lambda b, x, w: (b, x.t().contiguous().t(), w),  # a column-major input
        lambda b, x, w: (b, x.requires_grad_(), w),  # autograd: torch differentiates, this does not
        lambda b, x, w: (b[:1], x, w),  # a broadcast bias
        lambda b, x, w: (b, x[:1].expand(12, 8), w),  # rows that overlap (stride 0): no valid lda
    ],
)
def test_what_it_cannot_take_goes_to_torch(case, monkeypatch):
    monkeypatch.setattr(blas, "MODE", "openblas" if blas.openblas() is not None else "auto")
    monkeypatch.setattr(blas, "_openblas_addmm", lambda *a: pytest.fail("not eligible"))
    bias, x, w = case(*operands(12, 8, 6))
    torch.testing.assert_close(blas.addmm(bias, x, w), torch.addmm(bias, x, w), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_embeddings_on_the_workers_with_openblas_match_torchs_and_the_module_path(arch, monkeypatch):
    if blas.openblas() is None:
        pytest.skip("scipy-openblas32 not installed")
    from test_inference import assert_exact, make_model, noise, reference_dense, reference_frames

    monkeypatch.setattr(embed, "WORKERS", 2)  # tiles on single-threaded workers, whatever the machine
    model, w = make_model(arch), noise(3, 6.3, seed=14)
    monkeypatch.setattr(blas, "MODE", "torch")
    scene_torch = embed.clip_embedding(model, w, chunk_frames=64, tile_frames=300)
    monkeypatch.setattr(blas, "MODE", "openblas")
    calls = []
    real = blas._openblas_addmm
    monkeypatch.setattr(blas, "_openblas_addmm", lambda *a: calls.append(threading.current_thread().name) or real(*a))
    scene = embed.clip_embedding(model, w, chunk_frames=64, tile_frames=300)
    (dense,), _ = embed.dense_frames(model, w, chunk_frames=64, tile_frames=300)
    assert calls and all(name.startswith("hear-diffbyola") for name in calls)  # the workers' fc, only theirs
    torch.testing.assert_close(scene, scene_torch, rtol=1e-5, atol=1e-5)
    frames = reference_frames(model, w)
    assert_exact(scene, frames.mean(1) + frames.amax(1))
    assert_exact(dense, reference_dense(model, w))
