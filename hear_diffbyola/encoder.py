"""AudioNTT2020, the BYOL-A encoder.

Parameter names follow the official BYOL-A ``AudioNTT2020`` (``features.*``, ``fc.*``) so an
official state dict loads without remapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
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
