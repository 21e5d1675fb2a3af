"""The fast, frozen inference path every embedding goes through (HEAR, s3prl, the task embedders).

:class:`InferenceEncoder` is an eval-only copy of an :class:`~hear_diffbyola.encoder.AudioNTT` built once
per weights state (:func:`inference_encoder`):

* BatchNorm folded into the convolutions with the running statistics (eval mode, whatever mode the
  model is in), dropout gone; ReLU applied after max-pooling (they commute: ReLU is monotone), on a
  quarter of the data.
* Time-major channels-last maps: the log-mel goes in as (B, 1, T, F) with the conv kernels transposed,
  so each conv map lies in memory as (B, T', F', C) and the per-frame flatten (mel-major, channel
  fastest: BYOL-A's order) is a free view instead of a permuted copy.
* For AudioNTT2020's two 40 ms-shifted passes (timestamps), every layer but the last max-pool is
  shift-equivariant on the pooling grid, so one pass serves both: the last conv map is pooled at the
  two phases. Only the first frame of the shifted pass sees the signal's left edge differently (zero
  padding there in the two-pass reference); :mod:`hear_diffbyola.embed` recomputes it exactly.

The copy never changes the model: no mode switch, no BatchNorm update, no shared module touched, so
calls from several threads on a model in any mode are safe and give eval-mode embeddings. It is cached
per encoder and rebuilt when the encoder's tensors change (``load_state_dict``, an optimiser step,
``.to(device)``, a replaced parameter): the cache key holds each tensor and its in-place version counter.
"""

from __future__ import annotations

import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from . import blas, fused, runtime
from .encoder import N_BLOCKS, AudioNTT, conv3x3_one_channel_map, conv3x3_one_channel_pooled
from .frontend import Frontend

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # encoder -> (state key, InferenceEncoder)
_lock = threading.Lock()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN(conv(x)) as one conv: W' = W s, b' = (b - mean) s + beta, s = gamma / sqrt(var + eps).

    Folded in float64, stored float32; kernels transposed to the time-major (T, F) layout, channels-last."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("inference needs BatchNorm running statistics (track_running_stats=True)")
    w, b = conv.weight.detach().double(), conv.bias.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    w = (w * scale[:, None, None, None]).transpose(2, 3)  # (C_out, C_in, kT, kF)
    b = (b - bn.running_mean.detach().double()) * scale + bn.bias.detach().double()
    return w.float().contiguous(memory_format=torch.channels_last), b.float()


