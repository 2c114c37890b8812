"""GAN losses: hinge (SAGAN's default) and non-saturating (the original GAN's practical form).

Every function takes the discriminator's raw logits, shape (B,): no sigmoid has been applied.
A discriminator loss takes the logits of real and of generated images; a generator loss takes
only the logits of generated images, because only those depend on the generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "d_hinge_loss",
    "d_nonsaturating_loss",
    "g_hinge_loss",
    "g_nonsaturating_loss",
    "get_losses",
]

DLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GLoss = Callable[[torch.Tensor], torch.Tensor]


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for D: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))).

    D is pushed to score real images above +1 and fakes below -1, and no further: an image that
    is already beyond its margin contributes zero loss and zero gradient, so D spends its capacity
    on the images it still gets wrong instead of growing its logits without bound. This is why
    SAGAN (and SN-GAN, BigGAN) use it by default; together with spectral norm it trains stably.
    """
    _check_logits(real_logits=real_logits, fake_logits=fake_logits)
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for G: -mean(D(fake)). G raises D's score of its images, with no margin."""
    _check_logits(fake_logits=fake_logits)
    return -fake_logits.mean()


def d_nonsaturating_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy for D: -log σ(D(real)) - log(1 - σ(D(fake))), as logits.

    softplus(-t) = -log σ(t) and softplus(t) = -log(1 - σ(t)), computed without overflow.
    """
    _check_logits(real_logits=real_logits, fake_logits=fake_logits)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss for G: -log σ(D(fake)) = softplus(-D(fake)).

    The minimax game would have G minimise log(1 - σ(D(fake))), whose gradient vanishes
    ("saturates") exactly when D confidently rejects the fakes, which is early in training when G
    most needs a signal. Maximising log σ(D(fake)) instead has the same goal but a strong gradient
    there (Goodfellow et al., 2014).
    """
    _check_logits(fake_logits=fake_logits)
    return F.softplus(-fake_logits).mean()


LOSSES: dict[str, tuple[DLoss, GLoss]] = {
    "hinge": (d_hinge_loss, g_hinge_loss),
    "nonsaturating": (d_nonsaturating_loss, g_nonsaturating_loss),
}


def get_losses(name: str) -> tuple[DLoss, GLoss]:
    """Return (d_loss_fn, g_loss_fn) for "hinge" (SAGAN's default) or "nonsaturating"."""
    if name not in LOSSES:
        valid = ", ".join(repr(n) for n in LOSSES)
        raise ValueError(f"unknown loss {name!r}; choose one of {valid}")
    return LOSSES[name]


def _check_logits(**logits: torch.Tensor) -> None:
    """Raise ValueError unless every argument is a non-empty 1-D float tensor of logits (B,)."""
    for name, t in logits.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(
                f"{name} must be a torch.Tensor of shape (batch,), got {type(t).__name__}; "
                "pass the Discriminator's output as it is"
            )
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(
                f"{name} must be a non-empty 1-D tensor of shape (batch,), got "
                f"{tuple(t.shape)}; the Discriminator returns this shape, use .view(-1) on "
                "(batch, 1) outputs"
            )
        if not t.is_floating_point():
            raise ValueError(
                f"{name} must hold floating-point logits (D's raw scores), got dtype {t.dtype}; "
                "pass the Discriminator's output, or convert with .float()"
            )
