"""DiffBYOLA: BYOL-A's online/target networks plus the difference branch."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .dictconfig import DictConfig
from .encoder import (
    AudioNTT,
    conv3x3_one_channel,
    conv3x3_one_channel_pooled,
    one_channel_cols,
    pooled_slices,
    temporal_pool,
)
from .objectives import byol_loss, diff_loss, difference_embedding, mix_in_batch, total_loss


@dataclass(frozen=True)
class LearnerConfig(DictConfig):
    section = "learner"

    lam: float = 0.5  # weight of L_diff; 0 = plain BYOL-A
    proj_hidden: int = 4096
    proj_dim: int = 256
    ema: float = 0.99  # target <- ema * target + (1 - ema) * online
    gamma_low: float = 0.4
    gamma_high: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(
                f"learner.lam (lambda) must be in [0, 1], got {self.lam}; the paper uses 0, 0.1, 0.2, 0.5, 0.8"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"learner.ema must be in [0, 1), got {self.ema}")
        if not 0.0 < self.gamma_low <= self.gamma_high < 1.0:
            raise ValueError(
                f"learner.gamma_low/high must satisfy 0 < low <= high < 1, got {self.gamma_low}, {self.gamma_high}"
            )
        if self.proj_hidden <= 0 or self.proj_dim <= 0:
            raise ValueError("learner.proj_hidden and learner.proj_dim must be positive")


def encode(encoder: AudioNTT, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x)``: (B, 1, F, T) -> (B, d), with each conv block's ReLU applied after its max-pool.

    The same values and the same gradients as Conv-BN-ReLU-MaxPool: ReLU is monotone, so it commutes with
    the max; a pool window whose maximum is <= 0 gives 0 and passes no gradient either way, otherwise both
    pick the same arg-max. ReLU and its backward then touch a quarter of the data; the first block's
    forward + backward ran 2.6x faster (B = 64, 64 x 96, CPU; docs/performance.md). The first block runs as
    :func:`first_block` on its modules' weights and buffers; every other module is called.
    """
    encoder.check_input(x)
    f = encoder.features
    for i in range(0, len(f), 4):
        conv, bn, pool = f[i], f[i + 1], f[i + 3]
        x = first_block(conv, bn, pool, x) if i == 0 else torch.relu_(pool(bn(conv(x))))
    return temporal_pool(encoder.frames_from_conv(x))


