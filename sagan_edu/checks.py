"""Checks for the exercises: write a function, then call its check on it.

    from sagan_edu.checks import check_attention_weights
    check_attention_weights(attention_weights)   # one ✅ line, or a message saying what is wrong

Each check runs your code on several random inputs (with batch dimensions, odd sizes and edge cases
such as fully masked rows), compares the results and their gradients with the library's reference,
and prints one line when everything agrees. Otherwise it raises `CheckFailed`, an AssertionError
whose message says in words what looks wrong and, when it recognises a common mistake, which one.
The NotImplementedError of an unfinished stub passes through unchanged.

The checks run on the CPU with their own random seed: they never change your notebook's random
numbers, and they give the same verdict every time.

The exercises (solutions/ and exercises/) and their checks:

    1   attention_weights(q, k)                       check_attention_weights
        scaled_dot_product_attention(q, k, v)         check_scaled_dot_product_attention
    2   masked_attention(q, k, v, mask)               check_masked_attention
    3   split_heads(x, num_heads), merge_heads(x)     check_split_heads, check_merge_heads
    4   a SAGAN block class (channels, pool=2)        check_self_attention_2d
    5   spectral_normalise(weight, u, n_iterations)   check_spectral_normalise
    6   d_hinge_loss(real_logits, fake_logits)        check_d_hinge_loss
        g_hinge_loss(fake_logits)                     check_g_hinge_loss
    7   discriminator_step(G, D, opt_d, real, z)      check_discriminator_step
        generator_step(G, D, opt_g, z)                check_generator_step
    8   update_ema(ema_model, model, decay)           check_update_ema
    9   frechet_distance(features_a, features_b)      check_frechet_distance
    10  query_attention_map(attention, feature_size, query, image_size=None)
                                                      check_query_attention_map
"""

from __future__ import annotations

import contextlib
import copy
import math
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.attention import MultiHeadAttention, SelfAttention2d, scaled_dot_product_attention
from sagan_edu.losses import d_hinge_loss, g_hinge_loss
from sagan_edu.spectral_norm import SpectralNorm
from sagan_edu.spectral_norm import spectral_norm as apply_spectral_norm
from sagan_edu.training import update_ema
from sagan_edu.viz import query_attention_map

__all__ = [
    "CheckFailed",
    "check_attention_weights",
    "check_d_hinge_loss",
    "check_discriminator_step",
    "check_frechet_distance",
    "check_g_hinge_loss",
    "check_generator_step",
    "check_masked_attention",
    "check_merge_heads",
    "check_query_attention_map",
    "check_scaled_dot_product_attention",
    "check_self_attention_2d",
    "check_spectral_normalise",
    "check_split_heads",
    "check_update_ema",
]

Tensor = torch.Tensor


class CheckFailed(AssertionError):
    """Your code runs but does not do what the exercise asks; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------
# Shared helpers: calling your code, comparing, explaining
# ---------------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise CheckFailed(message)


def _passed(check: str, what: str) -> None:
    print(f"✅ {check} passed: {what}")


@contextlib.contextmanager
def _fixed_seed(seed: int = 0) -> Iterator[None]:
    """Seed torch inside the block and restore the notebook's random state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor {tuple(value.shape)}"
    if isinstance(value, nn.Module | torch.optim.Optimizer):
        return type(value).__name__
    return repr(value)


def _raised_by_a_stub(err: NotImplementedError) -> bool:
    """True for `raise NotImplementedError(...)` in your code, False for PyTorch's own
    NotImplementedError ("... not implemented for 'Long'"), which is a bug to report."""
    frames = traceback.extract_tb(err.__traceback__)
    line = (frames[-1].line or "raise") if frames else "raise"
    return line.lstrip().startswith("raise")


def _call(fn: Callable, *args: Any, hint: str = "", **kwargs: Any) -> Any:
    """Call your code. A stub's NotImplementedError passes through; other errors get context."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as err:
        if isinstance(err, NotImplementedError) and _raised_by_a_stub(err):
            raise
        name = getattr(fn, "__name__", type(fn).__name__)
        given = ", ".join(
            [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
        )
        message = f"your {name} raised {type(err).__name__}: {err}\n  It was called with: {given}."
        if "view size is not compatible" in str(err):
            message += (
                "\n  .view() needs a tensor whose memory is laid out in order, which a transposed "
                "tensor is not: use .reshape() (or .contiguous().view())."
            )
        if hint:
            message += f"\n  {hint}"
        raise CheckFailed(message) from err


def _tensor(value: Any, what: str) -> Tensor:
    if value is None:
        _fail(f"{what} is None: did you forget the `return` statement?")
    if not isinstance(value, torch.Tensor):
        _fail(f"{what} should be a torch.Tensor, got {type(value).__name__}")
    return value


def _pair(value: Any, what: str, names: str) -> tuple[Any, Any]:
    if value is None:
        _fail(f"{what} returned None: did you forget the `return` statement?")
    if not isinstance(value, tuple | list) or len(value) != 2:
        got = type(value).__name__ if not isinstance(value, tuple | list) else f"{len(value)} items"
        _fail(f"{what} should return two things, ({names}); it returned {got}")
    return value[0], value[1]


def _number(value: Any, what: str) -> float:
    if value is None:
        _fail(f"{what} is None: did you forget the `return` statement?")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            _fail(f"{what} should be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.detach().reshape(())
    if isinstance(value, complex) or (isinstance(value, torch.Tensor) and value.is_complex()):
        _fail(f"{what} is a complex number ({value}): keep its real part (.real)")
    try:
        return float(value)
    except (TypeError, ValueError):
        _fail(f"{what} should be a number (float or 0-d tensor), got {type(value).__name__}")


def _tolerances(dtype: torch.dtype) -> dict[str, float]:
    if dtype == torch.float64:
        return {"rtol": 1e-7, "atol": 1e-9}
    return {"rtol": 1e-4, "atol": 1e-5}


def _close(actual: Tensor, expected: Tensor, **tol: float) -> bool:
    if actual.shape != expected.shape:
        return False
    tol = tol or _tolerances(expected.dtype)
    return torch.allclose(actual.detach().cpu().double(), expected.detach().cpu().double(), **tol)


def _max_diff(actual: Tensor, expected: Tensor) -> float:
    return (actual.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item()


def _expect_close(
    actual: Tensor,
    expected: Tensor,
    what: str,
    where: str,
    mistakes: Sequence[tuple[Tensor | None, str]] = (),
    advice: str = "",
    **tol: float,
) -> None:
    """Fail unless actual ≈ expected; if a known mistake reproduces `actual`, name it."""
    if _close(actual, expected, **tol):
        return
    for wrong, explanation in mistakes:
        if wrong is not None and _close(actual, wrong, **tol):
            _fail(f"{explanation}\n  (Seen for {where}.)")
    if actual.shape != expected.shape:
        _fail(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)} ({where})")
    message = (
        f"{what} differs from the reference by up to {_max_diff(actual, expected):.3g} ({where})."
    )
    _fail(message + (f"\n  {advice}" if advice else ""))


def _expect_dtype(actual: Tensor, dtype: torch.dtype, what: str) -> None:
    if actual.dtype != dtype:
        _fail(
            f"{what}: dtype {actual.dtype}, but the inputs were {dtype}. The result should keep "
            "the inputs' dtype (avoid .float(), torch.tensor(...) or a hard-coded dtype)"
        )


def _expect_graph(output: Tensor, what: str) -> None:
    if not output.requires_grad:
        _fail(
            f"{what}: cut off from autograd, so no gradient can flow back through it. Avoid "
            ".detach(), .item(), .numpy(), .data and torch.tensor(...) on intermediate results"
        )


def _grads(outputs: Sequence[Tensor], inputs: Sequence[Tensor], seed: int = 1) -> list[Tensor]:
    """Gradients of a random weighted sum of `outputs` with respect to `inputs`."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def _randn(*shape: int, gen: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype)


def _shapes(**tensors: Tensor) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())


# ---------------------------------------------------------------------------------------------
# Exercise 1: attention weights and scaled dot-product attention
# ---------------------------------------------------------------------------------------------


