"""Pictures: image grids, where a query pixel attends, training curves and γ curves (matplotlib).

Every function draws onto a new figure (or the `ax` you pass) and returns the figure, so a notebook
shows it and a script can `fig.savefig(...)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torchvision.utils import make_grid

from sagan_edu.attention import SelfAttention2d

__all__ = [
    "AttentionView",
    "as_head_maps",
    "attention_layer_names",
    "attention_view",
    "collect_attention",
    "discriminator_attention",
    "draw_attention_grid",
    "generate_with_attention",
    "image_grid",
    "make_attention_view",
    "mean_attention_distance",
    "plot_attention_distances",
    "plot_attention_grid",
    "plot_attention_maps",
    "plot_gammas",
    "plot_history",
    "plot_images",
    "plot_sequence_attention",
    "plot_sequence_attention_layers",
    "query_attention_map",
    "query_index",
    "uniform_attention_distance",
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
    pool = _pool_factor(N, M, (H, W))
    rows, cols = image_size or (H, W)
    r, c = query
    if not (0 <= r < rows and 0 <= c < cols):
        raise ValueError(f"query {query} lies outside the {rows}×{cols} image")
    n = (r * H // rows) * W + (c * W // cols)  # the query's row in the attention matrix
    grid = attention[:, n].reshape(B, 1, H // pool, W // pool).float()
    upsampled = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)
    upsampled = upsampled[:, 0]
    return upsampled / upsampled.sum(dim=(1, 2), keepdim=True)


def _pool_factor(N: int, M: int, feature_size: tuple[int, int]) -> int:
    """How much a layer pooled its keys: N queries and M keys on an H×W map give pool."""
    H, W = feature_size
    if N != H * W:
        raise ValueError(f"attention has {N} query rows but feature_size {H}×{W} has {H * W}")
    pool = round((N / M) ** 0.5)
    if (H // pool) * (W // pool) != M:
        raise ValueError(f"cannot lay {M} keys on a grid pooled from {H}×{W}")
    return pool


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
    images, attention = images.detach().cpu(), attention.detach().cpu()  # GPU tensors welcome
    image = image_grid(images[index : index + 1], nrow=1)  # one image: make_grid adds no border
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
    missing = [k for k in ("step", "loss_d", "loss_g", "d_real", "d_fake") if k not in history]
    if missing:
        raise ValueError(
            f"history lacks {', '.join(missing)}: pass a Trainer's history after at least one "
            "log (trainer.history, or history.json of a run folder)"
        )
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


def query_index(
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None = None,
) -> int:
    """The row of the attention matrix that belongs to `query` (row, col).

    `query` is in `image_size` coordinates (feature-map coordinates if image_size is None); the
    query pixel belongs to the feature-map cell that covers it, as in `query_attention_map`.
    """
    H, W = feature_size
    rows, cols = image_size or (H, W)
    r, c = query
    if not (0 <= r < rows and 0 <= c < cols):
        raise ValueError(f"query {query} lies outside the {rows}×{cols} image")
    return (r * H // rows) * W + (c * W // cols)


def mean_attention_distance(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """How far each query looks: Σ_k w_k·‖pos_k − pos_q‖, in pixels of the image.

    Args:
        attention: (B, N, M) or (N, M) from SelfAttention2d, N = H·W queries, M pooled keys.
        feature_size: (H, W) of the feature map the layer ran on.
        image_size: (rows, cols) of the image, to measure in image pixels (feature-map cells if
            None).

    Returns:
        (B, N) or (N,): the attention-weighted mean distance from each query to the keys. Query
        and key positions are the centres of their cells (a pooled key covers pool×pool cells).
        A 3×3 conv sees about 1 cell away; a value near the image's width means "long-range".
    """
    H, W = feature_size
    N, M = attention.shape[-2:]
    pool = _pool_factor(N, M, (H, W))
    rows, cols = image_size or (H, W)
    cell_h, cell_w = rows / H, cols / W  # image pixels per feature-map cell
    queries = _cell_centres(H, W, cell_h, cell_w)  # (N, 2)
    keys = _cell_centres(H // pool, W // pool, cell_h * pool, cell_w * pool)  # (M, 2)
    distances = torch.cdist(queries, keys).to(attention.device)  # (N, M)
    return (attention.float() * distances).sum(dim=-1)


def _cell_centres(rows: int, cols: int, cell_h: float, cell_w: float) -> torch.Tensor:
    """(rows·cols, 2) centres (y, x) of a grid of cells, row-major like the attention matrix."""
    y = (torch.arange(rows, dtype=torch.float64) + 0.5) * cell_h
    x = (torch.arange(cols, dtype=torch.float64) + 0.5) * cell_w
    return torch.cartesian_prod(y, x).float()


def uniform_attention_distance(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The mean distance each query would have if it spread its attention evenly: a baseline.

    Same shapes as `mean_attention_distance`; only the shape of `attention` is used.
    """
    M = attention.shape[-1]
    return mean_attention_distance(torch.full_like(attention, 1.0 / M), feature_size, image_size)


