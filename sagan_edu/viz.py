"""Pictures: image grids, where a query pixel attends, training curves and γ curves (matplotlib).

Every function draws onto a new figure (or the `ax` you pass) and returns the figure, so a notebook
shows it and a script can `fig.savefig(...)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torchvision.utils import make_grid

from sagan_edu.attention import SelfAttention2d

__all__ = [
    "collect_attention",
    "image_grid",
    "plot_attention_maps",
    "plot_gammas",
    "plot_history",
    "plot_images",
    "plot_sequence_attention",
    "query_attention_map",
]


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> one (H', W', C) image in [0, 1], tiles separated by 2 px."""
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
    return grid.permute(1, 2, 0)  # (H', W', 3): make_grid repeats a single channel to RGB


def plot_images(images: torch.Tensor, nrow: int = 8, title: str | None = None) -> Figure:
    """Show a batch of images (B, C, H, W) in [-1, 1] as a grid."""
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(
        figsize=(
            0.6 * grid.shape[1] / images.shape[-1] + 1,
            0.6 * grid.shape[0] / images.shape[-2] + 1,
        )
    )
    ax.imshow(grid.numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Looking inside attention
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def collect_attention(
    model: nn.Module, *inputs: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run `model(*inputs)` and return (output, {layer name: attention (B, N, M)}).

    A forward hook on every SelfAttention2d re-runs that layer on its own input with
    return_attention=True, so the model's forward needs no changes. Names are the model's
    `attention_layers()` keys when it has them (e.g. '16x16'), else module paths.
    """
    layers = (
        model.attention_layers()
        if hasattr(model, "attention_layers")
        else {name: m for name, m in model.named_modules() if isinstance(m, SelfAttention2d)}
    )
    maps: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(layer: SelfAttention2d, args: tuple, output: torch.Tensor) -> None:
            # .forward, not layer(...): calling the layer would run this hook again.
            _, maps[name] = layer.forward(args[0], return_attention=True)

        return hook

    handles = [layer.register_forward_hook(hook_for(name)) for name, layer in layers.items()]
    try:
        output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return output, maps


def query_attention_map(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Where one query position looks, as a picture.

    Args:
        attention: (B, N, M) from SelfAttention2d, N = H·W queries, M = (H/p)·(W/p) keys.
        feature_size: (H, W) of the feature map the layer ran on.
        query: (row, col) of the query, in `image_size` coordinates (feature-map coordinates if
            image_size is None).
        image_size: (rows, cols) to upsample the map to, so it can be laid over the image.

    Returns:
        (B, rows, cols) attention weights of that query (bilinear upsampling of the pooled
        grid, rescaled so each map still sums to 1).
    """
    H, W = feature_size
    B, N, M = attention.shape
    if N != H * W:
        raise ValueError(f"attention has {N} query rows but feature_size {H}×{W} has {H * W}")
    pool = round((N / M) ** 0.5)
    if (H // pool) * (W // pool) != M:
        raise ValueError(f"cannot lay {M} keys on a grid pooled from {H}×{W}")
    rows, cols = image_size or (H, W)
    r, c = query
    if not (0 <= r < rows and 0 <= c < cols):
        raise ValueError(f"query {query} lies outside the {rows}×{cols} image")
    n = (r * H // rows) * W + (c * W // cols)  # the query's row in the attention matrix
    grid = attention[:, n].reshape(B, 1, H // pool, W // pool).float()
    upsampled = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)
    upsampled = upsampled[:, 0]
    return upsampled / upsampled.sum(dim=(1, 2), keepdim=True)


def plot_attention_maps(
    images: torch.Tensor,
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    queries: Sequence[tuple[int, int]],
    index: int = 0,
    title: str | None = None,
) -> Figure:
    """One image with each query marked, and beside it where each query attends (overlay).

    images (B, C, S, S) in [-1, 1]; attention (B, N, M) from a layer with `feature_size` (H, W).
    """
    image = image_grid(images[index : index + 1], nrow=1)[2:-2, 2:-2]  # drop make_grid's border
    size = tuple(images.shape[-2:])
    fig, axes = plt.subplots(1, len(queries) + 1, figsize=(2.2 * (len(queries) + 1), 2.6))
    axes[0].imshow(image.numpy())
    axes[0].set_title("sample")
    colours = plt.cm.tab10.colors
    for i, (query, ax) in enumerate(zip(queries, axes[1:], strict=True)):
        heat = query_attention_map(attention[index : index + 1], feature_size, query, size)[0]
        ax.imshow(image.numpy(), alpha=0.6)
        ax.imshow(heat.numpy(), cmap="inferno", alpha=0.6)
        for a in (axes[0], ax):
            a.plot(query[1], query[0], marker="x", markersize=9, mew=2.5, color=colours[i % 10])
        ax.set_title(f"query {query}")
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sequence_attention(
    weights: torch.Tensor,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    ax=None,
) -> Figure:
    """Token-to-token attention heatmaps, tokens as tick labels.

    weights: (Lq, Lk) for one map, or (heads, Lq, Lk) for one panel per head. Row i shows how
    query token i spreads its attention over the key tokens (each row sums to 1).
    """
    weights = weights.detach().float().cpu()
    maps = weights[None] if weights.dim() == 2 else weights  # (heads, Lq, Lk)
    if maps.dim() != 3:
        raise ValueError(f"weights must be (Lq, Lk) or (heads, Lq, Lk), got {tuple(weights.shape)}")
    key_tokens = query_tokens if key_tokens is None else key_tokens
    if maps.shape[1:] != (len(query_tokens), len(key_tokens)):
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not match {len(query_tokens)} query and "
            f"{len(key_tokens)} key tokens"
        )
    if ax is not None and len(maps) != 1:
        raise ValueError("pass `ax` only for a single map; several heads get a figure of their own")
    side = 0.35 * max(len(query_tokens), len(key_tokens)) + 1.5
    if ax is None:
        fig, axes = plt.subplots(1, len(maps), figsize=(side * len(maps), side), squeeze=False)
        axes = axes[0]
    else:
        fig, axes = ax.figure, [ax]
    for i, (heat, a) in enumerate(zip(maps, axes, strict=True)):
        a.imshow(heat.numpy(), cmap="viridis", vmin=0.0, vmax=float(heat.max()) or 1.0)
        a.set_xticks(range(len(key_tokens)), key_tokens, rotation=90)
        a.set_yticks(range(len(query_tokens)), query_tokens)
        a.set_xlabel("key (attended to)")
        if i == 0:
            a.set_ylabel("query (attending)")
        if titles is not None:
            a.set_title(titles[i])
        elif len(maps) > 1:
            a.set_title(f"head {i}")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------


def plot_history(history: dict[str, list[float]]) -> Figure:
    """Losses and the mean D output on real and fake images against step."""
    steps = history["step"]
    fig, (ax_loss, ax_d) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(steps, history["loss_d"], label="D loss")
    ax_loss.plot(steps, history["loss_g"], label="G loss")
    ax_loss.set_title("losses")
    ax_d.plot(steps, history["d_real"], label="D(real)")
    ax_d.plot(steps, history["d_fake"], label="D(fake)")
    ax_d.axhline(0, color="grey", lw=0.8)
    ax_d.set_title("mean discriminator output")
    for ax in (ax_loss, ax_d):
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_gammas(history: dict[str, list[float]]) -> Figure:
    """γ of every attention layer against step.

    γ = 0 means the layer passes its input through untouched; a growing |γ| means the network is
    letting attention's output in; the sign only says in which direction it is added.
    """
    names = [name for name in history if name.startswith("gamma/")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in names:
        ax.plot(history["step"], history[name], label=name.removeprefix("gamma/"))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("γ")
    ax.set_title("attention gates γ" if names else "no attention layers")
    if names:
        ax.legend()
    fig.tight_layout()
    return fig