def _attention_inputs(seed: int = 0) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(q, k, v) triples: no batch dim, a batch dim, batch and heads, odd sizes, big scores."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [
        ((5, 8), (7, 8), (7, 3)),  # a single sequence, no batch dim
        ((2, 4, 16), (2, 6, 16), (2, 6, 5)),  # a batch
        ((2, 3, 5, 4), (2, 3, 9, 4), (2, 3, 9, 7)),  # batch and heads
        ((3, 1, 1), (3, 2, 1), (3, 2, 2)),  # one query, d = 1
    ]
    cases = [tuple(_randn(*s, gen=gen) for s in triple) for triple in shapes]
    q, k, v = (_randn(*s, gen=gen) for s in ((2, 3, 16), (2, 5, 16), (2, 5, 4)))
    cases.append((20 * q, 20 * k, v))  # scores in the hundreds: exp() overflows without care
    q, k, v = (_randn(*s, gen=gen, dtype=torch.float64) for s in ((2, 6, 8), (2, 3, 8), (2, 3, 5)))
    cases.append((q, k, v))
    return cases


_BATCH_HINT = (
    "Your code must work for any number of leading batch dims: use k.transpose(-2, -1), "
    "not k.T or k.transpose(1, 2), and index from the end (q.shape[-1])."
)


def _softmax_weights(q: Tensor, k: Tensor, scale: float, dim: int = -1) -> Tensor:
    return torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=dim)


def _check_weight_values(w: Tensor, q: Tensor, k: Tensor, expected: Tensor, where: str) -> None:
    """Shape, dtype, finiteness, rows summing to 1 and values of unmasked attention weights."""
    lq, lk = q.shape[-2], k.shape[-2]
    if w.shape != expected.shape:
        if w.shape[-2:] == (lk, lq) and lk != lq:
            _fail(
                f"your attention weights have shape {tuple(w.shape)}, expected "
                f"{tuple(expected.shape)} (..., queries, keys) ({where}): rows are queries, so "
                "compute q @ kᵀ, not k @ qᵀ"
            )
        _fail(
            f"your attention weights have shape {tuple(w.shape)}, expected {tuple(expected.shape)}"
            f" (..., queries, keys) ({where}). Use k.transpose(-2, -1), not k.T or "
            "k.transpose(1, 2), so any number of leading batch dims works"
        )
    _expect_dtype(w, q.dtype, "your attention weights")
    if not torch.isfinite(w).all():
        _fail(
            f"your attention weights contain NaN or inf when the scores are large ({where}): "
            "exp() overflows. Subtract each row's maximum before exp (softmax is unchanged by "
            "that), or simply use torch.softmax"
        )
    if (w < 0).any():
        _fail(f"your attention weights have negative entries ({where}): a softmax is never < 0")
    sums = w.detach().sum(-1)
    if not torch.allclose(sums.double(), torch.ones_like(sums, dtype=torch.float64), atol=1e-4):
        worst = sums.flatten()[(sums - 1).abs().flatten().argmax()].item()
        columns = w.detach().sum(-2).double()
        if torch.allclose(columns, torch.ones_like(columns), atol=1e-4):
            _fail(
                f"rows of your attention weights sum to {worst:.2f}, not 1, but the columns sum "
                "to 1: did you take the softmax over the wrong axis? Each query's weights are a "
                f"distribution over the keys: softmax(scores, dim=-1) ({where})"
            )
        _fail(
            f"rows of your attention weights sum to {worst:.2f}, not 1 ({where}): each query's "
            "weights must be a softmax over the keys (the last axis)"
        )
    d = q.shape[-1]
    _expect_close(
        w,
        expected,
        "your attention weights",
        where,
        mistakes=[
            (
                _softmax_weights(q, k, 1.0),
                "your weights are softmax(q kᵀ) without the scaling: divide the scores by √d = "
                f"√{d} before the softmax (d = the width of q and k)",
            ),
            (
                _softmax_weights(q, k, 1.0 / d),
                f"you divided the scores by d = {d}; divide by √d = {math.sqrt(d):.3g} instead",
            ),
            (_softmax_weights(q, k, math.sqrt(d)), "you multiplied the scores by √d; divide by it"),
        ],
        advice="Expected softmax(q kᵀ / √d, dim=-1) with d = q.shape[-1].",
    )


def check_attention_weights(attention_weights: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 1a: `attention_weights(q, k)` = softmax(q kᵀ / √d) over the keys.

    q (..., Lq, d), k (..., Lk, d) -> weights (..., Lq, Lk), each row summing to 1.
    """
    with _fixed_seed():
        for q, k, _v in _attention_inputs():
            where = _shapes(q=q, k=k)
            expected = scaled_dot_product_attention(q, k, k)[1]
            w = _tensor(
                _call(attention_weights, q.clone(), k.clone(), hint=_BATCH_HINT), "the result"
            )
            _check_weight_values(w, q, k, expected, where)

        q, k, _v = _attention_inputs()[2]
        q, k = q.clone().requires_grad_(), k.clone().requires_grad_()
        w = _tensor(_call(attention_weights, q, k), "the result")
        _expect_graph(w, "your attention weights")
        expected = scaled_dot_product_attention(q, k, k)[1]
        got, want = _grads([w], [q, k]), _grads([expected], [q, k])
        for name, g, r in zip("qk", got, want, strict=True):
            _expect_close(g, r, f"the gradient with respect to {name}", _shapes(q=q, k=k))
    _passed(
        "check_attention_weights",
        "shapes, values and rows summing to 1 on 6 inputs (with batch dims, d = 1, large scores, "
        "float64), and gradients.",
    )


def check_scaled_dot_product_attention(
    scaled_dot_product_attention_fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
) -> None:
    """Exercise 1b: `scaled_dot_product_attention(q, k, v)` -> (out, weights).

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv) -> out (..., Lq, dv), weights (..., Lq, Lk).
    """
    fn = scaled_dot_product_attention_fn
    with _fixed_seed():
        for q, k, v in _attention_inputs():
            where = _shapes(q=q, k=k, v=v)
            expected_out, expected_w = scaled_dot_product_attention(q, k, v)
            out, w = _pair(
                _call(fn, q.clone(), k.clone(), v.clone(), hint=_BATCH_HINT),
                "your function",
                "out, weights",
            )
            out, w = _tensor(out, "the output"), _tensor(w, "the weights")
            if w.shape == expected_out.shape != expected_w.shape and out.shape == expected_w.shape:
                _fail(f"you returned (weights, out); return (out, weights) ({where})")
            _check_weight_values(w, q, k, expected_w, where)
            if out.shape != expected_out.shape:
                _fail(
                    f"your output has shape {tuple(out.shape)}, expected "
                    f"{tuple(expected_out.shape)} (..., Lq, dv) ({where}): each query's output "
                    "is a weighted sum of the rows of v: weights @ v"
                )
            _expect_dtype(out, q.dtype, "your output")
            _expect_close(
                out,
                expected_out,
                "your output",
                where,
                mistakes=[
                    (
                        v.mean(-2, keepdim=True).expand_as(expected_out),
                        "your output is the plain average of the values: weight them with the "
                        "attention weights (weights @ v)",
                    )
                ],
                advice="The output is weights @ v: row i mixes v's rows with query i's weights.",
            )

        q, k, v = (t.clone().requires_grad_() for t in _attention_inputs()[1])
        out, w = _pair(_call(fn, q, k, v), "your function", "out, weights")
        _expect_graph(_tensor(out, "the output"), "your output")
        expected_out, expected_w = scaled_dot_product_attention(q, k, v)
        got = _grads([out, w], [q, k, v])
        want = _grads([expected_out, expected_w], [q, k, v])
        for name, g, r in zip("qkv", got, want, strict=True):
            _expect_close(g, r, f"the gradient with respect to {name}", _shapes(q=q, k=k, v=v))
    _passed(
        "check_scaled_dot_product_attention",
        "outputs and weights on 6 inputs (batch dims, odd sizes, large scores, float64), and "
        "gradients for q, k and v.",
    )


# ---------------------------------------------------------------------------------------------
# Exercise 2: masking
# ---------------------------------------------------------------------------------------------


def _mask_cases(seed: int = 0) -> list[tuple[str, Tensor, Tensor, Tensor, Tensor]]:
    """(description, q, k, v, mask) with causal, padding and random masks, some rows empty."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    q, k, v = _randn(2, 5, 8, gen=gen), _randn(2, 5, 8, gen=gen), _randn(2, 5, 3, gen=gen)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()  # (Lq, Lk), shared by the batch
    cases.append(("a causal mask (5, 5)", q, k, v, causal))

    q, k, v = _randn(3, 4, 6, gen=gen), _randn(3, 7, 6, gen=gen), _randn(3, 7, 2, gen=gen)
    lengths = torch.tensor([7, 3, 0])  # the last sequence is empty: every query row is masked
    padding = (torch.arange(7) < lengths[:, None])[:, None, :]  # (B, 1, Lk)
    cases.append(("a padding mask (3, 1, 7), one sequence of length 0", q, k, v, padding))

    q, k, v = _randn(2, 2, 6, 4, gen=gen), _randn(2, 2, 5, 4, gen=gen), _randn(2, 2, 5, 3, gen=gen)
    random = torch.rand(2, 2, 6, 5, generator=gen) < 0.5
    random[0, 1, 2] = False  # make sure some rows have no key at all
    random[1, 0, 4] = False
    random[1, 1, 0] = True  # and some have every key
    cases.append(("a random mask (2, 2, 6, 5) with fully masked rows", q, k, v, random))

    q, k, v = (_randn(2, 3, 4, gen=gen, dtype=torch.float64) for _ in range(3))
    everything = torch.ones(3, 3, dtype=torch.bool)
    cases.append(("a mask that allows everything (float64)", q, k, v, everything))
    return cases


