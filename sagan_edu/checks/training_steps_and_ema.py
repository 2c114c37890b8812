"""Checks for solutions/04_training_steps_and_ema.ipynb: a D step, a G step, the EMA."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.checks._common import (
    Tensor,
    _call,
    _close,
    _fail,
    _fixed_seed,
    _max_diff,
    _number,
    _passed,
    _randn,
    checked,
)
from sagan_edu.losses import d_hinge_loss, d_nonsaturating_loss, g_hinge_loss
from sagan_edu.spectral_norm import spectral_norm as apply_spectral_norm
from sagan_edu.training import update_ema

# ---------------------------------------------------------------------------------------------
# Exercise 7: one discriminator step and one generator step
# ---------------------------------------------------------------------------------------------

_Z_DIM, _IMAGE = 6, (1, 4, 4)
_LR = 0.1  # SGD: the parameter change is -lr · gradient, so it shows the gradient exactly
_STALE = 0.5  # gradients left over from an earlier step, which a step must clear first


class _TinyGenerator(nn.Module):
    """z (B, 6) -> images (B, 1, 4, 4): small enough that the check runs in milliseconds."""

    def __init__(self):
        super().__init__()
        self.z_dim = _Z_DIM
        self.net = nn.Sequential(
            nn.Linear(_Z_DIM, 16), nn.ReLU(), nn.Linear(16, math.prod(_IMAGE)), nn.Tanh()
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *_IMAGE)


class _TinyDiscriminator(nn.Module):
    """images (B, 1, 4, 4) -> logits (B,)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(_IMAGE), 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def reference_discriminator_step(
    G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, real: Tensor, z: Tensor
) -> Tensor:
    """One D update with the hinge loss, as `Trainer._discriminator_step` does it."""
    with torch.no_grad():
        fake = G(z)  # no graph through G: this step only trains D
    logits = D(torch.cat([real, fake]))  # real and fake in one forward
    real_logits, fake_logits = logits.split([len(real), len(fake)])
    loss = d_hinge_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return loss.detach()


def reference_generator_step(
    G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, z: Tensor
) -> Tensor:
    """One G update with the hinge loss, as `Trainer._generator_step` does it."""
    D.requires_grad_(False)  # gradients pass through D to G; D's own are not needed
    loss = g_hinge_loss(D(G(z)))
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    return loss.detach()


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changes(model: nn.Module, before: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}


def _same_changes(a: dict[str, Tensor], b: dict[str, Tensor], tol: float = 1e-5) -> bool:
    return all(torch.allclose(a[n], b[n], rtol=1e-4, atol=tol) for n in a)


def _unchanged(model: nn.Module, before: dict[str, Tensor]) -> bool:
    return all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def _tiny_gan(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    G, D = _TinyGenerator(), _TinyDiscriminator()
    with torch.no_grad():  # logits on both sides of the hinge's margins, so a missing relu shows
        D.net[-1].weight.mul_(8.0)
    return G, D


class _WatchGenerator:
    """Records what G is called with, and whether a backward pass reaches G's output."""

    def __init__(self, G: nn.Module):
        self.inputs: list[Tensor] = []
        self.backward_reached = False
        self.handle = G.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self.inputs.append(args[0].detach().clone())
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self._reached)

    def _reached(self, grad: Tensor) -> None:
        self.backward_reached = True


def _modes(model: nn.Module) -> list[bool]:
    """The train/eval flag of every submodule."""
    return [m.training for m in model.modules()]


_MODE_ADVICE = {
    "G": "G.eval() changes what G computes (BatchNorm switches to its running statistics, which "
    "then stop learning); torch.no_grad() or .detach() is what keeps gradients out of G",
    "D": "D.eval() changes what D computes (spectral norm's u stops updating, BatchNorm uses "
    "running statistics); only opt_g.step() changes weights, so D needs no freezing, and "
    "D.requires_grad_(False) only saves computing D's gradients",
}


