"""The GAN losses: values against hand computation, gradient directions, the error for bad names."""

import math

import pytest
import torch

from sagan_edu.losses import (
    d_hinge_loss,
    d_nonsaturating_loss,
    g_hinge_loss,
    g_nonsaturating_loss,
    get_losses,
)

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-3.0, 0.0, 0.25])


def test_d_hinge_by_hand():
    # real: relu(1 - [2, 0.5, -1]) = [0, 0.5, 2] -> mean 2.5/3
    # fake: relu(1 + [-3, 0, 0.25]) = [0, 1, 1.25] -> mean 2.25/3
    expected = 2.5 / 3 + 2.25 / 3
    assert d_hinge_loss(REAL, FAKE).item() == pytest.approx(expected)


def test_d_hinge_is_zero_beyond_the_margins():
    assert d_hinge_loss(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, -7.0])).item() == 0.0


def test_g_hinge_by_hand():
    assert g_hinge_loss(FAKE).item() == pytest.approx(-(-3.0 + 0.0 + 0.25) / 3)


def _neg_log_sigmoid(t: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-t)))


def test_d_nonsaturating_is_binary_cross_entropy():
    real = sum(_neg_log_sigmoid(t) for t in REAL.tolist()) / 3  # -log σ(D(real))
    fake = sum(-math.log(1.0 - 1.0 / (1.0 + math.exp(-t))) for t in FAKE.tolist()) / 3
    assert d_nonsaturating_loss(REAL, FAKE).item() == pytest.approx(real + fake, rel=1e-6)


def test_g_nonsaturating_by_hand():
    expected = sum(_neg_log_sigmoid(t) for t in FAKE.tolist()) / 3
    assert g_nonsaturating_loss(FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_nonsaturating_is_finite_for_huge_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(d_nonsaturating_loss(big, big))
    assert torch.isfinite(g_nonsaturating_loss(big))


@pytest.mark.parametrize("name", ["hinge", "nonsaturating"])
def test_gradient_signs(name):
    """Descending D's loss raises real scores and lowers fake ones; G's loss raises fake scores."""
    d_loss, g_loss = get_losses(name)
    real = torch.tensor([0.3, -0.2], requires_grad=True)  # inside the hinge margins
    fake = torch.tensor([0.1, -0.4], requires_grad=True)
    d_loss(real, fake).backward()
    assert (real.grad < 0).all()  # gradient descent moves real logits up
    assert (fake.grad > 0).all()  # ... and fake logits down

    fake = torch.tensor([0.1, -0.4, -5.0], requires_grad=True)
    g_loss(fake).backward()
    assert (fake.grad < 0).all()  # G pushes its scores up, even when D rejects them hard


def test_nonsaturating_g_gradient_stays_strong_when_d_wins():
    """The point of "non-saturating": log(1 - σ(t)) has a vanishing gradient for t -> -∞."""
    fake = torch.tensor([-8.0], requires_grad=True)
    g_nonsaturating_loss(fake).backward()
    assert fake.grad.abs().item() > 0.99

    saturating = torch.tensor([-8.0], requires_grad=True)
    torch.log(1 - torch.sigmoid(saturating)).mean().backward()
    assert saturating.grad.abs().item() < 1e-3


def test_get_losses_returns_the_pairs():
    assert get_losses("hinge") == (d_hinge_loss, g_hinge_loss)
    assert get_losses("nonsaturating") == (d_nonsaturating_loss, g_nonsaturating_loss)


def test_get_losses_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'wasserstein'.*'hinge', 'nonsaturating'"):
        get_losses("wasserstein")


@pytest.mark.parametrize("bad", [torch.zeros(4, 1), torch.zeros(()), torch.zeros(0)])
def test_logits_must_be_1d(bad):
    with pytest.raises(ValueError, match=r"1-D tensor of shape \(batch,\)"):
        g_hinge_loss(bad)
    with pytest.raises(ValueError, match="fake_logits"):
        d_hinge_loss(torch.zeros(4), bad)


def test_logits_that_are_not_float_tensors_say_what_they_are():
    with pytest.raises(ValueError, match=r"fake_logits must hold floating-point .* torch.int64"):
        g_hinge_loss(torch.ones(4, dtype=torch.long))  # torch's own error: "could not infer..."
    with pytest.raises(ValueError, match=r"real_logits must be a torch.Tensor .* got list"):
        d_nonsaturating_loss([0.5, 1.0], FAKE)
    with pytest.raises(ValueError, match=r"fake_logits must be a torch.Tensor .* got ndarray"):
        g_nonsaturating_loss(FAKE.numpy())
