"""The BYOL-A encoders: AudioNTT2022 (BYOL-A v2, the default) and AudioNTT2020 (BYOL-A v1).

Both are conv blocks Conv3x3(64)-BN-ReLU-MaxPool2 over a log-mel (B, 1, F, T) followed by a per-frame
MLP. Parameter names follow the official code (``features.*``, ``fc.*``), so an official state dict
loads without remapping. ``frames`` gives per-frame features (B, T', d), ``forward`` BYOL-A's clip
embedding: mean + max over time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dictconfig import DictConfig

ARCHS = ("audiontt2022", "audiontt2020")
CHANNELS = 64  # conv channels of every block
V2_HIDDEN = 2048  # fc width of AudioNTT2022 (the "d2048" in the published v2 file name)
DEFAULT_D = {"audiontt2022": 3072, "audiontt2020": 2048}
N_BLOCKS = {"audiontt2022": 2, "audiontt2020": 3}


@dataclass(frozen=True)
class EncoderConfig(DictConfig):
    """``d``: per-frame output size (v2: conv features + fc output; v1: fc output). ``hidden``: the fc's
    hidden width (v2 default 2048; v1 has none of its own, it is d). ``None`` takes the arch's default."""

    section = "encoder"

    arch: str = "audiontt2022"
    n_mels: int = 64
    d: int | None = None
    hidden: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"encoder.arch must be one of {list(ARCHS)}, got {self.arch!r}")
        # Resolve the arch defaults here so configs, headers and checkpoints always spell them out.
        d = DEFAULT_D[self.arch] if self.d is None else self.d
        hidden = (V2_HIDDEN if self.arch == "audiontt2022" else d) if self.hidden is None else self.hidden
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "hidden", hidden)
        reduction = 2 ** N_BLOCKS[self.arch]
        if not isinstance(self.n_mels, int) or self.n_mels < reduction or self.n_mels % reduction:
            raise ValueError(
                f"encoder.n_mels must be a positive multiple of {reduction} for {self.arch}, got {self.n_mels}"
            )
        if not isinstance(d, int) or not isinstance(hidden, int) or hidden <= 0:
            raise ValueError(f"encoder.d and encoder.hidden must be positive integers, got d={d!r}, hidden={hidden!r}")
        if self.arch == "audiontt2022" and d <= self.conv_d:
            raise ValueError(
                f"encoder.d must exceed the {self.conv_d} conv features AudioNTT2022 concatenates "
                f"(64 channels x n_mels/4), got d={d}; BYOL-A v2 uses 3072"
            )
        if self.arch == "audiontt2020":
            if hidden != d:
                raise ValueError(
                    f"AudioNTT2020's fc is Linear(.., d)-Linear(d, d): encoder.hidden must equal d ({d}) "
                    f"or be left unset, got {hidden}"
                )
            if d <= 0 or d % CHANNELS:
                # s3prl's conv layers are the 64-channel maps brought to d features (d / 64 mel bins each)
                raise ValueError(
                    f"encoder.d must be a positive multiple of {CHANNELS} for audiontt2020 "
                    f"(e.g. 512, 1024, 2048), got {d}"
                )

    @property
    def time_reduction(self) -> int:
        """Log-mel frames per encoder frame (one MaxPool2 per block): v2 4 (40 ms), v1 8 (80 ms)."""
        return 2 ** N_BLOCKS[self.arch]

    @property
    def conv_d(self) -> int:
        """Features of the flattened last conv map: 64 channels x n_mels / time_reduction."""
        return CHANNELS * (self.n_mels // self.time_reduction)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training mask comes from 32-bit uniform integers: keep with probability
    1 - p (to 2^-32), kept values scaled by 1 / (1 - p), as torch's. Two 32-bit draws come from each
    full-range int64 of the generator; forward + backward on 1536 x 2048 took 15.5 ms against 44.5 ms
    for torch's (bench/pretrain_throughput.py --micro). Other devices keep torch's fused kernel. No
    parameters, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        n = x.numel()
        words = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)  # full 64-bit range
        # u >= p 2^32 with u = field + 2^31 read as unsigned; the same draws whatever x's dtype
        keep = words.view(torch.int32)[:n].view(x.shape) >= round(self.p * 2**32) - 2**31
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=1, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, stride=2),
    ]


