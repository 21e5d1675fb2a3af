"""The one log-mel front end, shared by pretraining, the HEAR module, s3prl and the tasks.

Waveform (B, N) at ``sample_rate`` -> log-mel (B, n_mels, T) with
T = 1 + N // hop_length (centred STFT, reflect padding), the framing of torchaudio's
``MelSpectrogram`` (BYOL-A v1) and nnAudio's (BYOL-A v2), without depending on either. The two differ
only in their mel filters: HTK mel scale with unnormalised triangles (torchaudio) or librosa's Slaney
mel scale with area-normalised triangles (nnAudio); ``FrontendConfig.mel_scale`` / ``mel_norm`` choose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .dictconfig import DictConfig


@dataclass(frozen=True)
class FrontendConfig(DictConfig):
    """Log-mel parameters. Defaults are the paper's: 16 kHz, 25 ms window, 10 ms hop, 64 mels 50-8000 Hz.

    Official BYOL-A checkpoints were trained with ``n_fft = win_length = 1024`` and 60-7800 Hz;
    see :meth:`byola_v1` and :meth:`byola_v2`.
    """

    section = "frontend"

    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    # log(x + eps): float32 machine epsilon, as BYOL-A.
    eps: float = float(torch.finfo(torch.float32).eps)
    mel_scale: str = "htk"  # htk (torchaudio's default) | slaney (librosa's and nnAudio's default)
    mel_norm: str | None = None  # None: peak-1 triangles | slaney: each triangle scaled to unit area (2 / width in Hz)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"FrontendConfig: sample_rate, hop_length and n_mels must be positive, got {self}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(
                f"FrontendConfig: need 0 < win_length <= n_fft, got win_length={self.win_length}, n_fft={self.n_fft}"
            )
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"FrontendConfig: need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if self.mel_scale not in ("htk", "slaney"):
            raise ValueError(f"FrontendConfig: mel_scale must be 'htk' or 'slaney', got {self.mel_scale!r}")
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"FrontendConfig: mel_norm must be null or 'slaney', got {self.mel_norm!r}")

    @classmethod
    def byola_v1(cls) -> FrontendConfig:
        """The front end of the official BYOL-A v1 checkpoints (torchaudio MelSpectrogram)."""
        return cls(n_fft=1024, win_length=1024, hop_length=160, n_mels=64, f_min=60.0, f_max=7800.0)

    @classmethod
    def byola_v2(cls) -> FrontendConfig:
        """The front end of the official BYOL-A v2 checkpoints (nnAudio MelSpectrogram, librosa's filters)."""
        return cls(
            n_fft=1024,
            win_length=1024,
            hop_length=160,
            n_mels=64,
            f_min=60.0,
            f_max=7800.0,
            mel_scale="slaney",
            mel_norm="slaney",
        )

    def n_frames(self, n_samples: int) -> int:
        """Frames the centred STFT gives for ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    def samples_for_frames(self, n_frames: int) -> int:
        """Smallest sample count giving ``n_frames`` frames (0.95 s -> 96 frames at 10 ms hop)."""
        return (n_frames - 1) * self.hop_length


# Slaney's scale (librosa's default): linear below 1 kHz at 200/3 Hz per mel, logarithmic above,
# 27 mels per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: torch.Tensor | float, scale: str = "htk") -> torch.Tensor:
    """Hz -> mel. HTK: m = 2595 log10(1 + f / 700) (torchaudio's default, BYOL-A v1); Slaney: see above."""
    f = torch.as_tensor(f, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    linear = f / _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL + torch.log(f.clamp_min(1e-12) / _SLANEY_BREAK_HZ) / _SLANEY_LOGSTEP
    return torch.where(f >= _SLANEY_BREAK_HZ, log, linear)


def mel_to_hz(m: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    brk = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    return torch.where(m >= brk, _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOGSTEP * (m - brk)), _SLANEY_HZ_PER_MEL * m)


def mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, scale: str = "htk", norm: str | None = None
) -> torch.Tensor:
    """Triangular filters (n_freqs, n_mels), centres evenly spaced on the ``scale`` mel scale.

    Filter k rises from centre k-1 to a peak of 1 at centre k and falls to 0 at centre k+1;
    ``norm="slaney"`` divides it by half its width in Hz, so every filter has unit area.
    """
    bin_hz = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    m = torch.linspace(float(hz_to_mel(f_min, scale)), float(hz_to_mel(f_max, scale)), n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(m, scale)  # (n_mels + 2,)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (upper - lower))
    return fb.to(torch.float32)


class LogMelSpectrogram(nn.Module):
    """Waveform -> log(mel power spectrogram + eps). Batched, runs on whatever device it lives on."""

    def __init__(self, config: FrontendConfig = FrontendConfig()) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        fb = mel_filterbank(
            config.n_fft // 2 + 1,
            config.f_min,
            config.f_max,
            config.n_mels,
            config.sample_rate,
            config.mel_scale,
            config.mel_norm,
        )
        self.register_buffer("mel_fb", fb, persistent=False)

    def forward(self, wave: torch.Tensor, center: bool = True, time_major: bool = False) -> torch.Tensor:
        # wave: (B, N) or (N,) -> (B, n_mels, T), or (B, T, n_mels) when time_major (the fast inference
        # path's layout); T = 1 + N // hop centred, 1 + (N - n_fft) // hop otherwise
        if wave.ndim == 1:
            wave = wave[None]
        c = self.config
        # The STFT stays float32 even under autocast: log of tiny powers needs the precision.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(
                wave.float(),
                n_fft=c.n_fft,
                hop_length=c.hop_length,
                win_length=c.win_length,
                window=self.window,
                center=center,
                pad_mode="reflect",
                return_complex=True,
            )  # (B, n_fft//2+1, T)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (B, T, n_mels)
            mel = mel.add_(c.eps).log_()  # in place: the product is a fresh tensor of ours
            return mel if time_major else mel.transpose(1, 2)


class Normalizer(nn.Module):
    """BYOL-A's pre-normalisation: (x - mean) / std with statistics of the pretraining corpus."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise ValueError(f"normalisation stats must be finite with std > 0, got mean={mean}, std={std}")
        self.mean = float(mean)
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean:.6g}, std={self.std:.6g}"


class Frontend(nn.Module):
    """Waveform -> normalised log-mel (B, 1, n_mels, T): what the encoder eats at inference."""

    def __init__(self, config: FrontendConfig, mean: float, std: float) -> None:
        super().__init__()
        self.config = config
        self.logmel = LogMelSpectrogram(config)
        self.norm = Normalizer(mean, std)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.norm(self.logmel(wave)).unsqueeze(1)


def running_stats(batches) -> tuple[float, float]:
    """Mean and std over all values of an iterable of log-mel tensors (float64 accumulation)."""
    n, s, ss = 0, 0.0, 0.0
    for x in batches:
        x = x.double()
        n += x.numel()
        s += float(x.sum())
        ss += float(x.square().sum())
    if n == 0:
        raise ValueError("no data to compute normalisation statistics from")
    mean = s / n
    var = max(ss / n - mean * mean, 0.0)
    return mean, math.sqrt(var) if var > 0 else 1.0
