"""Tests that need a CUDA GPU (marked `gpu`; tests/conftest.py skips them without one).

    pytest -m gpu            # on a machine with a GPU

- The fused (SDPA) and explicit attention paths agree in fp16 and bf16, forward and backward.
- 50 mixed-precision training steps stay finite.
- A checkpoint written on the GPU loads and samples on the CPU, giving the same images.
- The eager step never makes the host wait for the GPU (no synchronisation inside a step).
- The fast step (one CUDA graph per iteration) gives the eager step's parameters, and resumes.
- The fused path really runs a fused kernel for SAGAN's shapes, not the math fallback.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from sagan_edu.attention import MultiHeadAttention, SelfAttention2d
from sagan_edu.training import TrainConfig, Trainer, load_checkpoint, load_generator, sample_images

pytestmark = pytest.mark.gpu

# Largest |fused − explicit| allowed, relative to the largest |explicit| value. The explicit path
# rounds the N×M scores to fp16/bf16 before the softmax, the fused kernels keep them in fp32.
# SAGAN does not divide the scores by √d, so they reach about ±20, where bf16 values are 0.125
# apart: differences of a few per cent are expected in bf16. The explicit path's error against
# float64, measured on CPU (worst of 5 seeds, forward or backward): 4.5% in bf16, 1.8% in fp16.
TOLERANCE = {torch.float16: 3e-2, torch.bfloat16: 1e-1}

SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
}
FUSED_ONLY = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
]


def _native_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(not _native_bf16(), reason="bf16 needs an sm80+ GPU (not a T4)"),
)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|, computed in float64."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


def forward_backward(module, x: torch.Tensor, grad: torch.Tensor, explicit: bool):
    """Output (minus the residual, for SelfAttention2d) and the gradient w.r.t. the input."""
    x = x.detach().clone().requires_grad_(True)
    if isinstance(module, SelfAttention2d):
        y = module(x, return_attention=True)[0] if explicit else module(x)
        y.backward(grad)
        return (y - x).detach(), x.grad  # the residual x would hide attention's differences
    y = module(x, need_weights=explicit)[0]
    y.backward(grad)
    return y.detach(), x.grad


# ---------------------------------------------------------------------------------------------
# Fused and explicit paths agree in low precision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, BF16])
@pytest.mark.parametrize("pool", [2, 1])
def test_self_attention_paths_agree_in_low_precision(dtype, pool):
    torch.manual_seed(0)
    # Spectral norm keeps its power iteration in fp32 and is meant for autocast, not .to(fp16).
    block = SelfAttention2d(64, pool=pool, spectral_norm=False).cuda().to(dtype)
    with torch.no_grad():
        block.gamma.fill_(1.0)  # with γ = 0 the output would not depend on attention at all
    x = torch.randn(2, 64, 16, 16, device="cuda", dtype=dtype)
    grad = torch.randn_like(x)

    y_fused, dx_fused = forward_backward(block, x, grad, explicit=False)
    y_explicit, dx_explicit = forward_backward(block, x, grad, explicit=True)

    assert relative_error(y_fused, y_explicit) < TOLERANCE[dtype]
    assert relative_error(dx_fused, dx_explicit) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, BF16])
def test_multi_head_paths_agree_in_low_precision(dtype):
    torch.manual_seed(0)
    mha = MultiHeadAttention(64, num_heads=4).cuda().to(dtype)
    x = torch.randn(2, 64, 64, device="cuda", dtype=dtype)
    grad = torch.randn_like(x)

    y_fused, dx_fused = forward_backward(mha, x, grad, explicit=False)
    weight_grad_fused = mha.q_proj.weight.grad.clone()
    mha.zero_grad()
    y_explicit, dx_explicit = forward_backward(mha, x, grad, explicit=True)

    assert relative_error(y_fused, y_explicit) < TOLERANCE[dtype]
    assert relative_error(dx_fused, dx_explicit) < TOLERANCE[dtype]
    assert relative_error(weight_grad_fused, mha.q_proj.weight.grad) < TOLERANCE[dtype]


# ---------------------------------------------------------------------------------------------
# Mixed-precision training, and checkpoints that move between devices
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amp_run(tmp_path_factory) -> Trainer:
    """50 AMP steps of a small SAGAN on the GPU, with a checkpoint at the end."""
    config = TrainConfig(
        dataset="mnist5k", img_size=32, attention_at=(16,), g_channels=16, d_channels=16,
        batch_size=16, steps=50, amp=True, device="cuda", progress=False, log_every=10,
        checkpoint_every=50, out_dir=str(tmp_path_factory.mktemp("amp_run")),
    )  # fmt: skip
    trainer = Trainer(config)
    trainer.fit()  # raises TrainingDiverged if a loss becomes NaN or infinite
    return trainer


def test_amp_training_stays_finite(amp_run):
    assert amp_run.amp_dtype in (torch.bfloat16, torch.float16)  # AMP really was on
    assert amp_run.step_count == 50
    for name, values in amp_run.history.items():
        assert torch.isfinite(torch.tensor(values)).all(), name
    for model in (amp_run.G, amp_run.D, amp_run.G_ema):
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gpu_checkpoint_loads_and_samples_on_cpu(amp_run):
    path = amp_run.checkpoint_path
    state = load_checkpoint(path, map_location="cpu")
    assert state["step"] == 50
    assert all(t.device.type == "cpu" for t in state["G_ema"].values())

    generator = load_generator(path)  # device="cpu" by default
    assert next(generator.parameters()).device.type == "cpu"
    images = sample_images(generator, 4)
    assert images.shape == (4, 1, 32, 32)
    assert torch.isfinite(images).all() and images.abs().max() <= 1.0

    # The same weights on both devices give the same images, up to rounding: the noise is drawn
    # on the CPU for both, and cuDNN runs fp32 convolutions on TF32 tensor cores by default
    # (10-bit mantissa), hence the loose tolerance.
    on_gpu = sample_images(copy.deepcopy(generator).cuda(), 4).cpu()
    torch.testing.assert_close(on_gpu, images, atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------------------------
# The fused path runs a fused kernel (no silent fallback to the math path)
# ---------------------------------------------------------------------------------------------


def sdpa_backends_run(fn) -> set[str]:
    """Which SDPA implementations ran during fn(), read from the profiler's op names.

    The math fallback shows up as its own op (aten::_scaled_dot_product_attention_math), then
    bmm + softmax; the fused kernels as _scaled_dot_product_{flash,efficient,cudnn}_attention.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # op names are recorded on the CPU
        fn()
        torch.cuda.synchronize()
    return {SDPA_OPS[e.key] for e in prof.key_averages() if e.key in SDPA_OPS}


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_sagan_block_runs_a_fused_kernel(dtype):
    block = SelfAttention2d(64).cuda()  # q, k: 8 wide, padded to v's 32
    x = torch.randn(4, 64, 32, 32, device="cuda", requires_grad=True)
    autocast = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)

    def forward_backward_pass():
        with autocast:
            y = block(x)
        y.float().sum().backward()

    # With math disabled, PyTorch raises rather than fall back: a fused kernel must accept this.
    with sdpa_kernel(FUSED_ONLY):
        forward_backward_pass()

    # With every backend allowed (the default): a flash-style kernel runs half precision on
    # sm80+ (q and k are padded to v's width, which flash needs); fp32, and older GPUs, get
    # memory-efficient.
    major, _ = torch.cuda.get_device_capability()
    half = dtype != torch.float32
    assert sdpa_backends_run(forward_backward_pass) in expected_backends(half, major)


