"""Checks for solutions/01_attention_weights_and_masks.ipynb: attention and masks."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sagan_edu.attention import scaled_dot_product_attention
from sagan_edu.checks._common import (
    Tensor,
    _call,
    _close,
    _expect_close,
    _expect_dtype,
    _expect_grad,
    _expect_graph,
    _fail,
    _fixed_seed,
    _grads,
    _lost_unit_dims,
    _pair,
    _passed,
    _randn,
    _shapes,
    _squeeze_advice,
    _tensor,
    checked,
)

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


def _other_sizes(q: Tensor, k: Tensor) -> list[tuple[str, int]]:
    """Sizes a student may take for d by mistake, with their names."""
    return [
        ("the number of queries Lq", q.shape[-2]),
        ("the number of keys Lk", k.shape[-2]),
        ("q's first dimension", q.shape[0]),
    ]


def _check_weight_values(w: Tensor, q: Tensor, k: Tensor, expected: Tensor, where: str) -> None:
    """Shape, dtype, finiteness, rows summing to 1 and values of unmasked attention weights."""
    lq, lk = q.shape[-2], k.shape[-2]
    if w.shape != expected.shape:
        if _lost_unit_dims(w.shape, expected.shape):
            _fail(_squeeze_advice("your attention weights", w.shape, expected.shape, where))
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
                f"distribution over the keys: softmax(scores, dim=-1), counted from the end "
                f"(dim=1 is the last axis only without batch dims) ({where})"
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
            *(
                (
                    _softmax_weights(q, k, 1.0 / math.sqrt(size)),
                    f"you divided by √{size}, the square root of {name}; d is the width of q "
                    f"and k, q.shape[-1] = {d}",
                )
                for name, size in _other_sizes(q, k)
                if size != d
            ),
        ],
        advice="Expected softmax(q kᵀ / √d, dim=-1) with d = q.shape[-1].",
    )


@checked
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
            _expect_grad(g, r, name, _shapes(q=q, k=k))
    _passed(
        "check_attention_weights",
        "shapes, values and rows summing to 1 on 6 inputs (with batch dims, d = 1, large scores, "
        "float64), and gradients.",
    )


@checked
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
            if _lost_unit_dims(out.shape, expected_out.shape):
                _fail(_squeeze_advice("your output", out.shape, expected_out.shape, where))
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
                    ),
                    (
                        expected_out / math.sqrt(q.shape[-1]),
                        "your output is divided by √d once more: the √d scaling belongs to the "
                        "scores before the softmax, and the output is plain weights @ v",
                    ),
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
            _expect_grad(g, r, name, _shapes(q=q, k=k, v=v))
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


_MASK_HINT = (
    _BATCH_HINT + " The mask broadcasts to (..., Lq, Lk); a reduction such as mask.any(dim=-1) "
    "needs keepdim=True to broadcast back against it."
)


@checked
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
                masked_attention, q.clone(), k.clone(), v.clone(), mask.clone(), hint=_MASK_HINT
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
            _expect_close(
                out,
                expected_out,
                "your output",
                where,
                mistakes=_empty_rows_not_zeroed(q, k, v, mask, expected_out),
                advice="out = weights @ v.",
            )

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
            _expect_grad(g, r, name, "a random mask")
    _passed(
        "check_masked_attention",
        "causal, padding and random masks (broadcast over batch and heads), fully masked rows "
        "give zeros and no NaN, gradients finite and right.",
    )


def _empty_rows_not_zeroed(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, expected_out: Tensor
) -> list[tuple[Tensor, str]]:
    """Outputs whose fully masked rows were left as the softmax made them, before zeroing: over
    an all-True stand-in mask (plain attention) or over a -1e9 fill (uniform: v's mean)."""
    empty = ~mask.any(dim=-1, keepdim=True)  # (..., Lq, 1), broadcasts to the output
    explanation = (
        "your output rows for queries whose mask row is all False are not 0 (those queries "
        "attend to nothing): zero them too, e.g. compute out = weights @ v from the weights "
        "after zeroing those rows"
    )
    unmasked = scaled_dot_product_attention(q, k, v)[0]
    uniform = v.mean(dim=-2, keepdim=True)
    return [
        (torch.where(empty, unmasked, expected_out), explanation),
        (torch.where(empty, uniform, expected_out), explanation),
    ]


def _empty_row_weights(q: Tensor, k: Tensor, mask: Tensor, attends: Tensor) -> Tensor:
    """Masked weights where `attends` marks what the code believes are the usable rows."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    safe = mask.expand(scores.shape) | ~attends
    return torch.softmax(scores.masked_fill(~safe, float("-inf")), dim=-1) * attends


def _empty_row_mistakes(q: Tensor, k: Tensor, mask: Tensor) -> list[tuple[Tensor, str]]:
    """Weights from finding the empty rows along the wrong axis, with what to say."""
    full = mask.expand(*q.shape[:-1], k.shape[-2])  # (..., Lq, Lk)
    columns = full.any(dim=-2, keepdim=True)  # (..., 1, Lk): per key, not per query
    mistakes = [
        (
            _empty_row_weights(q, k, mask, columns),
            "you looked for empty rows with mask.any(dim=-2), which goes down each column (one "
            "answer per key). A query that may attend to nothing has an all-False row: use "
            "mask.any(dim=-1, keepdim=True), one answer per query",
        )
    ]
    if q.shape[-2] == k.shape[-2]:  # without keepdim, (..., Lq) broadcasts as a row of keys
        rows_as_keys = full.any(dim=-1).unsqueeze(-2)  # (..., 1, Lq)
        mistakes.append(
            (
                _empty_row_weights(q, k, mask, rows_as_keys),
                "mask.any(dim=-1) without keepdim=True has shape (..., Lq), which broadcasts "
                "against (..., Lq, Lk) as if it were one entry per key: use mask.any(dim=-1, "
                "keepdim=True), shape (..., Lq, 1)",
            )
        )
    return mistakes


def _close_with_nan(actual: Tensor, expected: Tensor) -> bool:
    """Like _close, but NaN in the same places counts as equal (a mistake that produces NaN)."""
    if actual.shape != expected.shape:
        return False
    a, b = actual.detach().double(), expected.detach().double()
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)


def _check_masked_weights(
    w: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, expected: Tensor, where: str
) -> None:
    if _lost_unit_dims(w.shape, expected.shape):
        _fail(_squeeze_advice("your attention weights", w.shape, expected.shape, where))
    if w.shape != expected.shape:
        _fail(
            f"your attention weights have shape {tuple(w.shape)}, expected "
            f"{tuple(expected.shape)} (..., queries, keys) ({where}); the mask broadcasts to the "
            "scores, it does not change their shape"
        )
    for wrong, explanation in _empty_row_mistakes(q, k, mask):
        if _close_with_nan(w, wrong) and not _close(w, expected):
            _fail(f"{explanation} ({where})")
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
