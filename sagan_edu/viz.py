"""Pictures: image grids, where a query pixel attends, training curves and γ curves (matplotlib).

Every function draws onto a new figure (or the `ax` you pass) and returns the figure, so a notebook
shows it and a script can `fig.savefig(...)`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torchvision.utils import make_grid

from sagan_edu.attention import SelfAttention2d
from sagan_edu.attention_ablation import scaled_attention
from sagan_edu.attention_maps import (  # re-exported: notebooks import them from here too
    attention_entropy,
    check_pair,
    mean_attention_distance,
    pool_factor,
    query_index,
    uniform_attention_distance,
    uniform_distance_per_query,
)

__all__ = [
    "AttentionView",
    "as_head_maps",
    "attention_entropy",
    "attention_layer_names",
    "attention_view",
    "collect_attention",
    "discriminator_attention",
    "draw_attention_grid",
    "generate_with_attention",
    "image_grid",
    "key_weight_grid",
    "make_attention_view",
    "mean_attention_distance",
    "plot_attention_distances",
    "plot_attention_grid",
    "plot_attention_maps",
    "plot_distance_per_query",
    "plot_gammas",
    "plot_history",
    "plot_images",
    "plot_sequence_attention",
    "plot_sequence_attention_layers",
    "pool_factor",
    "query_attention_map",
    "query_index",
    "uniform_attention_distance",
    "uniform_distance_per_query",
    "weight_summary",
]


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> one (H', W', C) image in [0, 1], tiles separated by 2 px."""
    check_images(images)
    if not isinstance(nrow, numbers.Integral) or isinstance(nrow, bool) or nrow < 1:
        raise ValueError(f"nrow, the images per row, must be a whole number ≥ 1, got {nrow!r}")
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
    return grid.permute(1, 2, 0)  # (H', W', 3): make_grid repeats a single channel to RGB


