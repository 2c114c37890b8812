"""A 2-D toy GAN: eight Gaussians on a ring, where mode collapse can be seen and counted.

The data is a mixture of `n_modes` small Gaussians (std 0.02) evenly spaced on a circle of radius
2 (the toy of Metz et al., 2017, "Unrolled GANs"). A generator that has learned the data puts
its points on all eight; a collapsed one puts them on a few, or hops from one mode to the next.
Two numbers say which (the measures of Srivastava et al., 2017, "VEEGAN"):

- `modes_covered`: how many modes hold at least 1 % of the samples, counting only samples within
  3 std of a mode's centre;
- `high_quality_fraction`: the fraction of samples within 3 std of some mode.

    from sagan_edu.toy2d import ToyGANConfig, sample_ring, modes_covered, train_toy_gan
    real = sample_ring(1000)                        # (1000, 2)
    modes_covered(real)                             # 8
    run = train_toy_gan(ToyGANConfig(steps=2000))   # run.history["modes"] over training

`train_toy_gan` is notebook 06's training loop with switches for what notebook 07 studies:
the loss, spectral norm in D, the learning rates and Adam's β (TTUR), and an EMA generator.
A run of 2,000 steps takes a few seconds on one CPU core.

`dirac_gan` is the smallest GAN there is (Mescheder et al., 2018): the data is the point 0, G is
one number θ, D's logit is ψ·x. Its equilibrium is θ = ψ = 0, and how the pair circles or
approaches it shows what the optimiser settings do to the adversarial game.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from sagan_edu.config import at_least, check_setting_names, check_setting_types
from sagan_edu.losses import LOSSES, get_losses
from sagan_edu.spectral_norm import spectral_norm
from sagan_edu.training import update_ema

__all__ = [
    "Scale",
    "ToyGANConfig",
    "ToyRun",
    "assign_modes",
    "dirac_gan",
    "high_quality_fraction",
    "mode_counts",
    "modes_covered",
    "ring_centers",
    "sample_ring",
    "toy_discriminator",
    "toy_generator",
    "train_toy_gan",
]

N_MODES = 8
RADIUS = 2.0
STD = 0.02
N_STD = 3.0  # a sample "hits" a mode when it lies within N_STD standard deviations of its centre
MIN_FRACTION = 0.01  # a mode counts as covered when at least this fraction of samples hit it


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def ring_centers(n_modes: int = N_MODES, radius: float = RADIUS) -> torch.Tensor:
    """(n_modes, 2): the mode centres, evenly spaced on a circle, the first at angle 0."""
    angles = torch.arange(n_modes, dtype=torch.float32) * (2 * math.pi / n_modes)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def sample_ring(
    n: int,
    n_modes: int = N_MODES,
    radius: float = RADIUS,
    std: float = STD,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, 2) points: a mode chosen uniformly at random, plus Gaussian noise of `std`."""
    modes = torch.randint(n_modes, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator) * std
    return ring_centers(n_modes, radius)[modes] + noise


# ---------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------


def assign_modes(
    samples: torch.Tensor, n_modes: int = N_MODES, radius: float = RADIUS, std: float = STD
) -> torch.Tensor:
    """(n,) long: the mode each sample (n, 2) hits, or -1 if it is > 3 std from every centre."""
    if samples.dim() != 2 or samples.size(1) != 2:
        raise ValueError(f"samples must have shape (n, 2), got {tuple(samples.shape)}")
    distances = torch.cdist(samples.detach().float().cpu(), ring_centers(n_modes, radius))
    nearest_distance, nearest = distances.min(dim=1)  # (n,), (n,)
    return torch.where(nearest_distance <= N_STD * std, nearest, -1)


def mode_counts(
    samples: torch.Tensor, n_modes: int = N_MODES, radius: float = RADIUS, std: float = STD
) -> torch.Tensor:
    """(n_modes,) long: how many samples hit each mode."""
    hits = assign_modes(samples, n_modes, radius, std)
    return torch.bincount(hits[hits >= 0], minlength=n_modes)


def modes_covered(
    samples: torch.Tensor,
    n_modes: int = N_MODES,
    radius: float = RADIUS,
    std: float = STD,
    min_fraction: float = MIN_FRACTION,
) -> int:
    """How many modes hold at least `min_fraction` of the samples (within 3 std)."""
    counts = mode_counts(samples, n_modes, radius, std)
    return int((counts >= max(1.0, min_fraction * len(samples))).sum())


