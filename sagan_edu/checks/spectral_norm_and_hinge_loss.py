"""Checks for solutions/03_spectral_norm_and_hinge_loss.ipynb: power iteration, hinge losses."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sagan_edu.checks._common import (
    Tensor,
    _call,
    _close,
    _expect_close,
    _expect_dtype,
    _expect_grad,
    _expect_graph,
    _expect_loss_gradients,
    _fail,
    _fixed_seed,
    _grads,
    _pair,
    _passed,
    _randn,
    _scalar_loss,
    _tensor,
    checked,
)
from sagan_edu.losses import d_hinge_loss, d_nonsaturating_loss, g_hinge_loss
from sagan_edu.spectral_norm import SpectralNorm

# ---------------------------------------------------------------------------------------------
# Exercise 5: spectral normalisation by power iteration
# ---------------------------------------------------------------------------------------------


def _matrix_with_singular_values(rows: int, cols: int, top: float, gen: torch.Generator) -> Tensor:
    """A random (rows, cols) matrix whose singular values are top, top/2, …: a clear gap."""
    u, _ = torch.linalg.qr(_randn(rows, rows, gen=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(_randn(cols, cols, gen=gen, dtype=torch.float64))
    r = min(rows, cols)
    rest = torch.linspace(0.5, 0.1, r - 1, dtype=torch.float64)
    s = top * torch.cat([torch.ones(1, dtype=torch.float64), rest])
    return (u[:, :r] * s) @ v[:, :r].T


_SN_HINT = (
    "A conv kernel (out, in, kh, kw) is used as the matrix W = weight.flatten(1), shape "
    "(out, in·kh·kw); v = normalize(Wᵀu) has in·kh·kw entries and u = normalize(Wv) has out."
)


def _library_spectral_normalise(
    weight: Tensor, u: Tensor, n_iterations: int
) -> tuple[Tensor, Tensor]:
    """The library's SpectralNorm, started from `u`: (weight / σ, the updated u)."""
    sn = SpectralNorm(weight.detach(), n_power_iterations=n_iterations)
    with torch.no_grad():
        sn.u.copy_(u)
    sn.train()
    return sn(weight), sn.u.clone()


def _power_iteration_with_grad(weight: Tensor, u: Tensor, n_iterations: int) -> Tensor:
    """weight / σ with the gradient (wrongly) flowing through u and v too."""
    w = weight.flatten(1)
    for _ in range(n_iterations):
        v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
        u = F.normalize(w @ v, dim=0, eps=1e-12)
    return weight / torch.dot(u, w @ v)


def _power_iteration_variant(
    weight: Tensor,
    u: Tensor,
    n: int,
    *,
    normalise_v: bool = True,
    sigma_from_old_u: bool = False,
    v_from_new_u: bool = False,
) -> tuple[Tensor, Tensor]:
    """(weight / σ, u) in float64 by power iteration, with one step done the way a mistake does.

    n = 0 means no update of u: v = normalize(Wᵀu) and σ = uᵀWv from the u given.
    """
    w = weight.detach().double().flatten(1)  # (out, in·kh·kw)
    u0 = u = u.detach().double()
    v = F.normalize(w.t() @ u, dim=0)
    for _ in range(n):
        v = w.t() @ u
        v = F.normalize(v, dim=0) if normalise_v else v
        u = F.normalize(w @ v, dim=0)
    if v_from_new_u:  # half an iteration more: v recomputed from the last u
        v = F.normalize(w.t() @ u, dim=0)
    sigma = torch.dot(u0 if sigma_from_old_u else u, w @ v)
    return (weight.detach().double() / sigma).to(weight.dtype), u.to(u0.dtype)


