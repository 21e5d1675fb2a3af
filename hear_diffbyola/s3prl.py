"""s3prl without editing s3prl: compatibility shims, hub registration, the in-process downstream runner,
and linking an upstream folder into an s3prl source tree.

This module knows s3prl, not our upstream: the upstream (``upstream/diffbyola``, installed as
``hear_diffbyola.s3prl_upstream``) passes itself in. Its ``integration`` module is what users call:
``hear_diffbyola.s3prl_upstream.integration.register()`` / ``run_downstream()`` / ``install()``, and it
adds the ``s3prl`` and ``s3prl-install`` commands.

s3prl has no plugin mechanism: ``s3prl.hub`` is a flat module of ``from ... import *`` lines and
both ``S3PRLUpstream(name)`` and the downstream runner look the upstream up with
``getattr(s3prl.hub, name)``. ``register_entries()`` sets hub entries as attributes of ``s3prl.hub``
in this process; ``run_runner`` then runs s3prl's own ``s3prl.run_downstream`` module in-process.

Compatibility shims for s3prl 0.4.18 (see ``apply_shims``). Each one is applied only when the
thing it stands in for is missing or cannot work, and ``APPLIED`` lists those applied:

``torchaudio-cpu-extension``
    PyPI's torchaudio 2.11 wheel is built against CUDA torch; next to a CPU-only torch its
    compiled extension fails to load (``libc10_cuda.so``) and so does ``import torchaudio``.
    torchaudio is then imported without its extension: the pure-PyTorch parts s3prl uses on
    our path (``transforms``, ``functional``, ``compliance.kaldi``) work. Applied only when
    ``import torchaudio`` raises ``OSError`` from loading that extension.
``torchaudio.set_audio_backend``
    Removed in torchaudio 2.9; s3prl calls it at import time and in ``run_downstream``. A no-op:
    newer torchaudio has a single I/O path.
``torchaudio.sox_effects``
    Removed in torchaudio 2.9; ``import s3prl.hub`` imports it (mos_prediction). A stub module
    whose functions raise: only the downstreams that apply sox effects (speech_commands,
    mos_prediction, quesst14) need it, and those need torchaudio < 2.9.
``torchaudio.load``
    Since torchaudio 2.9 it decodes through torchcodec (+ FFmpeg). Without torchcodec, s3prl's
    datasets read files through soundfile instead: same return value, ``(channels, frames)``
    float32 in [-1, 1] and the sample rate.
``torch.load-namespace``
    torch >= 2.6 loads with ``weights_only=True``; the runner's checkpoints hold its
    ``argparse.Namespace``, so evaluate / resume fail. Only inside ``run_downstream``,
    ``argparse.Namespace`` is added to torch's safe globals (nothing else is unpickled).

Not shimmed: transformers >= 5 / huggingface_hub >= 1 break the runner's imports (``HfFolder``);
the ``s3prl`` extra pins ``transformers<5`` and ``huggingface_hub<1.0``. The runner also needs
``tensorboardX``, which s3prl does not declare; the extra does.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import importlib.util
import logging
import os
import runpy
import shutil
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DiffByolaError

log = logging.getLogger(__name__)

APPLIED: list[str] = []  # names of the shims applied in this process, in order

# What s3prl-install appends to s3prl/hub.py; the marker makes the line ours to remove again.
HUB_MARK = "  # added by hear-diffbyola s3prl-install"
HUB_LINE = "from s3prl.upstream.diffbyola.hubconf import *" + HUB_MARK
# Variant used when hub.py did not end in a newline: uninstall then removes the newline it added, too.
HUB_LINE_NL = HUB_LINE + " (with the newline before it)"
COPY_MARKER = ".installed-by-hear-diffbyola"


class S3prlError(DiffByolaError, RuntimeError):
    """s3prl is missing, or an s3prl tree is not in the state an install / uninstall expects."""


def _note(name: str) -> None:
    if name not in APPLIED:
        APPLIED.append(name)
        log.info("hear_diffbyola.s3prl: applied compatibility shim %s", name)


# ---------------------------------------------------------------------------------------------------
# shims


def _import_torchaudio() -> types.ModuleType:
    try:
        import torchaudio

        return torchaudio
    except OSError as first:
        # torchaudio's __init__ loads torchaudio/lib/*.so and treats a load error as fatal. Its
        # loader module survived the failed import; aimed at a folder without libraries it
        # reports "no extension", and torchaudio imports its pure-PyTorch parts.
        utils = sys.modules.get("torchaudio._extension.utils")
        if utils is None or not hasattr(utils, "_LIB_DIR") or "torchaudio" not in str(first):
            raise
        real_dir = utils._LIB_DIR
        utils._LIB_DIR = Path(os.devnull) / "no-extension"
        try:
            import torchaudio
        except Exception as second:
            utils._LIB_DIR = real_dir
            raise ImportError(
                f"torchaudio cannot be imported: its compiled extension does not fit this torch "
                f"({first}), and without it the import fails too ({second}); install a "
                "torchaudio built for this torch"
            ) from second
        log.warning(
            "torchaudio %s: its compiled extension does not fit torch %s (%s); using torchaudio "
            "without it (pure-PyTorch parts only)",
            torchaudio.__version__,
            sys.modules["torch"].__version__,
            first,
        )
        _note("torchaudio-cpu-extension")
        return torchaudio


def _version(module: types.ModuleType) -> tuple[int, int]:
    parts = module.__version__.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def _set_audio_backend(backend: str | None) -> None:
    """torchaudio < 2.9 chose between I/O backends; newer torchaudio has one, so there is nothing to set."""


def _sox_effects_stub() -> types.ModuleType:
    mod = types.ModuleType("torchaudio.sox_effects")
    mod.__doc__ = "Stand-in for torchaudio.sox_effects (removed in torchaudio 2.9), installed by hear_diffbyola.s3prl."

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "torchaudio.sox_effects was removed in torchaudio 2.9; the s3prl downstreams that "
            "apply sox effects (speech_commands, mos_prediction, quesst14) need torchaudio < 2.9 "
            "with libsox"
        )

    for name in (
        "apply_effects_file",
        "apply_effects_tensor",
        "effect_names",
        "init_sox_effects",
        "shutdown_sox_effects",
    ):
        setattr(mod, name, unavailable)
    return mod


def _soundfile_load(
    uri: Any,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
) -> tuple[Any, int]:
    """``torchaudio.load`` through soundfile: ((channels, frames) float32 in [-1, 1], sample_rate)."""
    import soundfile as sf
    import torch

    if not normalize:
        raise ValueError(
            "torchaudio.load(normalize=False) is not available without torchcodec: "
            "install torchcodec, or load with normalize=True (float32)"
        )
    try:
        data, sr = sf.read(uri, start=frame_offset, frames=num_frames, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types; all mean "cannot decode this"
        raise RuntimeError(
            f"cannot read audio {uri!r} with soundfile ({e}); torchaudio >= 2.9 without "
            "torchcodec reads only what libsndfile reads (wav, flac, ogg, mp3)"
        ) from e
    wave = torch.from_numpy(data)  # (frames, channels)
    return (wave.T.contiguous() if channels_first else wave), int(sr)


def apply_shims() -> list[str]:
    """Make s3prl 0.4.18 importable and its runner work on this torch / torchaudio. Idempotent.

    Returns the names of the shims applied so far in this process (see the module docstring).
    """
    torchaudio = _import_torchaudio()
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend
        _note("torchaudio.set_audio_backend")
    try:
        importlib.import_module("torchaudio.sox_effects")
    except ImportError:
        stub = _sox_effects_stub()
        sys.modules["torchaudio.sox_effects"] = stub
        torchaudio.sox_effects = stub
        _note("torchaudio.sox_effects")
    if (
        _version(torchaudio) >= (2, 9)
        and importlib.util.find_spec("torchcodec") is None
        and torchaudio.load is not _soundfile_load
    ):
        torchaudio.load = _soundfile_load
        _note("torchaudio.load")
    return list(APPLIED)


def allow_namespace_checkpoints() -> bool:
    """Let ``torch.load(weights_only=True)`` read the runner's checkpoints, which hold its
    ``argparse.Namespace``. False where torch has no allow-list (torch < 2.4: no weights_only default)."""
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:
        return False
    add([argparse.Namespace])
    _note("torch.load-namespace")
    return True


# ---------------------------------------------------------------------------------------------------
# registration and the runner


def import_hub() -> types.ModuleType:
    """``s3prl.hub``, imported after the shims; S3prlError when s3prl is not installed."""
    if importlib.util.find_spec("s3prl") is None:
        raise S3prlError(
            "s3prl is not installed; install it with: pip install 'hear-diffbyola[s3prl]' "
            "(s3prl 0.4.18 with working pins)"
        )
    apply_shims()
    return importlib.import_module("s3prl.hub")


def register_entries(entries: Mapping[str, Callable[..., Any]]) -> list[str]:
    """Set ``entries`` ({hub name: entry function}) as attributes of ``s3prl.hub`` in this process, so
    ``S3PRLUpstream(name)`` and the runner's ``-u name`` find them. Idempotent; returns the names."""
    hub = import_hub()
    for name, entry in entries.items():
        setattr(hub, name, entry)
    return list(entries)


