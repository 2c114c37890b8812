"""Headless tests of the attention explorers (sagan_edu.widgets) and their static twins (viz).

No browser here: the widgets' models live in Python, so setting `explorer.row.value` runs the same
callback a slider drag runs, and `explorer.png` holds the picture the browser would show.
tests/test_browser.py checks the real thing in JupyterLab.
"""

from __future__ import annotations

import copy as copy_module
import math
import time

import pytest
import torch

from sagan_edu.models import Discriminator, Generator
from sagan_edu.training import sample_images
from sagan_edu.viz import (
    attention_view,
    generate_with_attention,
    mean_attention_distance,
    plot_attention_distances,
    plot_attention_grid,
    plot_sequence_attention_layers,
    query_attention_map,
    query_index,
    uniform_attention_distance,
)
from sagan_edu.widgets import AttentionExplorer, SequenceAttentionExplorer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def models() -> tuple[Generator, Discriminator]:
    """A tiny G and D with attention at two sizes each, in eval mode."""
    torch.manual_seed(0)
    G = Generator(z_dim=16, base_channels=8, attention_at=(8, 16)).eval()
    D = Discriminator(base_channels=8, attention_at=(16, 8)).eval()
    return G, D


@pytest.fixture(scope="module")
def conditional_models() -> tuple[Generator, Discriminator]:
    torch.manual_seed(1)
    G = Generator(z_dim=16, base_channels=8, attention_at=(16,), num_classes=3).eval()
    D = Discriminator(base_channels=8, attention_at=(16,), num_classes=3).eval()
    return G, D


# ---------------------------------------------------------------------------------------------
# Mean attention distance
# ---------------------------------------------------------------------------------------------


def test_mean_attention_distance_by_hand():
    # A 4×4 map with keys pooled 2×2: key cells centred at (1, 1), (1, 3), (3, 1), (3, 3).
    attention = torch.zeros(16, 4)
    attention[0, 3] = 1.0  # query (0, 0), centred at (0.5, 0.5), looks only at key (3, 3)
    attention[5, 0] = attention[5, 3] = 0.5  # query (1, 1) at (1.5, 1.5): half near, half far
    attention[6:, 1] = 1.0
    distances = mean_attention_distance(attention, (4, 4))
    assert distances.shape == (16,)
    assert distances[0].item() == pytest.approx(2.5 * math.sqrt(2))
    assert distances[5].item() == pytest.approx(0.5 * math.sqrt(0.5) + 0.5 * 1.5 * math.sqrt(2))
    # In pixels of an 8×8 image every cell is 2 px wide: distances double.
    in_pixels = mean_attention_distance(attention[None], (4, 4), image_size=(8, 8))
    assert in_pixels.shape == (1, 16)
    torch.testing.assert_close(in_pixels[0], 2 * distances)


def test_uniform_attention_distance_is_the_average_distance_to_every_key():
    attention = torch.softmax(torch.randn(2, 16, 16), dim=-1)  # pool 1: keys are the 16 cells
    uniform = uniform_attention_distance(attention, (4, 4))
    corner = [math.dist((0.5, 0.5), (r + 0.5, c + 0.5)) for r in range(4) for c in range(4)]
    assert uniform.shape == (2, 16)
    assert uniform[1, 0].item() == pytest.approx(sum(corner) / 16)
    one_hot_self = torch.eye(16)  # every query looks only at itself: distance 0
    assert mean_attention_distance(one_hot_self, (4, 4)).abs().max() < 1e-6


def test_mean_attention_distance_errors():
    with pytest.raises(ValueError, match="query rows"):
        mean_attention_distance(torch.rand(15, 4), (4, 4))
    with pytest.raises(ValueError, match="cannot lay 5 keys"):
        mean_attention_distance(torch.rand(16, 5), (4, 4))


def test_query_index_matches_query_attention_map():
    attention = torch.softmax(torch.randn(1, 256, 64), dim=-1)
    for query in [(0, 0), (13, 7), (31, 31), (17, 2)]:
        n = query_index((16, 16), query, (32, 32))
        heat = query_attention_map(attention, (16, 16), query, (32, 32))
        expected = query_attention_map(attention[:, n : n + 1].expand(1, 256, 64), (16, 16),
                                       (0, 0), (32, 32))  # fmt: skip
        torch.testing.assert_close(heat, expected)
    with pytest.raises(ValueError, match="outside"):
        query_index((16, 16), (32, 0), (32, 32))


