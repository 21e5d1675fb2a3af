"""The CUDA training step against the CPU one. Skipped without a CUDA device; ``bash bench/gpu.sh`` runs it
on a lent GPU (with the CUDA cases of test_train.py, test_hear.py and test_embedders.py)."""

import pytest
import torch

from hear_diffbyola.config import PretrainConfig, apply_overrides
from hear_diffbyola.train import build_step_parts, prepare_device, training_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

B = 8


@pytest.fixture
def fp32_cuda():
    """Plain float32 on the card (no TF32), so the only differences from the CPU are summation orders."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def parts_on(device: str, arch: str, lam: float, amp: str = "off", dropout: bool = False):
    cfg = PretrainConfig.from_dict(
        apply_overrides({}, [f"encoder.arch={arch}", f"learner.lam={lam}", f"train.batch_size={B}", f"train.amp={amp}"])
    )
    parts = build_step_parts(cfg, (0.0, 1.0), torch.device(device))
    # Dropout masks come from each device's own generator (and a different kernel), so they cannot agree;
    # without them every other draw (crops, Mixup, gamma) is made on the CPU generator, the same on both.
    for m in parts.learner.modules():
        if isinstance(m, torch.nn.Dropout) and not dropout:
            m.p = 0.0
    return parts


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def wave() -> torch.Tensor:
    return torch.randn(B, 95 * 160, generator=torch.Generator().manual_seed(0)) * 0.1


@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("arch", ["audiontt2022", "audiontt2020"])
def test_a_cuda_step_equals_the_cpu_step(fp32_cuda, arch, lam):
    cpu, gpu = parts_on("cpu", arch, lam), parts_on("cuda", arch, lam)
    before = {k: v.clone() for k, v in cpu.learner.state_dict().items()}
    on_cpu, on_gpu = training_step(cpu, wave()), training_step(gpu, wave())
    assert on_gpu["loss"].device.type == "cuda"
    for k in on_cpu:
        assert rel_err(on_gpu[k], on_cpu[k]) < 1e-4, k
    # the step leaves its gradients in .grad (the next one clears them)
    g_cpu = {n: p.grad for n, p in cpu.learner.named_parameters() if p.grad is not None}
    g_gpu = {n: p.grad for n, p in gpu.learner.named_parameters() if p.grad is not None}
    assert g_cpu.keys() == g_gpu.keys() and len(g_cpu) > 10
    top = max(g.abs().max().item() for g in g_cpu.values())
    for n, g in g_cpu.items():
        # a Linear's bias before BatchNorm has a gradient of 0 up to rounding (1e-8 of the largest here):
        # such tensors are held to the rounding of the largest, the rest to their own scale
        scale = max(g.abs().max().item(), 1e-4 * top)
        assert (g_gpu[n].cpu() - g).abs().max().item() < 1e-3 * scale, n
    # Adam and the EMA on the card: every element whose gradient is clearly away from 0 (same sign on both
    # devices, far above Adam's eps) moved by the same lr * g / (|g| + eps), online and target alike
    after_cpu, after_gpu = cpu.learner.state_dict(), gpu.learner.state_dict()
    moved = 0
    for n, g in g_cpu.items():
        clear = g.abs() > 1e-5 * top
        for name in (n, "target_" + n):
            if name in after_cpu and clear.any():
                assert (after_gpu[name].cpu() - after_cpu[name])[clear].abs().max().item() < 1e-6, name
                moved += int((after_cpu[name] != before[name])[clear].all())
    assert moved > 10
    for name, a in after_cpu.items():
        if "running" in name:  # BatchNorm statistics
            assert rel_err(after_gpu[name], a) < 1e-3, name


def test_bf16_autocast_step_stays_close_to_float32(fp32_cuda):
    fp32, bf16 = parts_on("cuda", "audiontt2022", 0.5, amp="off"), parts_on("cuda", "audiontt2022", 0.5, amp="bf16")
    assert bf16.amp and not fp32.amp
    a, b = training_step(fp32, wave()), training_step(bf16, wave())
    for k in a:
        assert b[k].dtype == torch.float32 and torch.isfinite(b[k]), k  # the losses are taken in float32
        assert rel_err(b[k], a[k]) < 0.05, k
    for p in bf16.learner.parameters():
        assert p.dtype == torch.float32  # autocast computes in bf16; the weights stay float32


@pytest.fixture
def deterministic_cuda():
    """The trainer's CUDA settings (train.prepare_device), put back afterwards: they are process-wide."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    prepare_device(torch.device("cuda"))
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def test_cuda_steps_repeat_bit_for_bit_under_the_trainers_settings(deterministic_cuda):
    """What bit-exact resume rests on: the same state and batch give the same step, dropout and bf16 included."""
    runs = []
    for _ in range(2):
        parts = parts_on("cuda", "audiontt2022", 0.5, amp="bf16", dropout=True)  # seeds every generator
        losses = [training_step(parts, wave())["loss"].item() for _ in range(3)]
        runs.append((losses, {k: v.detach().cpu().clone() for k, v in parts.learner.state_dict().items()}))
    (loss_a, state_a), (loss_b, state_b) = runs
    assert loss_a == loss_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