def _expect_modes_kept(
    models: dict[str, nn.Module], before: dict[str, list[bool]], step: str
) -> None:
    """Every model must be in the same train/eval mode after the step as before it."""
    for name, model in models.items():
        if _modes(model) != before[name]:
            now = "train" if model.training else "eval"
            was = "train" if before[name][0] else "eval"
            _fail(
                f"your {step} left {name} in {now} mode; it was in {was} mode before the step. "
                f"{_MODE_ADVICE[name]}. If you switch a model's mode, switch it back before "
                "returning"
            )


_ORDER_HINT = (
    "If this is 'modified by an inplace operation': opt.step() changes the weights in place, so "
    "it must come after loss.backward(); the order is zero_grad(), backward(), step()."
)


def _fill_stale_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, _STALE)


@checked
def check_discriminator_step(discriminator_step: Callable[..., Any]) -> None:
    """Exercise 7a: `discriminator_step(G, D, opt_d, real, z)` -> the D loss (hinge).

    fake = G(z) without gradients for G; loss = d_hinge_loss(D(real), D(fake)); clear old
    gradients, backward, opt_d.step(); return the loss. G must not change.
    """
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        for step, batch in enumerate((5, 8)):
            G, D = _tiny_gan(seed=step)
            real, z = _randn(batch, *_IMAGE, gen=gen), _randn(batch, _Z_DIM, gen=gen)
            where = f"batch of {batch}, tiny G and D, SGD with lr={_LR}"
            G_ref, D_ref, D_start = copy.deepcopy(G), copy.deepcopy(D), copy.deepcopy(D)
            variants = _d_loss_variants(G, D, real, z)
            opt_d = torch.optim.SGD(D.parameters(), lr=_LR)
            opt_ref = torch.optim.SGD(D_ref.parameters(), lr=_LR)
            _fill_stale_grads(D)
            _fill_stale_grads(D_ref)
            g_before, d_before = _snapshot(G), _snapshot(D)
            modes_before = {"G": _modes(G), "D": _modes(D)}
            watch = _WatchGenerator(G)
            try:
                loss = _call(
                    discriminator_step, G, D, opt_d, real.clone(), z.clone(), hint=_ORDER_HINT
                )
            finally:
                watch.handle.remove()
            expected = reference_discriminator_step(G_ref, D_ref, opt_ref, real, z).item()
            with torch.no_grad():
                variants["after the step"] = d_hinge_loss(D_ref(real), D_ref(G_ref(z))).item()

            if not watch.inputs:
                _fail("your discriminator step never called G: the fake images are G(z)")
            if not any(torch.equal(i, z) for i in watch.inputs):
                _fail(
                    "G was not called with the z you were given: make the fake images from it, "
                    "G(z), so the step is reproducible"
                )
            if watch.backward_reached or any(p.grad is not None for p in G.parameters()):
                _fail(
                    f"in your discriminator step the gradient flowed back into G ({where}): the "
                    "D step trains D only, so make the fakes without a graph through G, with "
                    "torch.no_grad() or fake.detach(). Otherwise backward wastes time on G and "
                    "leaves gradients in G's .grad"
                )
            if not _unchanged(G, g_before):
                _fail("your discriminator step changed G's weights: only opt_d.step() belongs here")
            _expect_modes_kept({"G": G, "D": D}, modes_before, "discriminator step")
            if any(not p.requires_grad for p in D.parameters()):
                _fail(
                    "after your discriminator step some of D's parameters have "
                    "requires_grad=False: leave D trainable"
                )
            if any(not p.requires_grad for p in G.parameters()):
                _fail(
                    "after your discriminator step G's parameters have requires_grad=False: turn "
                    "them back on (G.requires_grad_(True)), or the next generator step cannot "
                    "train G. torch.no_grad() around G(z) needs no undoing"
                )
            value = _number(loss, "the loss your discriminator step returned")
            if not math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-5):
                if math.isclose(value, variants["swapped"], rel_tol=1e-4, abs_tol=1e-5):
                    _fail(
                        f"your D loss ({value:.4f}, expected {expected:.4f}) has real and fake "
                        "swapped: d_hinge_loss(real_logits, fake_logits), real first, pushes "
                        "D(real) above +1 and D(fake) below −1"
                    )
                for variant, explanation in _D_LOSS_MISTAKES.items():
                    if math.isclose(value, variants[variant], rel_tol=1e-4, abs_tol=1e-5):
                        _fail(
                            f"your D loss ({value:.4f}, expected {expected:.4f}, {where}) "
                            f"{explanation}"
                        )
                _fail(
                    f"your discriminator step returned loss {value:.4f}, expected "
                    f"{expected:.4f} ({where}): the D loss is d_hinge_loss(D(real), D(fake)) "
                    "with fake = G(z); return it (a tensor or its .item())"
                )

            got, want = _changes(D, d_before), _changes(D_ref, d_before)
            if _same_changes(got, want):
                continue
            if all(c.abs().max() == 0 for c in got.values()):
                _fail(
                    f"D's weights did not change ({where}): call opt_d.zero_grad(), "
                    "loss.backward() and opt_d.step(), in this order"
                )
            for term in ("real", "fake"):
                if _same_changes(got, _update_from_one_term(D_start, G_ref, real, z, term)):
                    other = "fake" if term == "real" else "real"
                    _fail(
                        f"only the {term} term of your loss reached D's weights ({where}): "
                        f"D({other}) was computed without a graph (under torch.no_grad() or "
                        f"detached). Only the fakes G(z) go under torch.no_grad(); D must learn "
                        "from both of its outputs"
                    )
            stale = {n: c - _LR * _STALE for n, c in want.items()}
            if _same_changes(got, stale):
                _fail(
                    f"D's update includes gradients left over from an earlier step ({where}): "
                    "call opt_d.zero_grad() before loss.backward(), since .backward() adds to "
                    ".grad instead of replacing it"
                )
            _fail(
                f"D's weights after your step differ from the reference by up to "
                f"{max(_max_diff(got[n], want[n]) for n in got):.3g} ({where}), although the "
                "loss value matches: backpropagate the loss you return and step opt_d once"
            )
    _passed(
        "check_discriminator_step",
        "loss and D's update match the reference on 2 batches; G untouched, no gradient into G, "
        "old gradients cleared.",
    )