def check_images(images: object, name: str = "images") -> None:
    """A non-empty (B, C, H, W) tensor of grey (C = 1) or colour (C = 3) images."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a (B, C, H, W) torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.size(1) not in (1, 3):
        hint = (
            f"; channels come second in PyTorch: {name}.permute(0, 3, 1, 2)"
            if images.dim() == 4 and images.size(-1) in (1, 3)
            else f"; for one image use {name}[None]"
            if images.dim() == 3
            else ""
        )
        raise ValueError(
            f"{name} must have shape (B, C, H, W) with C = 1 or 3, got {tuple(images.shape)}{hint}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty (batch size 0); pass at least one image")


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
    _check_attention(attention)
    H, W = check_pair("feature_size", feature_size)
    B, N, M = attention.shape
    pool = pool_factor(N, M, (H, W))
    rows, cols = (H, W) if image_size is None else check_pair("image_size", image_size)
    n = query_index((H, W), query, (rows, cols))  # the query's row in the attention matrix
    grid = attention[:, n].reshape(B, 1, H // pool, W // pool).float()
    upsampled = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)
    upsampled = upsampled[:, 0]
    return upsampled / upsampled.sum(dim=(1, 2), keepdim=True)


def _check_attention(attention: object) -> None:
    if not isinstance(attention, torch.Tensor) or attention.dim() != 3:
        shape = tuple(attention.shape) if isinstance(attention, torch.Tensor) else None
        raise ValueError(
            "attention must be a (B, N, M) tensor of weights, as SelfAttention2d returns with "
            f"return_attention=True, got {shape or type(attention).__name__}; for one map use "
            "attention[None]"
        )


def key_weight_grid(
    attention: torch.Tensor, feature_size: tuple[int, int], query: int
) -> torch.Tensor:
    """Row `query` of attention (N, M), laid out on the pooled key grid: (H/pool, W/pool)."""
    H, W = feature_size
    pool = pool_factor(*attention.shape[-2:], feature_size)
    return attention[query].reshape(H // pool, W // pool).float()


def weight_summary(weights: torch.Tensor) -> str:
    """'max 0.052 (even 0.016) · entropy 3.9 of 4.16 nats' for one query's weights (any shape).

    The even-spread values (1/M and ln M) say what a query that looks everywhere alike would get:
    a maximum near 1/M and an entropy near ln M mean "no preference", however the colours look.
    """
    w = weights.flatten()  # (M,)
    M = w.numel()
    entropy = float(attention_entropy(w[None])[0])
    return (
        f"max {float(w.max()):.3f} (even {1 / M:.3f})\n"
        f"entropy {entropy:.2f} of {math.log(M):.2f} nats"
    )


def _draw_key_weights(ax, weights: torch.Tensor, image_size: tuple[int, int], vmax: float):
    """Lay a (h, w) grid of key weights over an image of `image_size`, colours from 0 to vmax.

    Each pooled key is drawn as the block of pixels it covers (no smoothing), so what you see
    is what the layer weights.
    """
    rows, cols = image_size
    return ax.imshow(
        weights.numpy(),
        cmap="inferno",
        alpha=0.65,
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
        extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),  # the grid covers the whole image
    )


def _weight_colorbar(fig: Figure, mappable, axes, num_keys: int, label: str = "weight on a key"):
    """One colour bar for panels that share a colour scale, with the even-spread level 1/M."""
    bar = fig.colorbar(mappable, ax=list(axes), shrink=0.85, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.ax.axhline(1 / num_keys, color="white", lw=1.5, ls="--")
    bar.ax.text(1.0, 1 / num_keys, "  even", va="center", ha="left", fontsize=6, color="grey",
                transform=bar.ax.get_yaxis_transform())  # fmt: skip
    return bar


def plot_attention_maps(
    images: torch.Tensor,
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    queries: Sequence[tuple[int, int]],
    index: int = 0,
    title: str | None = None,
    vmax: float | None = None,
) -> Figure:
    """One image with each query marked, and beside it where each query attends (overlay).

    images (B, C, S, S) in [-1, 1]; attention (B, N, M) from a layer with `feature_size` (H, W).
    The overlays share one colour scale, from 0 to `vmax` (default: the largest weight shown),
    with a colour bar that marks the even-spread level 1/M; each panel prints its query's
    largest weight and entropy, so near-even attention cannot pass for structure.
    """
    check_images(images)
    _check_attention(attention)
    if not -len(images) <= index < len(images) or len(attention) != len(images):
        raise ValueError(
            f"index {index} must pick one of the {len(images)} images, and attention must hold "
            f"one map per image, got {len(attention)}"
        )
    images, attention = images.detach().cpu(), attention.detach().cpu()  # GPU tensors welcome
    size = tuple(images.shape[-2:])
    rows = [query_index(feature_size, query, size) for query in queries]
    grids = [key_weight_grid(attention[index], feature_size, n) for n in rows]  # (h, w) each
    vmax = vmax or max(float(g.max()) for g in grids)
    picture, cmap = _as_picture(images[index])
    fig, axes = plt.subplots(
        1, len(queries) + 1, figsize=(2.2 * (len(queries) + 1) + 0.8, 3.0), layout="constrained"
    )
    axes[0].imshow(picture, cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title("sample", fontsize=9)
    colours = plt.cm.tab10.colors
    for i, (query, grid, ax) in enumerate(zip(queries, grids, axes[1:], strict=True)):
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1)
        shown = _draw_key_weights(ax, grid, size, vmax)
        for a in (axes[0], ax):
            a.plot(query[1], query[0], marker="x", markersize=9, mew=2.5, color=colours[i % 10])
        ax.set_title(f"query {tuple(query)}\n{weight_summary(grid)}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    _weight_colorbar(fig, shown, axes[1:], attention.shape[-1])
    if title:
        fig.suptitle(title)
    return fig


def plot_sequence_attention(
    weights: torch.Tensor,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    ax=None,
    vmax: float | None = None,
    colorbar: bool = True,
) -> Figure:
    """Token-to-token attention heatmaps, tokens as tick labels.

    weights: (Lq, Lk) for one map, or (heads, Lq, Lk) for one panel per head. Row i shows how
    query token i spreads its attention over the key tokens (each row sums to 1). All panels
    share one colour scale from 0 to `vmax` (default: the largest weight shown) and a colour
    bar marking the even-spread level 1/Lk; each panel's title gives its largest weight and
    its rows' mean entropy.
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
    vmax = vmax or float(maps.max()) or 1.0
    side = 0.35 * max(len(query_tokens), len(key_tokens)) + 1.5
    if ax is None:
        fig, axes = plt.subplots(
            1, len(maps), figsize=(side * len(maps) + 0.8, side + 0.4), squeeze=False,
            layout="constrained",
        )  # fmt: skip
        axes = axes[0]
    else:
        fig, axes = ax.figure, [ax]
    for i, (heat, a) in enumerate(zip(maps, axes, strict=True)):
        shown = a.imshow(heat.numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
        a.set_xticks(range(len(key_tokens)), key_tokens, rotation=90)
        a.set_yticks(range(len(query_tokens)), query_tokens)
        a.set_xlabel("key (attended to)")
        if i == 0:
            a.set_ylabel("query (attending)")
        name = titles[i] if titles is not None else (f"head {i}" if len(maps) > 1 else "")
        entropy = float(attention_entropy(heat).mean())
        stats = (
            f"max {float(heat.max()):.2f}, entropy {entropy:.2f} of {math.log(heat.shape[-1]):.2f}"
        )
        a.set_title(f"{name}\n{stats}" if name else stats, fontsize=8)
    if colorbar:
        _weight_colorbar(fig, shown, axes, maps.shape[-1], label="attention weight")
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------


def plot_history(history: dict[str, list[float]]) -> Figure:
    """Losses and the mean D output on real and fake images against step."""
    names = ("step", "loss_d", "loss_g", "d_real", "d_fake")
    if not isinstance(history, Mapping):
        raise ValueError(
            f"history must be a dict of lists, as trainer.history, got {type(history).__name__}; "
            "for a run folder load it with json.loads(Path('RUN/history.json').read_text())"
        )
    missing = [k for k in names if k not in history]
    if missing:
        raise ValueError(
            f"history lacks {', '.join(missing)}: pass a Trainer's history after at least one "
            "log (trainer.history, or history.json of a run folder)"
        )
    lengths = {k: len(history[k]) for k in names}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history's lists must be equally long (one entry per log), got {lengths}")
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


# ---------------------------------------------------------------------------------------------
# How far a query looks, and the attention explorers' static twins
#
# sagan_edu.widgets lets you pick a layer, a sample and a query pixel interactively. Everything
# it draws comes from the functions below, so a notebook can show the same picture for a fixed
# choice where widgets cannot render (GitHub, nbviewer, CI).
# ---------------------------------------------------------------------------------------------


def plot_attention_distances(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
    title: str | None = None,
    ax=None,
) -> Figure:
    """Histogram of every query's mean attention distance, beside the even-spread baseline.

    attention (B, N, M) or (N, M): all B·N queries go into one histogram (blue). The grey outline
    is the histogram of the same queries' even-spread distances (`uniform_distance_per_query`):
    a centre query gets less than a corner one even when it looks everywhere alike. Blue mass
    left of the grey means "looks nearer than an even spread would".
    """
    distances = mean_attention_distance(attention, feature_size, image_size).flatten().cpu()
    uniform = uniform_attention_distance(attention, feature_size, image_size).flatten().cpu()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    else:
        fig = ax.figure
    bins = torch.linspace(0, float(max(distances.max(), uniform.max())) + 1e-6, 31).numpy()
    ax.hist(distances.numpy(), bins=bins, color="tab:blue", alpha=0.8, label="measured")
    ax.hist(uniform.numpy(), bins=bins, histtype="step", color="grey", lw=1.5,
            label="even spread, same queries")  # fmt: skip
    ax.axvline(float(distances.mean()), color="tab:red", lw=2,
               label=f"mean measured: {float(distances.mean()):.1f} px")  # fmt: skip
    ax.axvline(float(uniform.mean()), color="grey", ls="--", lw=2,
               label=f"mean even spread: {float(uniform.mean()):.1f} px")  # fmt: skip
    ax.set_xlabel("mean attention distance (pixels)")
    ax.set_ylabel("queries")
    ax.set_title(title or "how far queries look")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_distance_per_query(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
    title: str | None = None,
) -> Figure:
    """Each query's mean attention distance as a map, beside the even-spread baseline per query.

    attention (B, N, M) or (N, M); the measured map averages the B samples. Three panels: the
    measured distance per query position, what an even spread from that position would give
    (both on one colour scale), and measured minus even spread (blue: looks nearer than an even
    spread would, red: further).
    """
    H, W = feature_size
    measured = mean_attention_distance(attention, feature_size, image_size).cpu()
    measured = measured.reshape(-1, H, W).mean(0)  # (H, W), averaged over samples
    pool = pool_factor(*attention.shape[-2:], feature_size)
    uniform = uniform_distance_per_query(feature_size, pool, image_size).float().reshape(H, W)
    difference = measured - uniform
    rows, cols = image_size or (H, W)
    extent = (0, cols, rows, 0)  # axes in image pixels
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4), layout="constrained")
    top = float(max(measured.max(), uniform.max()))
    for ax, values, name in ((axes[0], measured, "measured"), (axes[1], uniform, "even spread")):
        shown = ax.imshow(values.numpy(), cmap="viridis", vmin=0, vmax=top, extent=extent)
        spread = f"min {float(values.min()):.1f}, max {float(values.max()):.1f}"
        ax.set_title(f"{name}: mean {float(values.mean()):.1f} px\n({spread})", fontsize=9)
    fig.colorbar(shown, ax=axes[:2], label="mean attention distance (px)", shrink=0.85)
    limit = float(difference.abs().max()) or 1.0
    shown = axes[2].imshow(difference.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit,
                           extent=extent)  # fmt: skip
    axes[2].set_title(
        f"measured − even spread\nmean {float(difference.mean()):+.1f} px", fontsize=9
    )
    fig.colorbar(shown, ax=axes[2], label="difference (px)", shrink=0.85)
    for ax in axes:
        ax.set_xlabel("query column (px)")
    axes[0].set_ylabel("query row (px)")
    if title:
        fig.suptitle(title)
    return fig


