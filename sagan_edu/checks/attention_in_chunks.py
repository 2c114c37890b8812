"""Checks for solutions/07_attention_in_chunks.ipynb: attention that never holds all the scores."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from sagan_edu.attention import scaled_dot_product_attention
from sagan_edu.checks._common import (
    Tensor,
    _call,
    _expect_close,
    _expect_dtype,
    _expect_grad,
    _expect_graph,
    _fail,
    _fixed_seed,
    _grads,
    _passed,
    _randn,
    _shapes,
    _tensor,
    checked,
)

# ---------------------------------------------------------------------------------------------
# Exercise 13: attention, a chunk of queries at a time
# ---------------------------------------------------------------------------------------------


class TensorRecorder(TorchFunctionMode):
    """Records the shape of every tensor that torch functions create while it is active.

        with TensorRecorder() as recorder:
            out = chunked_attention(q, k, v, 64)
        recorder.largest_bytes  # the biggest single tensor made on the way

    It sees what goes through PyTorch's Python API (q @ k.transpose(...), torch.softmax, ...),
    which is every step of a function written in PyTorch.
    """

    def __init__(self):
        super().__init__()
        self.shapes: list[torch.Size] = []
        self.largest_bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, tuple | list) else (result,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(t.shape)
                self.largest_bytes = max(self.largest_bytes, t.numel() * t.element_size())
        return result


def _chunk_cases(seed: int = 0) -> list[tuple[Tensor, Tensor, Tensor, int]]:
    """(q, k, v, chunk_size): Lk differs from every other size, so a scores tensor is
    recognisable by its last dimension; d ≤ chunk_size or d > Lq, so kᵀ (..., d, Lk) is not."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [
        ((2, 40, 8), (2, 24, 8), (2, 24, 5), 16),  # 40 queries: chunks of 16, 16 and 8
        ((2, 3, 33, 4), (2, 3, 21, 4), (2, 3, 21, 6), 8),  # batch and heads
        ((7, 6), (19, 6), (19, 3), 32),  # fewer queries than one chunk
        ((2, 12, 16), (2, 13, 16), (2, 13, 5), 1),  # one query at a time
    ]
    cases = [(*(_randn(*s, gen=gen) for s in triple), chunk) for *triple, chunk in shapes]
    q, k, v = (_randn(*s, gen=gen) for s in ((2, 10, 16), (2, 11, 16), (2, 11, 3)))
    cases.append((20 * q, 20 * k, v, 4))  # scores in the hundreds: exp() overflows without care
    q, k, v = (_randn(*s, gen=gen, dtype=torch.float64) for s in ((10, 4), (9, 4), (9, 2)))
    cases.append((q, k, v, 4))
    return cases


def _scores_too_big(shapes: list[torch.Size], lq: int, lk: int, chunk: int) -> torch.Size | None:
    """The first recorded tensor that holds scores for more than `chunk` queries at once."""
    for shape in shapes:
        if len(shape) >= 2 and shape[-1] == lk and shape[-2] > chunk and shape[-2] <= lq:
            return shape
    return None


_HINT = (
    "Slice the query axis, counted from the end: q[..., start:start + chunk_size, :] (q[start:"
    "start + chunk_size] slices the first dim, the batch), and join the chunks' outputs with "
    "torch.cat(outputs, dim=-2)."
)