def _sn_weight_mistakes(
    weight: Tensor, u: Tensor, n: int, got_u: Tensor
) -> list[tuple[Tensor | None, str]]:
    """Normalised weights that common mistakes give, with what to say about each.

    One iteration too few and σ from the old u give the same weight when n = 1; the u returned
    tells them apart.
    """
    w = weight.detach().double()
    fewer_w, fewer_u = _power_iteration_variant(weight, u, n - 1)
    exact = torch.linalg.matrix_norm(w.flatten(1), ord=2)
    mistakes = [
        (
            (w / w.flatten(1).norm()).to(weight.dtype),
            "you divided by the Frobenius norm ‖W‖_F (the root of the sum of squares); spectral "
            "norm divides by the largest singular value σ = uᵀWv from the power iteration",
        ),
        (
            _power_iteration_times_sigma(weight, u, n),
            "you multiplied the weight by σ; divide it by σ",
        ),
        (
            _power_iteration_variant(weight, u, n, normalise_v=False)[0],
            "v is not normalised: after v = Wᵀu, divide it by its length too (F.normalize(…, "
            "dim=0)), not only u; σ = uᵀWv assumes both are unit vectors",
        ),
        (
            fewer_w if _close(got_u, fewer_u) else None,
            f"you ran {n - 1} full power iterations for n_iterations={n}"
            + (
                " (v updated from the u given, but u not updated before σ = uᵀWv): finish each "
                "iteration with u = normalize(Wv)"
                if n == 1
                else ": one iteration is one update of v and then one of u"
            ),
        ),
        (
            _power_iteration_variant(weight, u, n, sigma_from_old_u=True)[0],
            "your σ uses the u you were given, not the updated one: compute σ = uᵀWv after the "
            "loop, with the u and v of the last iteration",
        ),
        (
            _power_iteration_variant(weight, u, n + 1)[0],
            f"you ran {n + 1} power iterations for n_iterations={n}: one iteration is one update "
            "of v and then one of u",
        ),
        (
            _power_iteration_variant(weight, u, n, v_from_new_u=True)[0],
            "your σ uses a v recomputed from the new u, half an iteration more than the "
            "reference: σ = uᵀWv with the v and u of the last iteration, v first, then u",
        ),
        (
            _power_iteration_variant(weight, u, 1)[0] if n > 1 else None,
            f"you ran 1 power iteration for n_iterations={n}: loop for _ in range(n_iterations)",
        ),
        (
            _divided_by_sigma_of(weight.reshape(-1, weight.shape[0]).t(), weight, u, n),
            "your W is weight.reshape(-1, out).t(), which scrambles the weight's entries: a "
            "reshape keeps the memory order. Use W = weight.flatten(1) (= weight.reshape(out, -1))",
        ),
        (
            (w / exact).to(weight.dtype),
            "you divided by the exact largest singular value (an SVD or matrix_norm(ord=2)); "
            "the exercise asks for the power-iteration estimate σ = uᵀWv after n_iterations "
            "steps, which is what makes spectral norm cheap",
        ),
    ]
    return mistakes