def check_masked_attention(
    masked_attention: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
) -> None:
    """Exercise 2: `masked_attention(q, k, v, mask)` -> (out, weights); mask True = may attend.

    A query whose mask row is all False attends to nothing: zero weights and zero output, no NaN.
    """
    with _fixed_seed():
        for description, q, k, v, mask in _mask_cases():
            where = f"q {tuple(q.shape)}, k {tuple(k.shape)}, {description}"
            expected_out, expected_w = scaled_dot_product_attention(q, k, v, mask=mask)
            result = _call(
                masked_attention, q.clone(), k.clone(), v.clone(), mask.clone(), hint=_BATCH_HINT
            )
            out, w = _pair(result, "your function", "out, weights")
            out, w = _tensor(out, "the output"), _tensor(w, "the weights")
            _check_masked_weights(w, q, k, v, mask, expected_w, where)
            _expect_dtype(out, q.dtype, "your output")
            empty = ~mask.expand(expected_w.shape).any(-1)  # (..., Lq) queries with no key
            if out.shape == expected_out.shape and empty.any() and not torch.isfinite(out).all():
                _fail(
                    f"your output has NaN in the rows of queries whose mask is all False "
                    f"({where}): such a query attends to nothing, so its output row must be 0"
                )
            _expect_close(out, expected_out, "your output", where, advice="out = weights @ v.")

        # Gradients, through fully masked rows too: they must be finite (zero for those rows).
        _description, q, k, v, mask = _mask_cases()[2]
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        out, w = _pair(_call(masked_attention, q, k, v, mask), "your function", "out, weights")
        _expect_graph(_tensor(out, "the output"), "your output")
        expected_out, expected_w = scaled_dot_product_attention(q, k, v, mask=mask)
        got = _grads([out, w], [q, k, v])
        want = _grads([expected_out, expected_w], [q, k, v])
        for name, g, r in zip("qkv", got, want, strict=True):
            if not torch.isfinite(g).all():
                _fail(
                    f"the gradient with respect to {name} contains NaN, although the forward pass "
                    "may look right: a softmax over a row of only -inf is NaN, and zeroing it "
                    "afterwards does not stop NaN flowing backwards. Give fully masked rows a "
                    "harmless mask (e.g. all True) before the softmax, then zero those rows"
                )
            _expect_close(g, r, f"the gradient with respect to {name}", "a random mask")
    _passed(
        "check_masked_attention",
        "causal, padding and random masks (broadcast over batch and heads), fully masked rows "
        "give zeros and no NaN, gradients finite and right.",
    )


def _check_masked_weights(
    w: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, expected: Tensor, where: str
) -> None:
    if w.shape != expected.shape:
        _fail(
            f"your attention weights have shape {tuple(w.shape)}, expected "
            f"{tuple(expected.shape)} (..., queries, keys) ({where}); the mask broadcasts to the "
            "scores, it does not change their shape"
        )
    _expect_dtype(w, q.dtype, "your attention weights")
    mask = mask.expand(expected.shape)
    empty = ~mask.any(-1)  # (..., Lq)
    if not torch.isfinite(w).all():
        if empty.any() and not torch.isfinite(w[empty]).all():
            _fail(
                f"your weights are NaN for queries whose mask row is all False ({where}): a "
                "softmax over a row of only -inf is 0/0. Such a query may attend to nothing, so "
                "its weights and output must be all zeros: find those rows with mask.any(-1) and "
                "handle them separately"
            )
        _fail(f"your attention weights contain NaN or inf ({where})")
    w = w.detach()
    sums = w.sum(-1)
    if empty.any() and sums[empty].abs().max().item() > 1e-6:
        _fail(
            f"queries whose mask row is all False have weights summing to "
            f"{sums[empty].max().item():.2f} ({where}); filling with a large negative number "
            "spreads them evenly over the forbidden keys. Such a query attends to nothing: its "
            "weights (and output) must be all zeros"
        )
    forbidden = w[~mask].abs().max().item() if not mask.all() else 0.0
    if forbidden > 1e-6:
        if w[mask].abs().max().item() < 1e-6:
            _fail(
                f"your weights are zero where the mask is True and non-zero where it is False "
                f"({where}): True means 'may attend'. Fill the scores where the mask is False "
                "(~mask) with -inf"
            )
        _fail(
            f"positions the mask forbids got weight up to {forbidden:.3g} "
            f"({where}): set their scores to -inf before the softmax (a score of 0 still gets "
            "weight, since exp(0) = 1)"
        )
    allowed = sums[~empty].double()
    if len(allowed) and not torch.allclose(allowed, torch.ones_like(allowed), atol=1e-4):
        worst = sums[~empty][(sums[~empty] - 1).abs().argmax()].item()
        _fail(
            f"rows of your weights sum to {worst:.2f} for queries that may attend somewhere "
            f"({where}). Did you zero the forbidden weights after the softmax? Set their scores "
            "to -inf before it, so the allowed weights still sum to 1"
        )
    d = q.shape[-1]
    no_scale = scaled_dot_product_attention(q, k, v, mask=mask, scale=1.0)[1]
    _expect_close(
        w,
        expected,
        "your attention weights",
        where,
        mistakes=[
            (
                no_scale,
                "your weights are softmax(q kᵀ) without the scaling: divide the scores by √d = "
                f"√{d}",
            )
        ],
    )


# ---------------------------------------------------------------------------------------------
# Exercise 3: splitting and merging heads
# ---------------------------------------------------------------------------------------------

_HEAD_CASES = [((2, 5, 12), 3), ((1, 7, 8), 2), ((3, 4, 16), 4), ((2, 3, 6), 1), ((2, 5, 6), 6)]


