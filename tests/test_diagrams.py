"""Tests of sagan_edu.diagrams: the shapes on the SAGAN block diagram are the block's real ones."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

import sagan_edu.attention as attention_module
from sagan_edu.attention import SelfAttention2d
from sagan_edu.diagrams import sagan_block_diagram, sagan_block_shapes, training_step_diagram


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
