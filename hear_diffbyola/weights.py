"""The weights file and the one loader every integration uses.

Our format: safetensors holding the encoder state dict (BYOL-A names ``features.*``, ``fc.*``) and
a JSON header under metadata key ``hear_diffbyola`` with the front-end config, normalisation
stats, encoder config (architecture included), lambda and provenance, so loading needs no guesswork.
Official BYOL-A ``.pth`` files load too: v1 (AudioNTT2020) or v2 (AudioNTT2022), recognised by their
keys and shapes, each with its authors' front end and normalisation statistics. Nothing here
unpickles arbitrary objects (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .encoder import CHANNELS, AudioNTT, EncoderConfig, build_encoder, temporal_pool
from .errors import DiffByolaError, OutOfSpaceError
from .frontend import Frontend, FrontendConfig

FORMAT = "hear-diffbyola/2"
# Format 1 headers predate encoder.arch; every file of that format holds an AudioNTT2020.
FORMAT_V1 = "hear-diffbyola/1"
HEADER_KEY = "hear_diffbyola"
# Normalisation statistics the BYOL-A authors publish with their official checkpoints
# (v1: the BYOL-A README; v2: the v2 README's example, from EVAR's output).
BYOLA_V1_NORM = (-5.4919195, 5.0389895)
BYOLA_V2_NORM = (-9.660292, 4.7219563)
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

    def __init__(self, frontend: Frontend, encoder: AudioNTT, header: dict[str, Any]) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.header = header
        self.sample_rate = frontend.config.sample_rate
        self.eval()

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        # wave: (B, N) -> (B, T', d), T' = (1 + N // hop) // time_reduction
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
    so a crash leaves either the old file or the new one, never a torn one. A full disk raises
    :class:`OutOfSpaceError` saying so (the temp file is removed, the old file untouched).

    Give ``write`` bytes-level writers (``Path.write_bytes`` of a serialised buffer): serialisers that
    write files themselves (torch.save, safetensors.save_file) report a full disk as opaque errors."""
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise OutOfSpaceError(
                errno.ENOSPC,
                f"no space left on device: writing {path} failed; {kept}. Free space there and run the command again",
            ) from e
        raise


def make_header(
    frontend: FrontendConfig,
    norm: tuple[float, float],
    encoder: EncoderConfig,
    lam: float | None,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "frontend": frontend.to_dict(),
        "norm": {"mean": norm[0], "std": norm[1]},
        "encoder": encoder.to_dict(),
        "lam": lam,
        "provenance": provenance,
    }


