"""Attention explorers: pick a layer, a sample and a query, and see where the query looks.

    from sagan_edu.widgets import AttentionExplorer, SequenceAttentionExplorer
    AttentionExplorer(G, D)                               # images: a SAGAN's G and D
    SequenceAttentionExplorer(tokens, {"layer 0": w0})    # sequences: (heads, L, L) weights

Only core ipywidgets (dropdowns, sliders, buttons, Image, HTML, Output), so the explorers work in
JupyterLab, Notebook 7, VS Code and Colab. Each has a static twin in `sagan_edu.viz` that draws
the same picture for a fixed choice (`plot_attention_grid`, `plot_sequence_attention_layers`), for
places where widgets cannot render (GitHub, nbviewer, CI).

Redraws are quick because the expensive part (running G, and D, on a sample) happens once per
(layer, seed, class, D's input) and is cached; moving the query only slices the cached attention
matrix and draws a small PNG with matplotlib's Agg renderer.

The controls are attributes (`explorer.layer`, `explorer.seed`, `explorer.row`, ...) and carry
CSS classes such as "sagan-query-row" and "sagan-overlay", so tests can find and move them.
"""

from __future__ import annotations

import html
import io
import numbers
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import nn

from sagan_edu import viz
from sagan_edu.attention_maps import check_pair

__all__ = ["AttentionExplorer", "SequenceAttentionExplorer"]

CACHE_SIZE = 32  # samples kept per explorer: clicking back to a recent seed is instant


GAMMA_SCALE_RANGE = (-1.0, 3.0)  # what the "G's γ ×" slider offers