def first_block(conv: nn.Conv2d, bn: nn.BatchNorm2d, pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``relu(pool(bn(conv(x))))`` for the one-channel first block: (B, 1, F, T) -> (B, C, F / 2, T / 2), channels-last.

    The conv is linear in its 9 input taps, so BatchNorm's batch statistics of each output channel follow
    from the taps' mean mu and 9 x 9 covariance S (:func:`tap_moments`): mean = mu W + b, biased
    var = diag(W^T S W). BatchNorm's scale then folds into the conv's weights and its offset
    (b - mean) s + beta moves behind the max-pool (a per-channel constant commutes with the max, exactly:
    rounding is monotone). The conv and pool run slice by slice (``conv3x3_one_channel_pooled``, as at
    inference), so the 64-channel map, 64x the input, never goes to memory; the backward pass
    (:class:`_PooledFirstConv`) recomputes it slice by slice from the input. Autograd differentiates
    through mean and var, which is what BatchNorm's backward computes. In eval mode the running statistics
    are folded instead; in training they are updated as BatchNorm updates them. Equal to the modules up to
    float rounding (tests/test_objectives.py). ``pool`` is the block's MaxPool2d(2)."""
    C = conv.out_channels
    padded = F.pad(x[:, 0], (1, 1, 1, 1))  # (B, F + 2, T + 2): the conv's zero padding
    taps = conv.weight.view(C, 9).t()  # (9, C)
    if bn.training or bn.running_mean is None:
        # In float64 (and outside any autocast): w^T S w cancels when the taps are correlated, as the
        # neighbouring bins of a log-mel are, so a float32 S lost ~1e-4 of the variance where BatchNorm's
        # own float32 pass loses ~1e-7 (tests/test_objectives.py).
        with torch.autocast(x.device.type, enabled=False):
            if x.requires_grad:  # statistics that carry the input's gradient, as BatchNorm's do
                cols = one_channel_cols(padded).reshape(-1, 9).double()
                mu = cols.mean(0)
                centred = cols - mu
                cov = centred.t() @ centred / cols.shape[0]
            else:
                mu, cov = tap_moments(padded)
            w = taps.double()
            mean = mu @ w + conv.bias.double()
            var = ((cov @ w) * w).sum(0)  # (C,)
        _update_running_stats(bn, mean, var, x.shape[0] * x.shape[2] * x.shape[3])
        mean, var = mean.to(taps.dtype), var.to(taps.dtype)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    offset = (conv.bias - mean) * scale + (bn.bias if bn.bias is not None else 0.0)
    scaled = (taps * scale).to(x.dtype)  # (9, C)
    if x.requires_grad:  # a gradient for the input itself (never in training: the views are data)
        y = conv3x3_one_channel(padded, scaled.contiguous(), None).permute(0, 3, 1, 2)
        pooled = pool(y)
    else:
        pooled = _PooledFirstConv.apply(padded, scaled.contiguous()).permute(0, 3, 1, 2)  # (B, C, F / 2, T / 2)
    return torch.relu_(pooled + offset.to(pooled.dtype).view(1, C, 1, 1))


class _PooledFirstConv(torch.autograd.Function):
    """``conv3x3_one_channel_pooled`` with the gradient for its taps (the input is data: none for it).

    The backward pass recomputes each slice of the conv map (cheap: a 9-tap matmul, in cache), lets
    max_pool2d route the slice's gradient to its window maxima (the first on ties, as the module) and
    accumulates cols^T @ grad slice by slice, so neither the map nor its gradient is ever whole in memory;
    only the padded input is kept between the passes."""

    # float32 under CUDA autocast: the backward pass must find the maxima the forward pass took
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, padded: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        if fused.usable(padded.device):  # compiled on CPU (hear_diffbyola/fused.py); None if compiling failed
            if not ctx.needs_input_grad[1]:  # the target's pass
                out = fused.pooled(padded, taps)
                if out is not None:
                    return out
            else:
                res = fused.pooled_and_choice(padded, taps)
                if res is not None:
                    ctx.save_for_backward(padded, taps, res[1])
                    return res[0]
        ctx.save_for_backward(padded, taps)
        return conv3x3_one_channel_pooled(padded, taps)  # (B, H / 2, W / 2, C)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        if len(ctx.saved_tensors) == 3:  # the compiled forward kept each window's choice
            padded, _, choice = ctx.saved_tensors
            return None, fused.taps_grad(padded, choice, grad)
        padded, taps = ctx.saved_tensors
        B, C, W2 = padded.shape[0], taps.shape[1], (padded.shape[2] - 2) // 2 * 2
        out = grad.new_zeros(9, C)
        for h0, h1 in pooled_slices(padded, C):
            cols = one_channel_cols(padded[:, h0 : h1 + 2, : W2 + 2]).view(-1, 9)  # (B n W2, 9)
            y = torch.mm(cols, taps).view(B, h1 - h0, W2, C).permute(0, 3, 1, 2)  # (B, C, n, W2) channels-last
            _, idx = F.max_pool2d(y, 2, return_indices=True)
            g = grad[:, h0 // 2 : h1 // 2].permute(0, 3, 1, 2)  # (B, C, n / 2, W2 / 2)
            gy = torch.ops.aten.max_pool2d_with_indices_backward(g, y, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
            out.addmm_(cols.t(), gy.permute(0, 2, 3, 1).reshape(-1, C))
        return None, out


# Tap pairs (a, b) as (lag, first tap): tap a = (i, j) is input offset (i, j) of the 3 x 3 window; b - a is
# one of the 13 lags (di, dj) with di > 0, or di = 0 and dj >= 0 (the other 12 are their mirror pairs).
_LAGS = [(di, dj) for di in range(3) for dj in range(-2, 3) if di > 0 or dj >= 0]
_PAIR_INDEX = torch.tensor(
    [
        [
            9 * _LAGS.index((ib - ia, jb - ja)) + 3 * ia + ja
            if (ib - ia, jb - ja) in _LAGS
            else 9 * _LAGS.index((ia - ib, ja - jb)) + 3 * ib + jb
            for ib, jb in ((k // 3, k % 3) for k in range(9))
        ]
        for ia, ja in ((k // 3, k % 3) for k in range(9))
    ]
)  # (9, 9) into the flattened (13, 3, 3) window sums below


def tap_moments(padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (9,) and covariance (9, 9) of a 3x3 conv's input taps over (B, H, W), in float64, from the
    zero-padded one-channel map (B, H + 2, W + 2) itself rather than its 9x larger stack of taps.

    The second moment of taps a and b is a sum of p[h + a] p[h + b] over the window of a: one product map
    per lag b - a (13 up to symmetry), summed over the batch, then over each of the 9 windows as
    rows @ map @ cols^T with 0/1 band matrices (a cumulative sum would do it too, but CUDA's is not
    deterministic, and a training step must be). Float64 throughout, so subtracting the squared mean from
    the raw moments costs no precision that matters (tests compare with the centred stack of taps to 1e-12)."""
    p = padded.detach().double()
    B, Hp, Wp = p.shape
    H, W = Hp - 2, Wp - 2
    offset = torch.arange(3, device=p.device)[:, None]

    def band(size: int, length: int) -> torch.Tensor:  # (3, size): row i is 1 on [i, i + length)
        k = torch.arange(size, device=p.device)
        return ((k >= offset) & (k < offset + length)).double()

    rows, cols = band(Hp, H), band(Wp, W)

    def window_sums(m: torch.Tensor) -> torch.Tensor:  # (..., Hp, Wp) -> (..., 3, 3): sums over [i, i + H) x [j, j + W)
        return rows @ m @ cols.t()

    n = B * H * W
    mean = window_sums(p.sum(0)).reshape(9) / n
    pp = F.pad(p, (2, 2, 2, 2))  # zeros beyond the map, so every lag's shifted copy is a view
    sums = window_sums(
        torch.stack([(p * pp[:, 2 + di : 2 + di + Hp, 2 + dj : 2 + dj + Wp]).sum(0) for di, dj in _LAGS])
    )  # (13, 3, 3)
    second = sums.reshape(-1)[_PAIR_INDEX.to(p.device)] / n
    return mean, second - torch.outer(mean, mean)


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """BatchNorm's own update in training: momentum (or the cumulative average when it is None), unbiased var."""
    if not (bn.training and bn.track_running_stats):
        return
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1.0 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
    unbiased = var.detach().to(bn.running_var.dtype) * (n / max(n - 1, 1))
    bn.running_var.mul_(1.0 - factor).add_(unbiased, alpha=factor)


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class MLP(nn.Module):
    """BYOL's projector/predictor head: Linear -> BN -> ReLU -> Linear."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def views(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """``[self(x) for x in xs]``, each view normalised by its own BatchNorm statistics (updated in the
        same order), the Linear layers run once over all views. The gain is in the backward pass: one weight
        gradient matmul over all rows instead of one per view of B = 64 rows plus their sum (v2 projector,
        2 views, forward + backward 202 -> 158 ms: bench/pretrain_throughput.py --micro)."""
        first, bn, relu, last = self.net
        sizes = [len(x) for x in xs]
        hidden = first(torch.cat(xs)).split(sizes)
        return list(last(torch.cat([relu(bn(h)) for h in hidden])).split(sizes))


class DiffBYOLA(nn.Module):
    """Online f, g, q and q_hat; target f_xi, g_xi (EMA, never trained by gradients).

    ``forward`` returns the loss terms of one step, so one DDP-wrapped call covers every online
    forward of the step (DDP does not allow a second forward before backward).

    Each network runs on each input batch separately, as byol-pytorch (which BYOL-A uses) runs
    them: BatchNorm normalises v, v' and the mix w each with its own batch statistics. So at
    lambda = 0 a step is BYOL-A's step, and f(w) is run exactly like another view.
    """

    def __init__(self, encoder: AudioNTT, config: LearnerConfig = LearnerConfig()) -> None:
        super().__init__()
        self.config = config
        d = encoder.d
        self.encoder = encoder
        self.projector = MLP(d, config.proj_hidden, config.proj_dim)
        self.predictor = MLP(config.proj_dim, config.proj_hidden, config.proj_dim)
        self.diff_predictor = MLP(config.proj_dim, config.proj_hidden, config.proj_dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        if config.lam == 0.0:
            # Unused at lambda = 0: frozen so optimisers and DDP skip it.
            self.diff_predictor.requires_grad_(False)

    def online_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    @torch.no_grad()
    def target_outputs(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """z_xi = g_xi(f_xi(x)) for each batch x."""
        return self.target_projector.views(*(encode(self.target_encoder, _cl(x)) for x in xs))

    def online(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for one batch (B, 1, F, T) -> (B, d)."""
        return encode(self.encoder, _cl(x))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, gamma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # v1, v2: (B, 1, F, T) views of the same B clips; gamma: (B,) mixing weights (needed when lam > 0)
        lam = self.config.lam
        if lam > 0.0 and gamma is None:
            raise ValueError("lambda > 0: forward needs gamma, the per-clip mixing weights")
        # Dropout draws in byol-pytorch's order: online encoder on view 1, on view 2, the target on each; at
        # lambda > 0 the mix w last. Each view passes each network on its own (BatchNorm per view); only the
        # heads' Linear layers are batched over the views (MLP.views), and the heads draw nothing.
        y1, y2 = self.online(v1), self.online(v2)
        z1, z2 = self.target_outputs(v1, v2)
        if lam == 0.0:
            p1, p2 = self.predictor.views(*self.projector.views(y1, y2))  # (B, proj_dim) each
            l_byol = byol_loss(p1, p2, z1, z2)
            return {"loss": l_byol, "l_byol": l_byol.detach()}
        gamma = gamma.to(v1.device)
        f_w = self.online(mix_in_batch(v1, gamma))  # an encoder pass of its own, like a third view
        y_hat = difference_embedding(f_w, y1, gamma)
        g1, g2, g_hat = self.projector.views(y1, y2, y_hat)
        p1, p2 = self.predictor.views(g1, g2)
        l_byol = byol_loss(p1, p2, z1, z2)
        l_diff = diff_loss(self.diff_predictor(g_hat), z2)
        return {"loss": total_loss(l_byol, l_diff, lam), "l_byol": l_byol.detach(), "l_diff": l_diff.detach()}

    @torch.no_grad()
    def update_target(self) -> None:
        """xi <- tau * xi + (1 - tau) * theta for encoder and projector parameters."""
        tau = self.config.ema
        for online, target in self.online_pairs():
            t = list(target.parameters())
            o = list(online.parameters())
            torch._foreach_mul_(t, tau)
            torch._foreach_add_(t, o, alpha=1.0 - tau)
