"""Checks for solutions/09_ablating_attention.ipynb: turning a trained block's attention down."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sagan_edu.attention import SelfAttention2d
from sagan_edu.checks._common import (
    Tensor,
    _call,
    _expect_close,
    _expect_dtype,
    _fail,
    _fixed_seed,
    _passed,
    _randn,
    _tensor,
    checked,
)

# ---------------------------------------------------------------------------------------------
# Exercises 16 and 17: γ-scaled and uniform attention at inference time
# ---------------------------------------------------------------------------------------------


def _block_parts(block: SelfAttention2d, x: Tensor, temperature: float = 1.0) -> dict[str, Tensor]:
    """The pieces of a SAGAN block's forward pass, from its own convs (reference for the checks)."""
    B, _C, H, W = x.shape

    def pool(t: Tensor) -> Tensor:
        return F.max_pool2d(t, block.pool) if block.pool > 1 else t

    q = block.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
    k = pool(block.key(x)).flatten(2).transpose(1, 2)  # (B, M, C/8)
    v = pool(block.value(x)).flatten(2).transpose(1, 2)  # (B, M, C/2)
    scores = q @ k.transpose(1, 2) * temperature  # (B, N, M)
    if block.scaled:
        scores = scores / q.shape[-1] ** 0.5
    o = torch.softmax(scores, dim=-1) @ v  # (B, N, C/2)
    uniform = v.mean(dim=1, keepdim=True).expand(B, H * W, -1)  # every query: the mean value
    unpooled = block.value(x).flatten(2).transpose(1, 2).mean(dim=1, keepdim=True)

    def to_map(t: Tensor) -> Tensor:  # (B, N, C/2) -> out conv -> (B, C, H, W)
        return block.out(t.expand(B, H * W, -1).transpose(1, 2).reshape(B, -1, H, W))

    return {"attended": to_map(o), "uniform": to_map(uniform), "unpooled": to_map(unpooled)}