def run_runner(argv: Sequence[str]) -> int:
    """Run s3prl's own downstream runner (``s3prl/run_downstream.py``) in this process with the hub as
    it is now (register entries first): ``argv`` are its arguments, e.g. ``-m train -u NAME -k W
    -d emotion -c config.yaml -p EXPDIR``. Adds ``--device cpu`` when no ``--device`` is given and
    CUDA is unavailable (s3prl defaults to cuda). Returns the exit status."""
    import_hub()
    allow_namespace_checkpoints()
    import torch

    argv = list(argv)
    if not torch.cuda.is_available() and not any(a == "--device" or a.startswith("--device=") for a in argv):
        argv += ["--device", "cpu"]
    # run_downstream's main() changes process-wide state; put back what would surprise a caller
    saved = sys.argv, builtins.isinstance, torch.multiprocessing.get_sharing_strategy()
    sys.argv = ["s3prl/run_downstream.py", *argv]
    try:
        runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, builtins.isinstance = saved[0], saved[1]  # hack_isinstance() replaced isinstance
        torch.multiprocessing.set_sharing_strategy(saved[2])
    return 0


# ---------------------------------------------------------------------------------------------------
# s3prl-install: for s3prl source checkouts (and installed s3prl packages)


def find_s3prl_package(root: str | Path | None = None) -> Path:
    """The s3prl package folder (the one holding hub.py): ``root`` itself, ``root/s3prl`` (a source
    checkout), or the installed s3prl when ``root`` is None."""
    if root is None:
        spec = importlib.util.find_spec("s3prl")
        if spec is None or not spec.submodule_search_locations:
            raise S3prlError("s3prl is not installed here; pass --s3prl-root DIR (an s3prl checkout)")
        candidates = [Path(p) for p in spec.submodule_search_locations]
    else:
        root = Path(root)
        candidates = [root, root / "s3prl"]
    for c in candidates:
        if (c / "hub.py").is_file() and (c / "upstream").is_dir():
            return c
    raise S3prlError(
        f"no s3prl package at {root}: expected hub.py and upstream/ in {' or '.join(map(str, candidates))}"
    )