def test_generate_with_attention_draws_what_sample_images_draws(models):
    G, _ = models
    image, maps = generate_with_attention(G, seed=7)
    torch.testing.assert_close(image, sample_images(G, 1, seed=7))
    assert {name: m.shape for name, m in maps.items()} == {
        "8x8": (1, 64, 16), "16x16": (1, 256, 64)
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# AttentionExplorer
# ---------------------------------------------------------------------------------------------


def test_explorer_redraws_when_the_query_moves(models):
    G, D = models
    explorer = AttentionExplorer(G, D, query=(16, 16))
    first = explorer.png
    assert first.startswith(PNG_MAGIC) and explorer.picture.value == first
    explorer.row.value = 4
    after_row = explorer.png
    assert after_row != first and explorer.picture.value == after_row
    explorer.col.value = 30
    assert explorer.png not in (first, after_row)
    explorer.row.value, explorer.col.value = 16, 16
    assert explorer.png == first  # same choice, same picture: drawing is deterministic
    assert "Query (16, 16)" in explorer.summary.value


def test_explorer_distance_matches_the_function(models):
    G, D = models
    explorer = AttentionExplorer(G, D, layer="G/16x16", query=(3, 29))
    _, maps = generate_with_attention(G, seed=0)
    distances = mean_attention_distance(maps["16x16"][0], (16, 16), (32, 32))
    assert explorer.mean_distance == pytest.approx(distances[1 * 16 + 14].item(), rel=1e-5)
    assert f"{explorer.mean_distance:.1f} px" in explorer.summary.value


def test_explorer_switches_layers_of_g_and_d(models):
    G, D = models
    explorer = AttentionExplorer(G, D)
    assert list(explorer.layer.options) == ["G/8x8", "G/16x16", "D/16x16", "D/8x8"]
    pictures = set()
    for layer in explorer.layer.options:
        explorer.layer.value = layer
        pictures.add(explorer.png)
        assert layer in explorer.summary.value
        assert explorer.view().gamma == pytest.approx(0.0)  # untrained: γ starts at 0
    assert len(pictures) == 4
    view = explorer.view()  # D/8x8 judges G's sample for seed 0
    torch.testing.assert_close(view.image, generate_with_attention(G, 0)[0][0])
    assert view.attention.shape == (64, 16) and view.feature_size == (8, 8)


def test_explorer_seed_and_new_sample_button(models):
    G, D = models
    explorer = AttentionExplorer(G, D, seed=3)
    before = explorer.png
    explorer.new_sample.click()
    assert explorer.seed.value == 4 and explorer.png != before
    explorer.seed.value = 3
    assert explorer.png == before


def test_explorer_runs_the_models_once_per_sample(models):
    G, D = models
    calls = {"G": 0, "D": 0}
    handles = [
        G.register_forward_hook(lambda *_: calls.__setitem__("G", calls["G"] + 1)),
        D.register_forward_hook(lambda *_: calls.__setitem__("D", calls["D"] + 1)),
    ]
    try:
        explorer = AttentionExplorer(G, D)
        for value in (1, 5, 9, 30):  # query moves only slice the stored attention
            explorer.row.value = value
            explorer.col.value = value
        assert calls == {"G": 1, "D": 0}
        explorer.layer.value = "D/16x16"
        explorer.layer.value = "D/8x8"  # both D layers come from the same D pass
        explorer.row.value = 12
        assert calls == {"G": 1, "D": 1}
        explorer.seed.value = 1
        explorer.seed.value = 0  # cached
        assert calls == {"G": 2, "D": 2}
    finally:
        for handle in handles:
            handle.remove()


def test_explorer_d_on_a_real_image(models):
    G, D = models
    real = torch.rand(3, 1, 32, 32) * 2 - 1
    explorer = AttentionExplorer(G, D, real_images=real, layer="D/16x16", seed=4)
    assert explorer.source is not None and not explorer.source.disabled
    generated = explorer.png
    explorer.source.value = "real"
    assert explorer.png != generated and "real image #1" in explorer.summary.value
    torch.testing.assert_close(explorer.view().image, real[1])  # seed 4 → image 4 mod 3
    explorer.layer.value = "G/16x16"
    assert explorer.source.disabled  # G's layers always look at G's own sample


def test_explorer_class_conditional(conditional_models):
    G, D = conditional_models
    explorer = AttentionExplorer(G, D)
    assert explorer.label is not None and list(explorer.label.options) == [0, 1, 2]
    pictures = []
    for label in (0, 1, 2):
        explorer.label.value = label
        pictures.append(explorer.png)
        expected = sample_images(G, 1, seed=0, labels=torch.tensor([label]))[0]
        torch.testing.assert_close(explorer.view().image, expected)
    assert len(set(pictures)) == 3
    explorer.layer.value = "D/16x16"  # conditional D gets the class too
    assert explorer.png.startswith(PNG_MAGIC)


def test_explorer_controls_carry_css_classes_and_display(models):
    G, D = models
    explorer = AttentionExplorer(G, D)
    assert "sagan-explorer" in explorer.widget._dom_classes
    assert "sagan-query-row" in explorer.row._dom_classes
    assert "sagan-query-col" in explorer.col._dom_classes
    assert "sagan-overlay" in explorer.picture._dom_classes
    assert "sagan-layer" in explorer.layer._dom_classes
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert (
        bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    )


def _with_gammas(G: Generator, scale: float) -> Generator:
    """A copy of G whose attention gates are γ = scale · (0.5, 0.3, ...), set by hand."""
    copy = copy_module.deepcopy(G)
    with torch.no_grad():
        for i, layer in enumerate(copy.attention_layers().values()):
            layer.gamma.fill_(scale * (0.5 - 0.2 * i))
    return copy


def test_explorer_gamma_control_regenerates_the_sample(models):
    G, D = models
    G = _with_gammas(G, 1.0)  # untrained γs are 0: nothing to scale
    gammas = [layer.gamma.detach().clone() for layer in G.attention_layers().values()]
    explorer = AttentionExplorer(G, D, seed=5)
    assert "sagan-gamma-scale" in explorer.gamma_scale._dom_classes
    assert explorer.gamma_scale.value == 1.0 and explorer.reference() is None
    first = explorer.png
    for scale in (0.0, 2.0, -1.0):
        explorer.gamma_scale.value = scale
        # The reference: a copy of G with its γs set to scale · γ by hand.
        expected = sample_images(_with_gammas(G, scale), 1, seed=5)[0]
        torch.testing.assert_close(explorer.view().image, expected)
        torch.testing.assert_close(explorer.reference(), sample_images(G, 1, seed=5)[0])
        assert explorer.png != first and f"G's γ × {scale:g}" in explorer.summary.value
    explorer.gamma_scale.value = 0.0
    assert "(attention off)" in explorer.summary.value
    explorer.layer.value = "D/16x16"  # D judges the sample G drew without attention
    torch.testing.assert_close(
        explorer.view().image, sample_images(_with_gammas(G, 0.0), 1, seed=5)[0]
    )
    explorer.layer.value = "G/8x8"
    explorer.gamma_scale.value = 1.0
    assert explorer.png == first  # back to the model as trained
    for layer, gamma in zip(G.attention_layers().values(), gammas, strict=True):
        assert torch.equal(layer.gamma.detach(), gamma)  # the γs were restored exactly


def test_explorer_gamma_control_on_a_real_image_changes_nothing(models):
    G, D = models
    G = _with_gammas(G, 1.0)
    real = torch.rand(2, 1, 32, 32) * 2 - 1
    explorer = AttentionExplorer(G, D, real_images=real, layer="D/16x16")
    explorer.source.value = "real"
    before = explorer.png
    explorer.gamma_scale.value = 0.0  # G's γ does not touch a real image
    assert explorer.reference() is None and "γ ×" not in explorer.summary.value
    torch.testing.assert_close(explorer.view().image, real[0])
    assert explorer.png == before


def test_plot_attention_grid_with_scaled_gammas(models):
    G, _ = models
    G = _with_gammas(G, 1.0)
    fig = plot_attention_grid(G, "G/16x16", seed=1, queries=[(4, 4)], gamma_scale=0.0)
    assert len(fig.axes) == 4  # image, one query, the change from γ × 1, the colour bar
    assert "G's γ × 0" in fig.axes[0].get_title()
    off = sample_images(_with_gammas(G, 0.0), 1, seed=1)[0]
    change = (off - sample_images(G, 1, seed=1)[0]).abs().amax(0)  # (S, S)
    assert change.mean() > 0
    assert f"mean {float(change.mean()):.3f}" in fig.axes[2].get_title()
    torch.testing.assert_close(torch.as_tensor(fig.axes[2].get_images()[0].get_array()), change)


def test_explorer_needs_attention_layers():
    G = Generator(z_dim=16, base_channels=8, attention_at=())
    with pytest.raises(ValueError, match="no attention layers"):
        AttentionExplorer(G)


def test_redraw_time_on_the_pretrained_model():
    from sagan_edu.pretrained import load_pretrained

    G, D = load_pretrained()
    started = time.perf_counter()
    explorer = AttentionExplorer(G, D)
    first = time.perf_counter() - started
    times = []
    for row in range(2, 32, 6):
        explorer.row.value = row
        times.append(explorer.redraw_seconds)
    explorer.layer.value = "D/16x16"
    d_time = explorer.redraw_seconds
    print(
        f"\nAttentionExplorer on the pretrained model: first draw (runs G) {first * 1000:.0f} ms, "
        f"query moves {min(times) * 1000:.0f}–{max(times) * 1000:.0f} ms, "
        f"first D layer draw (runs D) {d_time * 1000:.0f} ms"
    )
    assert explorer.png.startswith(PNG_MAGIC)


# ---------------------------------------------------------------------------------------------
# SequenceAttentionExplorer
# ---------------------------------------------------------------------------------------------


def _sequence_weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "layer 0": torch.softmax(torch.randn(2, 5, 5, generator=gen), -1),  # (heads, L, L)
        "layer 1": torch.softmax(torch.randn(1, 4, 5, 5, generator=gen), -1),  # (1, h, L, L)
        "layer 2": torch.softmax(torch.randn(5, 5, generator=gen), -1),  # one head
    }


