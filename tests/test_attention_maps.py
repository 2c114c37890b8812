"""sagan_edu.attention_maps against independent references: float64 loops, closed forms, scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from sagan_edu.attention import SelfAttention2d
from sagan_edu.attention_maps import (
    attention_entropy,
    attention_share,
    mean_attention_distance,
    twin_attention_share,
    twin_shape_masks,
    uniform_attention_distance,
    uniform_distance_per_query,
)
from sagan_edu.data import load_dataset
from sagan_edu.viz import collect_attention

# ---------------------------------------------------------------------------------------------
# The even-spread distance, per query
# ---------------------------------------------------------------------------------------------


def brute_force_uniform_distance(H, W, pool, rows, cols):
    """For every query cell, the plain average of its distances to every pooled key: loops."""
    cell_h, cell_w = rows / H, cols / W
    key_h, key_w = cell_h * pool, cell_w * pool
    result = []
    for qr in range(H):
        for qc in range(W):
            qy, qx = (qr + 0.5) * cell_h, (qc + 0.5) * cell_w
            total, count = 0.0, 0
            for kr in range(H // pool):
                for kc in range(W // pool):
                    ky, kx = (kr + 0.5) * key_h, (kc + 0.5) * key_w
                    total += math.hypot(ky - qy, kx - qx)
                    count += 1
            result.append(total / count)
    return result


@pytest.mark.parametrize(
    ("H", "W", "pool", "image_size"),
    [(16, 16, 2, (32, 32)), (8, 8, 1, None), (8, 4, 2, (24, 12)), (6, 6, 3, (30, 30))],
)
def test_uniform_distance_per_query_matches_loops(H, W, pool, image_size):
    got = uniform_distance_per_query((H, W), pool, image_size)
    rows, cols = image_size or (H, W)
    expected = brute_force_uniform_distance(H, W, pool, rows, cols)
    assert got.shape == (H * W,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_uniform_distance_per_query_approaches_the_closed_forms():
    # On a fine grid, an even spread over a unit square has known mean distances:
    #   from the centre (√2 + ln(1 + √2)) / 6 ≈ 0.3826, from a corner twice that,
    #   and between two random points (2 + √2 + 5 ln(1 + √2)) / 15 ≈ 0.5214.
    log_term = math.log(1 + math.sqrt(2))
    centre, corner = (math.sqrt(2) + log_term) / 6, (math.sqrt(2) + log_term) / 3
    pair = (2 + math.sqrt(2) + 5 * log_term) / 15
    n = 64
    grid = uniform_distance_per_query((n, n), pool=1, image_size=(1, 1)).reshape(n, n)
    middle = grid[n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1].mean()  # the 4 centre cells
    assert float(middle) == pytest.approx(centre, rel=0.01)
    assert float(grid[0, 0]) == pytest.approx(corner, rel=0.03)  # the cell's centre is inset
    assert float(grid.mean()) == pytest.approx(pair, rel=0.01)


def test_the_numbers_notebook_09_quotes():
    # 32 px image, 16×16 map, keys max-pooled to 8×8 (SelfAttention2d's default pool=2).
    grid = uniform_distance_per_query((16, 16), pool=2, image_size=(32, 32)).reshape(16, 16)
    assert float(grid[8, 8]) == pytest.approx(12.2, abs=0.05)  # a query in the middle
    assert float(grid[0, 0]) == pytest.approx(23.2, abs=0.05)  # a corner query
    assert float(grid.mean()) == pytest.approx(16.6, abs=0.05)  # averaged over all queries


def test_uniform_attention_distance_is_the_per_query_baseline_of_a_real_layer():
    torch.manual_seed(0)
    layer = SelfAttention2d(16, pool=2).eval()
    _, attention = layer(torch.randn(3, 16, 8, 8), return_attention=True)  # (3, 64, 16)
    flat = torch.full_like(attention, 1 / attention.shape[-1])  # what an even spread gives
    expected = mean_attention_distance(flat, (8, 8), (32, 32))  # (3, 64)
    torch.testing.assert_close(uniform_attention_distance(attention, (8, 8), (32, 32)), expected)
    loops = torch.tensor(brute_force_uniform_distance(8, 8, 2, 32, 32), dtype=torch.float32)
    torch.testing.assert_close(expected[1], loops)


def test_uniform_distance_per_query_errors():
    with pytest.raises(ValueError, match="pool must be a positive integer dividing 6×6"):
        uniform_distance_per_query((6, 6), pool=4)
    with pytest.raises(ValueError, match="pool must be"):
        uniform_distance_per_query((6, 6), pool=0)


# ---------------------------------------------------------------------------------------------
# Entropy, and shares of attention on a region
# ---------------------------------------------------------------------------------------------


def test_attention_entropy_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    attention = torch.softmax(3 * torch.randn(2, 5, 7, generator=gen, dtype=torch.float64), -1)
    attention[0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0])  # all on one key: entropy 0
    expected = scipy_entropy(attention.numpy(), axis=-1)  # natural log
    np.testing.assert_allclose(attention_entropy(attention).numpy(), expected, atol=1e-6)
    even = torch.full((4, 7), 1 / 7)
    np.testing.assert_allclose(attention_entropy(even).numpy(), np.log(7), rtol=1e-6)


def brute_force_share(attention, H, W, pool, query_mask, key_mask):
    """float64 loops: cells count when any of their pixels is in the mask."""
    B, M = attention.shape[0], attention.shape[-1]
    S = query_mask.shape[-1]
    px = S // W  # pixels per cell
    shares, uniforms = [], []
    for b in range(B):
        key_in = []
        for kr in range(H // pool):
            for kc in range(W // pool):
                block = key_mask[b, kr * px * pool : (kr + 1) * px * pool,
                                 kc * px * pool : (kc + 1) * px * pool]  # fmt: skip
                key_in.append(bool(block.any()))
        total, count = 0.0, 0
        for qr in range(H):
            for qc in range(W):
                if query_mask[b, qr * px : (qr + 1) * px, qc * px : (qc + 1) * px].any():
                    row = attention[b, qr * W + qc].double()
                    total += sum(float(row[k]) for k in range(M) if key_in[k])
                    count += 1
        shares.append(total / count if count else float("nan"))
        uniforms.append(sum(key_in) / M)
    return shares, uniforms


def test_attention_share_matches_loops():
    gen = torch.Generator().manual_seed(3)
    attention = torch.softmax(2 * torch.randn(3, 64, 16, generator=gen), -1)  # 8×8 map, pool 2
    query_mask = torch.rand(3, 16, 16, generator=gen) > 0.8  # 16 px image: 2 px per cell
    key_mask = torch.rand(3, 16, 16, generator=gen) > 0.9
    query_mask[2] = False  # an image without queries: NaN
    share, uniform = attention_share(attention, (8, 8), query_mask, key_mask)
    expected_share, expected_uniform = brute_force_share(attention, 8, 8, 2, query_mask, key_mask)
    np.testing.assert_allclose(share.numpy(), expected_share, rtol=1e-5)
    np.testing.assert_allclose(uniform.numpy(), expected_uniform, rtol=1e-6)
    assert math.isnan(share[2])


def test_attention_share_errors():
    with pytest.raises(ValueError, match="multiples of the feature map's 8×8"):
        attention_share(torch.rand(1, 64, 16), (8, 8), torch.ones(1, 12, 12), torch.ones(1, 12, 12))


def test_scores_before_the_softmax_are_refused_not_measured():
    """Raw q·k scores used to give a distance, an entropy and a share without any error."""
    scores = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(0))
    masks = torch.ones(2, 16, 16, dtype=torch.bool)
    calls = {
        "mean_attention_distance": lambda a: mean_attention_distance(a, (8, 8)),
        "attention_entropy": attention_entropy,
        "attention_share": lambda a: attention_share(a, (8, 8), masks, masks),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"look like scores before the softmax.*softmax\(dim"):
            call(scores)
        weights = scores.softmax(dim=-1)
        assert torch.isfinite(call(weights)[0]).all(), name  # the weights themselves still work
    with pytest.raises(
        ValueError, match=r"attention must hold float weights, got dtype torch.int64"
    ):
        attention_entropy(torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, N, M\) or \(N, M\) tensor of weights.*ndarray"):
        attention_entropy(np.full((4, 4), 0.25))
    fully_masked = torch.zeros(3, 5)  # rows a padding mask left empty: weights 0, entropy 0
    assert attention_entropy(fully_masked).tolist() == [0.0, 0.0, 0.0]


def _two_squares() -> torch.Tensor:
    """(1, 3, 16, 16): a red 2×2 square in each half, the left at rows 4-5, the right at 10-11."""
    image = -torch.ones(1, 3, 16, 16)
    image[0, 0, 4:6, 2:4] = 1.0  # left: rows 4-5, cols 2-3
    image[0, 0, 10:12, 12:14] = 1.0  # right: rows 10-11, cols 12-13
    return image


def test_twin_attention_share_on_a_hand_made_image():
    image = _two_squares()
    left, right = twin_shape_masks(image)
    assert left.sum() == 4 and right.sum() == 4 and not left[..., 8:].any()
    # A 8×8 map (2 px cells) with keys pooled to 4×4 (4 px blocks): the left square is key
    # (1, 0) = 4, the right one key (2, 3) = 11.
    attention = torch.zeros(1, 64, 16)
    attention[0, :, 11] = 1.0  # every query looks only at the right square ...
    attention[0, 2 * 8 + 1, 11], attention[0, 2 * 8 + 1, 4] = 0.0, 1.0  # ... except the left one
    result = twin_attention_share(attention, image, (8, 8))
    # The left square's only query cell (2, 1) looks at itself, the right square's (5, 6) at
    # itself too: nothing lands on a twin, nothing on the other half.
    assert float(result["twin"][0]) == 0.0 and float(result["other_half"][0]) == 0.0
    assert float(result["own"][0]) == 1.0 and float(result["own_uniform"][0]) == pytest.approx(
        1 / 16
    )
    assert float(result["twin_uniform"][0]) == pytest.approx(1 / 16)
    assert float(result["other_half_uniform"][0]) == pytest.approx(0.5)
    attention = torch.zeros(1, 64, 16)
    attention[0, :, 4] = attention[0, :, 11] = 0.5  # everyone splits between the two squares
    result = twin_attention_share(attention, image, (8, 8))
    assert float(result["twin"][0]) == pytest.approx(0.5)
    assert float(result["own"][0]) == pytest.approx(0.5)
    even = twin_attention_share(torch.full((1, 64, 16), 1 / 16), image, (8, 8))
    assert float(even["twin"][0]) == pytest.approx(float(even["twin_uniform"][0]))


def test_twin_shape_masks_find_the_shapes_of_real_twin_images():
    images = load_dataset("twin-shapes", train=False, img_size=32, length=16).images
    left, right = twin_shape_masks(images)
    assert (left.flatten(1).sum(1) > 0).all() and (right.flatten(1).sum(1) > 0).all()
    assert not left[..., 16:].any() and not right[..., :16].any()
    # Twins have the same kind and size: their masks hold the same number of pixels.
    torch.testing.assert_close(left.flatten(1).sum(1), right.flatten(1).sum(1))


def test_twin_attention_share_on_a_model():
    torch.manual_seed(0)
    images = load_dataset("twin-shapes", train=False, img_size=32, length=4).images
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 2, stride=2), SelfAttention2d(16))
    _, maps = collect_attention(block.eval(), images)
    result = twin_attention_share(maps["1"], images, (16, 16))
    assert set(result) == {
        "twin", "twin_uniform", "own", "own_uniform", "other_half", "other_half_uniform"
    }  # fmt: skip
    for values in result.values():
        assert values.shape == (4,) and ((values >= 0) & (values <= 1)).all()
