"""Checks for solutions/08_the_gan_game.ipynb: the original GAN losses, the best D."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sagan_edu.checks._common import (
    Tensor,
    _call,
    _close,
    _expect_dtype,
    _expect_loss_gradients,
    _fail,
    _fixed_seed,
    _passed,
    _randn,
    _scalar_loss,
    _tensor,
    checked,
)
from sagan_edu.losses import d_nonsaturating_loss, g_nonsaturating_loss

# ---------------------------------------------------------------------------------------------
# Exercise 14: the losses of the original GAN, from logits
# ---------------------------------------------------------------------------------------------


def _logit_pairs(seed: int = 0) -> list[tuple[str, Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        ("random logits, batch 8", 2 * _randn(8, gen=gen), 2 * _randn(8, gen=gen)),
        ("real batch 6, fake batch 4", 2 * _randn(6, gen=gen), 2 * _randn(4, gen=gen)),
        (
            "confident logits, ±40 and ±120",
            torch.tensor([40.0, -40.0, 120.0, 3.0]),
            torch.tensor([-120.0, 40.0, -3.0, 0.5]),
        ),
        (
            "float64 logits, batch 5",
            _randn(5, gen=gen, dtype=torch.float64),
            _randn(5, gen=gen, dtype=torch.float64),
        ),
    ]


def _describe_logits(real: Tensor | None, fake: Tensor) -> str:
    def show(t: Tensor) -> str:
        return str([round(x, 3) for x in t.tolist()])

    return (f"real logits {show(real)}, " if real is not None else "") + f"fake logits {show(fake)}"


_OVERFLOW = (
    "your loss is not finite for confident logits: log(sigmoid(t)) underflows to log(0) = −inf "
    "once |t| is a few dozen. Write it with logits directly: −log σ(t) = softplus(−t) and "
    "−log(1 − σ(t)) = softplus(t) (or F.binary_cross_entropy_with_logits)"
)


def _check_losses(
    results: list[tuple[str, Tensor | None, Tensor, Tensor]],
    reference: Callable[[Tensor | None, Tensor], Tensor],
    mistakes: list[tuple[Callable[[Tensor | None, Tensor], Tensor], str]],
    what: str,
    advice: str,
) -> None:
    """Fail on the first batch with a wrong loss; name a mistake only if it explains them all."""
    for where, real, fake, loss in results:
        expected = reference(real, fake)
        if _close(loss, expected):
            continue
        if not torch.isfinite(loss):
            _fail(f"{_OVERFLOW} ({where}: {_describe_logits(real, fake)})")
        for mistake, explanation in mistakes:
            if all(_close(got, mistake(r, f)) for _, r, f, got in results):
                _fail(f"{explanation}\n  (Seen for {where}.)")
        _fail(
            f"{what} is {loss.item():.5g}, expected {expected.item():.5g} for {where}: "
            f"{_describe_logits(real, fake)}.\n  {advice}"
        )


_CLAMPED_BCE = (
    "you applied F.binary_cross_entropy to σ(logits): for confident logits σ rounds to exactly 0 "
    "or 1, and binary_cross_entropy clamps log(0) to −100, so the loss is wrong (and its "
    "gradient 0) there. Work on the logits: F.binary_cross_entropy_with_logits, or softplus"
)

_D_MISTAKES = [
    (
        lambda r, f: d_nonsaturating_loss(f, r),
        "you swapped real and fake: D should say 'real' (σ → 1) for real images, −log σ(real), "
        "and 'fake' (σ → 0) for generated ones, −log(1 − σ(fake))",
    ),
    (
        lambda r, f: -d_nonsaturating_loss(r, f),
        "your loss has the wrong sign: D maximises log σ(real) + log(1 − σ(fake)), so it "
        "minimises their negative",
    ),
    (
        lambda r, f: F.softplus(-r).sum() + F.softplus(f).sum(),
        "you summed over the batch; take the mean of each term",
    ),
    (
        lambda r, f: F.softplus(-torch.cat([r, f])).mean(),
        "you scored the fakes as if they were real (target 1): fakes have target 0, "
        "−log(1 − σ(fake)) = softplus(fake)",
    ),
    (
        lambda r, f: F.softplus(-r).mean() + F.softplus(-f).mean(),
        "you scored the fakes as if they were real, −log σ(fake) = softplus(−fake); D wants "
        "them called fake: −log(1 − σ(fake)) = softplus(fake)",
    ),
    (
        lambda r, f: d_nonsaturating_loss(r, f) / 2,
        "your loss is half the expected value: add the real and fake terms, don't average them",
    ),
    (
        lambda r, f: torch.cat([F.softplus(-r), F.softplus(f)]).mean(),
        "you took one mean over real and fake together; the loss is the sum of two means, one "
        "per batch (equal to twice your value when the batches have the same size)",
    ),
    (
        lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
        "that is the hinge loss; this exercise is the original GAN's cross-entropy: "
        "−log σ(real) − log(1 − σ(fake))",
    ),
    (
        lambda r, f: (
            F.binary_cross_entropy(torch.sigmoid(r), torch.ones_like(r))
            + F.binary_cross_entropy(torch.sigmoid(f), torch.zeros_like(f))
        ),
        _CLAMPED_BCE,
    ),
    (
        lambda r, f: (
            -(torch.sigmoid(r).clamp_min(1e-45).log().mean())
            - (1 - torch.sigmoid(f)).clamp_min(1e-45).log().mean()
        ),
        "you computed log(sigmoid(·)) on probabilities; for confident logits σ rounds to "
        "exactly 0 or 1 and the log breaks. Use softplus on the logits: −log σ(t) = "
        "softplus(−t), −log(1 − σ(t)) = softplus(t)",
    ),
]


@checked
def check_d_nonsaturating_loss(d_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 14a: `d_loss(real_logits, fake_logits)` = −mean log σ(real) − mean log(1 − σ(fake)).

    Written on logits, it must stay finite for any logits (softplus, not log of sigmoid).
    """
    with _fixed_seed():
        results = []
        for description, real, fake in _logit_pairs():
            where = f"{description}: real {tuple(real.shape)}, fake {tuple(fake.shape)}"
            hint = (
                "The real and fake batches can have different sizes: take one mean per batch and "
                "add the two means, rather than combining the two tensors elementwise."
            )
            loss = _scalar_loss(_call(d_loss, real.clone(), fake.clone(), hint=hint), "your D loss")
            _expect_dtype(loss, real.dtype, "your D loss")
            results.append((where, real, fake, loss))
        _check_losses(
            results,
            d_nonsaturating_loss,
            _D_MISTAKES,
            "your D loss",
            "Expected mean(softplus(−real_logits)) + mean(softplus(fake_logits)).",
        )
        logits = {
            "real": torch.tensor([2.0, -0.5, 30.0]).requires_grad_(),
            "fake": torch.tensor([-1.0, 0.5, -30.0, 4.0]).requires_grad_(),
        }
        _expect_loss_gradients(
            d_loss, d_nonsaturating_loss, logits, "your D loss",
            "real [2, −0.5, 30], fake [−1, 0.5, −30, 4]",
        )  # fmt: skip
    _passed(
        "check_d_nonsaturating_loss",
        "values on 4 batches (different sizes, logits up to ±120, float64) and gradients.",
    )


