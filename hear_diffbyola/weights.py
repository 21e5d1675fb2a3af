"""The weights file and the one loader every integration uses.

Our format: safetensors holding the encoder state dict (BYOL-A names ``features.*``, ``fc.*``) and
a JSON header under metadata key ``hear_diffbyola`` with the front-end config, normalisation
stats, encoder config, lambda and provenance, so loading needs no guesswork.
Official BYOL-A v1 ``.pth`` files (plain state dicts) load too, with BYOL-A v1's front end.
Nothing here unpickles arbitrary objects.
"""
from __future__ import annotations

from .errors import DiffByolaError

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .encoder import AudioNTT2020, EncoderConfig, temporal_pool
from .frontend import Frontend, FrontendConfig

FORMAT = "hear-diffbyola/1"
HEADER_KEY = "hear_diffbyola"
# Normalisation statistics the BYOL-A authors use with their official checkpoints.
BYOLA_V1_NORM = (-5.4919195, 5.0389895)
# Shipped weights live in the checkout's top-level `weights/` folder (also what an editable install
# sees); a regular install puts that folder inside the package as `hear_diffbyola/_weights/`
# (pyproject package-dir mapping), because the name `weights` is taken by this module.
_PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = _PACKAGE_DIR / "_weights" if (_PACKAGE_DIR / "_weights").is_dir() else _PACKAGE_DIR.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "diffbyola_lam0.5.safetensors"


class WeightsError(DiffByolaError, ValueError):
    """A weights file is missing, unreadable or not what was expected; the message names it."""


class PretrainedModel(nn.Module):
    """Front end (with its norm stats) + encoder, in eval mode: waveform at ``sample_rate`` -> embeddings."""

    def __init__(self, frontend: Frontend, encoder: AudioNTT2020, header: dict[str, Any]) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.header = header
        self.sample_rate = frontend.config.sample_rate
        self.eval()

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        # wave: (B, N) -> (B, T', d), T' = (1 + N // hop) // 8
        return self.encoder.frames(self.frontend(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # wave: (B, N) -> (B, d) BYOL-A clip embedding
        return temporal_pool(self.frames(wave))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks: the identity of a weights file (caches, model cards)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | Path, write) -> None:
    """Write through ``write(tmp_path)`` into a temp file beside ``path``, fsync, then rename over it,
    so a crash leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shared weights unreadable to others
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_header(frontend: FrontendConfig, norm: tuple[float, float], encoder: EncoderConfig,
                lam: float | None, provenance: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "frontend": frontend.to_dict(), "norm": {"mean": norm[0], "std": norm[1]},
            "encoder": encoder.to_dict(), "lam": lam, "provenance": provenance}


def save_weights(path: str | Path, encoder_state: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder_state.items()}
    meta = {HEADER_KEY: json.dumps(header, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:
        raise WeightsError(f"{path} is not a readable safetensors file ({e}); re-export it with 'hear-diffbyola export'") from e
    if HEADER_KEY not in meta:
        raise WeightsError(f"{path} has no '{HEADER_KEY}' header: it was not written by 'hear-diffbyola export'")
    try:
        header = json.loads(meta[HEADER_KEY])
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: corrupt '{HEADER_KEY}' header ({e})") from e
    if header.get("format") != FORMAT:
        raise WeightsError(f"{path}: header format {header.get('format')!r}, this version reads {FORMAT!r}")
    return tensors, header


def read_byola_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} could not be read as a PyTorch state dict ({e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "fc.0.weight" not in state or "fc.3.weight" not in state:
        keys = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{path} is not an AudioNTT2020 state dict (expected keys features.*, fc.0.weight, fc.3.weight; got {keys})")
    return state


def encoder_config_from_state(state: dict[str, torch.Tensor], path: Path) -> EncoderConfig:
    """Infer (n_mels, d) of an AudioNTT2020 from its fc shapes."""
    fc0 = state["fc.0.weight"]
    d, n_in = fc0.shape
    if n_in % 64:
        raise WeightsError(f"{path}: fc.0.weight has {n_in} inputs, expected 64 * n_mels / 8")
    return EncoderConfig(n_mels=n_in // 64 * 8, d=int(d))


def load_pretrained(path: str | Path | None = None, *, norm_mean: float | None = None, norm_std: float | None = None,
                    device: str | torch.device = "cpu") -> PretrainedModel:
    """Load our ``.safetensors`` export, or an official BYOL-A v1 ``.pth`` (front end n_fft=1024, 60-7800 Hz,
    stats -5.4919195 / 5.0389895 unless ``norm_mean``/``norm_std`` override them). ``None``/'' -> shipped default."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        hint = " (the default weights ship with the package; reinstall it)" if path == DEFAULT_WEIGHTS else ""
        raise WeightsError(f"weights file {path} does not exist{hint}; expected a .safetensors from "
                           "'hear-diffbyola export' or an official BYOL-A AudioNTT2020-BYOLA-64x96d*.pth")
    if path.suffix == ".safetensors":
        state, header = read_safetensors(path)
        try:
            fe = FrontendConfig.from_dict(header["frontend"])
            enc = EncoderConfig.from_dict(header["encoder"])
            mean, std = float(header["norm"]["mean"]), float(header["norm"]["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: header lacks or has an invalid field ({e})") from e
    else:
        state = read_byola_pth(path)
        enc = encoder_config_from_state(state, path)
        fe = FrontendConfig.byola_v1()
        if enc.n_mels != fe.n_mels:
            fe = FrontendConfig(**{**fe.to_dict(), "n_mels": enc.n_mels})
        mean, std = BYOLA_V1_NORM
        header = {"format": "byol-a-v1", "frontend": fe.to_dict(), "norm": {"mean": mean, "std": std},
                  "encoder": enc.to_dict(), "lam": 0.0, "provenance": {"source": str(path)}}
    if norm_mean is not None or norm_std is not None:
        mean = mean if norm_mean is None else float(norm_mean)
        std = std if norm_std is None else float(norm_std)
        header = {**header, "norm": {"mean": mean, "std": std}}
    encoder = AudioNTT2020.from_config(enc)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not fit AudioNTT2020(n_mels={enc.n_mels}, d={enc.d}): {e}") from e
    return PretrainedModel(Frontend(fe, mean, std), encoder, header).to(device)


def export_run(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Turn a pretraining run's last checkpoint into a weights file (online encoder + header). Returns the header."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not ckpt_path.is_file():
        raise WeightsError(f"{run_dir} holds no checkpoint ({ckpt_path} missing); is it the --out of 'hear-diffbyola pretrain'?")
    try:
        ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"checkpoint {ckpt_path} is unreadable ({e})") from e
    cfg = ckpt["config"]
    state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    train = cfg["train"]
    provenance = {**ckpt.get("provenance", {}), "steps": int(ckpt["step"]), "wall_time_s": float(ckpt.get("wall_time", 0.0)),
                  "batch_size": train["batch_size"], "lr": train["lr"], "run_dir": str(run_dir.resolve()),
                  "finished": summary.get("finished")}
    header = make_header(FrontendConfig.from_dict(cfg["frontend"]), (ckpt["norm"]["mean"], ckpt["norm"]["std"]),
                         EncoderConfig.from_dict(cfg["encoder"]), float(cfg["learner"]["lam"]), provenance)
    save_weights(out, state, header)
    return header