_D_LOSS_MISTAKES = {
    "real only": "only scores the real images: D must also learn to reject the fakes, "
    "d_hinge_loss(D(real), D(fake))",
    "non-saturating": "is the non-saturating (binary cross-entropy) loss, softplus(−D(real)) + "
    "softplus(D(fake)); this course's SAGAN trains with the hinge loss, "
    "d_hinge_loss(D(real), D(fake))",
    "no relu": "has no relu: (1 − D(real)).mean() + (1 + D(fake)).mean() keeps rewarding D for "
    "logits far beyond the margins; use d_hinge_loss(D(real), D(fake))",
    "summed": "sums over the batch; the hinge loss takes the mean (d_hinge_loss does)",
    "halved": "is half the hinge loss: add the real and fake terms, don't average them",
    "after the step": "was computed again after opt_d.step(), with D's new weights: return the "
    "loss that loss.backward() used, computed before the step",
}


def _update_from_one_term(
    D: nn.Module, G: nn.Module, real: Tensor, z: Tensor, term: str
) -> dict[str, Tensor]:
    """How D's weights move when only the real or only the fake hinge term reaches them."""
    D = copy.deepcopy(D)
    before = _snapshot(D)
    opt = torch.optim.SGD(D.parameters(), lr=_LR)
    with torch.no_grad():
        fake = G(z)
    loss = F.relu(1 - D(real)).mean() if term == "real" else F.relu(1 + D(fake)).mean()
    loss.backward()
    opt.step()
    return _changes(D, before)


def _d_loss_variants(G: nn.Module, D: nn.Module, real: Tensor, z: Tensor) -> dict[str, float]:
    with torch.no_grad():
        real_logits, fake_logits = D(real), D(G(z))
        return {
            "swapped": d_hinge_loss(fake_logits, real_logits).item(),
            "real only": F.relu(1 - real_logits).mean().item(),
            "non-saturating": d_nonsaturating_loss(real_logits, fake_logits).item(),
            "no relu": ((1 - real_logits).mean() + (1 + fake_logits).mean()).item(),
            "summed": (F.relu(1 - real_logits).sum() + F.relu(1 + fake_logits).sum()).item(),
            "halved": d_hinge_loss(real_logits, fake_logits).item() / 2,
        }