class _Cache:
    """A small least-recently-used cache: compute(key) runs only for keys not seen lately."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], object]) -> object:
        if key in self._items:
            self._items.move_to_end(key)
        else:
            self._items[key] = compute()
            if len(self._items) > self.size:
                self._items.popitem(last=False)  # forget the oldest
        return self._items[key]


def _png(fig: Figure) -> bytes:
    """Render a figure with Agg to PNG bytes (a plain Figure: pyplot never sees it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


class _Explorer:
    """What both explorers share: a container widget, a picture, an error log, a redraw timer."""

    widget: widgets.Box
    picture: widgets.Image
    log: widgets.Output
    png: bytes = b""  # the last picture drawn, as PNG bytes
    mean_distance: float = 0.0  # AttentionExplorer: the query's mean attention distance (px)
    redraw_seconds: float = 0.0  # how long the last redraw took

    def redraw(self) -> None:
        raise NotImplementedError

    def _on_change(self, change: dict | None = None) -> None:
        # In a notebook an exception inside a widget callback vanishes into the log console;
        # inside the Output widget it is shown under the explorer instead.
        with self.log:
            self.redraw()

    def _show(self, fig: Figure, started: float) -> None:
        self.png = _png(fig)
        self.picture.value = self.png
        self.redraw_seconds = time.perf_counter() - started

    def _repr_mimebundle_(self, **kwargs):
        # Displaying the explorer displays its widget (and a text fallback without a frontend).
        return self.widget._repr_mimebundle_(**kwargs)


class AttentionExplorer(_Explorer):
    """Pick an attention layer of G or D, a sample and a query pixel; see where the query looks.

    Left: the image with the query marked. Right: the query's weights on the pooled keys, laid
    over the image, on one colour scale per layer and sample (the colour bar marks the even
    spread 1/M), with the query's largest weight and entropy. Below: γ of the layer and the
    query's mean attention distance (how far, in image pixels, it looks on average), beside what
    an even spread from the same query would give.

    The "G's γ ×" slider multiplies every γ of G while it draws the sample (0 switches G's
    attention off, y = x + 0·o): the picture then gains a panel with how much each pixel changed
    from the sample at γ × 1, so you see what attention changes. Its static twin is
    `viz.plot_attention_grid(..., gamma_scale=s)`.

    Args:
        generator: a `sagan_edu.models.Generator` (or anything with z_dim, num_classes,
            img_size and attention_layers()).
        discriminator: optional; adds D's attention layers. D judges the generated image, or a
            real one (see real_images).
        real_images: optional (B, C, S, S) in [-1, 1]: adds a "D sees" choice; with "real",
            the seed picks real image number seed % B.
        layer: the layer to start on, e.g. "G/16x16" (default: G's first).
        seed: the sample to start on.
        query: the (row, col) to start on, in image pixels (default: the centre).
        gamma_scale: the γ multiplier to start on (1: the model as trained).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module | None = None,
        real_images: torch.Tensor | None = None,
        layer: str | None = None,
        seed: int = 0,
        query: tuple[int, int] | None = None,
        gamma_scale: float = 1.0,
    ):
        _check_explorer_models(generator, discriminator)
        self.generator = generator
        self.discriminator = discriminator
        size = generator.img_size
        if real_images is not None:
            viz.check_images(real_images, "real_images")
            if tuple(real_images.shape[1:]) != (generator.img_channels, size, size):
                raise ValueError(
                    f"real_images must be (B, {generator.img_channels}, {size}, {size}) like the "
                    f"generator's images, got {tuple(real_images.shape)}"
                )
        self.real_images = None if real_images is None else real_images.detach().float().cpu()
        layers = viz.attention_layer_names(generator, discriminator)
        if not layers:
            raise ValueError(
                "this model has no attention layers to explore; build it with attention_at=(16,)"
            )
        if layer is not None and layer not in layers:
            raise ValueError(
                f"no attention layer {layer!r} here; choose one of {', '.join(layers)}"
            )
        row, col = (size // 2, size // 2) if query is None else check_pair("query", query)
        if not (0 <= row < size and 0 <= col < size):
            raise ValueError(f"query {query} lies outside the {size}×{size} image")
        if (
            not isinstance(seed, numbers.Integral)
            or isinstance(seed, bool)
            or not 0 <= seed < 2**31
        ):
            raise ValueError(f"seed must be a whole number from 0 to 2**31 - 1, got {seed!r}")
        low, high = GAMMA_SCALE_RANGE
        if not isinstance(gamma_scale, numbers.Real) or not low <= gamma_scale <= high:
            raise ValueError(
                f"gamma_scale must be a number from {low:g} to {high:g} (the slider's range), "
                f"got {gamma_scale!r}"
            )
        self._samples = _Cache()  # (seed, label, γ scale) -> G's image and attention maps
        self._d_maps = _Cache()  # (seed, label, γ scale, source) -> D's image and attention maps

        # -- the controls -----------------------------------------------------------------------
        self.layer = widgets.Dropdown(options=layers, value=layer or layers[0], description="layer")
        self.seed = widgets.BoundedIntText(
            value=seed, min=0, max=2**31 - 1, description="seed", layout={"width": "180px"}
        )
        self.new_sample = widgets.Button(description="new sample", icon="refresh")
        self.label = None  # the class, for a class-conditional generator
        if generator.num_classes is not None:
            self.label = widgets.Dropdown(
                options=list(range(generator.num_classes)), value=0, description="class"
            )
        self.source = None  # what D looks at, when real images were given
        if discriminator is not None and self.real_images is not None:
            self.source = widgets.Dropdown(
                options=[("generated image", "generated"), ("real image", "real")],
                value="generated",
                description="D sees",
            )
        # Redraw when the slider is let go, not on every step of a drag: each redraw takes a
        # fraction of a second, and a drag's dozens of steps would queue up behind each other.
        slider = {"min": 0, "max": size - 1, "continuous_update": False}
        self.row = widgets.IntSlider(value=row, description="query row", **slider)
        self.col = widgets.IntSlider(value=col, description="query col", **slider)
        self.gamma_scale = widgets.FloatSlider(
            value=gamma_scale, min=low, max=high, step=0.25, description="G's γ ×",
            continuous_update=False, readout_format=".2f",
        )  # fmt: skip
        self.picture = widgets.Image(format="png")
        self.summary = widgets.HTML()
        self.log = widgets.Output()

        optional = [w for w in (self.label, self.source) if w is not None]
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.layer, *optional]),
                widgets.HBox([self.seed, self.new_sample]),
                widgets.HBox([self.row, self.col]),
                self.gamma_scale,
                self.picture,
                self.summary,
                self.log,
            ]
        )
        for w, css in (
            (self.widget, "sagan-explorer"), (self.layer, "sagan-layer"),
            (self.seed, "sagan-seed"), (self.new_sample, "sagan-new-sample"),
            (self.row, "sagan-query-row"), (self.col, "sagan-query-col"),
            (self.gamma_scale, "sagan-gamma-scale"),
            (self.picture, "sagan-overlay"), (self.summary, "sagan-summary"),
            (self.label, "sagan-class"), (self.source, "sagan-d-input"),
        ):  # fmt: skip
            if w is not None:
                w.add_class(css)

        for w in (self.layer, self.seed, self.row, self.col, self.gamma_scale, *optional):
            w.observe(self._on_change, names="value")
        self.new_sample.on_click(self._next_sample)
        self.redraw()

    # -- what to draw ---------------------------------------------------------------------------

    @property
    def query(self) -> tuple[int, int]:
        return (self.row.value, self.col.value)

    def view(self) -> viz.AttentionView:
        """The current image and the chosen layer's attention on it (computed once, then cached)."""
        layer, seed, scale = self.layer.value, self.seed.value, self.gamma_scale.value
        label = None if self.label is None else self.label.value
        image, g_maps = self._sample(seed, label, scale)
        if layer.startswith("G/"):
            return viz.make_attention_view(layer, image, g_maps, self.generator)
        source = "generated" if self.source is None else self.source.value
        d_image, d_maps = self._d_maps.get(
            (seed, label, scale, source),
            lambda: self._discriminator_pass(image, seed, label, source),
        )
        return viz.make_attention_view(layer, d_image, d_maps, self.discriminator)

    def reference(self) -> torch.Tensor | None:
        """G's sample at γ × 1 (C, S, S) when the γ control scales attention, else None."""
        if self.gamma_scale.value == 1 or self._shows_real_image():
            return None
        label = None if self.label is None else self.label.value
        return self._sample(self.seed.value, label, 1.0)[0][0]

    def _sample(self, seed: int, label, scale: float):
        return self._samples.get(
            (seed, label, scale),
            lambda: viz.generate_with_attention(self.generator, seed, label, scale),
        )

    def _shows_real_image(self) -> bool:
        is_d = self.layer.value.startswith("D/")
        return is_d and self.source is not None and self.source.value == "real"

    def _discriminator_pass(self, generated: torch.Tensor, seed: int, label, source: str):
        if source == "real":
            generated = self.real_images[seed % len(self.real_images)][None]  # (1, C, S, S)
        return generated, viz.discriminator_attention(self.discriminator, generated, label)

    def redraw(self) -> None:
        """Draw the current choice into the picture; only G/D runs for a new sample are slow."""
        started = time.perf_counter()
        is_d = self.layer.value.startswith("D/")
        if self.source is not None:
            self.source.disabled = not is_d  # G's layers always look at G's own sample
        view, reference = self.view(), self.reference()
        width = 5.2 if reference is None else 7.4  # the change panel needs room
        fig = Figure(figsize=(width, 3.3), dpi=100)
        self.picture.layout.width = f"{round(width * 100)}px"
        scale = 1.0 if self._shows_real_image() else self.gamma_scale.value  # G made no image
        (distance,) = viz.draw_attention_grid(
            fig, view, [self.query], reference=reference, gamma_scale=scale
        )
        self.mean_distance = distance
        self.summary.value = self._summary(view, distance)
        self._show(fig, started)

    def _summary(self, view: viz.AttentionView, distance: float) -> str:
        uniform = view.uniform_distance(self.query)
        if view.layer.startswith("G/"):
            what = "G's sample"
        elif self.source is not None and self.source.value == "real":
            what = f"real image #{self.seed.value % len(self.real_images)}"
        else:
            what = "G's sample, judged by D"
        scale = self.gamma_scale.value
        if scale != 1 and not self._shows_real_image():
            what += f" drawn with G's γ × {scale:g}" + (" (attention off)" if scale == 0 else "")
        return (
            f"<b>{html.escape(view.layer)}</b> on {what}: γ = {view.gamma:+.3f}. "
            f"Query {self.query} looks <b>{distance:.1f} px</b> away on average "
            f"(an even spread from this query would give {uniform:.1f} px; "
            f"the image is {view.image_size[1]} px wide)."
        )

    def _next_sample(self, _button: widgets.Button | None = None) -> None:
        self.seed.value = (self.seed.value + 1) % (self.seed.max + 1)  # redraws via the observer


def _check_explorer_models(generator: object, discriminator: object) -> None:
    """A generator first (it makes the pictures), then optionally a discriminator."""
    if not isinstance(generator, nn.Module) or not hasattr(generator, "z_dim"):
        raise ValueError(
            f"generator must be a sagan_edu Generator (from pretrained.load or a Trainer's "
            f"G_ema), got {type(generator).__name__}; a Discriminator goes in discriminator="
        )
    if discriminator is not None and not hasattr(discriminator, "attention_layers"):
        raise ValueError(
            f"discriminator must be a sagan_edu Discriminator, got {type(discriminator).__name__}"
        )


class SequenceAttentionExplorer(_Explorer):
    """Pick a layer and a head; see its token-to-token attention with the tokens as labels.

    Model-agnostic: give it the tokens and the weights you collected, e.g. from
    `MultiHeadAttention(..., need_weights=True)`:

        SequenceAttentionExplorer(tokens, {"layer 0": w0, "layer 1": w1})

    where each w is (heads, Lq, Lk), (Lq, Lk), or (1, heads, Lq, Lk) for a batch of one. Row i of
    a heatmap shows how query token i spreads its attention over the key tokens. "mean of heads"
    averages the heads.
    """

    MEAN = -1  # the head dropdown's value for "mean of heads"

    def __init__(
        self,
        tokens: Sequence[str],
        weights: Mapping[str, torch.Tensor],
        key_tokens: Sequence[str] | None = None,
    ):
        if not isinstance(weights, Mapping):
            raise ValueError(
                "weights must be a dict {layer name: (heads, Lq, Lk) tensor}, got "
                f"{type(weights).__name__}; for one layer pass {{'layer 0': weights}}"
            )
        if not weights:
            raise ValueError("weights is empty: pass {layer name: (heads, Lq, Lk) tensor}")
        self.tokens = list(tokens)
        self.key_tokens = self.tokens if key_tokens is None else list(key_tokens)
        self.weights = {name: viz.as_head_maps(w) for name, w in weights.items()}
        for name, w in self.weights.items():
            if w.shape[1:] != (len(self.tokens), len(self.key_tokens)):
                raise ValueError(
                    f"weights[{name!r}] has shape {tuple(w.shape)} but there are "
                    f"{len(self.tokens)} query and {len(self.key_tokens)} key tokens"
                )

        first = next(iter(self.weights))
        self.layer = widgets.Dropdown(options=list(self.weights), value=first, description="layer")
        self.head = widgets.Dropdown(options=self._head_options(first), value=0, description="head")
        self.picture = widgets.Image(format="png", layout={"width": "420px"})
        self.log = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.layer, self.head]), self.picture, self.log])
        for w, css in (
            (self.widget, "sagan-sequence-explorer"), (self.layer, "sagan-layer"),
            (self.head, "sagan-head"), (self.picture, "sagan-heatmap"),
        ):  # fmt: skip
            w.add_class(css)

        self._changing_layer = False
        self.layer.observe(self._on_layer, names="value")
        self.head.observe(self._on_head, names="value")
        self.redraw()

    def _head_options(self, layer: str) -> list[tuple[str, int]]:
        heads = self.weights[layer].shape[0]
        options = [(f"head {h}", h) for h in range(heads)]
        return [*options, ("mean of heads", self.MEAN)] if heads > 1 else options

    def _on_layer(self, change: dict) -> None:
        # Layers may have different numbers of heads: swap the head options without the head
        # dropdown redrawing on its own, then redraw once.
        head = self.head.value
        self._changing_layer = True
        try:
            self.head.options = self._head_options(self.layer.value)
            values = [value for _, value in self.head.options]
            self.head.value = head if head in values else values[0]
        finally:
            self._changing_layer = False
        self._on_change()

    def _on_head(self, change: dict) -> None:
        if not self._changing_layer:
            self._on_change()

    def current_weights(self) -> torch.Tensor:
        """(Lq, Lk): the chosen layer's chosen head (or the mean of its heads)."""
        heads = self.weights[self.layer.value]
        return heads.mean(dim=0) if self.head.value == self.MEAN else heads[self.head.value]

    def redraw(self) -> None:
        started = time.perf_counter()
        side = 0.3 * max(len(self.tokens), len(self.key_tokens)) + 1.8
        fig = Figure(figsize=(side, side), dpi=100)
        head = "mean of heads" if self.head.value == self.MEAN else f"head {self.head.value}"
        viz.plot_sequence_attention(
            self.current_weights(),
            self.tokens,
            self.key_tokens,
            titles=[f"{self.layer.value}, {head}"],
            ax=fig.add_subplot(),
        )
        self._show(fig, started)
