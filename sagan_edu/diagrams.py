"""Data-flow diagrams drawn with matplotlib: the SAGAN block, one GAN training iteration, and the
path a gradient takes back to the first token through a recurrence and through attention.

Drawn in code so they render offline, on GitHub and on Colab, and so the shapes written on the
arrows come from the same arithmetic as `SelfAttention2d` (tests/test_diagrams.py checks them
against a real forward pass).

    fig = sagan_block_diagram(channels=64, height=16, width=16)
    fig = training_step_diagram(d_loss="hinge", g_loss="−mean D(G(z))", ema=True)
    fig = gradient_path_diagram(length=6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

__all__ = [
    "GRADIENT_PATH_COLOUR",
    "gradient_path_diagram",
    "sagan_block_diagram",
    "sagan_block_shapes",
    "training_step_diagram",
]

GRADIENT_PATH_COLOUR = "tab:red"  # the edges ∂loss/∂x₀ flows back along in gradient_path_diagram

STYLES = {  # (face, edge) colours of the boxes
    "data": ("white", "0.3"),
    "op": ("#e8f0fb", "tab:blue"),
    "loss": ("#fdecea", "tab:red"),
}


@dataclass(frozen=True)
class Node:
    """A labelled box: centre (x, y), size (w, h), in the axes' data coordinates."""

    x: float
    y: float
    w: float
    h: float

    def edge_towards(self, x: float, y: float) -> tuple[float, float]:
        """The point where the line from the centre to (x, y) leaves the box."""
        dx, dy = x - self.x, y - self.y
        if dx == 0 and dy == 0:
            return self.x, self.y
        to_side = self.w / 2 / abs(dx) if dx else math.inf  # how far to the left/right edge
        to_top = self.h / 2 / abs(dy) if dy else math.inf  # how far to the top/bottom edge
        scale = min(to_side, to_top)
        return self.x + dx * scale, self.y + dy * scale


def _node(ax: Axes, x: float, y: float, text: str, kind: str = "data", w: float = 1.6,
          h: float = 0.7) -> Node:  # fmt: skip
    face, edge = STYLES[kind]
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                facecolor=face, edgecolor=edge, zorder=3))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5, zorder=4)
    return Node(x, y, w, h)


def _arrow(
    ax: Axes,
    start: Node,
    end: Node,
    label: str = "",
    colour: str = "0.25",
    offset: tuple[float, float] = (0.0, 0.0),
    shift: float = 0.0,
    dashed: bool = False,
) -> None:
    """An arrow from box to box, `label` at its middle (moved by offset), shifted up by shift."""
    a = start.edge_towards(end.x, end.y + shift)
    b = end.edge_towards(start.x, start.y + shift)
    a, b = (a[0], a[1] + shift), (b[0], b[1] + shift)
    ax.annotate("", xy=b, xytext=a, zorder=2,
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.3,
                            "linestyle": "--" if dashed else "-"})  # fmt: skip
    if label:
        middle = ((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1])
        ax.text(*middle, label, ha="center", va="center", fontsize=7.5, color=colour,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1}, zorder=5)  # fmt: skip