def _write_keeping_mode(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".hear-diffbyola.tmp")
    tmp.write_bytes(text.encode("utf-8"))
    shutil.copymode(path, tmp)
    os.replace(tmp, path)


def install(source: str | Path, root: str | Path | None = None, copy: bool = False) -> list[str]:
    """Link (or with ``copy`` copy) the upstream folder ``source`` to ``s3prl/upstream/diffbyola`` and
    append the hub import line to ``s3prl/hub.py``. Idempotent. Returns what it changed (empty: nothing to do)."""
    pkg = find_s3prl_package(root)
    src = Path(source).resolve()
    dest = pkg / "upstream" / "diffbyola"
    changed = []
    if dest.is_symlink():
        if dest.resolve() != src:
            raise S3prlError(
                f"{dest} links to {dest.resolve()}, not to {src}; remove it with "
                "'hear-diffbyola s3prl-install --uninstall' first"
            )
        if copy:
            raise S3prlError(f"{dest} is a link made by 's3prl-install'; --uninstall first to switch to a copy")
    elif dest.exists():
        if not (dest / COPY_MARKER).is_file():
            raise S3prlError(f"{dest} exists and was not installed by hear-diffbyola; move it away first")
        if not copy:
            raise S3prlError(
                f"{dest} is a copy made by 's3prl-install --copy'; pass --copy again, or "
                "--uninstall first to switch to a link"
            )
    elif copy:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (dest / COPY_MARKER).write_text(f"copied from {src} by hear-diffbyola s3prl-install\n")
        changed.append(f"copied {src} to {dest}")
    else:
        dest.symlink_to(src, target_is_directory=True)
        changed.append(f"linked {dest} -> {src}")
    hub = pkg / "hub.py"
    text = hub.read_bytes().decode("utf-8")
    lines = text.splitlines()
    if HUB_LINE not in lines and HUB_LINE_NL not in lines:
        added = HUB_LINE + "\n" if text.endswith("\n") or not text else "\n" + HUB_LINE_NL + "\n"
        _write_keeping_mode(hub, text + added)
        changed.append(f"appended to {hub}: {HUB_LINE.split(HUB_MARK)[0]}")
    return changed


def uninstall(root: str | Path | None = None) -> list[str]:
    """Reverse ``install`` exactly: remove the link (or our copy) and the hub line, leaving hub.py
    byte-identical to before. Idempotent. Returns what it changed."""
    pkg = find_s3prl_package(root)
    dest = pkg / "upstream" / "diffbyola"
    changed = []
    hub = pkg / "hub.py"
    text = hub.read_bytes().decode("utf-8")
    new = text
    for added in ("\n" + HUB_LINE_NL + "\n", HUB_LINE + "\n"):
        new = new.replace(added, "")
    if new != text:
        _write_keeping_mode(hub, new)
        changed.append(f"removed the diffbyola line from {hub}")
    if dest.is_symlink():
        dest.unlink()
        changed.append(f"removed the link {dest}")
    elif dest.exists():
        if not (dest / COPY_MARKER).is_file():
            raise S3prlError(f"{dest} was not installed by hear-diffbyola (no {COPY_MARKER}); left in place")
        shutil.rmtree(dest)
        changed.append(f"removed the copy {dest}")
    return changed