def _blocks(seed: int = 0) -> list[tuple[str, SelfAttention2d, Tensor]]:
    """Trained-looking blocks (γ ≠ 0, spectral norm, eval mode) and feature maps."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for channels, pool, shape in [
        (16, 2, (2, 16, 8, 8)),
        (32, 1, (1, 32, 4, 6)),
        (16, 2, (2, 16, 6, 10)),
    ]:
        torch.manual_seed(seed + channels + pool)
        block = SelfAttention2d(channels, pool=pool)
        block(_randn(*shape, gen=gen))  # one training-mode call: spectral norm's u settles
        with torch.no_grad():
            block.gamma.fill_(0.8)
        block.eval()
        x = _randn(*shape, gen=gen)
        cases.append(
            (f"a SAGAN block (channels={channels}, pool={pool}, γ=0.8), x {shape}", block, x)
        )
    return cases


def _expect_block_unchanged(block: SelfAttention2d, before: dict[str, Tensor], what: str) -> None:
    for name, value in block.state_dict().items():
        if not torch.equal(value, before[name]):
            why = ""
            if name.endswith((".u", ".v")):  # spectral norm's power iteration ran
                why = (
                    " In training mode every forward pass runs a step of spectral norm's power "
                    "iteration and updates u: leave the block in eval mode (no block.train())."
                )
            elif name == "gamma" and not torch.isfinite(value).all():  # γ·0 / 0
                why = " Dividing by scale does not undo a scale of 0: save γ and copy it back."
            _fail(
                f"your {what} changed the block's `{name}` and left it changed: a function that "
                "ablates attention for one forward pass must leave the model as it found it "
                f"(if you change γ, put the old value back, e.g. in a try/finally).{why}"
            )
    if block.training:
        _fail(f"your {what} left the block in training mode; it was in eval mode")


def _output(value: object, what: str) -> Tensor:
    if isinstance(value, tuple | list):
        _fail(f"{what} returned {len(value)} things; return only the block's output y")
    return _tensor(value, what)


@checked
def check_scaled_attention(scaled_attention: Callable[..., Tensor]) -> None:
    """Exercise 16: `scaled_attention(block, x, scale)` -> y = x + scale·γ·o.

    The block's attention output o is added with scale·γ instead of γ: scale = 0 removes
    attention, 1 is the block as trained, 2 doubles attention's contribution.
    """
    with _fixed_seed(), torch.no_grad():
        for description, block, x in _blocks():
            parts = _block_parts(block, x)
            for scale in (0.0, 0.5, 1.0, 2.0):
                hot = _block_parts(block, x, temperature=scale)["attended"]
                where = f"{description}, scale={scale}"
                expected = x + scale * block.gamma * parts["attended"]
                before = copy.deepcopy(block.state_dict())
                got = _output(_call(scaled_attention, block, x.clone(), scale), "your function")
                _expect_block_unchanged(block, before, "function")
                if got.shape != x.shape:
                    _fail(
                        f"your y has shape {tuple(got.shape)}, expected {tuple(x.shape)} ({where})"
                    )
                _expect_dtype(got, x.dtype, "your y")
                _expect_close(
                    got, expected, "your y", where,
                    mistakes=[
                        (scale * (x + block.gamma * parts["attended"]) if scale != 1 else None,
                         "you scaled the whole output, x included; only attention's part is "
                         "scaled: y = x + scale·γ·o, so scale = 0 gives back x"),
                        (x + block.gamma * hot if scale != 1 else None,
                         "you scaled the scores before the softmax (a temperature), which changes "
                         "where attention looks; the ablation keeps the weights and scales how "
                         "much of their output is added: y = x + scale·γ·o"),
                        (x + scale * (x + block.gamma * parts["attended"]),
                         "you added scale·block(x), but block(x) = x + γ·o already contains x: "
                         "y = x + scale·(block(x) − x) = x + scale·γ·o"),
                        (x + scale * parts["attended"] if scale != 0 else None,
                         "you dropped γ: the block adds γ·o, and the ablation scales that, "
                         "y = x + scale·γ·o"),
                    ],
                    advice="y = x + scale·γ·o, where x + γ·o is what the block returns.",
                )  # fmt: skip
    _passed(
        "check_scaled_attention",
        "3 blocks (pool 1 and 2, non-square maps) at scales 0, 0.5, 1 and 2; the block is left "
        "unchanged.",
    )


@checked
def check_uniform_attention(uniform_attention: Callable[..., Tensor]) -> None:
    """Exercise 17: `uniform_attention(block, x)` -> y = x + γ·out(mean of the values).

    Every query's weights are replaced by 1/M over the M pooled keys, so each position receives
    the same average of the (pooled) values: attention that cannot choose where to look.
    """
    with _fixed_seed(), torch.no_grad():
        for where, block, x in _blocks(seed=1):
            parts = _block_parts(block, x)
            expected = x + block.gamma * parts["uniform"]
            before = copy.deepcopy(block.state_dict())
            hint = (
                "o, the mean of the pooled values, has C/2 channels (block.value's output); "
                "block.out maps it back to C channels: y = x + γ·block.out(o)."
            )
            got = _output(_call(uniform_attention, block, x.clone(), hint=hint), "your function")
            _expect_block_unchanged(block, before, "function")
            if got.shape != x.shape:
                _fail(
                    f"your y has shape {tuple(got.shape)}, expected x's {tuple(x.shape)} ({where})"
                )
            _expect_dtype(got, x.dtype, "your y")
            _expect_close(
                got, expected, "your y", where,
                mistakes=[
                    (x, "you returned x: that removes attention altogether (γ = 0). Uniform "
                     "attention still adds γ·out(o), with o the plain average of the values"),
                    (x + block.gamma * parts["unpooled"] if block.pool > 1 else None,
                     "you averaged the values over all N positions before pooling; the keys and "
                     "values the block attends to are max-pooled, so average the M pooled values"),
                    (x + parts["uniform"],
                     "you dropped γ: the block adds γ·out(o), y = x + γ·out(mean of v)"),
                    (x + block.gamma * parts["attended"],
                     "that is the block's own output: replace its weights by 1/M"),
                ],
                advice="With weights 1/M every query gets o = the mean of the M pooled values; "
                "y = x + γ·out(o) at every position.",
            )  # fmt: skip
    _passed(
        "check_uniform_attention",
        "3 blocks (pool 1 and 2, non-square maps) against uniform weights 1/M; the block is left "
        "unchanged.",
    )