@checked
def check_chunked_attention(chunked_attention: Callable[..., Tensor]) -> None:
    """Exercise 13: `chunked_attention(q, k, v, chunk_size)` -> out (..., Lq, dv).

    The same output as softmax(q kᵀ / √d) v, but no tensor may ever hold the scores (or weights)
    of more than chunk_size queries: a (..., chunk_size, Lk) block at a time.
    """
    with _fixed_seed():
        for q, k, v, chunk in _chunk_cases():
            where = f"{_shapes(q=q, k=k, v=v)}, chunk_size={chunk}"
            lq, lk = q.shape[-2], k.shape[-2]
            expected = scaled_dot_product_attention(q, k, v)[0]
            with TensorRecorder() as recorder:
                out = _call(chunked_attention, q.clone(), k.clone(), v.clone(), chunk, hint=_HINT)
            if isinstance(out, list | tuple):
                _fail(
                    f"your function returned a {type(out).__name__} of {len(out)} things; join "
                    "the chunks' outputs into one tensor, torch.cat(outputs, dim=-2)"
                )
            out = _tensor(out, "your output")
            if out.shape != expected.shape:
                if out.shape[:-2] == expected.shape[:-2] and out.shape[-2] < lq:
                    _fail(
                        f"your output has {out.shape[-2]} rows, expected {lq}, one per query "
                        f"({where}): when Lq is not a multiple of chunk_size the last chunk is "
                        "shorter; range(0, Lq, chunk_size) with q[..., start:start + "
                        "chunk_size, :] covers it"
                    )
                _fail(
                    f"your output has shape {tuple(out.shape)}, expected {tuple(expected.shape)} "
                    f"= (..., Lq, dv) ({where}): join the chunks' outputs along the query axis, "
                    "torch.cat(..., dim=-2)"
                )
            _expect_dtype(out, q.dtype, "your output")
            if not torch.isfinite(out).all():
                _fail(
                    f"your output contains NaN or inf ({where}, scores in the hundreds): exp() "
                    "overflows. Subtract each row's maximum score before exp (softmax is "
                    "unchanged by that), or use torch.softmax"
                )
            too_big = _scores_too_big(recorder.shapes, lq, lk, chunk)
            if too_big is not None:
                _fail(
                    f"your function made a tensor of shape {tuple(too_big)} ({where}): scores or "
                    f"weights for {too_big[-2]} queries at once, but at most chunk_size = {chunk} "
                    "query rows of scores may exist at any time. Compute q_chunk @ kᵀ for one "
                    "chunk of queries, use it, and only then move on to the next chunk. Cut "
                    "along the query axis, dim=-2: q.split(chunk_size, dim=-2) (without dim it "
                    "splits the first dim) or q[..., start:start + chunk_size, :]"
                )
            _expect_close(
                out,
                expected,
                "your output",
                where,
                mistakes=_chunk_mistakes(q, k, v, chunk),
                advice="Each chunk of queries q[..., i:i + chunk_size, :] attends to all of k "
                "and v exactly as in full attention; the chunks' outputs, in order, make the "
                "output.",
            )

        q, k, v, chunk = _chunk_cases()[1]
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        out = _tensor(_call(chunked_attention, q, k, v, chunk), "your output")
        _expect_graph(out, "your output")
        expected = scaled_dot_product_attention(q, k, v)[0]
        got, want = _grads([out], [q, k, v]), _grads([expected], [q, k, v])
        for name, g, r in zip("qkv", got, want, strict=True):
            _expect_grad(g, r, name, _shapes(q=q, k=k, v=v))
    _passed(
        "check_chunked_attention",
        "outputs equal full attention on 6 inputs (a short last chunk, batch and heads, "
        "chunk_size 1, scores in the hundreds, float64), never more than chunk_size rows of "
        "scores, gradients.",
    )


def _chunk_mistakes(q: Tensor, k: Tensor, v: Tensor, chunk: int) -> list[tuple[Any, str]]:
    """Outputs that common mistakes give, with what to say about each."""
    d = q.shape[-1]
    lk = k.shape[-2]
    # Chunking the keys: each chunk of keys gets its own softmax, and the outputs are added.
    per_key_chunk = sum(
        scaled_dot_product_attention(q, k[..., i : i + chunk, :], v[..., i : i + chunk, :])[0]
        for i in range(0, lk, chunk)
    )
    return [
        (
            _running_softmax_without_rescaling(q, k, v, chunk) if lk > chunk else None,
            "you walked over chunks of keys with a running maximum but did not rescale what you "
            "had summed so far when the maximum grew: multiply the running sum and output by "
            "exp(old_max − new_max) at each step. (Simpler: chunk only the queries; each chunk "
            "of queries sees every key)",
        ),
        (
            scaled_dot_product_attention(q, k, v, scale=1.0)[0],
            f"your scores are not scaled: divide q_chunk @ kᵀ by √d = √{d}",
        ),
        (
            per_key_chunk if lk > chunk else None,
            "you split the keys into chunks and took a softmax within each: a query's softmax "
            "needs all of its scores at once (the weights over all keys sum to 1). Chunk the "
            "queries instead: each chunk of queries sees every key",
        ),
        (
            torch.cat(
                [
                    torch.softmax(q_chunk @ k.transpose(-2, -1) / math.sqrt(d), dim=-2) @ v
                    for q_chunk in q.split(chunk, dim=-2)
                ],
                dim=-2,
            ),
            "your softmax runs over the queries (dim=-2); it runs over the keys, dim=-1, so a "
            "chunk of queries has all it needs",
        ),
    ]


def _running_softmax_without_rescaling(q: Tensor, k: Tensor, v: Tensor, chunk: int) -> Tensor:
    """Online softmax over chunks of keys that forgets to rescale the running sums."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    running_max = torch.full_like(scores[..., :1], float("-inf"))  # (..., Lq, 1)
    total = torch.zeros_like(running_max)
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)  # (..., Lq, dv)
    for i in range(0, k.shape[-2], chunk):
        s = scores[..., i : i + chunk]
        running_max = torch.maximum(running_max, s.amax(dim=-1, keepdim=True))
        weights = (s - running_max).exp()
        total = total + weights.sum(dim=-1, keepdim=True)
        out = out + weights @ v[..., i : i + chunk, :]
    return out / total