def expected_backends(half_precision: bool, major: int) -> list[set[str]]:
    """The kernel sets PyTorch may pick when every backend is allowed.

    Half precision on sm80+: flash, or cuDNN's flash-style attention, which some PyTorch versions
    rank first on Hopper (H100/H200). Either is fused; only "math" would be a silent fallback.
    """
    if half_precision and major >= 8:
        return [{"flash"}, {"cudnn"}] if major >= 9 else [{"flash"}]
    return [{"efficient"}]


def test_multi_head_attention_runs_a_fused_kernel():
    major, _ = torch.cuda.get_device_capability()
    dtype = torch.bfloat16 if major >= 8 else torch.float16
    mha = MultiHeadAttention(64, num_heads=4).cuda().to(dtype)  # head width 16, all equal
    x = torch.randn(2, 128, 64, device="cuda", dtype=dtype, requires_grad=True)

    def forward_backward_pass():
        mha(x)[0].float().sum().backward()

    with sdpa_kernel(FUSED_ONLY):
        forward_backward_pass()
    # Flash attention needs sm80+; on older GPUs (a T4) the memory-efficient kernel runs.
    assert sdpa_backends_run(forward_backward_pass) in expected_backends(True, major)


# ---------------------------------------------------------------------------------------------
# The lean eager step and the fast (CUDA-graph) step
# ---------------------------------------------------------------------------------------------


