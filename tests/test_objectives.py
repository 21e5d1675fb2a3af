import copy
import math

import pytest
import torch

from hear_diffbyola.encoder import AudioNTT2020, AudioNTT2022
from hear_diffbyola.learner import MLP, DiffBYOLA, LearnerConfig
from hear_diffbyola.objectives import (
    byol_loss,
    byol_regression_loss,
    diff_loss,
    difference_embedding,
    log_mixup_exp,
    mix_in_batch,
    sample_gamma,
    shift,
    total_loss,
)


def test_shift_rolls_batch_by_one():
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert shift(x).flatten().tolist() == [2.0, 3.0, 4.0, 1.0]


def test_mix_formula_by_hand():
    # w_i = log(g_i exp(v_{i+1}) + (1 - g_i) exp(v_i))
    v = torch.tensor([0.0, 1.0, -2.0]).view(3, 1, 1, 1)
    g = torch.tensor([0.4, 0.5, 0.6])
    w = mix_in_batch(v, g).flatten().tolist()
    expected = [
        math.log(0.4 * math.e**1 + 0.6 * math.e**0),
        math.log(0.5 * math.e**-2 + 0.5 * math.e**1),
        math.log(0.6 * math.e**0 + 0.4 * math.e**-2),
    ]
    assert w == pytest.approx(expected, rel=1e-6)


def test_log_mixup_exp_edges_and_large_values():
    a, b = torch.full((2, 3), 80.0), torch.full((2, 3), -5.0)
    torch.testing.assert_close(log_mixup_exp(a, b, 1.0), a)
    torch.testing.assert_close(log_mixup_exp(a, b, 0.0), b)
    out = log_mixup_exp(a, b, 0.5)  # exp(80) overflows float32; logaddexp must not
    assert torch.isfinite(out).all()
    assert out[0, 0].item() == pytest.approx(80 + math.log(0.5), rel=1e-6)


def test_gamma_range():
    g = sample_gamma(10000, generator=torch.Generator().manual_seed(0))
    assert 0.4 <= g.min() and g.max() <= 0.6 and abs(g.mean().item() - 0.5) < 0.01


def test_difference_embedding_by_hand():
    f_w = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    f_v = torch.tensor([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])
    g = torch.tensor([0.5, 0.4, 0.6])
    # y_hat_i = f_w_i - g_i * f_v_{i+1}
    expected = torch.tensor([[1 - 0.0, 1 - 5.0], [2 - 2.0, 2 - 2.0], [3 - 6.0, 3 - 0.0]])
    torch.testing.assert_close(difference_embedding(f_w, f_v, g), expected)