def check_split_heads(split_heads: Callable[[Tensor, int], Tensor]) -> None:
    """Exercise 3a: `split_heads(x, num_heads)`: (B, L, E) -> (B, heads, L, E/heads).

    Head h holds features h·d … (h+1)·d − 1 of every position, as in nn.MultiheadAttention.
    """
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        for shape, heads in _HEAD_CASES:
            x = _randn(*shape, gen=gen)
            B, L, E = shape
            d = E // heads
            where = f"x {shape}, num_heads={heads}"
            expected = MultiHeadAttention(E, heads)._split_heads(x)  # (B, heads, L, d)
            got = _tensor(_call(split_heads, x.clone(), heads), "the result")
            if got.shape != expected.shape:
                if got.shape == (B, L, heads, d) and heads != L:
                    _fail(
                        f"your result has shape {tuple(got.shape)} = (B, L, heads, head_dim) "
                        f"({where}): move the head axis in front of the positions with "
                        ".transpose(1, 2), giving (B, heads, L, head_dim)"
                    )
                _fail(
                    f"your result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
                    f" = (B, heads, L, head_dim) ({where})"
                )
            _expect_close(
                got,
                expected,
                "your heads",
                where,
                mistakes=[
                    (
                        x.reshape(B, heads, L, d),
                        "you reshaped (B, L, E) straight to (B, heads, L, head_dim): that cuts "
                        "the sequence into chunks instead of cutting each position's vector into "
                        "heads. Reshape to (B, L, heads, head_dim) first, then .transpose(1, 2)",
                    ),
                    (
                        x.reshape(B, L, d, heads).permute(0, 3, 1, 2),
                        "your heads take every num_heads-th feature (interleaved); head h should "
                        "hold the contiguous features h·head_dim … (h+1)·head_dim − 1: reshape "
                        "to (B, L, heads, head_dim)",
                    ),
                ],
            )
        x = _randn(2, 5, 12, gen=gen).requires_grad_()
        _expect_graph(_tensor(_call(split_heads, x, 3), "the result"), "your result")
    _passed(
        "check_split_heads", f"{len(_HEAD_CASES)} shapes against MultiHeadAttention's own split."
    )


def check_merge_heads(merge_heads: Callable[[Tensor], Tensor]) -> None:
    """Exercise 3b: `merge_heads(x)`: (B, heads, L, d) -> (B, L, heads·d), the inverse of split."""
    with _fixed_seed():
        gen = torch.Generator().manual_seed(1)
        for shape, heads in _HEAD_CASES:
            B, L, E = shape
            mha = MultiHeadAttention(E, heads)
            original = _randn(*shape, gen=gen)
            x = mha._split_heads(original)  # (B, heads, L, d): a transposed view
            if (shape, heads) != _HEAD_CASES[-1]:
                x = x.contiguous()  # as attention's output (weights @ v) is
            where = f"x {tuple(x.shape)} (B, heads, L, head_dim)"
            expected = mha._merge_heads(x)
            got = _tensor(_call(merge_heads, x.clone()), "the result")
            if got.shape != expected.shape:
                _fail(
                    f"your result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
                    f" = (B, L, heads·head_dim) ({where})"
                )
            _expect_close(
                got,
                expected,
                "your merged heads",
                where,
                mistakes=[
                    (
                        x.reshape(B, L, E),
                        "you reshaped (B, heads, L, head_dim) to (B, L, E) without moving the "
                        "head axis back: .transpose(1, 2) to (B, L, heads, head_dim) first, then "
                        "reshape",
                    ),
                    (
                        x.permute(0, 2, 3, 1).reshape(B, L, E),
                        "your merge interleaves the heads' features; put head h's features at "
                        "h·head_dim … (h+1)·head_dim − 1: x.transpose(1, 2).reshape(B, L, E)",
                    ),
                ],
            )
            if not torch.equal(got, original):
                _fail(f"merge_heads(split_heads(x)) does not give x back ({where})")
        x = MultiHeadAttention(12, 3)._split_heads(_randn(2, 5, 12, gen=gen).requires_grad_())
        _expect_graph(_tensor(_call(merge_heads, x), "the result"), "your result")
    _passed(
        "check_merge_heads",
        f"{len(_HEAD_CASES)} shapes, contiguous and transposed inputs, merge(split(x)) == x.",
    )


# ---------------------------------------------------------------------------------------------
# Exercise 4: the SAGAN self-attention block
# ---------------------------------------------------------------------------------------------


def _sagan_parts(
    block: SelfAttention2d, x: Tensor, pool_fn: Callable[[Tensor], Tensor], scale: float
) -> tuple[Tensor, Tensor]:
    """The block's attention (B, N, M) and attended values (B, N, C/2), with variations."""
    q = block.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
    k = pool_fn(block.key(x)).flatten(2).transpose(1, 2)  # (B, M, C/8)
    v = pool_fn(block.value(x)).flatten(2).transpose(1, 2)  # (B, M, C/2)
    attention = torch.softmax((q @ k.transpose(1, 2)) * scale, dim=-1)
    return attention, attention @ v