def gpu_config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(
        dataset="mnist5k", img_size=32, attention_at=(16,), g_channels=16, d_channels=16,
        batch_size=16, steps=12, amp=False, device="cuda", progress=False, log_every=4,
        checkpoint_every=6, out_dir=str(tmp_path),
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def gpu_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {}
    for tag, model in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema)):
        state |= {f"{tag}.{k}": v.detach().float().cpu() for k, v in model.state_dict().items()}
    return state


def largest_difference(a: dict, b: dict) -> tuple[str, float]:
    name = max(a, key=lambda k: (a[k] - b[k]).abs().max().item())
    return name, (a[name] - b[name]).abs().max().item()


@pytest.mark.parametrize("overrides", [{"amp": True}, {"conditional": True, "n_dis": 2}])
def test_eager_step_never_waits_for_the_gpu(tmp_path, overrides):
    trainer = Trainer(gpu_config(tmp_path, **overrides))
    trainer.step()  # the first step allocates optimizer state and pinned staging memory
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call now raises
    try:
        for _ in range(3):
            trainer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.step_count == 4


# How close a fast run must stay to an eager one. A replayed graph runs the eager step's
# kernels on the same inputs (the tests ask for deterministic kernels, so atomics in convolution
# and attention backward do not add launch-to-launch rounding), but not every kernel has a
# deterministic version, and Adam with β₁ = 0 moves a parameter by about ±lr whatever the
# gradient's size, so a gradient near zero that flips sign moves it by up to 2·lr = 8e-4.
# Hence: each step's losses within 5e-3; the mean parameter difference below 1e-4 (a wrong input,
# say other noise or a stale batch, sends about half the updates the other way: a mean
# difference of several 1e-4 after 12 steps); and no parameter more than 1e-2 (the sum of 12
# worst-case flips) apart.
LOSS_ATOL = 5e-3
MEAN_PARAMETER_ATOL = 1e-4
MAX_PARAMETER_ATOL = 1e-2


@pytest.fixture
def deterministic():
    """Deterministic cuDNN and attention kernels (a warning where an op has none)."""
    cudnn_deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = cudnn_deterministic


def losses_of_steps(trainer: Trainer, n: int) -> torch.Tensor:
    """(n, 2): loss_d and loss_g of n steps."""
    rows = []
    for _ in range(n):
        metrics = trainer.step()
        rows.append(torch.stack([metrics["loss_d"], metrics["loss_g"]]).float().cpu())
    return torch.stack(rows)


def assert_states_close(a: dict, b: dict, what: str) -> None:
    differences = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    name, worst = largest_difference(a, b)
    print(f"{what}: mean difference {differences.mean():.2e}, largest {worst:.2e} in {name}")
    assert differences.mean() < MEAN_PARAMETER_ATOL and worst < MAX_PARAMETER_ATOL


@pytest.mark.parametrize("overrides", [{}, {"amp": True}, {"conditional": True, "n_dis": 2}])
def test_fast_step_matches_the_eager_step(tmp_path, overrides, deterministic):
    eager = Trainer(gpu_config(tmp_path / "eager", **overrides))
    fast = Trainer(gpu_config(tmp_path / "fast", fast_step=True, **overrides))
    assert fast.captured_step is not None
    eager_losses, fast_losses = losses_of_steps(eager, 12), losses_of_steps(fast, 12)
    assert fast.captured_step.graph is not None  # 9 of the 12 steps were graph replays
    print(f"losses, largest difference {(eager_losses - fast_losses).abs().max():.2e}")
    torch.testing.assert_close(fast_losses, eager_losses, atol=LOSS_ATOL, rtol=0)
    assert_states_close(gpu_state(eager), gpu_state(fast), f"fast vs eager {overrides}")


def test_fast_step_resumes(tmp_path, deterministic):
    """12 fast steps straight, or 6, a checkpoint, and 6 more in a new Trainer: the same state.

    The resumed run warms up eagerly again for 3 steps where the straight run replays its graph:
    the same kernels, so the same tolerances as against the eager step.
    """
    config = gpu_config(tmp_path / "straight", fast_step=True)
    straight = Trainer(config)
    straight.fit()
    first = Trainer(replace(config, out_dir=str(tmp_path / "resumed"), steps=6))
    first.fit()
    resumed = Trainer(replace(first.config, steps=12, resume=True))
    assert resumed.step_count == 6 and resumed.captured_step is not None
    resumed.fit()
    assert_states_close(gpu_state(straight), gpu_state(resumed), "fast step, straight vs resumed")
