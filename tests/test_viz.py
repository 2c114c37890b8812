"""Tests of sagan_edu.viz: attention extraction and upsampling, and that the figures draw."""

from __future__ import annotations

import pytest
import torch

from sagan_edu.attention import SelfAttention2d
from sagan_edu.models import Generator
from sagan_edu.viz import (
    collect_attention,
    image_grid,
    plot_attention_maps,
    plot_gammas,
    plot_history,
    plot_sequence_attention,
    query_attention_map,
)


def test_query_attention_map_picks_the_right_row_and_upsamples():
    H = W = 4
    attention = torch.zeros(1, H * W, 4)  # pool 2: keys on a 2×2 grid
    attention[0, 1 * W + 2] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # query (1, 2) looks top-right
    heat = query_attention_map(attention, (H, W), (1, 2))
    assert heat.shape == (1, 4, 4)
    assert heat.sum().item() == pytest.approx(1.0)
    top_right, bottom_left = heat[0, :2, 2:].sum(), heat[0, 2:, :2].sum()
    assert top_right > 0.5 and bottom_left < 0.05
    # In image coordinates: the 32×32 pixel (9, 20) lies in feature cell (1, 2).
    big = query_attention_map(attention, (H, W), (9, 20), image_size=(32, 32))
    assert big.shape == (1, 32, 32) and big[0, :16, 16:].sum() > 0.5


def test_query_attention_map_errors():
    with pytest.raises(ValueError, match="outside"):
        query_attention_map(torch.rand(1, 16, 4), (4, 4), (4, 0))
    with pytest.raises(ValueError, match="query rows"):
        query_attention_map(torch.rand(1, 16, 4), (8, 8), (0, 0))


def test_collect_attention_matches_calling_the_layer():
    torch.manual_seed(0)
    G = Generator(z_dim=16, base_channels=8, attention_at=(8, 16)).eval()
    inputs = {}
    for name, layer in G.attention_layers().items():
        layer.register_forward_hook(lambda m, a, o, name=name: inputs.__setitem__(name, a[0]))
    z = torch.randn(2, 16)
    images, maps = collect_attention(G, z)
    assert list(maps) == ["8x8", "16x16"]
    assert torch.equal(images, G(z))
    for name, layer in G.attention_layers().items():
        _, expected = layer(inputs[name], return_attention=True)
        torch.testing.assert_close(maps[name], expected)
    assert maps["16x16"].shape == (2, 256, 64)


def test_collect_attention_on_a_plain_module():
    block = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 1), SelfAttention2d(8, pool=1))
    _, maps = collect_attention(block, torch.randn(1, 1, 4, 4))
    assert list(maps) == ["1"] and maps["1"].shape == (1, 16, 16)


def test_figures_draw():
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    assert image_grid(images, nrow=2).shape == (2 + 2 * 34, 2 + 2 * 34, 3)
    attention = torch.softmax(torch.randn(4, 256, 64), -1)
    fig = plot_attention_maps(images, attention, (16, 16), [(0, 0), (31, 31), (10, 20)])
    assert len(fig.axes) == 4
    # The sample and its overlay share the image's full 32×32 extent (no shifted crop).
    shown = fig.axes[1].get_images()
    assert [im.get_array().shape[:2] for im in shown] == [(32, 32), (32, 32)]
    history = {"step": [1.0, 2.0], "loss_d": [1.0, 0.9], "loss_g": [0.5, 0.6], "d_real": [0.1, 0.2],
               "d_fake": [-0.1, -0.2], "gamma/G/16x16": [0.0, 0.01]}  # fmt: skip
    assert len(plot_history(history).axes) == 2
    ax = plot_gammas(history).axes[0]
    assert [line.get_label() for line in ax.get_lines()][:1] == ["G/16x16"]


def test_sequence_attention_heatmaps():
    tokens = ["the", "cat", "sat"]
    weights = torch.softmax(torch.randn(2, 3, 3), -1)
    fig = plot_sequence_attention(weights, tokens)
    assert [a.get_title() for a in fig.axes] == ["head 0", "head 1"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == tokens
    assert len(plot_sequence_attention(weights[0], tokens).axes) == 1
    with pytest.raises(ValueError, match="do not match 2 query"):
        plot_sequence_attention(weights, tokens[:2])