_G_LOSS_MISTAKES = {
    "positive": "has the wrong sign: G wants D to score its images high, so it minimises "
    "−mean(D(G(z))) = g_hinge_loss(D(G(z)))",
    "margin": "has a margin, relu(1 − D(G(z))); SAGAN's generator loss has none: −mean(D(G(z)))",
    "non-saturating": "is the non-saturating loss softplus(−D(G(z))) (binary cross-entropy "
    "against 'real'); with the hinge loss G minimises −mean(D(G(z))) = g_hinge_loss(D(G(z)))",
    "saturating": "is the original minimax loss, log(1 − sigmoid(D(G(z)))) = −softplus(D(G(z))), "
    "whose gradient vanishes while D easily rejects the fakes; use g_hinge_loss(D(G(z)))",
    "summed": "sums over the batch; take the mean: −mean(D(G(z)))",
    "after the step": "was computed again after opt_g.step(), with G's new weights: return the "
    "loss that loss.backward() used, computed before the step",
}


def _g_loss_variants(G: nn.Module, D: nn.Module, z: Tensor) -> dict[str, float]:
    with torch.no_grad():
        logits = D(G(z))
        return {
            "positive": logits.mean().item(),
            "margin": F.relu(1 - logits).mean().item(),
            "non-saturating": F.softplus(-logits).mean().item(),
            "saturating": (-F.softplus(logits)).mean().item(),
            "summed": (-logits.sum()).item(),
        }


@checked
def check_generator_step(generator_step: Callable[..., Any]) -> None:
    """Exercise 7b: `generator_step(G, D, opt_g, z)` -> the G loss (hinge).

    loss = g_hinge_loss(D(G(z))), with gradients flowing through D into G; clear old gradients,
    backward, opt_g.step(); return the loss. D's weights must not change, and D must still be
    trainable afterwards.
    """
    with _fixed_seed():
        gen = torch.Generator().manual_seed(1)
        for step, batch in enumerate((5, 8)):
            G, D = _tiny_gan(seed=10 + step)
            z = _randn(batch, _Z_DIM, gen=gen)
            where = f"batch of {batch}, tiny G and D, SGD with lr={_LR}"
            G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
            variants = _g_loss_variants(G, D, z)
            opt_g = torch.optim.SGD(G.parameters(), lr=_LR)
            opt_ref = torch.optim.SGD(G_ref.parameters(), lr=_LR)
            _fill_stale_grads(G)
            _fill_stale_grads(G_ref)
            g_before, d_before = _snapshot(G), _snapshot(D)
            modes_before = {"G": _modes(G), "D": _modes(D)}
            watch = _WatchGenerator(G)
            try:
                loss = _call(
                    generator_step, G, D, opt_g, z.clone(),
                    hint="If this is 'element 0 of tensors does not require grad': the G loss "
                    "must depend on G's weights, so do not detach the fakes or use "
                    "torch.no_grad() here. " + _ORDER_HINT,
                )  # fmt: skip
            finally:
                watch.handle.remove()
            expected_loss = reference_generator_step(G_ref, D_ref, opt_ref, z)
            with torch.no_grad():
                variants["after the step"] = g_hinge_loss(D_ref(G_ref(z))).item()

            if not watch.inputs:
                _fail("your generator step never called G: the G loss scores D(G(z))")
            if not any(torch.equal(i, z) for i in watch.inputs):
                _fail(
                    "G was not called with the z you were given: do not draw fresh noise "
                    "(torch.randn) inside the step; use z, so the step is reproducible and "
                    "the caller decides the batch"
                )
            _expect_modes_kept({"G": G, "D": D}, modes_before, "generator step")
            if any(not p.requires_grad for p in D.parameters()):
                _fail(
                    "after your generator step D's parameters still have requires_grad=False: "
                    "turn them back on (D.requires_grad_(True)), or the next discriminator step "
                    "cannot learn"
                )
            if not _unchanged(D, d_before):
                _fail(
                    f"your generator step changed D's weights ({where}): only opt_g.step() "
                    "belongs here"
                )
            value = _number(loss, "the loss your generator step returned")
            if not math.isclose(value, expected_loss.item(), rel_tol=1e-4, abs_tol=1e-5):
                for variant, explanation in _G_LOSS_MISTAKES.items():
                    if math.isclose(value, variants[variant], rel_tol=1e-4, abs_tol=1e-5):
                        _fail(
                            f"your generator loss ({value:.4f}, expected "
                            f"{expected_loss.item():.4f}, {where}) {explanation}"
                        )
                _fail(
                    f"your generator step returned loss {value:.4f}, expected "
                    f"{expected_loss.item():.4f} ({where}): the G loss is g_hinge_loss(D(G(z)))"
                )
            got, want = _changes(G, g_before), _changes(G_ref, g_before)
            if _same_changes(got, want):
                continue
            if not watch.backward_reached:
                _fail(
                    f"G's weights did not learn from the loss ({where}): no gradient reached G's "
                    "output. The gradient must reach G through D, so do not detach the fake "
                    "images or D's logits, nor compute them under torch.no_grad(), in the "
                    "generator step; then call loss.backward() and opt_g.step()"
                )
            if all(
                torch.allclose(c, torch.full_like(c, -_LR * _STALE)) for c in got.values()
            ) or all(c.abs().max() == 0 for c in got.values()):
                _fail(
                    f"G's weights did not learn from the loss ({where}), although the gradient "
                    "reached G: call opt_g.zero_grad() before loss.backward() and opt_g.step() "
                    "after it, in this order"
                )
            stale = {n: c - _LR * _STALE for n, c in want.items()}
            if _same_changes(got, stale):
                _fail(
                    f"G's update includes gradients left over from an earlier step ({where}): "
                    "call opt_g.zero_grad() before loss.backward()"
                )
            _fail(
                f"G's weights after your step differ from the reference by up to "
                f"{max(_max_diff(got[n], want[n]) for n in got):.3g} ({where}), although the "
                "loss value matches: backpropagate the loss you return and step opt_g once"
            )
    _passed(
        "check_generator_step",
        "loss and G's update match the reference on 2 batches; D's weights untouched and "
        "trainable afterwards, old gradients cleared.",
    )


