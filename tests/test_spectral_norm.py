"""Tests of sagan_edu.spectral_norm against singular values from torch.linalg (an SVD)."""

import pytest
import torch
from torch import nn

from sagan_edu.spectral_norm import SpectralNorm, spectral_norm


def largest_singular_value(w: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(w.detach().flatten(1).double(), ord=2).item()


@pytest.mark.parametrize(
    "make", [lambda: nn.Linear(20, 30), lambda: nn.Conv2d(3, 16, 3), lambda: nn.Conv2d(8, 4, 1)]
)
def test_weight_is_divided_by_the_power_iteration_estimate(make):
    torch.manual_seed(0)
    layer = spectral_norm(make())
    sn = layer.parametrizations.weight[0]
    weight = layer.weight  # a training-mode access: one more iteration, then W / (uᵀ W v)
    original = layer.parametrizations.weight.original.detach()
    w = original.flatten(1)
    sigma_estimate = sn.u @ w @ sn.v
    torch.testing.assert_close(weight, original / sigma_estimate)
    # 15 warm-up iterations at construction: the estimate is close to the SVD's σ, from below.
    sigma = largest_singular_value(original)
    assert 0.9 * sigma < sigma_estimate.item() <= sigma * (1 + 1e-5)


def test_power_iteration_converges_with_training_forwards():
    torch.manual_seed(1)
    layer = spectral_norm(nn.Linear(64, 64))
    for _ in range(50):
        layer(torch.randn(2, 64))  # each training-mode access runs one more iteration
    assert largest_singular_value(layer.weight) == pytest.approx(1.0, abs=1e-4)


def test_eval_mode_keeps_u_and_v_fixed():
    layer = spectral_norm(nn.Linear(5, 7))
    sn = layer.parametrizations.weight[0]
    u = sn.u.clone()
    layer.eval()
    layer(torch.randn(1, 5))
    assert torch.equal(sn.u, u)
    layer.train()
    layer(torch.randn(1, 5))
    assert not torch.equal(sn.u, u)


def test_gradient_flows_to_the_original_weight_only():
    layer = spectral_norm(nn.Linear(4, 3))
    layer(torch.randn(2, 4)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None
    names = {name for name, _ in layer.named_buffers()}
    assert names == {"parametrizations.weight.0.u", "parametrizations.weight.0.v"}


def test_two_training_forwards_before_backward():
    layer = spectral_norm(nn.Linear(6, 4))
    x = torch.randn(3, 6)
    (layer(x).sum() + layer(x).sum()).backward()  # u, v change between the two forwards
    assert torch.isfinite(layer.parametrizations.weight.original.grad).all()


def test_sigma_is_computed_in_float32_under_autocast():
    torch.manual_seed(2)
    layer = spectral_norm(nn.Linear(32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = layer.weight
    assert w.dtype == torch.float32
    assert layer.parametrizations.weight[0].u.dtype == torch.float32


def test_errors():
    with pytest.raises(ValueError, match="at least 2 dims"):
        SpectralNorm(torch.randn(5))
    with pytest.raises(ValueError, match="n_power_iterations must be >= 1"):
        SpectralNorm(torch.randn(3, 3), n_power_iterations=0)