def attention_layer_names(
    generator: nn.Module, discriminator: nn.Module | None = None
) -> list[str]:
    """Every attention layer of G (and D), named like the training history: 'G/16x16', 'D/16x16'."""
    names = [f"G/{name}" for name in generator.attention_layers()]
    if discriminator is not None:
        names += [f"D/{name}" for name in discriminator.attention_layers()]
    return names


@torch.no_grad()
def generate_with_attention(
    generator: nn.Module, seed: int = 0, label: int | None = None, gamma_scale: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One image (1, C, S, S) from `seed` and G's attention maps {name: (1, N, M)}.

    The noise is drawn as `sagan_edu.training.sample_images(generator, 1, seed)` draws it, so the
    same seed gives the same picture. G runs in eval mode (BatchNorm with running statistics).
    `gamma_scale` multiplies every attention layer's γ while G runs (0 switches attention off:
    y = x + 0·o), to see what attention changes in the sample.
    """
    device = next(generator.parameters()).device
    z = torch.randn(
        1, generator.z_dim, generator=torch.Generator(device).manual_seed(seed), device=device
    )
    y = None
    if generator.num_classes is not None:
        y = torch.tensor([0 if label is None else label], device=device)
    with scaled_attention(generator, gamma_scale):
        image, maps = _collect_in_eval_mode(generator, z, y)
    return image.float(), maps


@torch.no_grad()
def discriminator_attention(
    discriminator: nn.Module, image: torch.Tensor, label: int | None = None
) -> dict[str, torch.Tensor]:
    """D's attention maps {name: (1, N, M)} while it judges one image (1, C, S, S)."""
    device = next(discriminator.parameters()).device
    y = None
    if discriminator.num_classes is not None:
        y = torch.tensor([0 if label is None else label], device=device)
    _, maps = _collect_in_eval_mode(discriminator, image.to(device), y)
    return maps


