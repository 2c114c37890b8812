"""Tests of sagan_edu.diagrams: the shapes on the SAGAN block diagram are the block's real ones."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

import sagan_edu.attention as attention_module
from sagan_edu.attention import SelfAttention2d
from sagan_edu.diagrams import (
    GRADIENT_PATH_COLOUR,
    gradient_path_diagram,
    sagan_block_diagram,
    sagan_block_shapes,
    training_step_diagram,
)


@pytest.mark.parametrize(("channels", "height", "width"), [(64, 16, 16), (32, 8, 12)])
def test_block_shapes_match_a_real_forward_pass(monkeypatch, channels, height, width):
    seen = {}
    original = attention_module.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):  # what SelfAttention2d hands to the attention function
        out, weights = original(q, k, v, **kwargs)
        seen.update(q=q.shape, k=k.shape, v=v.shape, attention=weights.shape, mixed=out.shape)
        return out, weights

    monkeypatch.setattr(attention_module, "scaled_dot_product_attention", recording)
    block = SelfAttention2d(channels)
    x = torch.randn(1, channels, height, width)
    out = {}
    block.out.register_forward_hook(lambda module, args, output: out.update(o=output.shape))
    y, _ = block(x, return_attention=True)

    shapes = sagan_block_shapes(channels, height, width)
    assert shapes["x"] == tuple(x.shape) and shapes["y"] == tuple(y.shape)
    for name in ("q", "k", "v", "attention"):
        assert shapes[name] == tuple(seen[name]), name
    assert shapes["weighted values"] == tuple(seen["mixed"])
    assert shapes["o"] == tuple(out["o"])


def test_block_shapes_reject_sizes_the_block_rejects():
    with pytest.raises(ValueError, match="divisible by qk_reduction"):
        sagan_block_shapes(60, 16, 16)
    with pytest.raises(ValueError, match="pool=2"):
        sagan_block_shapes(64, 15, 16)


def texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_block_diagram_writes_the_shapes_on_it():
    fig = sagan_block_diagram(channels=64, height=16, width=16)
    written = texts(fig)
    for shape in ("(B, 256, 8)", "(B, 64, 8)", "(B, 64, 32)", "(B, 256, 64)", "(B, 64, 16, 16)"):
        assert shape in written
    plt.close(fig)


def test_training_step_diagram_names_both_losses_and_the_ema_only_when_asked():
    fig = training_step_diagram(d_loss="hinge", g_loss="−mean D(G(z))", ema=True)
    written = texts(fig)
    assert "hinge" in written and "−mean D(G(z))" in written and "G_ema" in written
    plt.close(fig)
    fig = training_step_diagram()
    assert "G_ema" not in texts(fig)
    plt.close(fig)


def _red_arrows(ax) -> int:
    """How many arrows of `ax` are drawn in the gradient-path colour."""
    colour = matplotlib.colors.to_rgba(GRADIENT_PATH_COLOUR)
    return sum(
        1
        for a in ax.texts
        if isinstance(a, matplotlib.text.Annotation)
        and a.arrow_patch is not None
        and matplotlib.colors.to_rgba(a.arrow_patch.get_edgecolor()) == colour
    )


@pytest.mark.parametrize("length", [2, 6, 9])
def test_gradient_path_has_length_plus_one_edges_through_the_lstm_and_two_through_attention(
    length,
):
    fig = gradient_path_diagram(length)
    ax_rnn, ax_att = fig.axes
    # x₀ → h₀, then h₀ → h₁ … h_{L-2} → h_{L-1} (L - 1 recurrent steps), then h_{L-1} → loss.
    assert _red_arrows(ax_rnn) == 1 + (length - 1) + 1
    assert _red_arrows(ax_att) == 2  # x₀ → attention at "?" → loss
    arrows = [a for a in ax_att.texts if isinstance(a, matplotlib.text.Annotation)]
    assert len(arrows) == length + 1, "every token feeds the attention directly, plus the loss"
    plt.close(fig)


def test_gradient_path_needs_two_positions():
    with pytest.raises(ValueError, match="at least 2"):
        gradient_path_diagram(1)