_G_MISTAKES = [
    (
        lambda _, f: -F.softplus(f).mean(),
        "that is the original minimax loss, log(1 − σ(fake)) = −softplus(fake): G would "
        "minimise it, but its gradient vanishes exactly while D confidently rejects the fakes. "
        "The non-saturating loss maximises log σ(fake) instead: minimise softplus(−fake)",
    ),
    (
        lambda _, f: -F.softplus(-f).mean(),
        "your loss has the wrong sign: G minimises −log σ(D(fake)) = softplus(−fake)",
    ),
    (
        lambda _, f: F.softplus(f).mean(),
        "that is D's term for fakes, −log(1 − σ(fake)): G wants the opposite, −log σ(fake) = "
        "softplus(−fake)",
    ),
    (lambda _, f: -f.mean(), "that is the hinge loss's G term, −mean(fake); use softplus(−fake)"),
    (lambda _, f: F.softplus(-f).sum(), "you summed over the batch; take the mean"),
    (
        lambda _, f: F.binary_cross_entropy(torch.sigmoid(f), torch.ones_like(f)),
        _CLAMPED_BCE,
    ),
]


@checked
def check_g_nonsaturating_loss(g_loss: Callable[[Tensor], Tensor]) -> None:
    """Exercise 14b: `g_loss(fake_logits)` = −mean log σ(fake), the non-saturating G loss."""
    with _fixed_seed():
        results = []
        for description, _real, fake in _logit_pairs():
            where = f"{description}: fake {tuple(fake.shape)}"
            loss = _scalar_loss(_call(g_loss, fake.clone()), "your G loss")
            _expect_dtype(loss, fake.dtype, "your G loss")
            results.append((where, None, fake, loss))
        _check_losses(
            results,
            lambda _, f: g_nonsaturating_loss(f),
            _G_MISTAKES,
            "your G loss",
            "Expected mean(softplus(−fake_logits)) = −mean(log σ(fake_logits)).",
        )
        fake = torch.tensor([-30.0, -1.0, 0.5, 4.0]).requires_grad_()
        _expect_loss_gradients(
            g_loss, g_nonsaturating_loss, {"fake": fake}, "your G loss", "fake [−30, −1, 0.5, 4]"
        )
    _passed(
        "check_g_nonsaturating_loss",
        "values on 4 batches (logits up to ±120, float64) and gradients.",
    )


