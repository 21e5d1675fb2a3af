"""Side by side with the official BYOL-A code: embeddings and training steps, one process, alternating rounds.

    python bench/official_compare.py --official PATH/TO/byol-a --weights PATH/TO/AudioNTT2020-BYOLA-64x96d512.pth
    python bench/official_compare.py --official PATH --weights W.pth --v2-weights AudioNTT2022-BYOLA-64x96d2048.pth --train

``--official`` is a checkout of github.com/nttcslab/byol-a (nothing is downloaded; without it, or without a
weights file, this script says so and exits 0). Its model code is imported from that folder
(``byol_a/models.py``, ``v2/byol_a2/models.py``); for ``--train`` also ``byol_a/byol_pytorch.py``, the patched
byol-pytorch its README tells you to create. The official front ends are torchaudio's (v1) and nnAudio's (v2)
``MelSpectrogram``; when those packages cannot be imported, the official side runs our log-mel front end with
the official parameters instead (printed; the front end is ~5 % of an embedding).

Embeddings: 16 x 10 s clips. Official scene embedding = its own recipe (whole batch in one pass:
log-mel, normalise, ``AudioNTT20xx.forward`` mean + max); ours = ``hear_diffbyola.get_scene_embeddings`` /
``get_timestamp_embeddings`` on the same weights file. Without ``--v2-weights``, v2 uses a random
initialisation in the official layout saved to a temporary ``.pth`` that both sides load (speed does not
depend on the values). Training: the official BYOL step (its ``BYOL`` on fixed views: 2 online + 2 target
passes, backward, Adam, EMA; augmentation runs in its data loader workers, so it is left out) against our
full ``training_step`` (log-mel, batched augmentation, losses, backward, Adam, EMA) from waveforms, lambda = 0
and 0.5, and against our ``step_on_views`` on the official's own fixed views (the same measurement on both
sides: no front end or augmentation on either). Every contender runs once per round, rounds alternate, medians are reported with their ratios,
and with the median and quartiles of the ratios taken within each round (what survives a shared CPU best). Embeddings run with glibc's default allocator (what a HEAR user has); the
training rows come after and both sides get the allocator tuning our trainer applies.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hear_diffbyola import blas, get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_diffbyola.frontend import FrontendConfig, LogMelSpectrogram
from hear_diffbyola.runtime import tune_cpu_allocator
from hear_diffbyola.weights import BYOLA_V1_NORM, BYOLA_V2_NORM

SR = 16000
EPS = torch.finfo(torch.float32).eps  # BYOL-A's log(x + eps)


def import_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_frontend(v2: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The official log-mel, log(mel + eps) (B, 64, T): nnAudio (v2) / torchaudio (v1) when importable, else ours
    with the same parameters."""
    fe = FrontendConfig.byola_v2() if v2 else FrontendConfig.byola_v1()
    try:
        if v2:
            import nnAudio.features

            mel = nnAudio.features.MelSpectrogram(
                sr=SR,
                n_fft=1024,
                win_length=1024,
                hop_length=160,
                n_mels=64,
                fmin=60,
                fmax=7800,
                center=True,
                power=2,
                verbose=False,
            )
            return lambda w: torch.log(mel(w) + EPS), "nnAudio MelSpectrogram"
        import torchaudio

        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SR, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, f_min=60, f_max=7800
        )
        return lambda w: torch.log(mel(w) + EPS), "torchaudio MelSpectrogram"
    except Exception as e:  # noqa: BLE001 - any import/ABI failure: fall back, and say so
        ours = LogMelSpectrogram(fe)
        return ours, f"our log-mel front end with the official parameters ({type(e).__name__})"