def high_quality_fraction(
    samples: torch.Tensor, n_modes: int = N_MODES, radius: float = RADIUS, std: float = STD
) -> float:
    """The fraction of samples within 3 std of some mode: 1.0 means no point falls in between."""
    return float((assign_modes(samples, n_modes, radius, std) >= 0).float().mean())


# ---------------------------------------------------------------------------------------------
# Models: small MLPs
# ---------------------------------------------------------------------------------------------


def toy_generator(z_dim: int = 2, hidden: int = 128, depth: int = 2) -> nn.Sequential:
    """z (B, z_dim) -> points (B, 2): `depth` hidden ReLU layers of width `hidden`."""
    layers: list[nn.Module] = []
    width = z_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 2))  # no output nonlinearity: points can be anywhere
    return nn.Sequential(*layers)


def toy_discriminator(
    hidden: int = 128, depth: int = 2, sn: bool = False, lipschitz: float = 1.0
) -> nn.Sequential:
    """Points (B, 2) -> logits (B,); `sn=True` spectrally normalises every linear layer.

    With spectral norm D is at most 1-Lipschitz, in the units of the data. The ring's modes are
    0.06 wide (3 std), so such a D is too flat to tell a point on a mode from one just beside it;
    `lipschitz` multiplies the logits, which makes the bound `lipschitz` instead of 1 (the same as
    measuring the data in smaller units). It changes nothing without spectral norm.
    """

    def linear(n_in: int, n_out: int) -> nn.Module:
        layer = nn.Linear(n_in, n_out)
        return spectral_norm(layer) if sn else layer

    layers: list[nn.Module] = []
    width = 2
    for _ in range(depth):
        # LeakyReLU is 1-Lipschitz, so with sn=True the whole D is (at most) 1-Lipschitz.
        layers += [linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    layers += [linear(width, 1), nn.Flatten(0)]  # (B, 1) -> (B,)
    if lipschitz != 1.0:
        layers.append(Scale(lipschitz))
    return nn.Sequential(*layers)


class Scale(nn.Module):
    """Multiply by a fixed number: y = factor · x (no parameters)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyGANConfig:
    """One toy run. The defaults are the plain GAN of notebook 06 (no stabilising tricks)."""

    loss: str = "nonsaturating"  # or "hinge"
    sn: bool = False  # spectral norm on D's layers
    lipschitz: float = 1.0  # with sn: the bound on D's slope (see toy_discriminator)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float | None = None  # e.g. 0.999 to keep an EMA generator; None: no EMA
    steps: int = 2000
    batch_size: int = 256
    z_dim: int = 2
    hidden: int = 128
    seed: int = 0
    log_every: int = 100
    n_eval: int = 2000  # samples drawn to measure the generator at each log

    def __new__(cls, *args, **kwargs):
        check_setting_names(cls, kwargs)  # lr= or step= fails naming lr_g, lr_d or steps
        return super().__new__(cls)

    def __post_init__(self):
        check_setting_types(self)
        for name in ("steps", "batch_size", "z_dim", "hidden", "log_every", "n_eval"):
            at_least(name, getattr(self, name), 1)
        at_least("seed", self.seed, 0)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        for name in ("lr_g", "lr_d", "lipschitz"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"each of betas must be in [0, 1), got {self.betas}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None (no EMA), got {self.ema_decay}")


@dataclass
class ToyRun:
    """A finished toy run: the models and what was measured every `log_every` steps."""

    config: ToyGANConfig
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None
    history: dict[str, list[float]] = field(default_factory=dict)


def train_toy_gan(config: ToyGANConfig) -> ToyRun:
    """Train a toy GAN on the ring of Gaussians and record, every `log_every` steps:

    loss_d, loss_g (means over the window), modes and hq (modes covered and high-quality fraction
    of G's samples; modes_ema and hq_ema for the EMA generator), d_grad (the mean norm of D's
    gradient with respect to its input at real and fake points: how steep D is).
    """
    if not isinstance(config, ToyGANConfig):
        raise ValueError(
            f"train_toy_gan needs a ToyGANConfig, got {type(config).__name__}; build one with "
            "ToyGANConfig(**settings)"
        )
    torch.manual_seed(config.seed)
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    G = toy_generator(config.z_dim, config.hidden)
    D = toy_discriminator(config.hidden, sn=config.sn, lipschitz=config.lipschitz)
    G_ema = copy.deepcopy(G).requires_grad_(False) if config.ema_decay is not None else None
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=config.betas)
    d_loss_fn, g_loss_fn = get_losses(config.loss)
    eval_z = torch.randn(config.n_eval, config.z_dim, generator=torch.Generator().manual_seed(0))
    history: dict[str, list[float]] = {}
    window = {"loss_d": 0.0, "loss_g": 0.0}

    for step in range(1, config.steps + 1):
        # D step: real points up, fake points down. detach(): this step does not train G.
        real = sample_ring(config.batch_size, generator=data_rng)  # (B, 2)
        fake = G(torch.randn(config.batch_size, config.z_dim)).detach()  # (B, 2)
        loss_d = d_loss_fn(D(real), D(fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        # G step: make D score fresh fakes as real. D's gradients are computed but not used.
        loss_g = g_loss_fn(D(G(torch.randn(config.batch_size, config.z_dim))))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if G_ema is not None:
            # The same warm-up as the SAGAN trainer: early on, average over fewer steps.
            update_ema(G_ema, G, min(config.ema_decay, (1 + step) / (10 + step)))
        window["loss_d"] += loss_d.item()
        window["loss_g"] += loss_g.item()

        if step % config.log_every == 0 or step == config.steps:
            n_window = step - (int(history["step"][-1]) if history else 0)
            entry = {"step": float(step)}
            entry |= {name: total / n_window for name, total in window.items()}
            entry |= _measure(G, D, eval_z, data_rng, suffix="")
            if G_ema is not None:
                entry |= _measure(G_ema, D, eval_z, data_rng, suffix="_ema", d_grad=False)
            for name, value in entry.items():
                history.setdefault(name, []).append(value)
            window = dict.fromkeys(window, 0.0)
    return ToyRun(config, G, D, G_ema, history)


def _measure(
    G: nn.Module,
    D: nn.Module,
    z: torch.Tensor,
    data_rng: torch.Generator,
    suffix: str,
    d_grad: bool = True,
) -> dict[str, float]:
    with torch.no_grad():
        samples = G(z)  # (n_eval, 2)
    values = {
        f"modes{suffix}": float(modes_covered(samples)),
        f"hq{suffix}": high_quality_fraction(samples),
    }
    if d_grad:
        D.eval()  # measuring must not run an extra spectral-norm power iteration
        values["d_grad"] = _input_gradient_norm(D, samples, sample_ring(len(z), generator=data_rng))
        D.train()
    return values


def _input_gradient_norm(D: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> float:
    """The mean ‖∂D(x)/∂x‖ over real and fake points: the signal G gets from D, and its size."""
    points = torch.cat([real, fake]).requires_grad_(True)  # (2n, 2)
    (grad,) = torch.autograd.grad(D(points).sum(), points)  # each row is one point's gradient
    return float(grad.norm(dim=1).mean())


# ---------------------------------------------------------------------------------------------
# The Dirac GAN: two numbers
# ---------------------------------------------------------------------------------------------


def dirac_gan(
    steps: int,
    lr_g: float,
    lr_d: float,
    betas: tuple[float, float] = (0.5, 0.999),
    loss: str = "nonsaturating",
    theta: float = 1.0,
) -> torch.Tensor:
    """Train the Dirac GAN with Adam from (θ, ψ) = (theta, 0); returns its path (steps, 2).

    Real data is the point 0, every generated sample is θ, and D's logit of a point x is ψ·x.
    Each step is one D update then one G update, as in the image GANs.
    """
    d_loss_fn, g_loss_fn = get_losses(loss)
    theta_ = nn.Parameter(torch.tensor(float(theta)))
    psi = nn.Parameter(torch.tensor(0.0))
    opt_g = torch.optim.Adam([theta_], lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam([psi], lr=lr_d, betas=betas)
    real = torch.zeros(1)  # (1,): the data
    path = torch.empty(steps, 2)
    for step in range(steps):
        loss_d = d_loss_fn(psi * real, psi * theta_.detach().view(1))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = g_loss_fn(psi.detach() * theta_.view(1))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        path[step] = torch.stack([theta_.detach(), psi.detach()])
    return path