def test_sequence_explorer_layers_and_heads():
    tokens = ["the", "cat", "sat", "on", "it"]
    explorer = SequenceAttentionExplorer(tokens, _sequence_weights())
    weights = _sequence_weights()
    assert explorer.png.startswith(PNG_MAGIC)
    assert [v for _, v in explorer.head.options] == [0, 1, explorer.MEAN]
    pictures = {explorer.png}
    explorer.head.value = 1
    torch.testing.assert_close(explorer.current_weights(), weights["layer 0"][1])
    pictures.add(explorer.png)
    explorer.head.value = explorer.MEAN
    torch.testing.assert_close(explorer.current_weights(), weights["layer 0"].mean(0))
    pictures.add(explorer.png)
    explorer.layer.value = "layer 1"  # 4 heads: the head choice (mean) is kept
    assert [v for _, v in explorer.head.options] == [0, 1, 2, 3, explorer.MEAN]
    assert explorer.head.value == explorer.MEAN
    pictures.add(explorer.png)
    explorer.layer.value = "layer 2"  # one head: no mean to take, back to head 0
    assert [v for _, v in explorer.head.options] == [0] and explorer.head.value == 0
    torch.testing.assert_close(explorer.current_weights(), weights["layer 2"])
    pictures.add(explorer.png)
    assert len(pictures) == 5
    assert "sagan-sequence-explorer" in explorer.widget._dom_classes
    print(f"\nSequenceAttentionExplorer redraw: {explorer.redraw_seconds * 1000:.0f} ms")