def _collect_in_eval_mode(
    model: nn.Module, *inputs: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """collect_attention in eval mode (BatchNorm stats and spectral norm frozen), then restore."""
    was_training = model.training
    model.eval()
    try:
        return collect_attention(model, *inputs)
    finally:
        model.train(was_training)


@dataclass
class AttentionView:
    """One image and one layer's attention on it: what the explorer and its twin draw."""

    layer: str  # e.g. "G/16x16"
    image: torch.Tensor  # (C, S, S) in [-1, 1]: the picture the queries live on
    attention: torch.Tensor  # (N, M): row n is where query n looks
    feature_size: tuple[int, int]  # (H, W) of the layer's feature map, H·W = N
    gamma: float  # the layer's gate: y = x + γ·o

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image.shape[-2], self.image.shape[-1])

    def heat(self, query: tuple[int, int]) -> torch.Tensor:
        """(S, S): where `query` (row, col in image pixels) looks, upsampled to the image."""
        heat = query_attention_map(self.attention[None], self.feature_size, query, self.image_size)
        return heat[0]

    def distance(self, query: tuple[int, int]) -> float:
        """The query's mean attention distance in image pixels."""
        distances = mean_attention_distance(self.attention, self.feature_size, self.image_size)
        return float(distances[query_index(self.feature_size, query, self.image_size)])

    def uniform_distance(self, query: tuple[int, int]) -> float:
        """What the distance would be if the query spread its attention evenly."""
        distances = uniform_attention_distance(self.attention, self.feature_size, self.image_size)
        return float(distances[query_index(self.feature_size, query, self.image_size)])