# ---------------------------------------------------------------------------------------------
# Exercise 15: the best discriminator for a fixed generator
# ---------------------------------------------------------------------------------------------


def reference_optimal_discriminator(p_data: Tensor, p_model: Tensor) -> Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_model(x)); ½ where neither distribution has mass."""
    total = p_data + p_model
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, p_data / safe, torch.full_like(total, 0.5))


def _density_cases(seed: int = 0) -> list[tuple[str, Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    data = torch.exp(-0.5 * (x - 1) ** 2) / (2 * torch.pi) ** 0.5
    model = torch.exp(-0.5 * ((x + 0.5) / 1.5) ** 2) / (1.5 * (2 * torch.pi) ** 0.5)
    histogram_a = torch.rand(2, 6, generator=gen)
    histogram_b = torch.rand(2, 6, generator=gen)
    disjoint = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.2, 0.8, 0.0])
    return [
        ("two Gaussian densities on 9 points (float64)", data, model),
        ("a batch of two histograms (2, 6)", histogram_a / histogram_a.sum(-1, keepdim=True),
         histogram_b / histogram_b.sum(-1, keepdim=True)),
        ("disjoint supports, and a point where both are 0", *disjoint),
    ]  # fmt: skip


@checked
def check_optimal_discriminator(optimal_discriminator: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 15: `optimal_discriminator(p_data, p_model)` -> D*(x), elementwise.

    D*(x) = p_data(x) / (p_data(x) + p_model(x)); where both are 0, D* = ½ (no evidence).
    """
    with _fixed_seed():
        for where, p_data, p_model in _density_cases():
            expected = reference_optimal_discriminator(p_data, p_model)
            got = _tensor(_call(optimal_discriminator, p_data.clone(), p_model.clone()), "your D*")
            if got.shape != expected.shape:
                _fail(
                    f"your D* has shape {tuple(got.shape)}, expected {tuple(expected.shape)}, "
                    f"one value per point ({where})"
                )
            _expect_dtype(got, p_data.dtype, "your D*")
            both_zero = (p_data + p_model) == 0
            if both_zero.any() and not torch.isfinite(got[both_zero]).all():
                _fail(
                    f"your D* is NaN where p_data and p_model are both 0 ({where}): 0/0. Where "
                    "neither distribution puts any mass, D has no evidence either way: return ½ "
                    "there (torch.where)"
                )
            if _close(got, expected):
                continue
            total = p_data + p_model
            safe = torch.where(total > 0, total, torch.ones_like(total))
            for wrong, explanation in [
                (
                    torch.where(total > 0, p_model / safe, 0.5),
                    "you returned p_model / (p_data + p_model), the probability that x is fake; "
                    "D outputs the probability that x is real: p_data / (p_data + p_model)",
                ),
                (
                    torch.sigmoid(p_data - p_model),
                    "σ(p_data − p_model) is not the optimum; D* is the share of real among all "
                    "the mass at x: p_data / (p_data + p_model)",
                ),
            ]:
                if _close(got, wrong.to(got.dtype)):
                    _fail(f"{explanation} ({where})")
            if both_zero.any() and _close(got[~both_zero], expected[~both_zero]):
                _fail(
                    f"your D* is right wherever some distribution has mass, but where p_data and "
                    f"p_model are both 0 it is {got[both_zero].flatten()[0].item():.3g} ({where}): "
                    "no sample ever lands there, so D has no evidence either way; return ½"
                )
            ratio = p_data / p_model
            if _close(got[p_model > 0], ratio[p_model > 0]):
                _fail(
                    f"you returned the ratio p_data / p_model, which can exceed 1 ({where}); D* "
                    "is a probability: p_data / (p_data + p_model)"
                )
            i = (got.double() - expected.double()).abs().flatten().argmax().item()
            data, model = p_data.flatten()[i].item(), p_model.flatten()[i].item()
            _fail(
                f"your D* differs from p_data / (p_data + p_model) ({where}): at index {i} of "
                f"the flattened input, p_data = {data:.4g} and p_model = {model:.4g}; yours is "
                f"{got.flatten()[i].item():.4g}, expected {expected.flatten()[i].item():.4g}"
            )
    _passed(
        "check_optimal_discriminator",
        "Gaussian densities, a batch of histograms, disjoint supports and points without mass.",
    )