def test_sequence_explorer_redraws_once_per_layer_change():
    explorer = SequenceAttentionExplorer(list("abcde"), _sequence_weights())
    draws = []
    original = explorer.redraw
    explorer.redraw = lambda: (draws.append(1), original())
    explorer.layer.value = "layer 1"
    assert len(draws) == 1


def test_sequence_explorer_errors():
    with pytest.raises(ValueError, match="2 query and 2 key tokens"):
        SequenceAttentionExplorer(["a", "b"], {"l": torch.rand(2, 3, 3)})
    with pytest.raises(ValueError, match="weights is empty"):
        SequenceAttentionExplorer(["a"], {})
    with pytest.raises(ValueError, match="attention weights must be"):
        SequenceAttentionExplorer(["a"], {"l": torch.rand(2, 2, 1, 1)})


# ---------------------------------------------------------------------------------------------
# Static twins
# ---------------------------------------------------------------------------------------------


def test_plot_attention_grid_draws_what_the_explorer_draws(models):
    G, D = models
    queries = [(0, 0), (16, 16), (31, 5)]
    fig = plot_attention_grid(G, "G/16x16", seed=2, queries=queries)
    assert len(fig.axes) == 5  # the image, three queries, the shared colour bar
    assert "G/16x16" in fig.axes[0].get_title()
    view = attention_view(G, "G/16x16", seed=2)
    for ax, query in zip(fig.axes[1:4], queries, strict=True):
        assert f"{tuple(query)}: {view.distance(query):.1f} px" in ax.get_title()
        assert f"(even spread {view.uniform_distance(query):.1f} px)" in ax.get_title()
    fig = plot_attention_grid(G, "D/8x8", seed=2, queries=queries[:1], discriminator=D)
    assert len(fig.axes) == 3 and "D/8x8" in fig.axes[0].get_title()
    real = torch.zeros(1, 32, 32)
    assert attention_view(G, "D/16x16", 2, D, real_image=real).image.abs().max() == 0
    with pytest.raises(ValueError, match="pass discriminator="):
        plot_attention_grid(G, "D/16x16")


