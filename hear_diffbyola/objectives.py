"""The paper's equations, one function each.

Notation: v, v' are two augmented views of a batch of clips (encoder inputs, (B, 1, F, T));
f the online encoder, g the projector, q / q_hat the predictors, xi the EMA target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_mixup_exp(a: torch.Tensor, b: torch.Tensor, weight_a: torch.Tensor | float) -> torch.Tensor:
    """log(weight_a * exp(a) + (1 - weight_a) * exp(b)): mixing in the linear power domain of log-mels.

    ``weight_a`` is a scalar or one weight per sample (B,). Computed with logaddexp, so it is exact
    for any input range and for weights of exactly 0 or 1. BYOL-A's Mixup is this operation with
    a = a clip from the memory bank and weight_a = alpha.
    """
    w = torch.as_tensor(weight_a, dtype=a.dtype, device=a.device)
    if w.ndim == 1:
        w = w.view(-1, *([1] * (a.ndim - 1)))
    return torch.logaddexp(torch.log(w) + a, torch.log1p(-w) + b)


def shift(x: torch.Tensor) -> torch.Tensor:
    """s([x1, ..., xN]) = [x2, ..., xN, x1]: pairs each clip with the next one in the batch."""
    return torch.roll(x, shifts=-1, dims=0)


def mix_in_batch(v: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """w = log(gamma * exp(s(v)) + (1 - gamma) * exp(v)), gamma (B,) one weight per clip."""
    return log_mixup_exp(shift(v), v, gamma)


def sample_gamma(
    batch_size: int, low: float = 0.4, high: float = 0.6, generator: torch.Generator | None = None
) -> torch.Tensor:
    """gamma ~ U(low, high), one per clip (CPU; move it to the device)."""
    return low + (high - low) * torch.rand(batch_size, generator=generator)


def difference_embedding(f_w: torch.Tensor, f_v: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """y_hat = f(w) - gamma * s(f(v)): what remains of the mix once the known partner is subtracted."""
    return f_w - gamma.to(f_w.dtype).view(-1, 1) * shift(f_v)


def byol_regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z) per sample (B,), in float32; z is treated as a constant (stop-gradient)."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.detach().float(), dim=-1)
    return 2.0 - 2.0 * (p * z).sum(dim=-1)


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L_byol, symmetrised as BYOL-A: view 1's prediction regresses view 2's target and vice versa.

    p_i = q(g(f(v_i))), z_i = g_xi(f_xi(v_i)). BYOL-A sums the two directions; we average them so
    that L_byol and L_diff both lie in [0, 4] and lambda weighs like with like (a constant factor
    on the loss leaves Adam's updates unchanged).
    """
    return 0.5 * (byol_regression_loss(p1, z2) + byol_regression_loss(p2, z1)).mean()


def diff_loss(p_hat: torch.Tensor, z_other: torch.Tensor) -> torch.Tensor:
    """L_diff = 2 - 2 cos(q_hat(g(y_hat)), z_xi), z_xi the target output of the same clip's other view."""
    return byol_regression_loss(p_hat, z_other).mean()


def total_loss(l_byol: torch.Tensor, l_diff: torch.Tensor | None, lam: float) -> torch.Tensor:
    """(1 - lambda) L_byol + lambda L_diff; lambda = 0 is plain BYOL-A (L_diff may then be None)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if lam == 0.0:
        return l_byol
    if l_diff is None:
        raise ValueError("lambda > 0 needs L_diff")
    return (1.0 - lam) * l_byol + lam * l_diff
