"""AudioNTT2020, the BYOL-A encoder.

Parameter names follow the official BYOL-A ``AudioNTT2020`` (``features.*``, ``fc.*``) so an
official state dict loads without remapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dictconfig import DictConfig

# Three MaxPool2d(2): one encoder frame covers 8 log-mel frames.
TIME_REDUCTION = 8


@dataclass(frozen=True)
class EncoderConfig(DictConfig):
    section = "encoder"

    n_mels: int = 64
    d: int = 2048

    def __post_init__(self) -> None:
        if self.n_mels < 8 or self.n_mels % 8:
            raise ValueError(f"EncoderConfig: n_mels must be a positive multiple of 8, got {self.n_mels}")
        if self.d <= 0:
            raise ValueError(f"EncoderConfig: d must be positive, got {self.d}")


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=1, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2, stride=2)]


class AudioNTT2020(nn.Module):
    """Conv3x3(64)-BN-ReLU-MaxPool2 x3, then fc: Linear(64*n_mels/8, d)-ReLU-Dropout(0.3)-Linear(d, d)-ReLU.

    ``forward`` gives the BYOL-A clip embedding (mean + max over time); ``frames`` the per-frame
    features before pooling.
    """

    def __init__(self, n_mels: int = 64, d: int = 2048) -> None:
        super().__init__()
        self.config = EncoderConfig(n_mels=n_mels, d=d)
        self.features = nn.Sequential(*_conv_block(1, 64), *_conv_block(64, 64), *_conv_block(64, 64))
        self.fc = nn.Sequential(
            nn.Linear(64 * (n_mels // 8), d), nn.ReLU(inplace=True), nn.Dropout(p=0.3),
            nn.Linear(d, d), nn.ReLU(inplace=True),
        )
        self.d = d

    @classmethod
    def from_config(cls, config: EncoderConfig) -> "AudioNTT2020":
        return cls(n_mels=config.n_mels, d=config.d)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != self.config.n_mels:
            raise ValueError(
                f"AudioNTT2020 expects log-mel (B, 1, {self.config.n_mels}, T), got {tuple(x.shape)}")
        if x.shape[3] < TIME_REDUCTION:
            raise ValueError(f"AudioNTT2020 needs at least {TIME_REDUCTION} log-mel frames, got {x.shape[3]}")

    def conv_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of each conv block: [(B, 64, F/2, T/2), (B, 64, F/4, T/4), (B, 64, F/8, T/8)]."""
        self.check_input(x)
        maps = []
        for i in range(0, len(self.features), 4):
            x = self.features[i:i + 4](x)
            maps.append(x)
        return maps

    @staticmethod
    def flatten_frames(x: torch.Tensor) -> torch.Tensor:
        # (B, C, F', T') -> (B, T', F'*C); mel-major order as in BYOL-A, so fc.0 weights line up.
        x = x.permute(0, 3, 2, 1)
        return x.reshape(x.shape[0], x.shape[1], -1)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, F, T) -> (B, T // 8, d)
        self.check_input(x)
        return self.fc(self.flatten_frames(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, F, T) -> (B, d)
        return temporal_pool(self.frames(x))


def temporal_pool(frames: torch.Tensor) -> torch.Tensor:
    """BYOL-A pooling: mean over time + max over time. frames: (B, T, d) -> (B, d)."""
    return frames.mean(dim=1) + frames.amax(dim=1)


def layer_frames(encoder: AudioNTT2020, x: torch.Tensor) -> list[torch.Tensor]:
    """Frames from four depths: after each conv block and after the fc stack, each (B, T // 8, d).

    No learned parameters are added, so every layer is the network's own feature, only reshaped:
    conv block k's map (B, C, F/2^k, T/2^k) is max-pooled over time to one frame per 8 log-mel
    frames (the pooling the later blocks apply to time), its mel axis is max-pooled to d/C bins
    (bins repeated when the map has fewer), then flattened mel-major like the fc input. The last
    entry equals ``encoder.frames(x)``. Requires d to be a multiple of C (64).
    """
    # x: (B, 1, F, T) -> 4 x (B, T // 8, d)
    maps = encoder.conv_maps(x)
    channels = maps[-1].shape[1]
    if encoder.d % channels:
        raise ValueError(f"layer_frames: d={encoder.d} is not a multiple of the {channels} conv channels, "
                         "so the conv maps cannot be brought to d features; use d = 512, 1024 or 2048")
    bins, n = encoder.d // channels, maps[-1].shape[3]
    outs = []
    for k, m in enumerate(maps):
        step = 2 ** (len(maps) - 1 - k)  # time reduction still ahead of block k
        if step > 1:
            m = F.max_pool2d(m, kernel_size=(1, step))  # (B, C, F_k, T // 8)
        m = F.adaptive_max_pool2d(m, (bins, n))  # (B, C, d / C, T // 8)
        outs.append(encoder.flatten_frames(m))
    outs.append(encoder.fc(encoder.flatten_frames(maps[-1])))
    return outs
