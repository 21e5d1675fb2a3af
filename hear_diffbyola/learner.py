"""DiffBYOLA: BYOL-A's online/target networks plus the difference branch."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .dictconfig import DictConfig
from .encoder import AudioNTT, conv3x3_one_channel_map, temporal_pool
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
    forward + backward ran 2.6x faster (B = 64, 64 x 96, CPU; docs/performance.md). The first conv runs as
    :func:`first_conv` on its own weights; every other module is called (BatchNorm updates its running
    statistics as usual; hooks on them fire).
    """
    encoder.check_input(x)
    f = encoder.features
    for i in range(0, len(f), 4):
        conv, bn, pool = f[i], f[i + 1], f[i + 3]
        x = torch.relu_(pool(bn(first_conv(conv, x) if i == 0 else conv(x))))
    return temporal_pool(encoder.frames_from_conv(x))


def first_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for the one-channel first conv, (B, 1, F, T) -> (B, C, F, T) channels-last, as one matmul.

    oneDNN's C_in = 1 convolution on CPU wrote an NCHW map (a one-channel input says nothing about
    layout), so BatchNorm, max-pool and the second conv all ran on NCHW, and its weight gradient was a
    (C, N) x (N, 9) matmul at ~2 GFLOP/s; here the map is channels-last and the weight gradient is one
    (9, N) x (N, C) matmul. Equal to the module up to float rounding (tests/test_objectives.py)."""
    C = conv.out_channels
    # contiguous (9, C) taps: autograd then forms the weight gradient as cols^T @ grad, the fast orientation
    taps = conv.weight.view(C, 9).t().contiguous()
    return conv3x3_one_channel_map(x, taps, conv.bias)


class MLP(nn.Module):
    """BYOL's projector/predictor head: Linear -> BN -> ReLU -> Linear."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    def target_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """z_xi = g_xi(f_xi(x)) for one batch."""
        return self.target_projector(encode(self.target_encoder, x.contiguous(memory_format=torch.channels_last)))

    def online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), g(f(x))) for one batch (B, 1, F, T)."""
        y = encode(self.encoder, x.contiguous(memory_format=torch.channels_last))
        return y, self.projector(y)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, gamma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # v1, v2: (B, 1, F, T) views of the same B clips; gamma: (B,) mixing weights (needed when lam > 0)
        lam = self.config.lam
        if lam > 0.0 and gamma is None:
            raise ValueError("lambda > 0: forward needs gamma, the per-clip mixing weights")
        # byol-pytorch's order: online view 1, online view 2, then the target on each (dropout draws follow it)
        y1, g1 = self.online(v1)
        y2, g2 = self.online(v2)
        p1, p2 = self.predictor(g1), self.predictor(g2)  # (B, proj_dim) each
        z1, z2 = self.target_outputs(v1), self.target_outputs(v2)
        l_byol = byol_loss(p1, p2, z1, z2)
        if lam == 0.0:
            return {"loss": l_byol, "l_byol": l_byol.detach()}
        gamma = gamma.to(v1.device)
        f_w, _ = self.online(mix_in_batch(v1, gamma))  # a pass of its own, like a third view
        y_hat = difference_embedding(f_w, y1, gamma)
        p_hat = self.diff_predictor(self.projector(y_hat))
        l_diff = diff_loss(p_hat, z2)
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