def sagan_block_shapes(
    channels: int,
    height: int,
    width: int,
    *,
    pool: int = 2,
    qk_reduction: int = 8,
    v_reduction: int = 2,
) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in `SelfAttention2d`'s forward, for a batch of one.

    N = height·width query positions, M = N / pool² pooled key positions.
    """
    if channels % qk_reduction or channels % v_reduction:
        raise ValueError(
            f"channels ({channels}) must be divisible by qk_reduction ({qk_reduction}) and "
            f"v_reduction ({v_reduction})"
        )
    if height % pool or width % pool:
        raise ValueError(f"height and width ({height}×{width}) must be divisible by pool={pool}")
    n = height * width
    m = (height // pool) * (width // pool)
    c_qk, c_v = channels // qk_reduction, channels // v_reduction
    return {
        "x": (1, channels, height, width),
        "q": (1, n, c_qk),
        "k": (1, m, c_qk),
        "v": (1, m, c_v),
        "attention": (1, n, m),
        "weighted values": (1, n, c_v),
        "o": (1, channels, height, width),
        "y": (1, channels, height, width),
    }


def sagan_block_diagram(channels: int = 64, height: int = 16, width: int = 16) -> Figure:
    """The SAGAN self-attention block as a data-flow picture, shapes (B, …) on the arrows."""
    shapes = sagan_block_shapes(channels, height, width)
    n, m = height * width, shapes["k"][1]

    def shape(name: str, symbolic: str) -> str:
        return f"{symbolic}\n= (B, {', '.join(map(str, shapes[name][1:]))})"

    fig, ax = plt.subplots(figsize=(12, 5))
    ax.set(xlim=(0, 13), ylim=(0, 5.6))
    ax.set_axis_off()
    x = _node(ax, 0.9, 2.6, f"x\n{channels} channels\n{height}×{width} map", w=1.4, h=0.9)
    query = _node(ax, 3.6, 4.4, "query\n1×1 conv C → C/8", "op", w=1.9)
    key = _node(ax, 3.6, 2.6, "key\n1×1 conv C → C/8\n2×2 max-pool", "op", w=1.9, h=0.9)
    value = _node(ax, 3.6, 0.8, "value\n1×1 conv C → C/2\n2×2 max-pool", "op", w=1.9, h=0.9)
    scores = _node(ax, 7.0, 3.5, "softmax over the keys\nof q kᵀ  (no √d)", "op", w=2.1)
    mix = _node(ax, 7.0, 0.8, "weights · v,\nback to a map", "op", w=1.8)
    out = _node(ax, 9.6, 0.8, "out\n1×1 conv C/2 → C", "op", w=1.9)
    gate = _node(ax, 9.6, 3.5, "× γ\n(learned, 0 at init)", "op", w=1.9)
    plus = _node(ax, 11.4, 3.5, "+", "op", w=0.5, h=0.5)
    y = _node(ax, 12.4, 3.5, "y = x + γ·o", w=1.0, h=0.9)
    for branch in (query, key, value):
        _arrow(ax, x, branch)
    ax.text(1.6, 3.6, shape("x", "(B, C, H, W)"), ha="center", fontsize=7.5, color="0.25")
    _arrow(ax, query, scores, shape("q", "q (B, N, C/8)"), offset=(0, 0.4))
    _arrow(ax, key, scores, shape("k", "k (B, N/4, C/8)"), offset=(0, -0.45))
    _arrow(ax, scores, mix, shape("attention", "weights (B, N, N/4)"), "tab:purple", (0, 0))
    _arrow(ax, value, mix, shape("v", "v (B, N/4, C/2)"), offset=(0, 0.42))
    _arrow(ax, mix, out, "(B, C/2, H, W)", offset=(0, -0.6))
    _arrow(ax, out, gate, shape("o", "o (B, C, H, W)"), offset=(0, 0))
    _arrow(ax, gate, plus)
    _arrow(ax, plus, y)
    # The residual path: x goes round the block, straight to the sum.
    top = 5.0
    ax.plot([x.x, x.x, plus.x], [x.y + x.h / 2, top, top], color="tab:green", lw=1.3, zorder=1)
    ax.annotate("", xy=(plus.x, plus.y + plus.h / 2), xytext=(plus.x, top), zorder=1,
                arrowprops={"arrowstyle": "-|>", "color": "tab:green", "lw": 1.3,
                            "shrinkA": 0, "shrinkB": 0})  # fmt: skip
    ax.text(7.0, 5.3, "residual path: x itself (the block is the identity while γ = 0)",
            color="tab:green", fontsize=8, ha="center")  # fmt: skip
    ax.text(12.4, 2.55, shape("y", "(B, C, H, W)"), ha="center", fontsize=7.5, color="0.25")
    ax.set_title(f"The SAGAN block for C = {channels} on a {height}×{width} map: "
                 f"N = {n} queries, N/4 = {m} pooled keys and values", fontsize=10)  # fmt: skip
    return fig


def training_step_diagram(
    d_loss: str = "BCE: real → 1, fake → 0",
    g_loss: str = "−log D(G(z))",
    ema: bool = False,
) -> Figure:
    """One training iteration: the D step (top) and the G step (bottom).

    Black arrows carry data forward; red dashed arrows show where gradients flow back and which
    network's weights the step changes.
    """
    fig, (ax_d, ax_g) = plt.subplots(2, 1, figsize=(11, 5.6))
    for ax, title in ((ax_d, "1. D step: only D's weights change"),
                      (ax_g, "2. G step: only G's weights change")):  # fmt: skip
        ax.set(xlim=(0, 11), ylim=(0, 2.6))
        ax.set_axis_off()
        ax.set_title(title, loc="left", fontsize=10)

    # D step: fakes made without a graph (no gradient can reach G); real and fake go through D.
    z = _node(ax_d, 0.7, 0.7, "noise z", w=1.0, h=0.5)
    g = _node(ax_d, 2.6, 0.7, "G\n(no_grad)", w=1.1)
    fake = _node(ax_d, 4.5, 0.7, "fake batch", w=1.2, h=0.5)
    real = _node(ax_d, 4.5, 2.0, "real batch", w=1.2, h=0.5)
    d = _node(ax_d, 6.6, 1.35, "D", "op", w=0.8)
    loss = _node(ax_d, 9.2, 1.35, f"L_D\n{d_loss}", "loss", w=2.4)
    _arrow(ax_d, z, g, "(B, z_dim)", offset=(0, 0.3))
    _arrow(ax_d, g, fake, "(B, C, H, W)", offset=(0, 0.3))
    _arrow(ax_d, real, d)
    _arrow(ax_d, fake, d)
    _arrow(ax_d, d, loss, "logits (2B,)", shift=0.15, offset=(0, 0.25))
    _arrow(ax_d, loss, d, "∂L_D/∂θ_D → Adam step on D", "tab:red", (0, -0.3), -0.15, True)

    # G step: fresh fakes with a graph, scored by D; the gradient passes through D into G.
    z = _node(ax_g, 0.7, 1.0, "noise z", w=1.0, h=0.5)
    g = _node(ax_g, 2.6, 1.0, "G", "op", w=0.8)
    fake = _node(ax_g, 4.5, 1.0, "fake batch", w=1.2, h=0.5)
    d = _node(ax_g, 6.6, 1.0, "D\n(frozen)", w=1.0)
    loss = _node(ax_g, 9.2, 1.0, f"L_G\n{g_loss}", "loss", w=2.4)
    _arrow(ax_g, z, g, "(B, z_dim)", offset=(0, 0.3))
    _arrow(ax_g, g, fake, "(B, C, H, W)", offset=(0, 0.3))
    _arrow(ax_g, fake, d)
    _arrow(ax_g, d, loss, "logits (B,)", offset=(0, 0.3))
    bottom = loss.y - loss.h / 2
    ax_g.annotate("", xy=(g.x, g.y - g.h / 2), xytext=(loss.x, bottom),
                  arrowprops={"arrowstyle": "-|>", "color": "tab:red", "lw": 1.3, "ls": "--",
                              "connectionstyle": "bar,fraction=-0.06", "shrinkA": 0,
                              "shrinkB": 0})  # fmt: skip
    ax_g.text(5.9, 0.08, "∂L_G/∂θ_G flows back through D (D's weights do not change) "
              "→ Adam step on G", color="tab:red", fontsize=8, ha="center")  # fmt: skip
    if ema:
        average = _node(ax_g, 2.6, 2.25, "G_ema ← β·G_ema + (1 − β)·G", w=3.0, h=0.45)
        _arrow(ax_g, g, average, colour="tab:green")
        ax_g.text(4.3, 2.25, "3. after the G step: the EMA update (samples come from G_ema)",
                  fontsize=8, color="tab:green", va="center")  # fmt: skip
    fig.tight_layout()
    return fig


def gradient_path_diagram(length: int = 6) -> Figure:
    """The road from the loss back to the first token x₀: an LSTM's chain against attention.

    Top: a recurrence over `length` tokens. x₀'s information, and the gradient that teaches the
    network to keep it, crosses x₀ → h₀, then length − 1 recurrent steps (one Jacobian
    ∂hₜ/∂hₜ₋₁ each), then h → loss. Bottom: one attention layer, where the last position (the
    "?") reads every token directly: x₀ → attention → loss, whatever the length. The edges of
    that road are drawn in GRADIENT_PATH_COLOUR, every other edge in grey.
    """
    if length < 2:
        raise ValueError(f"length must be at least 2 (x₀ and the '?' position), got {length}")
    subscript = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    red, grey = GRADIENT_PATH_COLOUR, "0.6"
    fig, (ax_rnn, ax_att) = plt.subplots(2, 1, figsize=(1.6 * length + 1, 6))
    tokens = {}
    for ax in (ax_rnn, ax_att):
        ax.set(xlim=(-0.8, length - 0.2), ylim=(-0.5, 2.6))
        ax.set_axis_off()
        tokens[ax] = [
            _node(ax, t, 0, "x₀ = A" if t == 0 else ("?" if t == length - 1 else
                  f"x{t}".translate(subscript)), "loss" if t == 0 else "data", w=0.8, h=0.45)
            for t in range(length)
        ]  # fmt: skip

    # The recurrence: x_t -> h_t, h_{t-1} -> h_t, and the loss reads the last state.
    states = [_node(ax_rnn, t, 1.1, f"h{t}".translate(subscript), "op", w=0.6, h=0.45)
              for t in range(length)]  # fmt: skip
    for t, (token, state) in enumerate(zip(tokens[ax_rnn], states, strict=True)):
        _arrow(ax_rnn, token, state, colour=red if t == 0 else grey)
        if t > 0:
            _arrow(ax_rnn, states[t - 1], state, "∂hₜ/∂hₜ₋₁", red, offset=(0, 0.25))
    loss = _node(ax_rnn, length - 1, 2.1, "loss", "loss", w=0.8, h=0.45)
    _arrow(ax_rnn, states[-1], loss, colour=red)
    ax_rnn.set_title(f"LSTM: from x₀ to the loss, {length + 1} edges, {length - 1} of them "
                     "recurrent steps (one Jacobian factor each)", fontsize=10)  # fmt: skip

    # Attention: the "?" query looks at every token at once.
    attend = _node(ax_att, length - 1, 1.2, "attention\nat ?", "op", w=1.1, h=0.55)
    for t, token in enumerate(tokens[ax_att]):
        _arrow(ax_att, token, attend, "weight a₀" if t == 0 else "",
               red if t == 0 else grey, offset=(0, 0.15))  # fmt: skip
    loss = _node(ax_att, length - 1, 2.1, "loss", "loss", w=0.8, h=0.45)
    _arrow(ax_att, attend, loss, colour=red)
    ax_att.set_title("attention: from x₀ to the loss, 2 edges whatever the length; the first "
                     "is scaled by the weight the ? gives position 0", fontsize=10)  # fmt: skip
    fig.text(0.5, 0.01, "red: the path along which ∂loss/∂x₀ flows (backwards, against the "
             "arrows)", ha="center", fontsize=9, color=red)  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