@checked
def check_spectral_normalise(
    spectral_normalise: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]],
) -> None:
    """Exercise 5: `spectral_normalise(weight, u, n_iterations=1)` -> (weight / σ, u).

    weight (out, in) or a conv kernel (out, in, kh, kw), seen as the matrix W = weight.flatten(1);
    u (out,) a unit vector from the last step. Each iteration: v = normalize(Wᵀu),
    u = normalize(Wv); then σ = uᵀWv. u and v are constants for autograd.
    """
    fn = spectral_normalise
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        cases = [
            ("a Linear weight (6, 10)", (6, 10), 1, torch.float32),
            ("a tall weight (12, 5)", (12, 5), 1, torch.float32),
            ("a conv kernel (8, 4, 3, 3)", (8, 4, 3, 3), 1, torch.float32),
            ("a conv kernel (8, 4, 3, 3), 3 iterations", (8, 4, 3, 3), 3, torch.float32),
            ("a float64 weight (7, 9)", (7, 9), 2, torch.float64),
        ]
        for description, shape, n, dtype in cases:
            rows, cols = shape[0], math.prod(shape[1:])
            weight = _matrix_with_singular_values(rows, cols, 2.5, gen).reshape(shape).to(dtype)
            u = F.normalize(_randn(rows, gen=gen, dtype=dtype), dim=0)
            where = f"{description}, n_iterations={n}"
            expected_w, expected_u = _library_spectral_normalise(weight, u, n)
            result = _call(fn, weight.clone(), u.clone(), n, hint=_SN_HINT, may_change=(1,))
            got_w, got_u = _pair(result, "your function", "normalised weight, u")
            got_w, got_u = _tensor(got_w, "the normalised weight"), _tensor(got_u, "u")
            if got_w.shape != weight.shape:
                _fail(
                    f"your normalised weight has shape {tuple(got_w.shape)}, but it must keep the "
                    f"weight's shape {shape} ({where}): flatten to (out, in·kh·kw) only to "
                    "compute σ, then divide the original weight"
                )
            _expect_dtype(got_w, dtype, "your normalised weight")
            if got_u.shape != (rows,):
                _fail(
                    f"your u has shape {tuple(got_u.shape)}, expected ({rows},), one entry per "
                    f"output row of W ({where})"
                    + (": that is v's size, return u" if got_u.shape == (cols,) else "")
                )
            if not torch.allclose(got_u.double().norm(), torch.tensor(1.0).double(), atol=1e-4):
                _fail(
                    f"your u has length {got_u.double().norm().item():.3g} ({where}): normalise "
                    "u and v after every multiplication (F.normalize(..., dim=0)), or σ = uᵀWv "
                    "will be off"
                )
            _expect_close(
                got_w,
                expected_w,
                "your normalised weight",
                where,
                mistakes=_sn_weight_mistakes(weight, u, n, got_u),
                advice="Per iteration: v = normalize(Wᵀu), u = normalize(Wv); then σ = uᵀWv and "
                "the result is weight / σ.",
                **({"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float64 else {}),
            )
            if torch.allclose(got_u.double(), u.double()) and not torch.allclose(expected_u, u):
                _fail(
                    f"the u you returned is the u you were given ({where}): return the updated u, "
                    "so the next training step continues the power iteration where this one stopped"
                )
            _expect_close(
                got_u,
                expected_u,
                "your updated u",
                where,
                mistakes=[
                    (
                        _power_iteration_variant(weight, u, n - 1)[1] if n > 1 else None,
                        "the u you returned is one iteration behind: return u after the last "
                        "update, the one σ was computed with",
                    ),
                ],
                rtol=1e-4,
                atol=1e-5,
            )

        # Many iterations converge to the true largest singular value.
        weight = _matrix_with_singular_values(9, 6, 3.0, gen).float()
        u = F.normalize(_randn(9, gen=gen), dim=0)
        got_w, _ = _pair(
            _call(fn, weight.clone(), u.clone(), 30, may_change=(1,)), "your function", "weight, u"
        )
        sigma = torch.linalg.matrix_norm(
            _tensor(got_w, "the normalised weight").detach().double(), ord=2
        ).item()
        if abs(sigma - 1.0) > 1e-3:
            _fail(
                f"after 30 power iterations your normalised weight's largest singular value "
                f"(torch.linalg.matrix_norm(·, ord=2)) is {sigma:.4f}, not 1"
            )

        # The gradient flows through W only: u and v are constants (computed without grad).
        weight = _matrix_with_singular_values(6, 8, 2.0, gen).float().requires_grad_()
        u = F.normalize(_randn(6, gen=gen), dim=0)
        got_w, _ = _pair(
            _call(fn, weight, u.clone(), 1, may_change=(1,)), "your function", "weight, u"
        )
        _expect_graph(_tensor(got_w, "the normalised weight"), "your normalised weight")
        expected_w, _ = _library_spectral_normalise(weight, u, 1)
        got = _grads([got_w], [weight])[0]
        want = _grads([expected_w], [weight])[0]
        through_uv = _grads([_power_iteration_with_grad(weight, u, 1)], [weight])[0]
        with torch.no_grad():  # one iteration: v from the u given, then the new u
            v_new = F.normalize(weight.flatten(1).t() @ u, dim=0)
            u_new = F.normalize(weight.flatten(1) @ v_new, dim=0)
        sigma = torch.dot(u_new, weight.flatten(1) @ v_new).detach()
        sigma_detached = _grads([weight / sigma], [weight])[0]
        _expect_grad(
            got,
            want,
            "the weight",
            "a (6, 8) weight, one iteration",
            mistakes=[
                (
                    through_uv,
                    "your gradient also flows through u and v: run the power iteration under "
                    "torch.no_grad() (the paper treats u and v as constants), and compute only σ "
                    "= uᵀWv with gradients",
                ),
                (
                    sigma_detached,
                    "σ is detached (computed under torch.no_grad() or with .detach()/.item()), so "
                    "the gradient only sees weight / constant. The gradient must also flow "
                    "through σ = uᵀWv: keep u and v constant, but compute σ from W with autograd",
                ),
            ],
        )
    _passed(
        "check_spectral_normalise",
        "weight / σ and the updated u against SpectralNorm on 5 weights (linear, tall, conv, "
        "float64, 1-3 iterations), σ → the largest singular value, gradient through W only.",
    )


def _divided_by_sigma_of(matrix: Tensor, weight: Tensor, u: Tensor, n: int) -> Tensor:
    """weight divided by the power-iteration σ of another (out, ·) matrix made from it."""
    normalised, _ = _power_iteration_variant(matrix, u, n)
    sigma = matrix.double().norm() / normalised.double().norm()
    return (weight.double() / sigma).to(weight.dtype)


def _power_iteration_times_sigma(weight: Tensor, u: Tensor, n: int) -> Tensor:
    normalised, _ = _library_spectral_normalise(weight, u, n)
    with torch.no_grad():
        sigma = (weight.double().flatten(1).norm() / normalised.double().flatten(1).norm()).item()
    return (weight.double() * sigma).to(weight.dtype)


# ---------------------------------------------------------------------------------------------
# Exercise 6: hinge losses
# ---------------------------------------------------------------------------------------------


def _logit_cases(seed: int = 0) -> list[tuple[str, Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        ("random logits, batch 8", 2 * _randn(8, gen=gen), 2 * _randn(8, gen=gen)),
        ("real batch 5, fake batch 3", 2 * _randn(5, gen=gen), 2 * _randn(3, gen=gen)),
        (
            "logits on both sides of the margins",
            torch.tensor([3.0, 1.5, 0.2, -0.7, -2.0]),
            torch.tensor([-3.0, -1.5, 0.4, 0.9, 2.5]),
        ),
        (
            "batch means beyond the margins, single logits inside",
            torch.tensor([4.0, 3.0, 0.5, -0.5]),
            torch.tensor([-4.0, -3.0, -0.5, 0.5]),
        ),
        (
            "float64 logits, batch 6",
            _randn(6, gen=gen, dtype=torch.float64),
            _randn(6, gen=gen, dtype=torch.float64),
        ),
    ]


def _first_wrong_loss(
    results: list[tuple[str, Tensor | None, Tensor, Tensor]],
    expected: Callable[[Tensor | None, Tensor], Tensor],
    mistakes: list[tuple[Callable[[Tensor | None, Tensor], Tensor], str]],
    what: str,
    advice: str,
) -> None:
    """Fail on the first input where the loss is wrong, naming a mistake only if it explains the
    loss on every input (so a loss that matches a mistake by chance on one batch is not told
    the wrong thing)."""
    for where, real, fake, loss in results:
        want = expected(real, fake)
        if _close(loss, want):
            continue
        for mistake, explanation in mistakes:
            if all(_close(got, mistake(r, f)) for _, r, f, got in results):
                _fail(f"{explanation}\n  (Seen for {where}.)")
        shown = f"fake logits {[round(x, 3) for x in fake.tolist()]}"
        if real is not None:
            shown = f"real logits {[round(x, 3) for x in real.tolist()]}, {shown}"
        _fail(
            f"{what} is {loss.item():.5g}, expected {want.item():.5g} for {where}, {shown}."
            f"\n  {advice}"
        )


_D_HINGE_MISTAKES = [
    (
        lambda r, f: d_hinge_loss(f, r),
        "you swapped real and fake: D should push real logits above +1, relu(1 − real), and fake "
        "logits below −1, relu(1 + fake)",
    ),
    (
        lambda r, f: F.relu(1 - r.mean()) + F.relu(1 + f.mean()),
        "you applied the relu to the batch means, relu(1 − mean(real)); the hinge acts on each "
        "logit and the mean comes after it: mean(relu(1 − real)). With the mean inside, "
        "confident logits hide the ones still inside the margin",
    ),
    (
        lambda r, f: (1 - r).mean() + (1 + f).mean(),
        "your loss has no relu: without max(0, ·) D keeps being rewarded for logits far beyond "
        "the margin, and its logits grow without bound. Use F.relu(1 − real) and F.relu(1 + fake)",
    ),
    (
        lambda r, f: F.relu(1 - r).sum() + F.relu(1 + f).sum(),
        "you summed over the batch; take the mean (.mean()) so the loss does not grow with the "
        "batch size",
    ),
    (
        lambda r, f: F.relu(-r).mean() + F.relu(f).mean(),
        "your margin is 0; the hinge margin is 1: relu(1 − real) and relu(1 + fake)",
    ),
    (
        lambda r, f: F.relu(1 - r).mean() + F.relu(1 - f).mean(),
        "your fake term is relu(1 − fake); it should be relu(1 + fake): D wants fake logits "
        "below −1",
    ),
    (
        lambda r, f: F.relu(1 - r).mean() - F.relu(1 + f).mean(),
        "you subtracted the fake term; both hinge terms are penalties D minimises, so add them: "
        "mean(relu(1 − real)) + mean(relu(1 + fake))",
    ),
    (
        lambda r, f: F.relu(1 - r).mean() + F.relu(f - 1).mean(),
        "your fake term is relu(fake − 1), which only pushes fake logits below +1; D wants them "
        "below −1: relu(1 + fake)",
    ),
    (
        lambda r, f: d_hinge_loss(r, f) / 2,
        "your loss is half the expected value: add the two means, don't average them",
    ),
    (
        lambda r, f: F.relu(1 - torch.cat([r, f])).mean(),
        "you scored real and fake logits with the same term; fakes need relu(1 + fake)",
    ),
    (
        lambda r, f: F.relu(torch.cat([1 - r, 1 + f])).mean(),
        "you averaged real and fake logits together in one mean; the loss is the sum of two "
        "means, one per batch, which differs when the batches have different sizes",
    ),
    (
        lambda r, f: d_nonsaturating_loss(r, f),
        "that is the binary cross-entropy (non-saturating) loss softplus(−real) + softplus(fake); "
        "the hinge loss is mean(relu(1 − real)) + mean(relu(1 + fake))",
    ),
]


_BATCH_SIZES_HINT = (
    "The real and fake batches can have different sizes: take one mean per batch and add the two "
    "means, rather than combining the two tensors elementwise."
)


@checked
def check_d_hinge_loss(d_hinge_loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 6a: `d_hinge_loss(real_logits, fake_logits)` = mean(relu(1 − real)) + "
    "mean(relu(1 + fake))."""
    fn = d_hinge_loss_fn
    with _fixed_seed():
        results = []
        for description, real, fake in _logit_cases():
            where = f"{description}: real {tuple(real.shape)}, fake {tuple(fake.shape)}"
            loss = _scalar_loss(
                _call(fn, real.clone(), fake.clone(), hint=_BATCH_SIZES_HINT), "your D loss"
            )
            _expect_dtype(loss, real.dtype, "your D loss")
            results.append((where, real, fake, loss))
        _first_wrong_loss(
            results,
            d_hinge_loss,
            _D_HINGE_MISTAKES,
            "your D loss",
            "Expected mean(relu(1 − real_logits)) + mean(relu(1 + fake_logits)).",
        )
        logits = {
            "real": torch.tensor([2.0, 0.5, -1.0]).requires_grad_(),
            "fake": torch.tensor([-2.0, -0.5, 1.5, 0.0]).requires_grad_(),
        }
        _expect_loss_gradients(
            fn, d_hinge_loss, logits, "your D loss", "real [2, 0.5, −1], fake [−2, −0.5, 1.5, 0]"
        )
    _passed(
        "check_d_hinge_loss",
        "values on 5 batches (different sizes, both sides of the margins, float64) and gradients.",
    )


_G_HINGE_MISTAKES = [
    (
        lambda f: f.mean(),
        "your G loss has the wrong sign: G wants D to score its images high, so it minimises "
        "−mean(D(fake))",
    ),
    (
        lambda f: F.relu(1 - f).mean(),
        "you gave G a margin, relu(1 − fake): SAGAN's generator loss has none, it is "
        "−mean(D(fake)), so G keeps improving even past the margin",
    ),
    (
        lambda f: F.relu(1 + f).mean(),
        "you gave G the discriminator's fake term, relu(1 + fake): that is what D minimises; G "
        "minimises −mean(D(fake)), with no margin",
    ),
    (
        lambda f: F.softplus(-f).mean(),
        "that is the non-saturating loss softplus(−D(fake)); the hinge version for G is "
        "−mean(D(fake))",
    ),
    (lambda f: -f.sum(), "you summed over the batch; take the mean"),
    (
        lambda f: -F.relu(f).mean(),
        "your G loss has a relu, −mean(relu(fake)): fakes that D scores below 0 then give G no "
        "gradient at all, though they are the ones to improve. Use −mean(fake), no relu",
    ),
]


@checked
def check_g_hinge_loss(g_hinge_loss_fn: Callable[[Tensor], Tensor]) -> None:
    """Exercise 6b: `g_hinge_loss(fake_logits)` = −mean(fake_logits)."""
    fn = g_hinge_loss_fn
    with _fixed_seed():
        results = []
        for description, _real, fake in _logit_cases():
            where = f"{description}: fake {tuple(fake.shape)}"
            loss = _scalar_loss(_call(fn, fake.clone()), "your G loss")
            _expect_dtype(loss, fake.dtype, "your G loss")
            results.append((where, None, fake, loss))
        _first_wrong_loss(
            results,
            lambda _, f: g_hinge_loss(f),
            [((lambda _, f, m=m: m(f)), explanation) for m, explanation in _G_HINGE_MISTAKES],
            "your G loss",
            "Expected −mean(fake_logits).",
        )
        fake = torch.tensor([-2.0, 0.5, 3.0]).requires_grad_()
        _expect_loss_gradients(fn, g_hinge_loss, {"fake": fake}, "your G loss", "fake [−2, 0.5, 3]")
    _passed("check_g_hinge_loss", "values on 5 batches (incl. float64) and gradients.")