def _copy_block_weights(learner: nn.Module, reference: SelfAttention2d, where: str) -> None:
    """Check the learner's four 1×1 convs and γ, and copy their values into `reference`."""
    C = reference.channels
    expected = {
        "query": (C // 8, C),
        "key": (C // 8, C),
        "value": (C // 2, C),
        "out": (C, C // 2),
    }
    with torch.no_grad():
        for name, (c_out, c_in) in expected.items():
            conv = getattr(learner, name, None)
            if conv is None:
                _fail(
                    f"your block has no attribute `{name}`: name the four 1×1 convs query, key, "
                    "value and out (self.query = nn.Conv2d(...)) so the check can compare them "
                    "with the reference"
                )
            weight = getattr(conv, "weight", None)
            if not isinstance(weight, torch.Tensor):
                _fail(f"self.{name} has no weight: it should be a 1×1 nn.Conv2d")
            if tuple(weight.shape) != (c_out, c_in, 1, 1):
                _fail(
                    f"self.{name}'s weight has shape {tuple(weight.shape)} for channels={C}, "
                    f"expected ({c_out}, {c_in}, 1, 1): a 1×1 conv from {c_in} to {c_out} "
                    "channels (query and key C → C/8, value C → C/2, out C/2 → C)"
                )
            if getattr(conv, "bias", None) is not None:
                _fail(f"self.{name} has a bias; SAGAN's 1×1 convs have none: bias=False")
            getattr(reference, name).weight.copy_(weight)
        gamma = getattr(learner, "gamma", None)
        if not isinstance(gamma, torch.Tensor) or gamma.numel() != 1:
            _fail("your block needs a scalar γ: self.gamma = nn.Parameter(torch.zeros(()))")
        if not any(gamma is p for p in learner.parameters()):
            _fail("self.gamma is not a learnable parameter: wrap it in nn.Parameter(...)")
        if gamma.item() != 0.0:
            _fail(
                f"γ starts at {gamma.item():.3g}; SAGAN starts it at 0, so the block begins as "
                "the identity and lets attention in only as training grows γ"
            )


def _set_gamma(block: nn.Module, value: float) -> None:
    with torch.no_grad():
        block.gamma.fill_(value)


def check_self_attention_2d(block_class: Callable[..., nn.Module]) -> None:
    """Exercise 4: the SAGAN block, a class `(channels, pool=2)`; forward(x) -> (y, attention).

    Submodules: 1×1 convs `query` (C→C/8), `key` (C→C/8), `value` (C→C/2), `out` (C/2→C), no
    biases; `gamma` a scalar parameter starting at 0. Keys and values are max-pooled pool×pool;
    no division by √d (the authors' released code); y = x + γ·out(o); attention is (B, N, M).
    """
    cases = [
        (16, 2, (2, 16, 8, 8), torch.float32),
        (32, 1, (3, 32, 4, 6), torch.float32),  # pool=1: full N×N attention, a non-square map
        (16, 2, (1, 16, 6, 10), torch.float32),  # non-square, pooled
        (8, 2, (2, 8, 4, 4), torch.float64),
    ]
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        for channels, pool, shape, dtype in cases:
            where = f"channels={channels}, pool={pool}, x {shape}"
            hint = (
                "The block is built as YourBlock(channels, pool=2) and called as block(x); inside, "
                "q is (B, N, C/8), k (B, M, C/8), v (B, M, C/2), and softmax(q @ kᵀ) is (B, N, M)."
            )
            block = _call(block_class, channels, pool=pool, hint=hint)
            if not isinstance(block, nn.Module):
                _fail(f"{block_class} should build an nn.Module, got {type(block).__name__}")
            reference = SelfAttention2d(channels, pool=pool, spectral_norm=False)
            _copy_block_weights(block, reference, where)
            block, reference = block.to(dtype).eval(), reference.to(dtype).eval()
            x = _randn(*shape, gen=gen, dtype=dtype)

            y, attention = _pair(_call(block, x.clone(), hint=hint), "your block", "y, attention")
            y = _tensor(y, "y")
            if y.shape != x.shape:
                _fail(
                    f"your y has shape {tuple(y.shape)}; the block keeps the input's shape {shape}"
                )
            # γ = 0: the block must be the identity.
            _check_block_output(y, x, reference, x, f"{where}, γ = 0: y should equal x")

            _set_gamma(block, 0.7)
            _set_gamma(reference, 0.7)
            y, attention = _pair(_call(block, x.clone(), hint=hint), "your block", "y, attention")
            y, attention = _tensor(y, "y"), _tensor(attention, "the attention")
            expected_y, expected_attention = reference(x, return_attention=True)
            _check_block_attention(attention, expected_attention, reference, x, where)
            _check_block_output(y, expected_y, reference, x, where)

        # Gradients reach x and γ as in the reference.
        block = _call(block_class, 16, pool=2)
        reference = SelfAttention2d(16, pool=2, spectral_norm=False)
        _copy_block_weights(block, reference, "channels=16")
        _set_gamma(block, 0.7)
        _set_gamma(reference, 0.7)
        x = _randn(2, 16, 4, 8, gen=gen).requires_grad_()
        y, attention = _pair(_call(block.eval(), x), "your block", "y, attention")
        _expect_graph(_tensor(y, "y"), "your y")
        expected_y, expected_attention = reference(x, return_attention=True)
        got = _grads([y, attention], [x, block.gamma])
        want = _grads([expected_y, expected_attention], [x, reference.gamma])
        if got[1].abs().max() == 0:
            _fail("γ gets no gradient: use self.gamma in forward (y = x + self.gamma * ...)")
        _expect_close(got[0], want[0], "the gradient with respect to x", "x (2, 16, 4, 8)")
        _expect_close(
            got[1].reshape(()), want[1], "the gradient with respect to γ", "x (2, 16, 4, 8)"
        )
    _passed(
        "check_self_attention_2d",
        "structure (convs, no biases, γ = 0 → identity), attention and output against "
        "SelfAttention2d on 4 maps (pool 1 and 2, non-square, float64), gradients for x and γ.",
    )


def _check_block_attention(
    attention: Tensor, expected: Tensor, reference: SelfAttention2d, x: Tensor, where: str
) -> None:
    B, N, M = expected.shape
    pool = reference.pool
    if attention.shape != expected.shape:
        if attention.shape == (B, M, N) and M != N:
            _fail(
                f"your attention has shape {tuple(attention.shape)}, expected {(B, N, M)} "
                f"({where}): rows are the N = H·W query positions, columns the M pooled keys. "
                "Compute q @ kᵀ with q (B, N, C/8) and k (B, M, C/8)"
            )
        if attention.shape == (B, N, N) and M != N:
            _fail(
                f"your attention has {N} columns, one per position, expected {M} ({where}): "
                f"max-pool keys and values {pool}×{pool} (F.max_pool2d(..., {pool})) before "
                "attention, which makes attention pool² times cheaper"
            )
        _fail(
            f"your attention has shape {tuple(attention.shape)}, expected {tuple(expected.shape)}"
            f" = (B, N, M) ({where})"
        )
    sums = attention.detach().sum(-1)
    if not torch.allclose(sums.double(), torch.ones_like(sums.double()), atol=1e-4):
        worst = sums.flatten()[(sums - 1).abs().flatten().argmax()].item()
        _fail(
            f"rows of your attention sum to {worst:.2f}, not 1 ({where}): did you take the "
            "softmax over the wrong axis? Each query position's weights are a softmax over the "
            "keys (dim=-1)"
        )
    d = reference.query.weight.shape[0]
    with torch.no_grad():
        max_pool = (lambda t: F.max_pool2d(t, pool)) if pool > 1 else (lambda t: t)
        avg_pool = (lambda t: F.avg_pool2d(t, pool)) if pool > 1 else (lambda t: t)
        scaled = _sagan_parts(reference, x, max_pool, 1.0 / math.sqrt(d))[0]
        averaged = _sagan_parts(reference, x, avg_pool, 1.0)[0]
        q = reference.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = max_pool(reference.key(x)).flatten(2).transpose(1, 2)  # (B, M, C/8)
        keys_first = torch.softmax(k @ q.transpose(1, 2), dim=-1)  # (B, M, N)
    _expect_close(
        attention,
        expected,
        "your attention",
        where,
        mistakes=[
            (
                scaled,
                f"you divided the scores by √d = √{d}: the SAGAN authors' code does not (the "
                "textbook formula does). Use softmax(q kᵀ) here",
            ),
            (
                averaged if pool > 1 else None,
                "you average-pooled the keys; SAGAN max-pools them (F.max_pool2d)",
            ),
            (
                keys_first,
                "your attention is k @ qᵀ: rows are keys and the softmax runs over the queries. "
                "Rows must be the N query positions, each a softmax over the keys: softmax(q @ "
                "kᵀ, dim=-1)",
            ),
        ],
        advice="attention = softmax(q kᵀ) with q (B, N, C/8) from the query conv and k (B, M, "
        "C/8) from the max-pooled key conv, positions flattened row by row (x.flatten(2)).",
    )


def _check_block_output(
    y: Tensor, expected: Tensor, reference: SelfAttention2d, x: Tensor, where: str
) -> None:
    B, _C, H, W = x.shape
    pool = reference.pool
    if y.shape != expected.shape:
        _fail(f"your y has shape {tuple(y.shape)}, expected {tuple(expected.shape)} ({where})")
    _expect_dtype(y, x.dtype, "your y")
    with torch.no_grad():
        max_pool = (lambda t: F.max_pool2d(t, pool)) if pool > 1 else (lambda t: t)
        avg_pool = (lambda t: F.avg_pool2d(t, pool)) if pool > 1 else (lambda t: t)
        _, o = _sagan_parts(reference, x, max_pool, 1.0)  # (B, N, C/2)
        o_map = reference.out(o.transpose(1, 2).reshape(B, -1, H, W))  # (B, C, H, W)
        gamma = reference.gamma
        scrambled = x + gamma * reference.out(o.reshape(B, -1, H, W))
        _, o_unpooled_v = _sagan_parts(reference, x, avg_pool, 1.0)
    _expect_close(
        y,
        expected,
        "your y",
        where,
        mistakes=[
            (
                x + o_map,
                "your y is x + out(o): multiply attention's output by γ (y = x + γ·out(o)); γ = "
                "0 at the start keeps the block an identity until training opens it",
            ),
            (
                gamma * o_map,
                "your y is γ·out(o) without the input: add x back (y = x + γ·out(o)), the "
                "residual connection",
            ),
            (o_map, "your y is out(o) alone: y = x + γ·out(o)"),
            (
                scrambled,
                "your attention is right but y is not: o has shape (B, N, C/2), so transpose it "
                "to (B, C/2, N) before reshaping to (B, C/2, H, W); reshaping directly scrambles "
                "channels and positions",
            ),
            (
                x + gamma * reference.out(o_unpooled_v.transpose(1, 2).reshape(B, -1, H, W))
                if pool > 1
                else None,
                "you average-pooled the values; SAGAN max-pools them",
            ),
        ],
        advice="y = x + γ·out(o), o = attention @ v reshaped to (B, C/2, H, W); v comes from the "
        "max-pooled value conv.",
    )


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
            result = _call(fn, weight.clone(), u.clone(), n, hint=_SN_HINT)
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
                _fail(f"your u has shape {tuple(got_u.shape)}, expected ({rows},) ({where})")
            if not torch.allclose(got_u.double().norm(), torch.tensor(1.0).double(), atol=1e-4):
                _fail(
                    f"your u has length {got_u.double().norm().item():.3g} ({where}): normalise "
                    "u and v after every multiplication (F.normalize(..., dim=0)), or σ = uᵀWv "
                    "will be off"
                )
            w = weight.double()
            fro = w / w.flatten(1).norm()
            _expect_close(
                got_w,
                expected_w,
                "your normalised weight",
                where,
                mistakes=[
                    (
                        fro.to(dtype),
                        "you divided by the Frobenius norm ‖W‖_F (the root of the sum of "
                        "squares); spectral norm divides by the largest singular value σ = uᵀWv "
                        "from the power iteration",
                    ),
                    (
                        _power_iteration_times_sigma(weight, u, n),
                        "you multiplied the weight by σ; divide it by σ",
                    ),
                ],
                advice="Per iteration: v = normalize(Wᵀu), u = normalize(Wv); then σ = uᵀWv and "
                "the result is weight / σ.",
                **({"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float64 else {}),
            )
            if torch.allclose(got_u.double(), u.double()) and not torch.allclose(expected_u, u):
                _fail(
                    f"the u you returned is the u you were given ({where}): return the updated u, "
                    "so the next training step continues the power iteration where this one stopped"
                )
            _expect_close(got_u, expected_u, "your updated u", where, rtol=1e-4, atol=1e-5)

        # Many iterations converge to the true largest singular value.
        weight = _matrix_with_singular_values(9, 6, 3.0, gen).float()
        u = F.normalize(_randn(9, gen=gen), dim=0)
        got_w, _ = _pair(_call(fn, weight.clone(), u.clone(), 30), "your function", "weight, u")
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
        got_w, _ = _pair(_call(fn, weight, u.clone(), 1), "your function", "weight, u")
        _expect_graph(_tensor(got_w, "the normalised weight"), "your normalised weight")
        expected_w, _ = _library_spectral_normalise(weight, u, 1)
        got = _grads([got_w], [weight])[0]
        want = _grads([expected_w], [weight])[0]
        through_uv = _grads([_power_iteration_with_grad(weight, u, 1)], [weight])[0]
        _expect_close(
            got,
            want,
            "the gradient with respect to the weight",
            "a (6, 8) weight, one iteration",
            mistakes=[
                (
                    through_uv,
                    "your gradient also flows through u and v: run the power iteration under "
                    "torch.no_grad() (the paper treats u and v as constants), and compute only σ "
                    "= uᵀWv with gradients",
                ),
            ],
        )
    _passed(
        "check_spectral_normalise",
        "weight / σ and the updated u against SpectralNorm on 5 weights (linear, tall, conv, "
        "float64, 1-3 iterations), σ → the largest singular value, gradient through W only.",
    )


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
            "float64 logits, batch 6",
            _randn(6, gen=gen, dtype=torch.float64),
            _randn(6, gen=gen, dtype=torch.float64),
        ),
    ]


def _scalar_loss(value: Any, what: str) -> Tensor:
    loss = _tensor(value, what)
    if loss.dim() != 0:
        _fail(
            f"{what} has shape {tuple(loss.shape)}; a loss is a single number (a 0-d tensor): "
            "average over the batch with .mean()"
        )
    return loss


def check_d_hinge_loss(d_hinge_loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 6a: `d_hinge_loss(real_logits, fake_logits)` = mean(relu(1 − real)) + "
    "mean(relu(1 + fake))."""
    fn = d_hinge_loss_fn
    with _fixed_seed():
        for description, real, fake in _logit_cases():
            where = f"{description}: real {tuple(real.shape)}, fake {tuple(fake.shape)}"
            expected = d_hinge_loss(real, fake)
            loss = _scalar_loss(_call(fn, real.clone(), fake.clone()), "your D loss")
            _expect_dtype(loss, real.dtype, "your D loss")
            _expect_close(
                loss,
                expected,
                "your D loss",
                where,
                mistakes=[
                    (
                        d_hinge_loss(fake, real),
                        "you swapped real and fake: D should push real logits above +1, relu(1 − "
                        "real), and fake logits below −1, relu(1 + fake)",
                    ),
                    (
                        (1 - real).mean() + (1 + fake).mean(),
                        "your loss has no relu: without max(0, ·) D keeps being rewarded for "
                        "logits far beyond the margin, and its logits grow without bound. Use "
                        "F.relu(1 − real) and F.relu(1 + fake)",
                    ),
                    (
                        F.relu(1 - real).sum() + F.relu(1 + fake).sum(),
                        "you summed over the batch; take the mean (.mean()) so the loss does not "
                        "grow with the batch size",
                    ),
                    (
                        F.relu(-real).mean() + F.relu(fake).mean(),
                        "your margin is 0; the hinge margin is 1: relu(1 − real) and relu(1 + "
                        "fake)",
                    ),
                    (
                        F.relu(1 - real).mean() + F.relu(1 - fake).mean(),
                        "your fake term is relu(1 − fake); it should be relu(1 + fake): D wants "
                        "fake logits below −1",
                    ),
                    (
                        d_hinge_loss(real, fake) / 2,
                        "your loss is half the expected value: add the two means, don't average "
                        "them",
                    ),
                ],
                advice="Expected mean(relu(1 − real_logits)) + mean(relu(1 + fake_logits)).",
            )
        real = torch.tensor([2.0, 0.5, -1.0]).requires_grad_()
        fake = torch.tensor([-2.0, -0.5, 1.5, 0.0]).requires_grad_()
        loss = _scalar_loss(_call(fn, real, fake), "your D loss")
        _expect_graph(loss, "your D loss")
        got = _grads([loss], [real, fake])
        want = _grads([d_hinge_loss(real, fake)], [real, fake])
        for name, g, r in zip(("real", "fake"), got, want, strict=True):
            _expect_close(
                g, r, f"the gradient with respect to the {name} logits",
                "real [2, 0.5, −1], fake [−2, −0.5, 1.5, 0]",
                advice="Logits beyond the margin (real > 1, fake < −1) must get zero gradient.",
            )  # fmt: skip
    _passed(
        "check_d_hinge_loss",
        "values on 4 batches (different sizes, both sides of the margins, float64) and gradients.",
    )


def check_g_hinge_loss(g_hinge_loss_fn: Callable[[Tensor], Tensor]) -> None:
    """Exercise 6b: `g_hinge_loss(fake_logits)` = −mean(fake_logits)."""
    fn = g_hinge_loss_fn
    with _fixed_seed():
        for description, _real, fake in _logit_cases():
            where = f"{description}: fake {tuple(fake.shape)}"
            expected = g_hinge_loss(fake)
            loss = _scalar_loss(_call(fn, fake.clone()), "your G loss")
            _expect_dtype(loss, fake.dtype, "your G loss")
            _expect_close(
                loss,
                expected,
                "your G loss",
                where,
                mistakes=[
                    (
                        fake.mean(),
                        "your G loss has the wrong sign: G wants D to score its images high, so "
                        "it minimises −mean(D(fake))",
                    ),
                    (
                        F.relu(1 - fake).mean(),
                        "you gave G a margin, relu(1 − fake): SAGAN's generator loss has none, "
                        "it is −mean(D(fake)), so G keeps improving even past the margin",
                    ),
                    (
                        F.softplus(-fake).mean(),
                        "that is the non-saturating loss softplus(−D(fake)); the hinge version "
                        "for G is −mean(D(fake))",
                    ),
                    (-fake.sum(), "you summed over the batch; take the mean"),
                ],
                advice="Expected −mean(fake_logits).",
            )
        fake = torch.tensor([-2.0, 0.5, 3.0]).requires_grad_()
        loss = _scalar_loss(_call(fn, fake), "your G loss")
        _expect_graph(loss, "your G loss")
        got, want = _grads([loss], [fake])[0], _grads([g_hinge_loss(fake)], [fake])[0]
        _expect_close(
            got, want, "the gradient with respect to the fake logits", "fake [−2, 0.5, 3]"
        )
    _passed("check_g_hinge_loss", "values on 4 batches (incl. float64) and gradients.")


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
    return _TinyGenerator(), _TinyDiscriminator()


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


def _fill_stale_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, _STALE)


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
            G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
            variants = _d_loss_variants(G, D, real, z)
            opt_d = torch.optim.SGD(D.parameters(), lr=_LR)
            opt_ref = torch.optim.SGD(D_ref.parameters(), lr=_LR)
            _fill_stale_grads(D)
            _fill_stale_grads(D_ref)
            g_before, d_before = _snapshot(G), _snapshot(D)
            watch = _WatchGenerator(G)
            try:
                loss = _call(discriminator_step, G, D, opt_d, real.clone(), z.clone())
            finally:
                watch.handle.remove()
            expected = reference_discriminator_step(G_ref, D_ref, opt_ref, real, z).item()

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
            if any(not p.requires_grad for p in D.parameters()):
                _fail(
                    "after your discriminator step some of D's parameters have "
                    "requires_grad=False: leave D trainable"
                )
            value = _number(loss, "the loss your discriminator step returned")
            if not math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-5):
                if math.isclose(value, variants["swapped"], rel_tol=1e-4, abs_tol=1e-5):
                    _fail(
                        f"your D loss ({value:.4f}, expected {expected:.4f}) has real and fake "
                        "swapped: d_hinge_loss(real_logits, fake_logits), real first, pushes "
                        "D(real) above +1 and D(fake) below −1"
                    )
                if math.isclose(value, variants["real only"], rel_tol=1e-4, abs_tol=1e-5):
                    _fail(
                        f"your D loss ({value:.4f}, expected {expected:.4f}) only scores the real "
                        "images: D must also learn to reject the fakes, d_hinge_loss(D(real), "
                        "D(fake))"
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


def _d_loss_variants(G: nn.Module, D: nn.Module, real: Tensor, z: Tensor) -> dict[str, float]:
    with torch.no_grad():
        real_logits, fake_logits = D(real), D(G(z))
        return {
            "swapped": d_hinge_loss(fake_logits, real_logits).item(),
            "real only": F.relu(1 - real_logits).mean().item(),
        }


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
            with torch.no_grad():
                variants = {
                    "positive": g_hinge_loss(D(G(z))).neg().item(),
                    "margin": F.relu(1 - D(G(z))).mean().item(),
                }
            opt_g = torch.optim.SGD(G.parameters(), lr=_LR)
            opt_ref = torch.optim.SGD(G_ref.parameters(), lr=_LR)
            _fill_stale_grads(G)
            _fill_stale_grads(G_ref)
            g_before, d_before = _snapshot(G), _snapshot(D)

            loss = _call(
                generator_step, G, D, opt_g, z.clone(),
                hint="If this is 'element 0 of tensors does not require grad': the G loss must "
                "depend on G's weights, so do not detach the fakes or use torch.no_grad() here.",
            )  # fmt: skip
            expected_loss = reference_generator_step(G_ref, D_ref, opt_ref, z)

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
                if math.isclose(value, variants["positive"], rel_tol=1e-4, abs_tol=1e-5):
                    _fail(
                        f"your generator loss has the wrong sign ({value:.4f}, expected "
                        f"{expected_loss.item():.4f}): G wants D to score its images high, so "
                        "it minimises −mean(D(G(z))) = g_hinge_loss(D(G(z)))"
                    )
                if math.isclose(value, variants["margin"], rel_tol=1e-4, abs_tol=1e-5):
                    _fail("your generator loss has a margin, relu(1 − D(G(z))); use −mean(D(G(z)))")
                _fail(
                    f"your generator step returned loss {value:.4f}, expected "
                    f"{expected_loss.item():.4f} ({where}): the G loss is g_hinge_loss(D(G(z)))"
                )
            got, want = _changes(G, g_before), _changes(G_ref, g_before)
            if _same_changes(got, want):
                continue
            if all(
                torch.allclose(c, torch.full_like(c, -_LR * _STALE)) for c in got.values()
            ) or all(c.abs().max() == 0 for c in got.values()):
                _fail(
                    f"G's weights did not learn from the loss ({where}): the gradient must reach "
                    "G through D, so do not detach the fake images or make them under "
                    "torch.no_grad() in the generator step; then loss.backward() and opt_g.step()"
                )
            stale = {n: c - _LR * _STALE for n, c in want.items()}
            if _same_changes(got, stale):
                _fail(
                    f"G's update includes gradients left over from an earlier step ({where}): "
                    "call opt_g.zero_grad() before loss.backward()"
                )
            _fail(
                f"G's weights after your step differ from the reference by up to "
                f"{max(_max_diff(got[n], want[n]) for n in got):.3g} ({where})"
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
                _call(fn, ema, model, decay, hint=hint)
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


# ---------------------------------------------------------------------------------------------
# Exercise 9: the Fréchet distance
# ---------------------------------------------------------------------------------------------


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigh)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def reference_frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) in float64, unbiased covariances.

    Tr((Σa Σb)^½) is computed as Tr((Σa^½ Σb Σa^½)^½): the same eigenvalues, but of a symmetric
    matrix, so it stays real and stable.
    """
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D), divided by N − 1
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return fd.item()


def _fd_variants(a: Tensor, b: Tensor) -> list[tuple[float, str]]:
    """Values that common mistakes give, with what to say about each."""
    a, b = a.double(), b.double()
    mu = (a.mean(0) - b.mean(0)).square().sum().item()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    tr = (cov_a.trace() + cov_b.trace()).item()
    trace_sqrt = reference_frechet_distance(a, b) - mu - tr  # −2·Tr((ΣaΣb)^½)
    biased_a, biased_b = torch.cov(a.T, correction=0), torch.cov(b.T, correction=0)
    biased = (mu + biased_a.trace() + biased_b.trace()).item() - 2 * _trace_sqrt(biased_a, biased_b)
    variance_only = mu + tr - 2 * (cov_a.diagonal() * cov_b.diagonal()).sqrt().sum().item()
    return [
        (
            tr + trace_sqrt,
            "the mean term is missing: add ‖μ_a − μ_b‖², the squared distance between the two "
            "means",
        ),
        (
            math.sqrt(mu) + tr + trace_sqrt,
            "your mean term is ‖μ_a − μ_b‖; it should be squared: ((μ_a − μ_b)**2).sum()",
        ),
        (
            mu + tr - 2 * (cov_a @ cov_b).trace().item(),
            "you used Tr(Σ_a Σ_b) where the formula has Tr((Σ_a Σ_b)^½): take the matrix square "
            "root, e.g. the sum of √λ over the eigenvalues λ of Σ_a Σ_b",
        ),
        (
            mu + tr - 2 * (_sqrtm_psd(cov_a) @ _sqrtm_psd(cov_b)).trace().item(),
            "you used Σ_a^½ Σ_b^½, but (Σ_a Σ_b)^½ is not Σ_a^½ Σ_b^½ unless the matrices "
            "commute: take the square root of the product (e.g. √ of the eigenvalues of Σ_a Σ_b)",
        ),
        (
            biased,
            "your covariances divide by N; use the unbiased estimate that divides by N − 1, as "
            "torch.cov does",
        ),
        (
            variance_only,
            "you used only the variances (the diagonals of Σ_a and Σ_b); the formula needs the "
            "full covariance matrices, torch.cov(features.T)",
        ),
        (mu + tr, "the cross term −2·Tr((Σ_a Σ_b)^½) is missing"),
        (
            mu + tr - 2 * (cov_a @ cov_b).diagonal().sqrt().sum().item(),
            "torch.sqrt works entry by entry, but (Σ_a Σ_b)^½ is the matrix square root: e.g. "
            "the sum of √λ over the eigenvalues λ of Σ_a Σ_b "
            "(torch.linalg.eigvals(...).sqrt().real.sum())",
        ),
    ]


def _trace_sqrt(cov_a: Tensor, cov_b: Tensor) -> float:
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    return torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum().item()


def _correlated(n: int, d: int, gen: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    mixing = _randn(d, d, gen=gen, dtype=dtype)
    return _randn(n, d, gen=gen, dtype=dtype) @ mixing


def check_frechet_distance(frechet_distance: Callable[[Tensor, Tensor], Any]) -> None:
    """Exercise 9: `frechet_distance(features_a (N, D), features_b (M, D))` -> a float.

    FD = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½), with unbiased covariances (torch.cov).
    """
    fn = frechet_distance
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        a, b = _correlated(60, 6, gen), 1.3 * _correlated(45, 6, gen) + 0.5
        c, d = _correlated(10, 3, gen), _correlated(13, 3, gen) - 1.0
        e, f = _correlated(300, 12, gen).float(), (0.8 * _correlated(200, 12, gen) + 0.2).float()
        cases = [
            ("a (60, 6) and b (45, 6), float64", a, b, 1e-4),
            ("a (10, 3) and b (13, 3): few samples, float64", c, d, 1e-4),
            ("a (300, 12) and b (200, 12), float32", e, f, 1e-3),
        ]
        for where, x, y, rtol in cases:
            expected = reference_frechet_distance(x, y)
            value = _number(_call(fn, x.clone(), y.clone()), "your Fréchet distance")
            if math.isnan(value):
                _fail(
                    f"your Fréchet distance is NaN ({where}): a square root of a negative "
                    "number? torch.sqrt works entry by entry; Tr((Σ_a Σ_b)^½) needs the matrix "
                    "square root, e.g. the sum of √λ over the eigenvalues λ of Σ_a Σ_b "
                    "(torch.linalg.eigvals(...).sqrt().real.sum())"
                )
            if math.isclose(value, expected, rel_tol=rtol, abs_tol=1e-6):
                continue
            for wrong, explanation in _fd_variants(x, y):
                if math.isclose(value, wrong, rel_tol=rtol, abs_tol=1e-6):
                    _fail(
                        f"{explanation}\n  (Your value {value:.5g}, expected {expected:.5g}, for "
                        f"{where}.)"
                    )
            if math.isclose(value, expected, rel_tol=1e-2):
                _fail(
                    f"your Fréchet distance is {value:.6g}, close to {expected:.6g} but not close "
                    f"enough ({where}): compute in float64 (.double()), since the trace term is a "
                    "small difference of large numbers"
                )
            _fail(
                f"your Fréchet distance is {value:.5g}, expected {expected:.5g} ({where}).\n  "
                "FD = ‖μ_a − μ_b‖² + Tr(Σ_a) + Tr(Σ_b) − 2·Tr((Σ_a Σ_b)^½), covariances from "
                "torch.cov(features.T)"
            )

        same = _number(_call(fn, a.clone(), a.clone()), "your Fréchet distance")
        if abs(same) > 1e-4 * (1 + torch.cov(a.T).trace().item()):
            _fail(f"the Fréchet distance of a feature set to itself must be 0, yours is {same:.4g}")
        shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0], dtype=torch.float64)
        shifted = _number(_call(fn, a.clone(), a + shift), "your Fréchet distance")
        if not math.isclose(shifted, shift.square().sum().item(), rel_tol=1e-4, abs_tol=1e-3):
            _fail(
                f"moving every feature vector by the same c (same covariance) should give "
                f"FD = ‖c‖² = {shift.square().sum().item():.4g}, yours is {shifted:.4g}: check "
                "the mean term ‖μ_a − μ_b‖²"
            )
        swapped = _number(_call(fn, b.clone(), a.clone()), "your Fréchet distance")
        if not math.isclose(swapped, reference_frechet_distance(a, b), rel_tol=1e-4):
            _fail("your Fréchet distance is not symmetric: FD(a, b) must equal FD(b, a)")
    _passed(
        "check_frechet_distance",
        "3 pairs of correlated feature sets (different sizes, few samples, float32), FD(a, a) = 0, "
        "a shift c gives ‖c‖², symmetry.",
    )


# ---------------------------------------------------------------------------------------------
# Exercise 10: where one query pixel looks
# ---------------------------------------------------------------------------------------------


def _query_map_variant(
    attention: Tensor,
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None,
    *,
    column_major: bool = False,
    mode: str = "bilinear",
    align_corners: bool | None = False,
    rescale_query: bool = True,
    use_column: bool = False,
) -> Tensor | None:
    """query_attention_map, with one thing done the way a common mistake does it."""
    H, W = feature_size
    B, N, M = attention.shape
    pool = round((N / M) ** 0.5)
    rows, cols = image_size or (H, W)
    r, c = query
    if rescale_query:
        r, c = r * H // rows, c * W // cols
    n = c * H + r if column_major else r * W + c
    if n >= N or (use_column and M != N):
        return None
    row = attention[:, :, n] if use_column else attention[:, n]
    grid = row.reshape(B, 1, H // pool, W // pool).float()
    kwargs = {"align_corners": align_corners} if mode == "bilinear" else {}
    up = F.interpolate(grid, size=(rows, cols), mode=mode, **kwargs)[:, 0]
    return up / up.sum(dim=(1, 2), keepdim=True)


def check_query_attention_map(query_attention_map_fn: Callable[..., Tensor]) -> None:
    """Exercise 10: `query_attention_map(attention, feature_size, query, image_size=None)`.

    attention (B, N, M) from a SAGAN block on an (H, W) map with keys pooled p×p; query (row, col)
    in image_size coordinates -> (B, rows, cols): the query's row of attention laid out on the
    (H/p, W/p) grid, upsampled bilinearly (align_corners=False) and rescaled to sum to 1.
    """
    fn = query_attention_map_fn
    cases = [
        ((1, 24, 24), (4, 6), (1, 4), None),  # pool 1, non-square
        ((2, 64, 16), (8, 8), (3, 5), None),
        ((2, 64, 16), (8, 8), (2, 3), (16, 16)),  # upsampled ×2
        ((2, 60, 15), (6, 10), (7, 33), (24, 40)),  # non-square, upsampled ×4
        ((1, 64, 16), (8, 8), (31, 0), (32, 32)),  # a corner pixel
    ]
    hint = (
        "Each row of attention has M = (H/p)·(W/p) entries on the pooled grid, p = √(N/M); "
        "the query (row, col) is in image_size coordinates."
    )
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        for shape, feature_size, query, image_size in cases:
            attention = torch.softmax(_randn(*shape, gen=gen), dim=-1)
            where = (
                f"attention {shape}, feature_size={feature_size}, query={query}, "
                f"image_size={image_size}"
            )
            expected = query_attention_map(attention, feature_size, query, image_size)
            args = (attention.clone(), feature_size, query)
            got = (
                _call(fn, *args, hint=hint)
                if image_size is None
                else _call(fn, *args, image_size, hint=hint)
            )
            got = _tensor(got, "your map")
            if got.shape != expected.shape:
                _fail(
                    f"your map has shape {tuple(got.shape)}, expected {tuple(expected.shape)} = "
                    f"(B, rows, cols) ({where})"
                )
            sums = got.detach().double().sum(dim=(1, 2))
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                _fail(
                    f"your map sums to {sums[0].item():.3g}, not 1 ({where}): upsampling changes "
                    "the total, so divide by the sum afterwards"
                )
            variant = {
                "attention": attention,
                "feature_size": feature_size,
                "query": query,
                "image_size": image_size,
            }
            _expect_close(
                got,
                expected,
                "your map",
                where,
                mistakes=[
                    (
                        _query_map_variant(**variant, column_major=True),
                        "you counted positions column by column; the attention's rows follow "
                        "positions row by row: n = row · W + col",
                    ),
                    (
                        _query_map_variant(**variant, use_column=True),
                        "you took column n of the attention (which queries look at position n); "
                        "where query n looks is row n: attention[:, n]",
                    ),
                    (
                        _query_map_variant(**variant, mode="nearest", align_corners=None),
                        "you upsampled with mode='nearest'; use bilinear (F.interpolate(..., "
                        "mode='bilinear', align_corners=False)) for a smooth overlay",
                    ),
                    (
                        _query_map_variant(**variant, align_corners=True),
                        "use align_corners=False when upsampling, as the reference does",
                    ),
                    (
                        _query_map_variant(**variant, rescale_query=False) if image_size else None,
                        "the query is given in image coordinates: map it to the feature map "
                        "first (row · H // rows, col · W // cols)",
                    ),
                ],
                advice="Take row n = r·W + c of attention (r, c: the query on the feature map), "
                "reshape it to (B, 1, H/p, W/p), upsample bilinearly to (rows, cols), divide by "
                "the sum.",
                rtol=1e-4,
                atol=1e-6,
            )
    _passed(
        "check_query_attention_map",
        "5 maps (pool 1 and 2, non-square, upsampled, a corner query) against the library's "
        "query_attention_map.",
    )
