"""Tests of sagan_edu.viz: attention extraction and upsampling, and that the figures draw."""

from __future__ import annotations

import numpy as np
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
    assert len(fig.axes) == 5  # the sample, three overlays, one shared colour bar
    # The sample and the 8×8 grid of key weights both cover the image's full 32×32 extent.
    sample, keys = fig.axes[1].get_images()
    assert sample.get_array().shape[:2] == (32, 32) and keys.get_array().shape == (8, 8)
    assert keys.get_extent() == [-0.5, 31.5, 31.5, -0.5]
    history = {"step": [1.0, 2.0], "loss_d": [1.0, 0.9], "loss_g": [0.5, 0.6], "d_real": [0.1, 0.2],
               "d_fake": [-0.1, -0.2], "gamma/G/16x16": [0.0, 0.01]}  # fmt: skip
    assert len(plot_history(history).axes) == 2
    ax = plot_gammas(history).axes[0]
    assert [line.get_label() for line in ax.get_lines()][:1] == ["G/16x16"]


def test_attention_maps_share_one_colour_scale_and_print_their_statistics():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 32, 32, generator=gen) * 2 - 1
    attention = torch.softmax(3 * torch.randn(2, 256, 64, generator=gen), -1)
    queries = [(0, 0), (20, 9)]
    fig = plot_attention_maps(images, attention, (16, 16), queries, index=1)
    rows = [attention[1, 0].double(), attention[1, 10 * 16 + 4].double()]  # cells (0,0), (10,4)
    top = max(float(r.max()) for r in rows)
    for ax, row in zip(fig.axes[1:3], rows, strict=True):
        keys = ax.get_images()[1]
        assert keys.get_clim() == pytest.approx((0.0, top))  # the same scale in every panel
        np.testing.assert_allclose(keys.get_array(), row.reshape(8, 8).numpy(), rtol=1e-6)
        entropy = -(row * row.log()).sum()
        assert f"max {float(row.max()):.3f} (even {1 / 64:.3f})" in ax.get_title()
        assert f"entropy {float(entropy):.2f} of {np.log(64):.2f} nats" in ax.get_title()
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "weight on a key"
    assert bar.get_lines()[0].get_ydata()[0] == pytest.approx(1 / 64)  # the even-spread mark
    fixed = plot_attention_maps(images, attention, (16, 16), queries, vmax=0.5)
    assert fixed.axes[1].get_images()[1].get_clim() == (0.0, 0.5)


def test_sequence_attention_heatmaps():
    tokens = ["the", "cat", "sat"]
    weights = torch.softmax(torch.randn(2, 3, 3), -1)
    fig = plot_sequence_attention(weights, tokens)
    assert [a.get_title().split("\n")[0] for a in fig.axes[:2]] == ["head 0", "head 1"]
    assert fig.axes[2].get_ylabel() == "attention weight"  # one colour bar for both heads
    top = float(weights.max())
    for head, ax in zip(weights.double(), fig.axes[:2], strict=True):
        assert ax.get_images()[0].get_clim() == pytest.approx((0.0, top))
        entropy = -(head * head.log()).sum(-1).mean()
        assert f"max {float(head.max()):.2f}, entropy {float(entropy):.2f} of 1.10" in (
            ax.get_title()
        )
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == tokens
    assert len(plot_sequence_attention(weights[0], tokens).axes) == 2  # the map and its bar
    with pytest.raises(ValueError, match="do not match 2 query"):
        plot_sequence_attention(weights, tokens[:2])


# ---------------------------------------------------------------------------------------------
# Bad arguments: a ValueError that names the argument and the fix, not torchvision's or
# matplotlib's error from inside
# ---------------------------------------------------------------------------------------------


def bad_viz_calls() -> dict:
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    attention = torch.softmax(torch.randn(2, 256, 64), dim=-1)
    history = {"step": [1, 2], "loss_d": [1.0], "loss_g": [1.0], "d_real": [0.0], "d_fake": [0.0]}
    return {
        "image_grid(numpy)": (lambda: image_grid(images.numpy()), r"torch.Tensor, got ndarray"),
        "image_grid(empty)": (lambda: image_grid(images[:0]), r"images is empty"),
        "image_grid(nrow=0)": (lambda: image_grid(images, nrow=0), r"nrow.*≥ 1, got 0"),
        "image_grid(NHWC)": (
            lambda: image_grid(images.permute(0, 2, 3, 1)),
            r"got \(4, 32, 32, 1\); channels come second.*permute\(0, 3, 1, 2\)",
        ),
        "image_grid(one image)": (
            lambda: image_grid(images[0]),
            r"for one image use images\[None\]",
        ),
        "query_attention_map(2-D)": (
            lambda: query_attention_map(attention[0], (16, 16), (3, 3)),
            r"attention must be a \(B, N, M\) tensor .*got \(256, 64\).*attention\[None\]",
        ),
        "query_attention_map(feature_size=16)": (
            lambda: query_attention_map(attention, 16, (3, 3)),
            r"feature_size must be a pair of whole numbers such as \(16, 16\), got 16",
        ),
        "query_attention_map(query float)": (
            lambda: query_attention_map(attention, (16, 16), (3.5, 3)),
            r"query must be a pair of whole numbers .*got \(3.5, 3\)",
        ),
        "plot_attention_maps(index=5)": (
            lambda: plot_attention_maps(images[:2], attention, (16, 16), [(4, 4)], index=5),
            r"index 5 must pick one of the 2 images",
        ),
        "plot_history(unequal)": (
            lambda: plot_history(history),
            r"must be equally long.*'step': 2",
        ),
        "plot_history(path)": (
            lambda: plot_history("runs/x/history.json"),
            r"history must be a dict of lists.*got str.*json.loads",
        ),
    }


@pytest.mark.parametrize("name", list(bad_viz_calls()))
def test_viz_rejects_bad_arguments_clearly(name):
    call, message = bad_viz_calls()[name]
    with pytest.raises(ValueError, match=message):
        call()
