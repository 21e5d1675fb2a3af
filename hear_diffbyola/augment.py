"""BYOL-A's augmentations, batched on the training device.

The official implementation augments one clip at a time in CPU workers; here every module takes a
whole batch (B, 1, F, T) and draws one set of parameters per clip, so augmentation costs a few
tensor ops per step. Random parameters are drawn on the CPU from an explicit ``torch.Generator``
(small tensors, then moved) so a run is reproducible on any device and resumable exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dictconfig import DictConfig
from .objectives import log_mixup_exp


@dataclass(frozen=True)
class AugmentConfig(DictConfig):
    section = "augment"

    mixup_ratio: float = 0.2  # alpha ~ U(0, ratio); BYOL-A v2's 0.2 (v1 used 0.4)
    mixup_memory: int = 2048  # past clips kept for Mixup
    virtual_crop_scale: tuple[float, float] = (1.0, 1.5)  # canvas (freq, time) relative to the input
    freq_scale: tuple[float, float] = (0.6, 1.5)
    time_scale: tuple[float, float] = (0.6, 1.5)
    fader_gain: float = 1.0
    post_norm: bool = True  # BYOL-A standardises the batch of views before the encoder

    def __post_init__(self) -> None:
        if not 0.0 <= self.mixup_ratio <= 1.0:
            raise ValueError(f"augment.mixup_ratio must be in [0, 1], got {self.mixup_ratio}")
        if self.mixup_memory < 1:
            raise ValueError(f"augment.mixup_memory must be >= 1, got {self.mixup_memory}")
        for name in ("virtual_crop_scale", "freq_scale", "time_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"augment.{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
            object.__setattr__(self, name, (float(lo), float(hi)))
        if min(self.virtual_crop_scale) < 1.0:
            raise ValueError(
                f"augment.virtual_crop_scale must be >= 1 (a canvas around the input), got {self.virtual_crop_scale}"
            )

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        # YAML has no tuples
        return super().from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in super().to_dict().items()}


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


class MixupMemory(nn.Module):
    """BYOL-A Mixup: x <- log((1 - alpha) exp(x) + alpha exp(m)), m a random past clip, alpha ~ U(0, ratio).

    The memory is a ring buffer on the device; until it holds anything, clips pass unchanged
    (as BYOL-A's first sample does).
    """

    def __init__(self, ratio: float = 0.2, n_memory: int = 2048) -> None:
        super().__init__()
        self.ratio = ratio
        self.n_memory = n_memory
        self.memory: torch.Tensor | None = None  # (n_memory, 1, F, T), allocated on first push
        self.filled = 0
        self.cursor = 0

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # x: (B, 1, F, T)
        if self.filled == 0 or self.ratio == 0:
            return x
        idx = torch.randint(self.filled, (x.shape[0],), generator=generator)
        alpha = self.ratio * torch.rand(x.shape[0], generator=generator)
        m = self.memory[idx.to(x.device)]
        return log_mixup_exp(m, x, alpha.to(x.device))

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        x = x.detach()[-self.n_memory :]
        if self.memory is None or self.memory.shape[1:] != x.shape[1:] or self.memory.device != x.device:
            self.memory = torch.zeros((self.n_memory, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.filled = self.cursor = 0
        pos = (self.cursor + torch.arange(x.shape[0], device=x.device)) % self.n_memory
        self.memory[pos] = x
        self.cursor = (self.cursor + x.shape[0]) % self.n_memory
        self.filled = min(self.filled + x.shape[0], self.n_memory)

    def get_state(self) -> dict:
        mem = None if self.memory is None else self.memory[: self.filled].cpu().clone()
        return {"memory": mem, "filled": self.filled, "cursor": self.cursor}

    def set_state(self, state: dict, device: torch.device | str = "cpu") -> None:
        mem = state["memory"]
        self.filled, self.cursor = int(state["filled"]), int(state["cursor"])
        if mem is None:
            self.memory = None
            return
        self.memory = torch.zeros((self.n_memory, *mem.shape[1:]), dtype=mem.dtype, device=device)
        self.memory[: self.filled] = mem.to(device)


class RandomResizeCrop(nn.Module):
    """BYOL-A RandomResizeCrop: place the input in the middle of a zero canvas ``virtual_crop_scale``
    times larger, crop a random (freq_scale x time_scale) region of it and resize it back to the
    input size with bicubic interpolation.

    Batched as one ``grid_sample``: output pixel k of clip b reads input coordinate
    offset_b + k * (crop_b - 1) / (size - 1), i.e. an align-corners resize of the crop; reads
    outside the input are the canvas' zeros.
    """

    def __init__(self, virtual_crop_scale=(1.0, 1.5), freq_scale=(0.6, 1.5), time_scale=(0.6, 1.5)) -> None:
        super().__init__()
        self.virtual_crop_scale = virtual_crop_scale
        self.freq_scale = freq_scale
        self.time_scale = time_scale

    def sample_params(
        self, batch: int, n_freq: int, n_time: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Per clip: crop top-left (i, j) on the canvas and crop size (h, w), as BYOL-A draws them."""
        canvas_h = int(n_freq * self.virtual_crop_scale[0])
        canvas_w = int(n_time * self.virtual_crop_scale[1])
        h = (_uniform(batch, *self.freq_scale, generator) * n_freq).long().clamp(1, canvas_h)
        w = (_uniform(batch, *self.time_scale, generator) * n_time).long().clamp(1, canvas_w)
        i = (torch.rand(batch, generator=generator, dtype=torch.float64) * (canvas_h - h + 1)).long()
        j = (torch.rand(batch, generator=generator, dtype=torch.float64) * (canvas_w - w + 1)).long()
        # Canvas -> input coordinates: the input sits centred on the canvas.
        i = i - (canvas_h - n_freq) // 2
        j = j - (canvas_w - n_time) // 2
        return i, j, h, w

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # x: (B, 1, F, T) -> (B, 1, F, T)
        B, _, n_freq, n_time = x.shape
        if n_freq < 2 or n_time < 2:
            raise ValueError(f"RandomResizeCrop needs at least 2x2 log-mel, got {tuple(x.shape)}")
        i, j, h, w = self.sample_params(B, n_freq, n_time, generator)
        rows = i[:, None] + torch.arange(n_freq, dtype=torch.float64) * ((h - 1) / (n_freq - 1))[:, None]
        cols = j[:, None] + torch.arange(n_time, dtype=torch.float64) * ((w - 1) / (n_time - 1))[:, None]
        gy = (2 * rows / (n_freq - 1) - 1).to(x.device, x.dtype)  # (B, F)
        gx = (2 * cols / (n_time - 1) - 1).to(x.device, x.dtype)  # (B, T)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, F, T, 2)
        return F.grid_sample(x, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


class RandomLinearFader(nn.Module):
    """BYOL-A v2 RandomLinearFader: add a linear ramp over time from head to tail, both ~ gain * U(-1, 1)."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # x: (B, 1, F, T)
        B, T = x.shape[0], x.shape[-1]
        head, tail = (self.gain * (2.0 * torch.rand(2, B, generator=generator) - 1.0)).to(x.device, x.dtype)
        t = torch.linspace(0.0, 1.0, T, device=x.device, dtype=x.dtype)
        ramp = head[:, None] + (tail - head)[:, None] * t  # (B, T)
        return x + ramp[:, None, None, :]


def standardize_batch(x: torch.Tensor) -> torch.Tensor:
    """BYOL-A's post-normalisation: standardise a batch of views with its own mean and std."""
    return (x - x.mean()) / x.std().clamp_min(1e-8)


class ViewAugmenter(nn.Module):
    """Pre-normalised log-mel batch -> two independently augmented views (Mixup -> RRC -> fader)."""

    def __init__(self, config: AugmentConfig = AugmentConfig()) -> None:
        super().__init__()
        self.config = config
        self.mixup = MixupMemory(config.mixup_ratio, config.mixup_memory)
        self.crop = RandomResizeCrop(config.virtual_crop_scale, config.freq_scale, config.time_scale)
        self.fader = RandomLinearFader(config.fader_gain)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.fader(self.crop(self.mixup(x, generator), generator), generator)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, 1, F, T) pre-normalised log-mel -> two views of the same shape
        v1 = self.view(x, generator)
        v2 = self.view(x, generator)
        self.mixup.push(x)
        if self.config.post_norm:
            both = standardize_batch(torch.cat([v1, v2]))
            v1, v2 = both.chunk(2)
        return v1, v2