# ---------------------------------------------------------------------------------------------
# Exercise 8: the EMA of the generator's weights
# ---------------------------------------------------------------------------------------------


def _ema_models(seed: int) -> tuple[nn.Module, nn.Module]:
    """(ema_model, model): BatchNorm and spectral norm give them buffers, one an integer."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        apply_spectral_norm(nn.Linear(4, 6)), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)
    )
    model(torch.randn(8, 4))  # fill the buffers: BN statistics, spectral norm's u and v
    ema = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():  # the model trains on: new weights and new buffers
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(8, 4) + 1)
    return ema, model


@checked
def check_update_ema(update_ema_fn: Callable[[nn.Module, nn.Module, float], Any]) -> None:
    """Exercise 8: `update_ema(ema_model, model, decay)`, in place.

    Every parameter: ema ← decay·ema + (1 − decay)·model. Every buffer (BatchNorm statistics,
    spectral norm's u and v): copied from the model. The model itself does not change.
    """
    fn = update_ema_fn
    hint = (
        "Buffers include integers (BatchNorm's num_batches_tracked): copy buffers, don't average."
    )
    with _fixed_seed():
        for seed, decays in enumerate(((0.9,), (0.5, 0.75), (0.0,), (0.999,))):
            ema, model = _ema_models(seed)
            ema_ref = copy.deepcopy(ema)
            for decay in decays:
                where = f"decay={decay}"
                old_ema = {n: t.clone() for n, t in ema.state_dict().items()}
                model_state = {n: t.clone() for n, t in model.state_dict().items()}
                returned = _call(fn, ema, model, decay, hint=hint)
                if isinstance(returned, nn.Module) and returned is not ema:
                    _fail(
                        "your update_ema returned a new model; it must change ema_model in "
                        "place (the caller keeps using the ema_model it passed in), and needs "
                        "to return nothing"
                    )
                _expect_no_shared_memory(ema, model, where)
                update_ema(ema_ref, model, decay)
                if any(not torch.equal(t, model_state[n]) for n, t in model.state_dict().items()):
                    _fail(f"your update changed the model itself ({where}); only ema_model changes")
                _check_ema_parameters(ema, ema_ref, model, old_ema, decay, where)
                _check_ema_buffers(ema, model, old_ema, decay, where)
            if any(p.grad_fn is not None or p.requires_grad for p in ema.parameters()):
                _fail(
                    "after your update the EMA weights are part of an autograd graph: do the "
                    "update under torch.no_grad() (decorate the function with @torch.no_grad())"
                )
    _passed(
        "check_update_ema",
        "parameters averaged and buffers (float and integer) copied for decays 0, 0.5-0.999, "
        "repeated calls, model untouched, no autograd graph.",
    )


def _expect_no_shared_memory(ema: nn.Module, model: nn.Module, where: str) -> None:
    """The EMA must hold its own copies: a tensor shared with the model moves when it trains."""
    model_storage = {
        t.untyped_storage().data_ptr() for t in model.state_dict().values() if t.numel()
    }
    for name, t in ema.state_dict().items():
        if t.numel() and t.untyped_storage().data_ptr() in model_storage:
            _fail(
                f"your EMA's `{name}` shares memory with the model's ({where}): an assignment "
                "such as ema_b.data = b.data (or setattr) makes both models use one tensor, so "
                "every later change to the model changes the EMA too. Copy the values instead: "
                "ema_b.copy_(b)"
            )


def _check_ema_parameters(
    ema: nn.Module,
    ema_ref: nn.Module,
    model: nn.Module,
    old: dict[str, Tensor],
    decay: float,
    where: str,
) -> None:
    model_params = dict(model.named_parameters())
    reference = dict(ema_ref.named_parameters())
    for name, p in ema.named_parameters():
        if _close(p, reference[name]):
            continue
        m, e = model_params[name].detach(), old[name]
        if _close(p, m):
            _fail(
                f"your EMA parameter `{name}` equals the model's ({where}): average, don't copy: "
                "ema ← decay·ema + (1 − decay)·model"
            )
        if _close(p, decay * m + (1 - decay) * e):
            _fail(
                f"you swapped decay and 1 − decay ({where}, parameter `{name}`): the EMA keeps "
                "`decay` of its own weights and takes only 1 − decay of the model's: "
                "ema ← decay·ema + (1 − decay)·model"
            )
        if _close(p, decay * e + m):
            _fail(
                f"your EMA parameter `{name}` is decay·ema + model ({where}): the model's share "
                "must be weighted by 1 − decay, so that the weights add up to 1: "
                "ema ← decay·ema + (1 − decay)·model"
            )
        if _close(p, e):
            _fail(
                f"your EMA parameter `{name}` did not change ({where}): update it in place "
                "(ema_p.lerp_(p, 1 − decay) or ema_p.copy_(...)); assigning a new tensor to a "
                "loop variable does not change the model"
            )
        _fail(
            f"your EMA parameter `{name}` differs from decay·ema + (1 − decay)·model by up to "
            f"{_max_diff(p, reference[name]):.3g} ({where})"
        )


def _check_ema_buffers(
    ema: nn.Module, model: nn.Module, old: dict[str, Tensor], decay: float, where: str
) -> None:
    model_buffers = dict(model.named_buffers())
    for name, b in ema.named_buffers():
        target = model_buffers[name]
        if torch.equal(b, target):
            continue
        if torch.equal(b, old[name]):
            _fail(
                f"the buffer `{name}` was not copied ({where}): buffers (BatchNorm's running "
                "statistics, spectral norm's u and v) describe the current weights and are not "
                "parameters, so copy them from the model as they are (ema_buffer.copy_(buffer))"
            )
        if b.is_floating_point() and _close(b, decay * old[name] + (1 - decay) * target):
            _fail(
                f"you averaged the buffer `{name}` ({where}); buffers are statistics of the "
                "current weights, not weights: copy them from the model"
            )
        _fail(f"the buffer `{name}` differs from the model's ({where}): copy buffers as they are")