def plot_attention_distances(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
    title: str | None = None,
    ax=None,
) -> Figure:
    """Histogram of every query's mean attention distance, with the uniform-attention baseline.

    attention (B, N, M) or (N, M): all B·N queries go into one histogram. Mass left of the grey
    line means "looks nearby more than an even spread would"; mass near it means "looks all over".
    """
    distances = mean_attention_distance(attention, feature_size, image_size).flatten().cpu()
    uniform = uniform_attention_distance(attention, feature_size, image_size).flatten().cpu()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
    else:
        fig = ax.figure
    ax.hist(distances.numpy(), bins=30, color="tab:blue", alpha=0.8)
    ax.axvline(
        float(distances.mean()),
        color="tab:red",
        lw=2,
        label=f"mean: {float(distances.mean()):.1f} px",
    )
    ax.axvline(
        float(uniform.mean()),
        color="grey",
        ls="--",
        lw=2,
        label=f"even spread: {float(uniform.mean()):.1f} px",
    )
    ax.set_xlabel("mean attention distance (pixels)")
    ax.set_ylabel("queries")
    ax.set_title(title or "how far queries look")
    ax.legend()
    fig.tight_layout()
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
    generator: nn.Module, seed: int = 0, label: int | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One image (1, C, S, S) from `seed` and G's attention maps {name: (1, N, M)}.

    The noise is drawn as `sagan_edu.training.sample_images(generator, 1, seed)` draws it, so the
    same seed gives the same picture. G runs in eval mode (BatchNorm with running statistics).
    """
    device = next(generator.parameters()).device
    z = torch.randn(
        1, generator.z_dim, generator=torch.Generator(device).manual_seed(seed), device=device
    )
    y = None
    if generator.num_classes is not None:
        y = torch.tensor([0 if label is None else label], device=device)
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
) -> AttentionView:
    """Generate the sample for `seed` (and `label`) and return `layer`'s attention on it.

    For a D layer ('D/…'), D judges the generated image, or `real_image` (C, S, S) if given.
    """
    image, g_maps = generate_with_attention(generator, seed, label)
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


def draw_attention_grid(fig: Figure, view: AttentionView, queries: Sequence[tuple[int, int]]):
    """Draw onto `fig`: the image with every query marked, then one overlay per query.

    Each overlay is the query's attention map, upsampled to the image and laid over it, titled
    with its mean attention distance. Returns the distances (pixels), one per query.
    """
    picture, cmap = _as_picture(view.image)
    axes = fig.subplots(1, len(queries) + 1, squeeze=False)[0]
    axes[0].imshow(picture, cmap=cmap, vmin=0, vmax=1)
    what = "image" if view.layer.startswith("G/") else "D's input"
    axes[0].set_title(f"{what}\n{view.layer}, γ = {view.gamma:+.3f}", fontsize=9)
    colours = plt.cm.tab10.colors
    distances = []
    for i, (query, ax) in enumerate(zip(queries, axes[1:], strict=True)):
        heat = view.heat(query)  # (S, S), sums to 1
        distances.append(view.distance(query))
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1)
        ax.imshow(heat.numpy(), cmap="inferno", alpha=0.65)
        for a in (axes[0], ax):
            a.plot(query[1], query[0], marker="x", markersize=10, mew=3, color=colours[i % 10])
        ax.set_title(f"query {tuple(query)}\nmean distance {distances[-1]:.1f} px", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return distances


def plot_attention_grid(
    generator: nn.Module,
    layer: str,
    seed: int = 0,
    queries: Sequence[tuple[int, int]] = ((8, 8), (16, 16), (24, 24)),
    discriminator: nn.Module | None = None,
    label: int | None = None,
    real_image: torch.Tensor | None = None,
) -> Figure:
    """The AttentionExplorer's picture for a fixed choice: its static twin.

    Generates the sample for `seed` (and class `label`), runs `layer` ('G/16x16', or 'D/16x16'
    with `discriminator`, on the sample or on `real_image`), and draws where each query
    (row, col in image pixels) looks, with its mean attention distance and the layer's γ.
    """
    view = attention_view(generator, layer, seed, discriminator, label, real_image)
    fig = plt.figure(figsize=(2.3 * (len(queries) + 1), 2.9))
    draw_attention_grid(fig, view, queries)
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
    side = 0.3 * max(len(tokens), len(key_tokens or tokens)) + 1.5
    fig, axes = plt.subplots(
        len(maps), n_cols, figsize=(side * n_cols, side * len(maps)), squeeze=False
    )
    for row, (name, heads) in zip(axes, maps.items(), strict=True):
        for h, ax in enumerate(row):
            if h < heads.shape[0]:
                plot_sequence_attention(heads[h], tokens, key_tokens, [f"{name}, head {h}"], ax=ax)
            else:
                ax.set_axis_off()  # this layer has fewer heads than the widest one
    fig.tight_layout()
    return fig