def rounds(fns: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Seconds per call of each function in each of ``n`` rounds, the functions alternating."""
    for f in fns.values():
        f()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def paired(base: list[float], other: list[float]) -> str:
    """Median [quartiles] over rounds of base / other within each round: a round's contenders share the
    machine's state, so these ratios spread less than the rates do."""
    r = sorted(b / o for b, o in zip(base, other))
    return f"{statistics.median(r):.2f}x [{r[len(r) // 4]:.2f}, {r[(3 * len(r)) // 4]:.2f}]"


def embedding_rows(
    args: argparse.Namespace, label: str, official_model: torch.nn.Module, weights: Path, v2: bool
) -> None:
    logmel, fe_name = official_frontend(v2)
    mean, std = BYOLA_V2_NORM if v2 else BYOLA_V1_NORM
    official_model.eval()
    wave = (torch.rand(args.batch, 10 * SR, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.3
    secs = wave.numel() / SR

    @torch.no_grad()
    def official_scene() -> torch.Tensor:
        lms = (logmel(wave) - mean) / std  # (B, 64, T)
        return official_model(lms.unsqueeze(1))

    ours = load_model(str(weights))
    fns = {
        "official scene": official_scene,
        "ours scene": lambda: get_scene_embeddings(wave, ours),
        "ours timestamps": lambda: get_timestamp_embeddings(wave, ours),
    }
    agree = torch.nn.functional.cosine_similarity(official_scene(), get_scene_embeddings(wave, ours)).min().item()
    times = rounds(fns, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["official scene"]
    print(f"\n## {label}: {args.batch} x 10 s clips, {args.rounds} rounds (official front end: {fe_name})")
    print(f"weights: {weights}; scene embeddings official vs ours: min cosine {agree:.6f}")
    print("| what | audio-s/s | vs official scene | per round: median [quartiles] |\n|---|---|---|---|")
    for k, t in med.items():
        print(f"| {k} | {secs / t:.1f} | {base / t:.2f}x | {paired(times['official scene'], times[k])} |")
    print(
        f"sgemm of our workers' fc (hear_diffbyola/blas.py, mode {blas.MODE}), per (M bucket, K, N): {blas.choices()}"
    )


def v2_weights(args: argparse.Namespace, models) -> tuple[Path, str]:
    if args.v2_weights:
        return Path(args.v2_weights), str(args.v2_weights)
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "AudioNTT2022-random-official-layout.pth"
    torch.save(models.AudioNTT2022(n_mels=64, d=3072).state_dict(), path)
    return path, "random initialisation in the official layout (no published v2 file given)"


def training_rows(
    args: argparse.Namespace, official: Path, arch: str, make_official: Callable[[], torch.nn.Module], d: int
) -> None:
    from hear_diffbyola.config import PretrainConfig, apply_overrides
    from hear_diffbyola.train import build_step_parts, step_on_views, training_step

    byol = import_file("byola_official_byol", official / "byol_a" / "byol_pytorch.py")
    # glibc tuned as our trainer tunes it; process-wide, so the official step gets it too (and every later row)
    tune_cpu_allocator()
    B = args.train_batch
    torch.manual_seed(0)
    learner = byol.BYOL(
        make_official(),
        image_size=(64, 96),
        hidden_layer=-1,
        projection_size=256,
        projection_hidden_size=4096,
        moving_average_decay=0.99,
    )
    opt = torch.optim.Adam(learner.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(B, 1, 64, 96, generator=g), torch.randn(B, 1, 64, 96, generator=g)

    def official_step() -> None:
        loss = learner(v1, v2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        learner.update_moving_average()

    parts = {
        lam: build_step_parts(
            PretrainConfig.from_dict(
                apply_overrides(
                    {}, [f"encoder.arch={arch}", f"encoder.d={d}", f"learner.lam={lam}", f"train.batch_size={B}"]
                )
            ),
            (0.0, 1.0),
            torch.device("cpu"),
        )
        for lam in (0.0, 0.5)
    }
    wave = torch.randn(B, 95 * 160, generator=g) * 0.1
    views = (v1.clone(), v2.clone())  # copies: neither side may see the other's tensors
    fns = {
        "official step": official_step,
        "ours lambda=0": lambda: training_step(parts[0.0], wave),
        "ours lambda=0.5": lambda: training_step(parts[0.5], wave),
        # the official's measurement: its fixed views, so neither side pays for log-mel and augmentation
        "ours lambda=0, official's views": lambda: step_on_views(parts[0.0], *views),
        "ours lambda=0.5, official's views": lambda: step_on_views(parts[0.5], *views),
    }
    times = rounds(fns, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n## training step {arch} d={d}, B={B}, {args.rounds} rounds")
    print("| what | clips/s | vs official | per round: median [quartiles] |\n|---|---|---|---|")
    for k, t in med.items():
        print(f"| {k} | {B / t:.1f} | {med['official step'] / t:.2f}x | {paired(times['official step'], times[k])} |")
    for views in ("", ", official's views"):
        hi, lo = f"ours lambda=0.5{views}", f"ours lambda=0{views}"
        print(
            f"lambda=0.5 step / lambda=0 step{views}: {med[hi] / med[lo]:.3f} (per round {paired(times[hi], times[lo])})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", help="checkout of github.com/nttcslab/byol-a")
    p.add_argument("--weights", help="official AudioNTT2020-BYOLA-64x96d*.pth (v1)")
    p.add_argument("--v2-weights", help="official AudioNTT2022-BYOLA-64x96d2048.pth (default: random, official layout)")
    p.add_argument("--batch", type=int, default=16, help="10-s clips per embedding call (default 16)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", action="store_true", help="also time training steps (needs byol_a/byol_pytorch.py)")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--no-embeddings", action="store_true", help="only the training rows")
    args = p.parse_args()
    official = Path(args.official) if args.official else None
    if official is None or not (official / "byol_a" / "models.py").is_file():
        print(
            "skipped: give --official, a checkout of github.com/nttcslab/byol-a (byol_a/models.py); nothing is downloaded"
        )
        return
    if not args.weights or not Path(args.weights).is_file():
        print(
            "skipped: give --weights, an official AudioNTT2020-BYOLA-64x96d*.pth (e.g. pretrained_weights/ of the checkout)"
        )
        return
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}"
    )
    v1_models = import_file("byola_official_models", official / "byol_a" / "models.py")
    sd = torch.load(args.weights, map_location="cpu", weights_only=True)
    d1 = int(sd["fc.3.weight"].shape[0])
    model = v1_models.AudioNTT2020(n_mels=64, d=d1)
    model.load_weight(args.weights, "cpu")
    if not args.no_embeddings:
        embedding_rows(args, f"v1 AudioNTT2020 d={d1}", model, Path(args.weights), v2=False)
    v2_path = official / "v2" / "byol_a2" / "models.py"
    v2_models = import_file("byola_official_models_v2", v2_path) if v2_path.is_file() else None
    if v2_models is None:
        print(f"\nv2 skipped: {v2_path} not found")
    elif not args.no_embeddings:
        weights, source = v2_weights(args, v2_models)
        model = v2_models.AudioNTT2022(n_mels=64, d=3072)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        print(f"\nv2 weights: {source}")
        embedding_rows(args, "v2 AudioNTT2022 d=3072", model, weights, v2=True)
    if args.train:
        if not (official / "byol_a" / "byol_pytorch.py").is_file():
            print(
                "\ntraining skipped: byol_a/byol_pytorch.py missing (BYOL-A's README: fetch byol-pytorch at the pinned "
                "commit and apply byol_a/byol_pytorch.diff)"
            )
        else:
            training_rows(args, official, "audiontt2020", lambda: v1_models.AudioNTT2020(n_mels=64, d=d1), d1)
            if v2_models is not None:
                training_rows(args, official, "audiontt2022", lambda: v2_models.AudioNTT2022(n_mels=64, d=3072), 3072)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