def conv3x3_one_channel(padded: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 3x3 convolution of one input channel as one matmul over its 9 shifted copies.

    padded: (B, H + 2, W + 2), the map with the conv's zero padding; taps: (9, C), the kernel's rows
    flattened (``weight.view(C, 9).t()``); bias: (C,) or None; -> (B, H, W, C), i.e. channels-last. On CPU this is several
    times faster than oneDNN's convolution for C_in = 1, forward and backward (the weight gradient is one
    (9, N) x (N, C) matmul); training and inference both run their first conv through it."""
    cols = one_channel_cols(padded)  # (B, H, W, 9)
    y = torch.mm(cols.view(-1, 9), taps) if bias is None else torch.addmm(bias, cols.view(-1, 9), taps)
    return y.view(*cols.shape[:3], -1)


def one_channel_cols(padded: torch.Tensor) -> torch.Tensor:
    """The 9 shifted copies a 3x3 conv reads: (B, H + 2, W + 2) zero-padded map -> (B, H, W, 9), taps in
    the order of ``weight.view(C, 9)``."""
    H, W = padded.shape[1] - 2, padded.shape[2] - 2
    return torch.stack([padded[:, i : i + H, j : j + W] for i in range(3) for j in range(3)], dim=-1)


# first-conv outputs per slice of conv3x3_one_channel_pooled: on CPU 2 MB, so a slice and its pooled quarter
# stay in cache; on a GPU 64 MB, enough to fill it while still bounding the memory of a large batch
POOLED_SLICE_ELEMENTS = 1 << 19
POOLED_SLICE_ELEMENTS_GPU = 1 << 24


def conv3x3_one_channel_pooled(padded: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(conv3x3_one_channel(padded, taps, None), 2)`` without ever holding the unpooled map.

    padded (B, H + 2, W + 2) -> pooled (B, H // 2, W // 2, C) channels-last (an odd last row or column is
    dropped, as by the pool), computed in slices of ``POOLED_SLICE_ELEMENTS`` conv outputs along the first
    axis (:func:`pooled_slices`). The unpooled map is 64x the input (64 MB for 40 s of audio): written whole
    to memory and read back by the pool, it cost more than the conv itself; slice by slice it stays in
    cache. The 2x2 max is element-wise maxima over views of the slice, which write no pooling indices."""
    B, H2, W2 = padded.shape[0], (padded.shape[1] - 2) // 2 * 2, (padded.shape[2] - 2) // 2 * 2
    C = taps.shape[1]
    out = padded.new_empty(B, H2 // 2, W2 // 2, C)
    for h0, h1 in pooled_slices(padded, C):
        y = conv3x3_one_channel(padded[:, h0 : h1 + 2, : W2 + 2], taps, None)  # (B, h1 - h0, W2, C)
        y = y.view(B, (h1 - h0) // 2, 2, W2 // 2, 2 * C)  # row pairs; column pairs side by side with channels
        rows = torch.maximum(y[:, :, 0], y[:, :, 1])  # (B, n / 2, W / 2, 2C)
        torch.maximum(rows[..., :C], rows[..., C:], out=out[:, h0 // 2 : h1 // 2])
    return out


def pooled_slices(padded: torch.Tensor, channels: int) -> list[tuple[int, int]]:
    """Row ranges [h0, h1) of even length covering the pooled rows of ``padded`` (B, H + 2, W + 2), each
    with about ``POOLED_SLICE_ELEMENTS`` conv outputs of ``channels`` channels."""
    B, H2, W2 = padded.shape[0], (padded.shape[1] - 2) // 2 * 2, (padded.shape[2] - 2) // 2 * 2
    per_slice = POOLED_SLICE_ELEMENTS if padded.device.type == "cpu" else POOLED_SLICE_ELEMENTS_GPU
    step = max(2, per_slice // max(1, B * W2 * channels) // 2 * 2)
    return [(h0, min(h0 + step, H2)) for h0 in range(0, H2, step)]


def conv3x3_one_channel_map(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3_one_channel`` with the conv's zero padding of 1: (B, 1, H, W) -> (B, C, H, W), a channels-last view."""
    return conv3x3_one_channel(F.pad(x[:, 0], (1, 1, 1, 1)), taps, bias).permute(0, 3, 1, 2)


def temporal_pool(frames: torch.Tensor) -> torch.Tensor:
    """BYOL-A pooling: mean over time + max over time. frames: (B, T, d) -> (B, d)."""
    return frames.mean(dim=1) + frames.amax(dim=1)


class AudioNTT(nn.Module):
    """What both encoders share: conv blocks ``features``, per-frame ``fc``, mean + max pooling."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.d = config.d
        self.time_reduction = config.time_reduction
        blocks = _conv_block(1, CHANNELS)
        for _ in range(N_BLOCKS[config.arch] - 1):
            blocks += _conv_block(CHANNELS, CHANNELS)
        self.features = nn.Sequential(*blocks)

    def check_input(self, x: torch.Tensor) -> None:
        name, n_mels = type(self).__name__, self.config.n_mels
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != n_mels:
            raise ValueError(f"{name} expects log-mel (B, 1, {n_mels}, T), got {tuple(x.shape)}")
        if x.shape[3] < self.time_reduction:
            raise ValueError(f"{name} needs at least {self.time_reduction} log-mel frames, got {x.shape[3]}")

    def conv_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of each conv block k = 1, 2, ...: (B, 64, F / 2^k, T / 2^k)."""
        self.check_input(x)
        maps = []
        for i in range(0, len(self.features), 4):
            x = self.features[i : i + 4](x)
            maps.append(x)
        return maps

    @staticmethod
    def flatten_frames(x: torch.Tensor) -> torch.Tensor:
        # (B, C, F', T') -> (B, T', F'*C); mel-major order as in BYOL-A, so fc.0 weights line up.
        x = x.permute(0, 3, 2, 1)
        return x.reshape(x.shape[0], x.shape[1], -1)

    def frames_from_conv(self, conv: torch.Tensor) -> torch.Tensor:
        """Last conv map (B, 64, F', T') -> per-frame output (B, T', d)."""
        raise NotImplementedError

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, F, T) -> (B, T // time_reduction, d)
        self.check_input(x)
        return self.frames_from_conv(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, F, T) -> (B, d)
        return temporal_pool(self.frames(x))

    def _conv_layer(self, m: torch.Tensor, k: int, bins: int) -> torch.Tensor:
        """Conv block k's map (B, C, F_k, T_k), max-pooled over time to the encoder's frame grid (the
        pooling the later blocks apply) and over mel to ``bins`` bins, flattened mel-major: (B, T', bins*C)."""
        step = 2 ** (N_BLOCKS[self.config.arch] - 1 - k)
        if step > 1:
            m = F.max_pool2d(m, kernel_size=(1, step))
        return self.flatten_frames(F.adaptive_max_pool2d(m, (bins, m.shape[3])))

    def layer_frames(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-frame features from several depths, each (B, T', d); the last equals ``frames(x)``."""
        raise NotImplementedError


class AudioNTT2022(AudioNTT):
    """BYOL-A v2: two conv blocks (40 ms frames); fc Linear(conv_d, hidden)-ReLU-Dropout(0.3)-
    Linear(hidden, d - conv_d)-ReLU; per-frame output = [conv features, fc output] (d in total)."""

    layer_names = ("conv1", "conv2", "fc", "all")

    def __init__(self, n_mels: int = 64, d: int = 3072, hidden: int = V2_HIDDEN) -> None:
        super().__init__(EncoderConfig(arch="audiontt2022", n_mels=n_mels, d=d, hidden=hidden))
        conv_d = self.config.conv_d
        self.fc = nn.Sequential(
            nn.Linear(conv_d, hidden),
            nn.ReLU(inplace=True),
            Dropout(p=0.3),
            nn.Linear(hidden, d - conv_d),
            nn.ReLU(inplace=True),
        )

    def frames_from_conv(self, conv: torch.Tensor) -> torch.Tensor:
        x = self.flatten_frames(conv)  # (B, T', conv_d)
        return torch.cat([x, self.fc(x)], dim=-1)  # (B, T', d)

    def layer_frames(self, x: torch.Tensor) -> list[torch.Tensor]:
        """conv block 1, conv block 2, fc output, and their concatenation (= ``frames``), each (B, T // 4, d).

        Each layer sits in its own slots of the final d-vector, zeros elsewhere, so no feature is invented
        and ``conv2 + fc == all``: conv block 1's map is max-pooled to conv block 2's grid (time / 2,
        mel / 2) and fills the conv slots, like conv block 2; the fc output fills the last d - conv_d slots.
        """
        c1, c2 = self.conv_maps(x)
        conv_d, bins = self.config.conv_d, c2.shape[2]
        conv1, conv2 = self._conv_layer(c1, 0, bins), self.flatten_frames(c2)  # (B, T', conv_d) each
        fc = self.fc(conv2)  # (B, T', d - conv_d)
        z_fc, z_conv = fc.new_zeros(*fc.shape[:2], self.d - conv_d), fc.new_zeros(*fc.shape[:2], conv_d)
        return [
            torch.cat([conv1, z_fc], -1),
            torch.cat([conv2, z_fc], -1),
            torch.cat([z_conv, fc], -1),
            torch.cat([conv2, fc], -1),
        ]


class AudioNTT2020(AudioNTT):
    """BYOL-A v1: three conv blocks (80 ms frames); fc Linear(64 * F/8, d)-ReLU-Dropout(0.3)-Linear(d, d)-ReLU."""

    layer_names = ("conv1", "conv2", "conv3", "fc")

    def __init__(self, n_mels: int = 64, d: int = 2048) -> None:
        super().__init__(EncoderConfig(arch="audiontt2020", n_mels=n_mels, d=d))
        self.fc = nn.Sequential(
            nn.Linear(self.config.conv_d, d),
            nn.ReLU(inplace=True),
            Dropout(p=0.3),
            nn.Linear(d, d),
            nn.ReLU(inplace=True),
        )

    def frames_from_conv(self, conv: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten_frames(conv))

    def layer_frames(self, x: torch.Tensor) -> list[torch.Tensor]:
        """After each conv block and after the fc stack, each (B, T // 8, d).

        Conv block k's map is max-pooled over time to one frame per 8 log-mel frames and over mel to
        d / 64 bins (bins repeated when the map has fewer), then flattened mel-major like the fc input.
        """
        maps = self.conv_maps(x)
        bins = self.d // CHANNELS
        outs = [self._conv_layer(m, k, bins) for k, m in enumerate(maps)]
        return outs + [self.fc(self.flatten_frames(maps[-1]))]


def build_encoder(config: EncoderConfig) -> AudioNTT:
    """The encoder ``config.arch`` names."""
    if config.arch == "audiontt2022":
        return AudioNTT2022(n_mels=config.n_mels, d=config.d, hidden=config.hidden)
    return AudioNTT2020(n_mels=config.n_mels, d=config.d)
