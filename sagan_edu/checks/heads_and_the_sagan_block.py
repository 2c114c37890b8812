"""Checks for solutions/02_heads_and_the_sagan_block.ipynb: heads, the SAGAN block."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.attention import MultiHeadAttention, SelfAttention2d
from sagan_edu.checks._common import (
    Tensor,
    _call,
    _describe,
    _expect_close,
    _expect_dtype,
    _expect_grad,
    _expect_graph,
    _fail,
    _fixed_seed,
    _grads,
    _pair,
    _passed,
    _randn,
    _tensor,
    checked,
)

# ---------------------------------------------------------------------------------------------
# Exercise 3: splitting and merging heads
# ---------------------------------------------------------------------------------------------

_HEAD_CASES = [((2, 5, 12), 3), ((1, 7, 8), 2), ((3, 4, 16), 4), ((2, 3, 6), 1), ((2, 5, 6), 6)]


@checked
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


@checked
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
                    (
                        x.transpose(2, 3).reshape(B, L, E),
                        "you swapped L and head_dim (transpose(2, 3)); the axis to move is the "
                        "heads, next to the positions: x.transpose(1, 2) gives (B, L, heads, "
                        "head_dim), then reshape",
                    ),
                ],
                advice="merge_heads undoes split_heads: x.transpose(1, 2).reshape(B, L, "
                "heads·head_dim).",
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


@checked
def check_self_attention_2d(block_class: Callable[..., nn.Module]) -> None:
    """Exercise 4: the SAGAN block, a class `(channels, pool=2)`; forward(x) -> (y, attention).

    Submodules: 1×1 convs `query` (C→C/8), `key` (C→C/8), `value` (C→C/2), `out` (C/2→C), no
    biases; `gamma` a scalar parameter starting at 0. Keys and values are max-pooled pool×pool;
    no division by √d (the authors' released code); y = x + γ·out(o); attention is (B, N, M).
    """
    name = getattr(block_class, "__name__", type(block_class).__name__)
    if isinstance(block_class, nn.Module):  # a block built from the class, not the class
        _fail(
            f"check_self_attention_2d takes your block's class, but got a {name} already built "
            f"from it: pass the class itself, check_self_attention_2d({name}), not "
            f"check_self_attention_2d({name}(...)); the check builds its own blocks"
        )
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
                _fail(
                    f"your {name}({channels}, pool={pool}) returned {_describe(block)}, not an "
                    "nn.Module: write the block as a class, class MyBlock(nn.Module), and pass "
                    "the class"
                )
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
        _expect_grad(got[0], want[0], "x", "x (2, 16, 4, 8)")
        _expect_grad(got[1].reshape(()), want[1], "γ", "x (2, 16, 4, 8)")
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
        H, W = x.shape[-2:]
        if pool > 1 and attention.shape == (B, N, (H - pool + 1) * (W - pool + 1)):
            _fail(
                f"your attention has {attention.shape[-1]} columns, expected M = {M} ({where}): "
                f"you max-pooled with stride 1, which slides the {pool}×{pool} window one pixel "
                f"at a time. Pool with stride = kernel size, F.max_pool2d(t, {pool}) (its stride "
                "defaults to the kernel size), so each block of pixels gives one key"
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
        by_columns = _sagan_parts(reference, x.transpose(2, 3), max_pool, 1.0)[0]
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
            (
                by_columns,
                "your positions are numbered column by column; number them row by row, n = "
                "row·W + col, which is what t.flatten(2) on (B, c, H, W) gives",
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