def _linear(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    # (in, out) so addmm needs no transposed view; a copy of the weights, never the module's own tensors
    return layer.weight.detach().float().t().contiguous(), layer.bias.detach().float().clone()


class InferenceEncoder:
    """Eval-mode ``encoder`` with BN folded in; input time-major normalised log-mel (B, 1, T, F)."""

    def __init__(self, encoder: AudioNTT) -> None:
        self.arch = encoder.config.arch
        self.d = encoder.d
        self.time_reduction = encoder.time_reduction
        self.conv_d = encoder.config.conv_d
        self.n_mels = encoder.config.n_mels
        feats = encoder.features
        self.convs = [_fold(feats[i], feats[i + 1]) for i in range(0, len(feats), 4)]
        self.fc = [_linear(encoder.fc[0]), _linear(encoder.fc[3])]
        # (kT kF, C_out): the first conv's kernel for _conv1, taps in the order _conv1 stacks them
        self.conv1_matrix = self.convs[0][0].reshape(self.convs[0][0].shape[0], 9).t().contiguous()
        assert len(self.convs) == N_BLOCKS[self.arch]

    def to_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Reference layout (B, 1, F, T) -> (B, 1, T, F) for the methods below (a view)."""
        return x.transpose(2, 3)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[3] != self.n_mels:
            raise ValueError(
                f"InferenceEncoder expects time-major log-mel (B, 1, T, {self.n_mels}), got {tuple(x.shape)}"
            )
        if x.shape[2] < self.time_reduction:
            raise ValueError(f"InferenceEncoder needs at least {self.time_reduction} log-mel frames, got {x.shape[2]}")

    def _conv1(self, x: torch.Tensor) -> torch.Tensor:
        """First conv (one input channel, BN folded in) as ``conv3x3_one_channel``: 5-7x faster than oneDNN's
        convolution for C_in = 1 on CPU (bench/embed_throughput.py), and channels-last by construction."""
        return conv3x3_one_channel_map(x, self.conv1_matrix, self.convs[0][1])  # (B, 64, T, F) channels-last

    def _conv1_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``max_pool2d(_conv1(x), 2).relu_()``, the pool taken slice by slice (``conv3x3_one_channel_pooled``),
        the bias added after it (a per-channel constant commutes with the max, exactly: rounding is monotone),
        on a quarter of the data. The fast path's workers on CPU run it as one compiled kernel instead
        (:func:`hear_diffbyola.fused.pooled_relu`), 2-3x faster. Only they: other single-threaded callers
        (say, forked DataLoader workers) would each pay a compile and its memory for a few per cent."""
        if runtime.in_worker() and fused.usable(x.device):
            out = fused.pooled_relu(x[:, 0], self.conv1_matrix, self.convs[0][1])
            if out is not None:
                return out.permute(0, 3, 1, 2)  # (B, 64, T / 2, F / 2) channels-last
        pooled = conv3x3_one_channel_pooled(F.pad(x[:, 0], (1, 1, 1, 1)), self.conv1_matrix)  # (B, T/2, F/2, 64)
        return pooled.add_(self.convs[0][1]).relu_().permute(0, 3, 1, 2)  # (B, 64, T / 2, F / 2) channels-last

    def _block(self, x: torch.Tensor, k: int, pool: bool = True) -> torch.Tensor:
        if k == 0 and pool:
            return self._conv1_pooled(x)
        if k == 0:
            y = self._conv1(x)
        else:
            w, b = self.convs[k]
            y = F.conv2d(x, w, b, padding=1)  # (B, 64, T, F), channels-last
        return F.max_pool2d(y, 2).relu_() if pool else y

    def conv_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output, time-major: (B, 64, T / 2^k, F / 2^k) (channels-last); cf. ``AudioNTT.conv_maps``."""
        self._check(x)
        x = x.contiguous(memory_format=torch.channels_last)
        maps = []
        for k in range(len(self.convs)):
            x = self._block(x, k)
            maps.append(x)
        return maps

    @staticmethod
    def flatten(m: torch.Tensor) -> torch.Tensor:
        """(B, C, T', F') time-major map -> (B, T', F' * C), mel-major as ``AudioNTT.flatten_frames``."""
        m = m.permute(0, 2, 3, 1)  # (B, T', F', C): contiguous for a channels-last map, so a view
        return m.reshape(m.shape[0], m.shape[1], -1)

    def _fc(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, conv_d) -> (N, fc out); Linear-ReLU-(Dropout: off at eval)-Linear-ReLU. On a single-threaded
        # worker the matmuls go to whichever BLAS ran their shape faster here (hear_diffbyola/blas.py).
        addmm = blas.addmm if runtime.in_worker() else torch.addmm
        (w0, b0), (w3, b3) = self.fc
        return addmm(b3, addmm(b0, x, w0).relu_(), w3).relu_()

    def frames_from_map(self, m: torch.Tensor) -> torch.Tensor:
        """Last block's pooled map (B, 64, T', F') -> per-frame output (B, T', d)."""
        x = self.flatten(m)
        B, T = x.shape[:2]
        if self.arch == "audiontt2020":
            return self._fc(x.reshape(B * T, -1)).view(B, T, -1)
        out = x.new_empty(B, T, self.d)  # [conv features, fc output] written in place, no cat
        out[..., : self.conv_d] = x
        out[..., self.conv_d :] = self._fc(x.reshape(B * T, -1)).view(B, T, -1)
        return out

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, F) time-major -> (B, T // r, d); equals ``encoder.eval().frames`` on the (B, 1, F, T) input."""
        return self.frames_from_map(self.conv_maps(x)[-1])

    def phase_frames(self, x: torch.Tensor, phases: int) -> list[torch.Tensor]:
        """Frames on ``phases`` grids shifted by r / phases log-mel frames, from one pass: [(B, n_k, d)].

        Grid k is what ``frames`` gives on the log-mel shifted by k r / phases frames, except near the
        left edge of ``x`` (see the module docstring). Only the last max-pool sees the shift when
        r / phases is a multiple of the last block's input resolution r / 2, so ``phases`` is 1 or 2."""
        if phases == 1:
            return [self.frames(x)]
        if phases != 2:
            raise ValueError(f"phase_frames shares one pass for 1 or 2 phases, got {phases}")
        self._check(x)
        x = x.contiguous(memory_format=torch.channels_last)
        last = len(self.convs) - 1
        for k in range(last):
            x = self._block(x, k)
        y = self._block(x, last, pool=False)  # (B, 64, T_last, F_last): pooled at two phases below
        return [self.frames_from_map(F.max_pool2d(y[:, :, k:], 2).relu_()) for k in range(2)]

    def _conv_layer(self, m: torch.Tensor, k: int, bins: int) -> torch.Tensor:
        """Time-major twin of ``AudioNTT._conv_layer``: pool block k's map to the frame grid and ``bins`` mels."""
        step = 2 ** (len(self.convs) - 1 - k)
        if step > 1:
            m = F.max_pool2d(m, kernel_size=(step, 1))
        return self.flatten(F.adaptive_max_pool2d(m, (m.shape[2], bins)))

    def layer_frames(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``encoder.layer_frames`` (s3prl's hidden states) on time-major input, each (B, T // r, d)."""
        maps = self.conv_maps(x)
        if self.arch == "audiontt2020":
            bins = self.d // maps[0].shape[1]
            outs = [self._conv_layer(m, k, bins) for k, m in enumerate(maps)]
            last = self.flatten(maps[-1])
            B, T = last.shape[:2]
            return outs + [self._fc(last.reshape(B * T, -1)).view(B, T, -1)]
        c1, c2 = maps
        conv2 = self.flatten(c2)
        B, T = conv2.shape[:2]
        conv1 = self._conv_layer(c1, 0, c2.shape[3])
        fc = self._fc(conv2.reshape(B * T, -1)).view(B, T, -1)
        z_fc, z_conv = fc.new_zeros(B, T, self.d - self.conv_d), fc.new_zeros(B, T, self.conv_d)
        return [
            torch.cat([conv1, z_fc], -1),
            torch.cat([conv2, z_fc], -1),
            torch.cat([z_conv, fc], -1),
            torch.cat([conv2, fc], -1),
        ]


def _state_key(encoder: AudioNTT) -> tuple:
    # The tensors themselves (not their addresses: held here, they cannot be freed and reused) and
    # their version counters, which every in-place write bumps (load_state_dict's copy_, optimiser steps).
    return tuple((name, t, t._version) for name, t in list(encoder.named_parameters()) + list(encoder.named_buffers()))


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(n1 == n2 and t1 is t2 and v1 == v2 for (n1, t1, v1), (n2, t2, v2) in zip(a, b))


def inference_encoder(encoder: AudioNTT) -> InferenceEncoder:
    """The frozen eval-mode copy of ``encoder`` for its current weights (built once, then cached)."""
    key = _state_key(encoder)
    with _lock:
        hit = _cache.get(encoder)
        if hit is not None and _same(hit[0], key):
            return hit[1]
    fast = InferenceEncoder(encoder)  # outside the lock: building reads the weights only
    with _lock:
        _cache[encoder] = (key, fast)
    return fast


def logmel_time_major(frontend: Frontend, seg: torch.Tensor) -> torch.Tensor:
    """Normalised log-mel of an already padded segment (B, L), time-major: (B, 1, T, F), T = 1 + (L - n_fft) // hop.

    The one front end's own log-mel, in the layout the fast encoder reads, normalised in place."""
    mel = frontend.logmel(seg, center=False, time_major=True)  # (B, T, n_mels)
    norm = frontend.norm
    return mel.sub_(norm.mean).div_(norm.std).unsqueeze(1)
