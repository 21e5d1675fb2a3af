"""s3prl upstream expert: DiffBYOL-A frame-level hidden states every 40 ms from four depths of the encoder.

A thin adapter over hear_diffbyola: weights from ``weights.load_pretrained``, frames from
``embed.dense_frames`` on the model's ``embed.FrameGrid`` with the encoder's ``layer_frames``; it
holds no model code of its own. It imports ``hear_diffbyola`` absolutely so it runs both as
``hear_diffbyola.s3prl_upstream.expert`` and, after ``hear-diffbyola s3prl-install``, as
``s3prl.upstream.diffbyola.expert``.

Hidden states (4 layers, each (B, T, d)), ``encoder.layer_names``: AudioNTT2022 (v2) conv block 1,
conv block 2, fc output and their concatenation (each in its own slots of the d-vector, zeros
elsewhere); AudioNTT2020 (v1) conv blocks 1-3 and the fc stack. One frame every 40 ms, the HEAR
module's timestamps: v2 in one pass on its native grid (frame i centred at 15 + 40 i ms), v1 in
two passes shifted by 40 ms, interleaved (35 + 40 i ms). Downsample rate 640 samples at 16 kHz for
every layer. s3prl's byol_a gives one vector per second instead.

Lengths follow s3prl's convention: for a batch whose longest wav has N samples, T = ceil(N / 640)
(at least 1), one frame per 640-sample step starting inside the audio, exactly what
``S3PRLUpstream`` expects (``len(range(0, N, 640))``) and per item ceil(n / 640), what it reports
as valid lengths. The batch is zero-padded at the end far enough for frame T - 1 to exist, so a
wav shorter than one frame gets one. Frames whose receptive field ends past an item's last sample
see zero padding, as silence.

The model stays frozen in eval mode (BatchNorm running statistics, no dropout) whatever
``train()`` the caller sets, and no gradient flows into it: s3prl's ``-f`` does not fine-tune it.
Hidden states come from the frozen inference copy (``hear_diffbyola.inference``, BatchNorm folded into
the convolutions), the same fast path as the HEAR module; the model's state is never changed by a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hear_diffbyola.embed import FrameGrid, dense_frames, layer_frames
from hear_diffbyola.inputs import check_audio, check_model_dtype
from hear_diffbyola.weights import load_pretrained

SAMPLE_RATE = 16000  # s3prl feeds 16 kHz waveforms
OPTIONS = ("norm_mean", "norm_std")  # model_config / extra_conf keys, passed to load_pretrained


def read_model_config(model_config: str | Path | dict | None) -> dict[str, float]:
    """s3prl's ``-g`` file (YAML) or an ``extra_conf`` dict: optional ``norm_mean`` / ``norm_std`` overrides."""
    if model_config is None or model_config == "":
        return {}
    if isinstance(model_config, dict):
        data = model_config
    else:
        import yaml

        path = Path(model_config)
        if not path.is_file():
            raise FileNotFoundError(
                f"diffbyola model_config {path} does not exist; it is an optional YAML file "
                f"with keys {list(OPTIONS)} (s3prl runner: -g PATH)"
            )
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"diffbyola model_config {path}: expected a mapping with keys {list(OPTIONS)}, "
                f"got {type(data).__name__}"
            )
    unknown = sorted(set(data) - set(OPTIONS))
    if unknown:
        raise ValueError(f"diffbyola model_config: unknown keys {unknown}; valid keys: {list(OPTIONS)}")
    return {k: float(v) for k, v in data.items()}


class UpstreamExpert(nn.Module):
    def __init__(
        self, ckpt: str | Path | None = None, model_config: str | Path | dict | None = None, **kwargs: Any
    ) -> None:
        """``ckpt``: our ``.safetensors`` or an official BYOL-A ``.pth`` (None: the shipped weights).
        ``model_config`` / keyword arguments: optional ``norm_mean``, ``norm_std``."""
        super().__init__()
        kwargs.pop("refresh", None)  # s3prl passes it; nothing is downloaded
        unknown = sorted(set(kwargs) - set(OPTIONS))
        if unknown:
            raise TypeError(
                f"diffbyola UpstreamExpert: unexpected arguments {unknown}; "
                f"accepted: ckpt, model_config, refresh, {', '.join(OPTIONS)}"
            )
        options = {**read_model_config(model_config), **{k: float(v) for k, v in kwargs.items()}}
        self.model = load_pretrained(ckpt or None, **options)
        if self.model.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"diffbyola: weights {ckpt} expect {self.model.sample_rate} Hz audio, s3prl feeds {SAMPLE_RATE} Hz"
            )
        self.grid = FrameGrid.of(self.model)  # 40 ms: native for v2, two shifted passes for v1
        self.downsample_rate = self.grid.hop_samples
        self.layer_names = tuple(self.model.encoder.layer_names)
        self.model.eval()

    def train(self, mode: bool = True) -> UpstreamExpert:
        super().train(mode)
        self.model.eval()  # a frozen feature extractor: S3PRLUpstream calls train() after its probe
        return self

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return self.downsample_rate

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, Any]:
        # wavs: B x (N_i,) at 16 kHz -> hidden_states: 4 x (B, T, d), T = ceil(max N_i / 640) (at least 1)
        if len(wavs) == 0:
            raise ValueError("diffbyola: empty batch (no waveforms)")
        for i, w in enumerate(wavs):
            if w.ndim != 1:
                raise ValueError(
                    f"diffbyola: waveform {i} has shape {tuple(w.shape)}; s3prl upstreams take 1-D mono 16 kHz tensors"
                )
        # the HEAR module's checks: integer PCM and NaN/Inf refused, far-too-loud audio warned about
        check_audio(wavs, "diffbyola upstream")
        check_model_dtype(self.model, "diffbyola upstream")
        longest = max(w.shape[0] for w in wavs)
        # s3prl's convention: one frame per 640-sample step starting inside the audio, T = ceil(N / 640)
        t = max(1, -(-longest // self.downsample_rate))
        # frame t - 1 must exist: pad with zeros as far as its block needs
        n = max(longest, self.grid.samples_for(t), self.grid.min_samples)
        batch = wavs[0].new_zeros(len(wavs), n, dtype=torch.float32)  # (B, n)
        for i, w in enumerate(wavs):
            batch[i, : w.shape[0]] = w
        # the encoder's layer_frames through the frozen eval-mode inference copy (embed.layer_frames)
        hidden, _ = dense_frames(self.model, batch, shifts=self.grid.shifts, fn=layer_frames(self.model))
        hidden = [h[:, :t] for h in hidden]
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
