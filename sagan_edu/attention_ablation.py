"""Switch a trained network's self-attention off, or blur it, at inference time: causal tests.

A GAN trained with attention may or may not *use* it. Two ways to ask the trained model:

- `scaled_attention(G, 0)`: every SelfAttention2d computes y = x + 0·o = x, so the network runs
  as if the blocks were not there. If the samples lose their long-range structure, the network
  relied on attention for it. Other scales (0.5, 2) turn the attention output down or up.
- `uniform_attention(G)`: every query averages all positions alike instead of choosing where to
  look. The block still passes a global summary of the map, but no position-specific message:
  if the samples survive this, attention was used as a global pooling, not as "look over there".

Both are context managers that restore the model exactly on exit, also after an exception:

    with scaled_attention(G_ema, 0.0):
        samples_without = G_ema(z)
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import torch
from torch import nn

from sagan_edu.attention import SelfAttention2d

__all__ = ["attention_blocks", "scaled_attention", "uniform_attention"]


def attention_blocks(model: nn.Module) -> list[SelfAttention2d]:
    """Every SelfAttention2d inside `model`, in module order (empty if it has none)."""
    return [m for m in model.modules() if isinstance(m, SelfAttention2d)]


@contextlib.contextmanager
def scaled_attention(model: nn.Module, scale: float) -> Iterator[nn.Module]:
    """Multiply every attention block's γ by `scale` inside the `with` block; scale=0 removes them.

    The original γ values are copied before the change and copied back afterwards, so the model
    leaves bit-identical (gradients are not touched: γ is changed in place under no_grad).
    """
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number (0 switches attention off), got {scale!r}")
    blocks = attention_blocks(model)
    saved = [block.gamma.detach().clone() for block in blocks]
    try:
        with torch.no_grad():
            for block in blocks:
                block.gamma.mul_(scale)
        yield model
    finally:
        with torch.no_grad():
            for block, gamma in zip(blocks, saved, strict=True):
                block.gamma.copy_(gamma)


@contextlib.contextmanager
def uniform_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the `with` block every attention block gives all positions equal weight 1/M.

    Sets each block's `uniform` flag (read by SelfAttention2d.forward) and restores its old value.
    """
    blocks = attention_blocks(model)
    saved = [block.uniform for block in blocks]
    try:
        for block in blocks:
            block.uniform = True
        yield model
    finally:
        for block, uniform in zip(blocks, saved, strict=True):
            block.uniform = uniform