def make_attention_view(
    layer: str,
    image: torch.Tensor,
    maps: dict[str, torch.Tensor],
    model: nn.Module,
) -> AttentionView:
    """Pick `layer` ('G/16x16' or 'D/16x16') out of `maps` from `collect_attention(model, …)`."""
    name = layer.split("/", 1)[1]
    if name not in maps:
        raise ValueError(f"no attention layer {layer!r}; the model has {', '.join(maps)}")
    attention = maps[name][0].float().cpu()  # (N, M)
    side = round(attention.shape[0] ** 0.5)  # the course's feature maps are square
    gamma = model.attention_layers()[name].gamma.item()
    return AttentionView(layer, image[0].float().cpu(), attention, (side, side), gamma)


def attention_view(
    generator: nn.Module,
    layer: str,
    seed: int = 0,
    discriminator: nn.Module | None = None,
    label: int | None = None,
    real_image: torch.Tensor | None = None,
    gamma_scale: float = 1.0,
) -> AttentionView:
    """Generate the sample for `seed` (and `label`) and return `layer`'s attention on it.

    For a D layer ('D/…'), D judges the generated image, or `real_image` (C, S, S) if given.
    `gamma_scale` multiplies G's γs while it draws the sample (see `generate_with_attention`).
    """
    image, g_maps = generate_with_attention(generator, seed, label, gamma_scale)
    if layer.startswith("G/"):
        return make_attention_view(layer, image, g_maps, generator)
    if not layer.startswith("D/") or discriminator is None:
        raise ValueError(
            f"layer must be one of {attention_layer_names(generator, discriminator)}, got {layer!r}"
            + ("" if discriminator is not None else " (pass discriminator= for D's layers)")
        )
    if real_image is not None:
        image = real_image[None].float()
    maps = discriminator_attention(discriminator, image, label)
    return make_attention_view(layer, image, maps, discriminator)