def test_regression_loss_is_two_minus_two_cos():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    z = torch.tensor([[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    assert byol_regression_loss(p, z).tolist() == pytest.approx([2.0, 0.0, 4.0], abs=1e-6)
    p1, p2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    z1, z2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    # view 1 vs target 2: cos=0 -> 2; view 2 vs target 1: cos=1/sqrt2 -> 2 - sqrt2; mean of both
    assert byol_loss(p1, p2, z1, z2).item() == pytest.approx((2.0 + 2 - math.sqrt(2)) / 2, abs=1e-6)
    assert diff_loss(p1, z2).item() == pytest.approx(2.0)


def test_total_loss_weights_and_validation():
    lb, ld = torch.tensor(2.0), torch.tensor(1.0)
    assert total_loss(lb, ld, 0.2).item() == pytest.approx(0.8 * 2 + 0.2 * 1)
    assert total_loss(lb, None, 0.0).item() == 2.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        total_loss(lb, ld, 1.5)
    with pytest.raises(ValueError, match=r"learner.lam"):
        LearnerConfig(lam=-0.1)


def small_learner(lam, seed=0, arch="audiontt2022"):
    torch.manual_seed(seed)
    enc = AudioNTT2022(64, 1088, hidden=48) if arch == "audiontt2022" else AudioNTT2020(64, 64)
    return DiffBYOLA(enc, LearnerConfig(lam=lam, proj_hidden=32, proj_dim=16))


def views(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 1, 64, 16, generator=g), torch.randn(4, 1, 64, 16, generator=g)


def byol_pytorch_reference(learner, v1, v2):
    """BYOL-A's step as byol-pytorch's BYOL.forward computes it, written out here from its published
    behaviour: online encoder+projector on each view separately, predictor on each, target encoder+
    projector on each view separately under no_grad; loss = mean over the batch of the *sum* of the two
    directions of 2 - 2 cos."""

    def loss_fn(x, y):
        x, y = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
        return 2 - 2 * (x * y).sum(dim=-1)

    online_proj_one = learner.projector(learner.encoder(v1))
    online_proj_two = learner.projector(learner.encoder(v2))
    online_pred_one, online_pred_two = learner.predictor(online_proj_one), learner.predictor(online_proj_two)
    with torch.no_grad():
        target_proj_one = learner.target_projector(learner.target_encoder(v1))
        target_proj_two = learner.target_projector(learner.target_encoder(v2))
    loss_one = loss_fn(online_pred_one, target_proj_two.detach())
    loss_two = loss_fn(online_pred_two, target_proj_one.detach())
    return (loss_one + loss_two).mean()


@pytest.mark.parametrize("arch", ["audiontt2022", "audiontt2020"])
def test_lambda_zero_step_is_byol_pytorch_step(arch):
    # Same loss (ours is the mean of the two directions: half byol-pytorch's sum) and the same gradients
    # (half as well), in train mode: BatchNorm batch statistics and dropout draws as byol-pytorch has them.
    # In float64, so that what is compared is the computation, not float32 rounding (our first conv is a
    # matmul, the reference's the module; BatchNorm's backward amplifies their rounding differences). The
    # cosine losses stay float32 by design (objectives.byol_regression_loss), hence rtol 1e-5, not 1e-12.
    ours = small_learner(0.0, arch=arch).train().double()
    ref = copy.deepcopy(ours)
    v1, v2 = (v.double() for v in views())
    torch.manual_seed(5)
    out = ours(v1, v2)
    out["loss"].backward()
    torch.manual_seed(5)
    expected = byol_pytorch_reference(ref, v1, v2)
    expected.backward()
    assert out["loss"].item() == pytest.approx(expected.item() / 2, rel=1e-5)
    assert "l_diff" not in out
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(2 * p.grad, grads[name].grad, rtol=1e-5, atol=1e-6, msg=name)
    # BN running statistics moved exactly as in the reference (one update per view, online and target)
    for (name, b), (_, b_ref) in zip(ours.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, b_ref, msg=name)
    assert not any(p.requires_grad for p in ours.diff_predictor.parameters())


def test_lambda_zero_runs_no_difference_forward_and_each_view_alone():
    learner = small_learner(0.0)
    calls = []
    learner.encoder.features[5].register_forward_hook(
        lambda m, i, o: calls.append(i[0].shape[0])
    )  # 2nd BatchNorm: once a pass
    learner(*views())
    assert calls == [4, 4]  # one online pass per view, nothing else


def test_lambda_positive_runs_the_difference_branch_and_weights_losses():
    learner = small_learner(0.5)
    calls = []
    learner.encoder.features[5].register_forward_hook(
        lambda m, i, o: calls.append(i[0].shape[0])
    )  # 2nd BatchNorm: once a pass
    v1, v2 = views()
    out = learner(v1, v2, gamma=torch.full((4,), 0.5))
    assert calls == [4, 4, 4]  # v1, v2 and the mix w, each a pass of its own
    head_calls = []
    learner.projector.net[1].register_forward_hook(lambda m, i, o: head_calls.append(i[0].shape[0]))
    learner(v1, v2, gamma=torch.full((4,), 0.5))
    assert head_calls == [4, 4, 4]  # g on v1, v2 and y_hat: none on f(w), whose projection no loss uses
    assert out["loss"].item() == pytest.approx(0.5 * out["l_byol"].item() + 0.5 * out["l_diff"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        learner(v1, v2)


def test_heads_batch_their_linear_layers_over_views_but_normalise_each_view_alone():
    # MLP.views: one matmul per Linear over all views; BatchNorm statistics and running buffers per view,
    # in order, so the values, gradients and buffers are those of one call per view (float64)
    torch.manual_seed(3)
    head = MLP(12, 20, 6).double()
    ref = copy.deepcopy(head)
    xs = [torch.randn(5, 12, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    xs_ref = [x.detach().clone().requires_grad_() for x in xs]
    ours, theirs = head.views(*xs), [ref(x) for x in xs_ref]
    gs = [torch.randn(5, 6, dtype=torch.float64) for _ in range(2)]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    sum((a * g).sum() for a, g in zip(ours, gs)).backward()
    sum((b * g).sum() for b, g in zip(theirs, gs)).backward()
    for (name, p), p_ref in zip(head.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-12, atol=1e-12, msg=name)
    for x, x_ref in zip(xs, xs_ref):
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    for b, b_ref in zip(head.buffers(), ref.buffers()):
        torch.testing.assert_close(b, b_ref, rtol=1e-12, atol=1e-12)
    assert head.net[1].num_batches_tracked.item() == 2  # one update per view
    # a batch of one view's statistics differs from normalising the two together: the split is real
    joint = ref.net[3](torch.relu(ref.net[1](ref.net[0](torch.cat(xs_ref)))))
    assert not torch.allclose(joint[:5], ours[0])


def test_difference_branch_follows_the_paper_equations():
    # Recompute L_diff from the modules, the mix and y_hat = f(w) - gamma s(f(v)) written out by hand.
    learner = small_learner(0.5).eval()  # eval: no dropout, BN from running stats, so passes are comparable
    v1, v2 = views()
    gamma = torch.tensor([0.4, 0.5, 0.6, 0.45])
    out = learner(v1, v2, gamma=gamma)
    enc, g, qh = learner.encoder, learner.projector, learner.diff_predictor
    w = torch.log(
        gamma.view(4, 1, 1, 1) * torch.exp(torch.roll(v1, -1, 0)) + (1 - gamma.view(4, 1, 1, 1)) * torch.exp(v1)
    )
    f_v = enc(v1)
    y_hat = enc(w) - gamma.view(4, 1) * torch.cat([f_v[1:], f_v[:1]])
    z_other = learner.target_projector(learner.target_encoder(v2))
    expected = (2 - 2 * torch.nn.functional.cosine_similarity(qh(g(y_hat)), z_other)).mean()
    assert out["l_diff"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_target_gets_no_gradient_and_online_does():
    learner = small_learner(0.5)
    v1, v2 = views()
    learner(v1, v2, gamma=torch.full((4,), 0.45))["loss"].backward()
    for m in (learner.target_encoder, learner.target_projector):
        assert all(p.grad is None and not p.requires_grad for p in m.parameters())
    for m in (learner.encoder, learner.projector, learner.predictor, learner.diff_predictor):
        assert all(p.grad is not None for p in m.parameters())


def test_ema_update_by_hand():
    learner = small_learner(0.5)
    with torch.no_grad():
        for p in learner.encoder.parameters():
            p.add_(1.0)
    before_t = [p.clone() for p in learner.target_encoder.parameters()]
    online = [p.clone() for p in learner.encoder.parameters()]
    learner.update_target()
    for t0, o, t1 in zip(before_t, online, learner.target_encoder.parameters()):
        torch.testing.assert_close(t1, 0.99 * t0 + 0.01 * o)
    # predictors are not part of the target
    assert not any(n.startswith("target_predictor") for n, _ in learner.named_parameters())


def _encoder_grads(encoder, x, fn, seed=7):
    torch.manual_seed(seed)  # the same dropout draws
    y = fn(encoder, x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(4)).to(y.dtype)  # same draws in f32 and f64
    (y * g).sum().backward()
    return y, {n: p.grad for n, p in encoder.named_parameters()}, dict(encoder.named_buffers())


@pytest.mark.parametrize("arch", ["audiontt2022", "audiontt2020"])
def test_encode_pools_before_relu_and_runs_the_first_conv_as_a_matmul_with_the_modules_values(arch):
    # learner.encode = the modules' Conv-BN-ReLU-MaxPool with ReLU after the pool and the first conv as a
    # matmul: the same function, so the same outputs, gradients and BatchNorm statistics up to float32
    # rounding. Measured against a float64 run of the modules: encode's error is of the size of the float32
    # module path's own (train mode, same dropout draws).
    from hear_diffbyola.learner import encode

    base = small_learner(0.0, arch=arch).encoder.train()
    x = torch.randn(6, 1, 64, 24, generator=torch.Generator().manual_seed(3))
    x[0, 0, :, :4] = -50.0  # windows that are all negative after BN: no gradient either way
    ours, f32, f64 = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base).double()
    y, grads, bufs = _encoder_grads(ours, x, encode)
    y32, grads32, bufs32 = _encoder_grads(f32, x, lambda e, v: e(v))
    y64, grads64, bufs64 = _encoder_grads(f64, x.double(), lambda e, v: e(v))

    def err(a, ref):
        return (a.double() - ref).norm().item() / max(ref.norm().item(), 1e-30)

    assert err(y, y64) < 1e-5 and err(y, y64) < 20 * err(y32, y64) + 1e-7
    for name, g64 in grads64.items():
        if (
            name.endswith("bias")
            and name.startswith("features.")
            and g64.norm() < 1e-9 * grads64["features.0.weight"].norm()
        ):
            continue  # conv biases before BatchNorm: their true gradient is 0, only rounding is left
        assert err(grads[name], g64) < 1e-3 and err(grads[name], g64) < 20 * err(grads32[name], g64) + 1e-6, name
    for name, b64 in bufs64.items():
        if b64.is_floating_point():  # running mean / var
            assert err(bufs[name], b64) < 1e-5, name
        else:  # num_batches_tracked
            assert torch.equal(bufs[name], b64), name


@pytest.mark.parametrize("momentum,frames,slice_elements", [(0.1, 10, None), (None, 11, 1)])
def test_first_block_is_the_modules_conv_batchnorm_pool_relu_with_their_statistics_and_gradients(
    momentum, frames, slice_elements, monkeypatch
):
    # first_block computes BatchNorm's batch statistics from the 9x9 covariance of the conv's taps instead
    # of from the conv map, and conv + pool in slices: compared in float64 with the modules themselves,
    # train and eval mode; one slice, and slices of 2 rows with an odd number of frames (the pool drops one).
    from hear_diffbyola import encoder
    from hear_diffbyola.learner import first_block

    if slice_elements is not None:
        monkeypatch.setattr(encoder, "POOLED_SLICE_ELEMENTS", slice_elements)

    enc = small_learner(0.0).encoder.double()
    conv, bn = enc.features[0], enc.features[1]
    bn.momentum = momentum
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0), bn.bias.uniform_(-1.0, 1.0), conv.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 1, 64, frames, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 2 + 0.7
    g = torch.randn(3, 64, 32, frames // 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref_conv, ref_bn = copy.deepcopy(conv), copy.deepcopy(bn)
    pool = enc.features[3]
    for _ in range(2):  # twice: the running statistics' update compounds as BatchNorm's does
        y = first_block(conv, bn, pool, x)
        y_ref = torch.relu(pool(ref_bn(ref_conv(x))))
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    for a, b in ((conv.weight, ref_conv.weight), (bn.weight, ref_bn.weight), (bn.bias, ref_bn.bias)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)
    assert conv.bias.grad.abs().max() < 1e-9  # the batch mean cancels the conv bias: no gradient
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref_bn, name), rtol=1e-12, atol=1e-12, msg=name)
    bn.eval(), ref_bn.eval()
    torch.testing.assert_close(
        first_block(conv, bn, pool, x), torch.relu(pool(ref_bn(ref_conv(x)))), rtol=1e-10, atol=1e-10
    )
    # an input that wants its own gradient takes the unsliced path: the same values and input gradient
    bn.train(), ref_bn.train()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = first_block(conv, bn, pool, xa), torch.relu(pool(ref_bn(ref_conv(xb))))
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-9)


def test_tap_moments_equal_the_moments_of_the_stacked_taps():
    # mean and covariance of the 9 shifted copies, computed directly from their (N, 9) stack in float64
    from hear_diffbyola.encoder import one_channel_cols
    from hear_diffbyola.learner import tap_moments

    x = torch.randn(3, 7, 11, generator=torch.Generator().manual_seed(2)) * 3 + 1.5
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    cols = one_channel_cols(padded).reshape(-1, 9).double()
    assert cols.shape == (3 * 7 * 11, 9)
    centred = cols - cols.mean(0)
    mean, cov = tap_moments(padded)
    torch.testing.assert_close(mean, cols.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cov, centred.t() @ centred / cols.shape[0], rtol=1e-12, atol=1e-12)
    assert mean.dtype == cov.dtype == torch.float64
