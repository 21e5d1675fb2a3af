"""DiffBYOLA: BYOL-A's online/target networks plus the difference branch."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .dictconfig import DictConfig

from .encoder import AudioNTT2020
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
            raise ValueError(f"learner.lam (lambda) must be in [0, 1], got {self.lam}; the paper uses 0, 0.1, 0.2, 0.5, 0.8")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"learner.ema must be in [0, 1), got {self.ema}")
        if not 0.0 < self.gamma_low <= self.gamma_high < 1.0:
            raise ValueError(f"learner.gamma_low/high must satisfy 0 < low <= high < 1, got {self.gamma_low}, {self.gamma_high}")
        if self.proj_hidden <= 0 or self.proj_dim <= 0:
            raise ValueError("learner.proj_hidden and learner.proj_dim must be positive")


class MLP(nn.Module):
    """BYOL's projector/predictor head: Linear -> BN -> ReLU -> Linear."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DiffBYOLA(nn.Module):
    """Online f, g, q and q_hat; target f_xi, g_xi (EMA, never trained by gradients).

    ``forward`` returns the loss terms of one step, so one DDP-wrapped call covers every online
    forward of the step (DDP does not allow a second forward before backward).
    """

    def __init__(self, encoder: AudioNTT2020, config: LearnerConfig = LearnerConfig()) -> None:
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
    def target_outputs(self, views: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_encoder(views))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, gamma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # v1, v2: (B, 1, F, T) views of the same B clips; gamma: (B,) mixing weights (needed when lam > 0)
        B = v1.shape[0]
        lam = self.config.lam
        views = torch.cat([v1, v2])
        if lam > 0.0:
            if gamma is None:
                raise ValueError("lambda > 0: forward needs gamma, the per-clip mixing weights")
            gamma = gamma.to(v1.device)
            w = mix_in_batch(v1, gamma)
            # One pass over [v1, v2, w]: f(w) and f(v) then share BatchNorm statistics, so f is the
            # same function on both sides of y_hat = f(w) - gamma s(f(v)).
            y_all = self.encoder(torch.cat([views, w]).contiguous(memory_format=torch.channels_last))
            y, f_w = y_all[:2 * B], y_all[2 * B:]
        else:
            y = self.encoder(views.contiguous(memory_format=torch.channels_last))  # (2B, d)
        p = self.predictor(self.projector(y))  # (2B, proj_dim)
        z = self.target_outputs(views.contiguous(memory_format=torch.channels_last))  # (2B, proj_dim)
        l_byol = byol_loss(p[:B], p[B:], z[:B], z[B:])
        if lam == 0.0:
            return {"loss": l_byol, "l_byol": l_byol.detach()}
        y_hat = difference_embedding(f_w, y[:B], gamma)
        p_hat = self.diff_predictor(self.projector(y_hat))
        l_diff = diff_loss(p_hat, z[B:])
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