def _as_picture(image: torch.Tensor):
    """(C, S, S) in [-1, 1] -> a numpy array imshow can draw, and the colormap to use."""
    picture = ((image.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if picture.shape[0] == 1:
        return picture[0].numpy(), "gray"
    return picture.permute(1, 2, 0).numpy(), None


def draw_attention_grid(
    fig: Figure,
    view: AttentionView,
    queries: Sequence[tuple[int, int]],
    vmax: float | None = None,
    reference: torch.Tensor | None = None,
    gamma_scale: float = 1.0,
) -> list[float]:
    """Draw onto `fig`: the image with every query marked, then one overlay per query.

    Each overlay lays the query's weights on the pooled keys over the image. All overlays share
    one colour scale, from 0 to `vmax` (default: the largest weight any query of this layer puts
    on a key, so the scale stays put while the query moves), with a colour bar marking the
    even-spread level 1/M. Each title gives the query's largest weight and entropy, and its mean
    attention distance beside what an even spread from that query would give.

    `reference` (C, S, S): the sample G draws with its attention at full strength, when `view`
    shows G's sample drawn with every γ scaled by `gamma_scale` (the explorer's γ control); a
    last panel then shows where the two differ. Returns the mean distances, one per query.
    """
    picture, cmap = _as_picture(view.image)
    n_panels = len(queries) + 1 + (reference is not None)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    fig.set_layout_engine("constrained")
    axes[0].imshow(picture, cmap=cmap, vmin=0, vmax=1)
    what = "G's sample" if view.layer.startswith("G/") else "D's input"
    scaled = "" if gamma_scale == 1 else f", G's γ × {gamma_scale:g}"
    axes[0].set_title(f"{what}{scaled}\n{view.layer}: γ = {view.gamma:+.3f}", fontsize=8)
    vmax = vmax or float(view.attention.max())
    colours = plt.cm.tab10.colors
    distances = []
    for i, (query, ax) in enumerate(zip(queries, axes[1 : len(queries) + 1], strict=True)):
        n = query_index(view.feature_size, query, view.image_size)
        grid = key_weight_grid(view.attention, view.feature_size, n)  # (H/pool, W/pool)
        distances.append(view.distance(query))
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1)
        shown = _draw_key_weights(ax, grid, view.image_size, vmax)
        for a in (axes[0], ax):
            a.plot(query[1], query[0], marker="x", markersize=10, mew=3, color=colours[i % 10])
        ax.set_title(
            f"query {tuple(query)}: {distances[-1]:.1f} px\n(even spread "
            f"{view.uniform_distance(query):.1f} px)\n{weight_summary(grid)}",
            fontsize=7,
        )
    if reference is not None:
        change = (view.image - reference.float().cpu()).abs().amax(dim=0)  # (S, S), 0 to 2
        axes[-1].imshow(change.numpy(), cmap="magma", vmin=0, vmax=2)
        axes[-1].set_title(
            f"|change| from γ × 1\n(0 black, 2 white)\nmean {float(change.mean()):.3f}", fontsize=7
        )
    for ax in axes:
        ax.set_axis_off()
    _weight_colorbar(fig, shown, axes[1 : len(queries) + 1], view.attention.shape[-1])
    return distances


def plot_attention_grid(
    generator: nn.Module,
    layer: str,
    seed: int = 0,
    queries: Sequence[tuple[int, int]] = ((8, 8), (16, 16), (24, 24)),
    discriminator: nn.Module | None = None,
    label: int | None = None,
    real_image: torch.Tensor | None = None,
    vmax: float | None = None,
    gamma_scale: float = 1.0,
) -> Figure:
    """The AttentionExplorer's picture for a fixed choice: its static twin.

    Generates the sample for `seed` (and class `label`), runs `layer` ('G/16x16', or 'D/16x16'
    with `discriminator`, on the sample or on `real_image`), and draws where each query
    (row, col in image pixels) looks, with its mean attention distance and the layer's γ.
    `vmax` fixes the top of the colour scale (pass the same value to compare figures).
    `gamma_scale` draws the sample with every γ of G multiplied by it (0: attention off), as
    the explorer's γ control does, and adds a panel with the change from γ × 1.
    """
    view = attention_view(
        generator, layer, seed, discriminator, label, real_image, gamma_scale=gamma_scale
    )
    reference = None
    if gamma_scale != 1 and real_image is None:
        reference = generate_with_attention(generator, seed, label)[0][0]  # (C, S, S)
    n_panels = len(queries) + 1 + (reference is not None)
    fig = plt.figure(figsize=(2.2 * n_panels + 0.8, 3.2))
    draw_attention_grid(fig, view, queries, vmax, reference, gamma_scale)
    return fig


def as_head_maps(weights: torch.Tensor) -> torch.Tensor:
    """(L, L), (heads, Lq, Lk) or (1, heads, Lq, Lk) -> (heads, Lq, Lk) float on the CPU."""
    weights = weights.detach().float().cpu()
    if weights.dim() == 4 and weights.size(0) == 1:
        weights = weights[0]  # MultiHeadAttention's (B, heads, Lq, Lk) for one sequence
    if weights.dim() == 2:
        weights = weights[None]
    if weights.dim() != 3:
        raise ValueError(
            f"attention weights must be (L, L), (heads, Lq, Lk) or (1, heads, Lq, Lk), got "
            f"{tuple(weights.shape)}"
        )
    return weights


def plot_sequence_attention_layers(
    tokens: Sequence[str],
    weights: dict[str, torch.Tensor],
    key_tokens: Sequence[str] | None = None,
) -> Figure:
    """Every layer's every head as token-to-token heatmaps: SequenceAttentionExplorer's twin.

    weights: {layer name: (heads, Lq, Lk)} (or (L, L), or (1, heads, Lq, Lk) as
    MultiHeadAttention returns it for one sequence). One row of panels per layer.
    """
    maps = {name: as_head_maps(w) for name, w in weights.items()}
    n_cols = max(w.shape[0] for w in maps.values())
    vmax = max(float(w.max()) for w in maps.values())  # one colour scale for every panel
    side = 0.3 * max(len(tokens), len(key_tokens or tokens)) + 1.5
    fig, axes = plt.subplots(
        len(maps), n_cols, figsize=(side * n_cols + 0.8, (side + 0.4) * len(maps)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for row, (name, heads) in zip(axes, maps.items(), strict=True):
        for h, ax in enumerate(row):
            if h < heads.shape[0]:
                plot_sequence_attention(
                    heads[h], tokens, key_tokens, [f"{name}, head {h}"], ax=ax, vmax=vmax,
                    colorbar=False,
                )  # fmt: skip
            else:
                ax.set_axis_off()  # this layer has fewer heads than the widest one
    num_keys = len(key_tokens or tokens)
    _weight_colorbar(fig, axes[0, 0].get_images()[0], axes.ravel(), num_keys, "attention weight")
    return fig