def save_weights(path: str | Path, encoder_state: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder_state.items()}
    check_finite(tensors, Path(path), "refusing to write")
    data = save(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def check_finite(tensors: dict[str, torch.Tensor], path: Path, what: str = "cannot load it") -> None:
    """Raise WeightsError naming every tensor that holds NaN or Inf: such weights embed everything as NaN."""
    bad = [
        (k, int((~torch.isfinite(v)).sum()))
        for k, v in sorted(tensors.items())
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        listed = ", ".join(f"{k} ({n} values)" for k, n in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise WeightsError(
            f"{path}: {len(bad)} tensor(s) hold NaN or Inf, {what}: {listed}. The run that made "
            "them diverged; export an earlier checkpoint or retrain with a lower train.lr"
        )


def check_norm(mean: float, std: float, path: Path, given: tuple[float | None, float | None] = (None, None)) -> None:
    """Raise WeightsError unless the log-mel normalisation is usable: finite mean, finite std > 0
    (std 0 divides by zero, NaN makes every embedding NaN). Names where the bad number came from."""
    problems = []
    for what, value, override in (("mean", mean, given[0]), ("std", std, given[1])):
        if not math.isfinite(value) or (what == "std" and value <= 0):
            source = f"norm_{what}={override!r} given" if override is not None else f"the header's norm.{what}"
            problems.append(f"{source} is {value!r}")
    if problems:
        raise WeightsError(
            f"{path}: unusable log-mel normalisation: {'; '.join(problems)} (need a finite mean and a "
            "finite std > 0); pass valid norm_mean/norm_std, or re-export the weights"
        )


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({e}); re-export it with 'hear-diffbyola export'"
        ) from e
    if HEADER_KEY not in meta:
        raise WeightsError(f"{path} has no '{HEADER_KEY}' header: it was not written by 'hear-diffbyola export'")
    try:
        header = json.loads(meta[HEADER_KEY])
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: corrupt '{HEADER_KEY}' header ({e})") from e
    if header.get("format") == FORMAT_V1 and isinstance(header.get("encoder"), dict):
        header = {**header, "format": FORMAT, "encoder": {"arch": "audiontt2020", **header["encoder"]}}
    if header.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: header format {header.get('format')!r}, this version reads {FORMAT!r} and {FORMAT_V1!r}"
        )
    return tensors, header


def read_byola_pth(path: Path) -> dict[str, torch.Tensor]:
    """An official BYOL-A encoder state dict, unwrapped as the official loaders do: a ``state_dict`` and then a
    ``model`` entry are unwrapped, a ``model.`` (BYOL-A) or ``body.`` (EVAR) prefix is stripped, and only
    the encoder's ``features.*`` / ``fc.*`` keys are kept."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{path} could not be read as a PyTorch state dict with weights_only=True ({e}); "
            "expected an official BYOL-A AudioNTT20xx-BYOLA-*.pth"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    out = {}
    for k, v in state.items():
        for prefix in ("model.", "body."):
            if isinstance(k, str) and k.startswith(prefix):
                k = k[len(prefix) :]
        if isinstance(k, str) and k.split(".")[0] in ("features", "fc") and isinstance(v, torch.Tensor):
            out[k] = v
    return out


def encoder_config_from_state(state: dict[str, torch.Tensor], path: Path) -> EncoderConfig:
    """Recognise an official state dict as AudioNTT2022 (v2: conv layers features.0 / .4) or AudioNTT2020
    (v1: features.0 / .4 / .8) and read (n_mels, d, hidden) from its fc shapes."""
    convs = sorted(
        int(k.split(".")[1])
        for k in state
        if k.startswith("features.") and k.endswith(".weight") and state[k].ndim == 4
    )
    fc0, fc3 = state.get("fc.0.weight"), state.get("fc.3.weight")
    keys = sorted(state)[:8]
    if fc0 is None or fc3 is None or fc0.ndim != 2 or fc3.ndim != 2:
        raise WeightsError(
            f"{path} is not a BYOL-A encoder state dict: expected features.* and fc.0/fc.3 weights "
            f"of AudioNTT2022 (v2) or AudioNTT2020 (v1), got keys {keys}{' ...' if len(state) > 8 else ''}"
        )
    (hidden, n_in), (n_out, n_hidden) = fc0.shape, fc3.shape
    if convs == [0, 4]:
        arch, reduction, d = "audiontt2022", 4, n_in + n_out
    elif convs == [0, 4, 8]:
        arch, reduction, d = "audiontt2020", 8, n_out
    else:
        raise WeightsError(
            f"{path}: conv layers at features.{convs} match neither AudioNTT2022 (features.0, .4) nor "
            "AudioNTT2020 (features.0, .4, .8)"
        )
    if n_in % CHANNELS or n_hidden != hidden:
        raise WeightsError(
            f"{path}: fc shapes {tuple(fc0.shape)} / {tuple(fc3.shape)} do not fit {arch} "
            f"(fc.0 takes 64 x n_mels/{reduction} inputs, fc.3 takes fc.0's outputs)"
        )
    try:
        return EncoderConfig(arch=arch, n_mels=n_in // CHANNELS * reduction, d=int(d), hidden=int(hidden))
    except ValueError as e:
        raise WeightsError(f"{path}: {arch} shapes give an invalid encoder ({e})") from e


def load_pretrained(
    path: str | Path | None = None,
    *,
    norm_mean: float | None = None,
    norm_std: float | None = None,
    device: str | torch.device = "cpu",
) -> PretrainedModel:
    """Load our ``.safetensors`` export (its header says everything), or an official BYOL-A ``.pth``:
    v2 (AudioNTT2022) with v2's nnAudio front end and stats -9.660292 / 4.7219563, v1 (AudioNTT2020) with
    v1's torchaudio front end and stats -5.4919195 / 5.0389895; ``norm_mean``/``norm_std`` override the
    stats of either format. ``None``/'' -> the shipped default."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        hint = " (the default weights ship with the package; reinstall it)" if path == DEFAULT_WEIGHTS else ""
        raise WeightsError(
            f"weights file {path} does not exist{hint}; expected a .safetensors from "
            "'hear-diffbyola export' or an official BYOL-A AudioNTT2022/AudioNTT2020-BYOLA-64x96d*.pth"
        )
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
        v2 = enc.arch == "audiontt2022"
        fe = FrontendConfig.byola_v2() if v2 else FrontendConfig.byola_v1()
        if enc.n_mels != fe.n_mels:
            fe = FrontendConfig(**{**fe.to_dict(), "n_mels": enc.n_mels})
        mean, std = BYOLA_V2_NORM if v2 else BYOLA_V1_NORM
        header = {
            "format": "byol-a-v2" if v2 else "byol-a-v1",
            "frontend": fe.to_dict(),
            "norm": {"mean": mean, "std": std},
            "encoder": enc.to_dict(),
            "lam": 0.0,
            "provenance": {"source": str(path)},
        }
    if norm_mean is not None or norm_std is not None:
        mean = mean if norm_mean is None else float(norm_mean)
        std = std if norm_std is None else float(norm_std)
        header = {**header, "norm": {"mean": mean, "std": std}}
    check_norm(mean, std, path, given=(norm_mean, norm_std))
    check_finite(state, path)
    encoder = build_encoder(enc)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(
            f"{path}: weights do not fit {type(encoder).__name__}(n_mels={enc.n_mels}, d={enc.d}, "
            f"hidden={enc.hidden}): {e}"
        ) from e
    return PretrainedModel(Frontend(fe, mean, std), encoder, header).to(device)


def export_run(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Turn a pretraining run's last checkpoint into a weights file (online encoder + header). Returns the header."""
    run_dir = Path(run_dir)
    _check_out_path(Path(out))
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not ckpt_path.is_file():
        raise WeightsError(
            f"{run_dir} holds no checkpoint ({ckpt_path} missing); is it the --out of 'hear-diffbyola pretrain'?"
        )
    from .train import TrainingError, load_checkpoint  # train imports this module

    try:
        ckpt = load_checkpoint(ckpt_path)
    except TrainingError as e:
        raise WeightsError(str(e)) from e
    _check_checkpoint(ckpt, ckpt_path)
    cfg = ckpt["config"]
    state = {k[len("encoder.") :]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    if not state:
        raise WeightsError(
            f"{ckpt_path} holds no encoder.* weights in its model state; it was not written by "
            "'hear-diffbyola pretrain' of this version"
        )
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    train = cfg["train"]
    provenance = {
        **ckpt.get("provenance", {}),
        "steps": int(ckpt["step"]),
        "wall_time_s": float(ckpt.get("wall_time", 0.0)),
        "batch_size": train["batch_size"],
        "lr": train["lr"],
        "run_dir": str(run_dir.resolve()),
        "finished": summary.get("finished"),
    }
    try:
        fe, enc = FrontendConfig.from_dict(cfg["frontend"]), EncoderConfig.from_dict(cfg["encoder"])
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{ckpt_path}: its config does not describe a valid model ({e})") from e
    mean, std = float(ckpt["norm"]["mean"]), float(ckpt["norm"]["std"])
    check_norm(mean, std, ckpt_path)
    header = make_header(fe, (mean, std), enc, float(cfg["learner"]["lam"]), provenance)
    try:
        build_encoder(enc).load_state_dict(state, strict=True)  # the same check load_pretrained makes, before writing
    except RuntimeError as e:
        raise WeightsError(
            f"{ckpt_path}: its encoder weights do not fit its own config ({enc.arch}, d={enc.d}): {_one_line(e)}"
        ) from e
    save_weights(out, state, header)
    return header


def _check_out_path(out: Path) -> None:
    """WeightsError before any work when ``out`` cannot become a weights file the loader reads back."""
    if out.is_dir():
        raise WeightsError(f"--out {out} is a folder; give a file path, e.g. {out / 'NAME.safetensors'}")
    if out.suffix != ".safetensors":
        raise WeightsError(
            f"--out {out} must end in .safetensors (the loader reads any other file as an official BYOL-A .pth)"
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise WeightsError(f"--out {out}: {parent} is a file, not a folder; choose another path")
            break


# what export_run reads from a checkpoint: top-level keys, then config sections and their keys
CHECKPOINT_KEYS = ("config", "model", "step", "norm")
CHECKPOINT_CONFIG_KEYS = {"frontend": (), "encoder": (), "learner": ("lam",), "train": ("batch_size", "lr")}


def _check_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """WeightsError naming every key export needs that the checkpoint lacks (a truncated or foreign file)."""
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    for section, keys in CHECKPOINT_CONFIG_KEYS.items():
        if not isinstance(cfg.get(section), dict):
            missing.append(f"config.{section}")
        else:
            missing += [f"config.{section}.{k}" for k in keys if k not in cfg[section]]
    norm = ckpt.get("norm")
    if "norm" in ckpt:
        missing += [f"norm.{k}" for k in ("mean", "std") if not (isinstance(norm, dict) and k in norm)]
    if "model" in ckpt and not isinstance(ckpt["model"], dict):
        missing.append("model (a state dict)")
    if missing:
        raise WeightsError(
            f"checkpoint {path} lacks {', '.join(missing)}; it was not (completely) written by "
            "'hear-diffbyola pretrain': export another run, or resume this one to write a new checkpoint"
        )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:400]
