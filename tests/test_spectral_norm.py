"""Tests of sagan_edu.spectral_norm against singular values from torch.linalg (an SVD)."""

import pytest
import torch
from torch import nn

from sagan_edu.spectral_norm import (
    SpectralNorm,
    spectral_norm,
    update_once_per_step,
    update_spectral_norms,
)


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


def reference_round(w: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One power-iteration round in float64, written out: v = Wᵀu/‖Wᵀu‖, u = Wv/‖Wv‖."""
    w, u = w.detach().flatten(1).double(), u.double()
    v = w.T @ u
    v = v / v.norm()
    u = w @ v
    return u / u.norm(), v


def test_double_normalises_in_float64():
    torch.manual_seed(3)
    layer = spectral_norm(nn.Conv2d(3, 8, 3)).double()
    sn = layer.parametrizations.weight[0]
    assert sn.u.dtype == sn.v.dtype == torch.float64
    for _ in range(30):  # converge, then the normalised weight's σ is 1 to float64 accuracy
        out = layer(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    assert out.dtype == torch.float64 and layer.weight.dtype == torch.float64
    assert largest_singular_value(layer.weight) == pytest.approx(1.0, abs=1e-10)


def test_update_once_per_step_leaves_forwards_reading_u_and_v():
    torch.manual_seed(4)
    model = nn.Sequential(spectral_norm(nn.Linear(6, 5)), spectral_norm(nn.Conv2d(2, 3, 3)))
    update_once_per_step(model)
    norms = [m.parametrizations.weight[0] for m in model]
    before = [(sn.u.clone(), sn.v.clone()) for sn in norms]
    model[0](torch.randn(2, 6))
    model[1](torch.randn(1, 2, 4, 4))
    for sn, (u, v) in zip(norms, before, strict=True):
        assert torch.equal(sn.u, u) and torch.equal(sn.v, v)  # training forwards: no round

    update_spectral_norms(model)  # exactly one round per layer, as the float64 reference
    for layer, sn, (u, _) in zip(model, norms, before, strict=True):
        expected_u, expected_v = reference_round(layer.parametrizations.weight.original, u)
        torch.testing.assert_close(sn.u.double(), expected_u, atol=1e-6, rtol=0)
        torch.testing.assert_close(sn.v.double(), expected_v, atol=1e-6, rtol=0)
        # and the forward divides by uᵀWv with these u and v
        w = layer.parametrizations.weight.original.detach()
        sigma = expected_u @ w.flatten(1).double() @ expected_v
        torch.testing.assert_close(layer.weight.double(), w.double() / sigma, atol=1e-6, rtol=0)


def test_spectral_norm_names_what_it_cannot_normalise():
    with pytest.raises(ValueError, match=r"takes a layer .* got Tensor"):
        spectral_norm(torch.randn(3, 3))  # was torch's "'Tensor' has no attribute 'weight'"
    with pytest.raises(ValueError, match=r"this ReLU has none; apply it to the layers"):
        spectral_norm(nn.ReLU())
    layer = spectral_norm(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"already spectrally normalised; .* Call it once"):
        spectral_norm(layer)  # silently divided by σ twice before
    assert len(layer.parametrizations.weight) == 1