def test_plot_attention_distances_and_sequence_layers():
    attention = torch.softmax(torch.randn(3, 256, 64), -1)
    ax = plot_attention_distances(attention, (16, 16), (32, 32), title="G").axes[0]
    assert ax.get_title() == "G" and len(ax.get_lines()) == 2  # the mean and the baseline
    fig = plot_sequence_attention_layers(list("abcde"), _sequence_weights())
    assert len(fig.axes) == 3 * 4 + 1  # 3 layers × the widest layer's 4 heads, one colour bar
    titled = [a.get_title().split("\n")[0] for a in fig.axes if a.get_title()]
    assert titled[:3] == ["layer 0, head 0", "layer 0, head 1", "layer 1, head 0"]
    assert len(titled) == 2 + 4 + 1
    top = max(float(w.max()) for w in _sequence_weights().values())  # one scale for all panels
    assert {a.get_images()[0].get_clim() for a in fig.axes if a.get_images()} == {(0.0, top)}


# ---------------------------------------------------------------------------------------------
# Bad arguments: refused with the reason, never clamped by a slider without a word
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "G/64x64"}, r"no attention layer 'G/64x64' here; choose one of G/8x8, G/16x16"),
        ({"query": (40, 3)}, r"query \(40, 3\) lies outside the 32×32 image"),
        ({"query": (-1, 3)}, r"query \(-1, 3\) lies outside"),
        ({"query": 5}, r"query must be a pair of whole numbers"),
        ({"seed": -1}, r"seed must be a whole number from 0 to 2\*\*31 - 1, got -1"),
        ({"gamma_scale": 10}, r"gamma_scale must be a number from -1 to 3 .*got 10"),
        ({"real_images": torch.zeros(2, 1, 28, 28)}, r"real_images must be \(B, 1, 32, 32\)"),
        ({"real_images": torch.zeros(2, 1, 32, 32).numpy()}, r"real_images must be .*ndarray"),
    ],
)
def test_attention_explorer_refuses_bad_arguments(models, kwargs, message):
    G, D = models
    with pytest.raises(ValueError, match=message):
        AttentionExplorer(G, D if "real_images" in kwargs else None, **kwargs)


def test_attention_explorer_needs_a_generator_first(models):
    G, D = models
    with pytest.raises(ValueError, match=r"generator must be a sagan_edu Generator.*Discriminator"):
        AttentionExplorer(D)
    with pytest.raises(ValueError, match=r"discriminator must be a sagan_edu Discriminator"):
        AttentionExplorer(G, discriminator="D")


def test_sequence_explorer_needs_a_dict_of_weights():
    weights = torch.rand(2, 3, 3)
    with pytest.raises(ValueError, match=r"weights must be a dict .*got Tensor.*'layer 0'"):
        SequenceAttentionExplorer(["a", "b", "c"], weights)
