"""Numbers that describe SAGAN attention maps: how far a query looks, how spread out it is, and
how much of its weight lands on a region (for twin-shapes: on the other shape).

A SelfAttention2d layer on an H×W feature map returns attention (B, N, M): row n = row·W + col is
where query cell n looks, over the M = (H/p)·(W/p) keys that max-pooling in p×p blocks left
(p = the layer's `pool`, 2 in the course's models). Every function here takes that layout.

    distances = mean_attention_distance(maps["16x16"], (16, 16), (32, 32))   # (B, 256) pixels
    baseline = uniform_distance_per_query((16, 16), pool=2, image_size=(32, 32))  # (256,)
    shares = twin_attention_share(maps["16x16"], images, (16, 16))    # twin-shapes samples

Why the baselines matter: a query that spreads its weight evenly also "looks far" on average, so a
mean distance, or a share of weight on a region, means something only next to what an even spread
would give for the same query.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "attention_entropy",
    "attention_share",
    "check_attention_weights",
    "check_pair",
    "mean_attention_distance",
    "pool_factor",
    "query_index",
    "twin_attention_share",
    "twin_shape_masks",
    "uniform_attention_distance",
    "uniform_distance_per_query",
]


def check_pair(name: str, value: object) -> tuple[int, int]:
    """(row, col) or (H, W): two whole numbers, else a ValueError that says so."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a pair of whole numbers such as (16, 16), got {value!r}")
    return int(value[0]), int(value[1])


def check_attention_weights(attention: object) -> None:
    """attention (..., N, M) must be softmax weights: a float tensor, no negative entry, and every
    row summing to 1 (or to 0, a fully masked query). Raw scores (q·k before the softmax) would
    otherwise give distances, entropies and shares that mean nothing, without any error."""
    if not isinstance(attention, torch.Tensor) or attention.dim() < 2:
        got = tuple(attention.shape) if isinstance(attention, torch.Tensor) else None
        raise ValueError(
            "attention must be a (B, N, M) or (N, M) tensor of weights, as SelfAttention2d "
            f"returns with return_attention=True, got {got or type(attention).__name__}"
        )
    if not attention.is_floating_point():
        raise ValueError(f"attention must hold float weights, got dtype {attention.dtype}")
    if attention.numel() == 0:
        return
    w = attention.detach().float()
    sums = w.sum(dim=-1)
    # A weight may round a little below 0 or a row's sum away from 1 in bf16; scores do far more.
    rows_ok = ((sums - 1).abs() < 2e-2) | (sums.abs() < 2e-2)
    if bool(w.min() < -1e-3) or not bool(rows_ok.all()):
        raise ValueError(
            "attention must be softmax weights (each query's row ≥ 0 and summing to 1), but its "
            f"entries run from {w.min().item():.3g} to {w.max().item():.3g} and its rows sum to "
            f"{sums.min().item():.3g}…{sums.max().item():.3g}: these look like scores before "
            "the softmax; pass the weights (scores.softmax(dim=-1))"
        )


def pool_factor(N: int, M: int, feature_size: tuple[int, int]) -> int:
    """How much a layer pooled its keys: N queries and M keys on an H×W map give pool."""
    H, W = check_pair("feature_size", feature_size)
    if N != H * W:
        raise ValueError(f"attention has {N} query rows but feature_size {H}×{W} has {H * W}")
    pool = round((N / M) ** 0.5)
    if (H // pool) * (W // pool) != M:
        raise ValueError(f"cannot lay {M} keys on a grid pooled from {H}×{W}")
    return pool


def query_index(
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None = None,
) -> int:
    """The row of the attention matrix that belongs to `query` (row, col).

    `query` is in `image_size` coordinates (feature-map coordinates if image_size is None); the
    query pixel belongs to the feature-map cell that covers it.
    """
    H, W = check_pair("feature_size", feature_size)
    rows, cols = (H, W) if image_size is None else check_pair("image_size", image_size)
    r, c = check_pair("query", query)
    if not (0 <= r < rows and 0 <= c < cols):
        raise ValueError(f"query {query} lies outside the {rows}×{cols} image")
    return (r * H // rows) * W + (c * W // cols)


# ---------------------------------------------------------------------------------------------
# How far a query looks
# ---------------------------------------------------------------------------------------------


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
        A 3×3 conv sees about 1 cell away; compare with `uniform_distance_per_query`.
    """
    N, M = attention.shape[-2:]
    pool = pool_factor(N, M, feature_size)
    check_attention_weights(attention)
    distances = _query_key_distances(feature_size, pool, image_size).to(attention.device)  # (N, M)
    return (attention.float() * distances.float()).sum(dim=-1)


def uniform_distance_per_query(
    feature_size: tuple[int, int],
    pool: int,
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The mean attention distance of every query if it spread its weight evenly over the keys.

    The baseline for `mean_attention_distance`: query n's average distance to all M pooled keys.
    It depends on where the query sits: on a 32 px image (16×16 map, keys pooled to 8×8) a query
    near the centre gets about 12 px, a corner query about 23 px, and the average over all
    queries is about 16.6 px.

    Args:
        feature_size: (H, W) of the layer's feature map.
        pool: how the layer pools its keys (SelfAttention2d's `pool`; 1 = no pooling).
        image_size: (rows, cols) to measure in image pixels (feature-map cells if None).

    Returns:
        (N,) float64, N = H·W, row-major like the attention matrix's rows.
    """
    H, W = feature_size
    if pool < 1 or H % pool or W % pool:
        raise ValueError(f"pool must be a positive integer dividing {H}×{W}, got pool={pool}")
    return _query_key_distances(feature_size, pool, image_size).mean(dim=-1)


def uniform_attention_distance(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """`uniform_distance_per_query` shaped like `mean_attention_distance(attention, …)`.

    Only the shape of `attention` is used: (B, N, M) -> (B, N), (N, M) -> (N,).
    """
    N, M = attention.shape[-2:]
    pool = pool_factor(N, M, feature_size)
    uniform = uniform_distance_per_query(feature_size, pool, image_size).float()  # (N,)
    return uniform.to(attention.device).expand(attention.shape[:-1])


def _query_key_distances(
    feature_size: tuple[int, int], pool: int, image_size: tuple[int, int] | None
) -> torch.Tensor:
    """(N, M) float64 distances between query cell centres and pooled key cell centres."""
    H, W = feature_size
    rows, cols = image_size or (H, W)
    cell_h, cell_w = rows / H, cols / W  # image pixels per feature-map cell
    queries = _cell_centres(H, W, cell_h, cell_w)  # (N, 2)
    keys = _cell_centres(H // pool, W // pool, cell_h * pool, cell_w * pool)  # (M, 2)
    return torch.cdist(queries, keys)


def _cell_centres(rows: int, cols: int, cell_h: float, cell_w: float) -> torch.Tensor:
    """(rows·cols, 2) centres (y, x) of a grid of cells, row-major like the attention matrix."""
    y = (torch.arange(rows, dtype=torch.float64) + 0.5) * cell_h
    x = (torch.arange(cols, dtype=torch.float64) + 0.5) * cell_w
    return torch.cartesian_prod(y, x)


# ---------------------------------------------------------------------------------------------
# How spread out a query's weights are
# ---------------------------------------------------------------------------------------------


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ_k w_k·ln w_k of every row, in nats: (..., N, M) -> (..., N).

    0 when a query puts all its weight on one key; ln M, the most there is, when it spreads it
    evenly over all M keys. Zero weights add nothing (0·ln 0 = 0).
    """
    check_attention_weights(attention)
    w = attention.float()
    return -(w * torch.log(w.clamp_min(torch.finfo(w.dtype).tiny))).sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Where a query's weight lands: regions, and the twin-shapes question
# ---------------------------------------------------------------------------------------------


def attention_share(
    attention: torch.Tensor,
    feature_size: tuple[int, int],
    query_mask: torch.Tensor,
    key_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much weight queries in one region put on keys in another, against an even spread.

    Args:
        attention: (B, N, M) from a layer on an H×W feature map (`feature_size`).
        query_mask, key_mask: (B, S, S) booleans on the image (S a multiple of H). A feature-map
            cell counts as in a region when any of its pixels is; a pooled key likewise when any
            pixel of its block is (as max-pooling lets any of them through).

    Returns:
        (share, uniform), each (B,): share = the mean, over the query cells in `query_mask`, of
        each query's total weight on the keys in `key_mask`; uniform = the fraction of keys in
        `key_mask`, what queries that spread their weight evenly would put there. NaN for an
        image without query cells.
    """
    N, M = attention.shape[-2:]
    pool = pool_factor(N, M, feature_size)
    queries = _cells(query_mask, feature_size, 1).flatten(1)  # (B, N)
    keys = _cells(key_mask, feature_size, pool).flatten(1)  # (B, M)
    check_attention_weights(attention)
    on_keys = (attention.float() * keys[:, None, :]).sum(-1)  # (B, N): each query's weight there
    share = (on_keys * queries).sum(-1) / queries.sum(-1)  # NaN where no query: 0 / 0
    return share, keys.mean(-1)


def _cells(mask: torch.Tensor, feature_size: tuple[int, int], pool: int) -> torch.Tensor:
    """(B, S, S) pixel mask -> (B, H/pool, W/pool) float cell mask (1 where any pixel is set)."""
    H, W = feature_size
    if mask.dim() != 3 or mask.shape[-2] % H or mask.shape[-1] % W:
        raise ValueError(
            f"masks must be (batch, rows, cols) with rows and cols multiples of the feature map's "
            f"{H}×{W}, got {tuple(mask.shape)}"
        )
    block = (mask.shape[-2] // H * pool, mask.shape[-1] // W * pool)
    return F.max_pool2d(mask[:, None].float(), block)[:, 0]


def twin_shape_masks(
    images: torch.Tensor, threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shape in each half of twin-shapes images: (left, right), each (B, S, S) bool.

    A pixel is on a shape when its brightest channel is above `threshold` (the background is
    black, -1; the shapes' colours reach 1). A mask holds only its own half's pixels.
    """
    on = images.detach().float().amax(dim=1) > threshold  # (B, S, S)
    columns = torch.arange(images.shape[-1], device=images.device)
    half = images.shape[-1] / 2
    left, right = on & (columns < half), on & (columns >= half)  # (B, S, S) each
    return left, right


def twin_attention_share(
    attention: torch.Tensor,
    images: torch.Tensor,
    feature_size: tuple[int, int],
    threshold: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Does a query on one shape of a twin-shapes image attend to its twin? Per image, (B,) each.

    Queries are the feature-map cells on either shape (`twin_shape_masks`); for each image:

        twin            mean weight a shape's queries put on keys covering the other shape
        twin_uniform    what an even spread would put there (the share of keys on that shape)
        own             mean weight a shape's queries put on keys covering their own shape
        own_uniform     the share of keys on their own shape
        other_half      mean weight a shape's queries put on keys in the other half
        other_half_uniform  the share of keys in the other half (0.5 on an even grid)

    `own` is the control for `twin`: queries that look at bright pixels in general, rather than
    at the twin, put weight above the even level on both shapes.

    Left-shape and right-shape queries are pooled, each weighted by its number of query cells.
    NaN for an image with no shape pixels.
    """
    B, S = images.shape[0], images.shape[-1]
    left, right = twin_shape_masks(images, threshold)  # (B, S, S) each
    columns = torch.arange(S, device=images.device).expand(B, S, S)
    left_half, right_half = columns < S / 2, columns >= S / 2  # (B, S, S) each
    n_left = _cells(left, feature_size, 1).flatten(1).sum(-1)  # (B,): query cells on each shape
    n_right = _cells(right, feature_size, 1).flatten(1).sum(-1)

    def both_shapes(keys_for_left: torch.Tensor, keys_for_right: torch.Tensor):
        share_l, uniform_l = attention_share(attention, feature_size, left, keys_for_left)
        share_r, uniform_r = attention_share(attention, feature_size, right, keys_for_right)
        return (
            _weighted_mean(share_l, share_r, n_left, n_right),
            _weighted_mean(uniform_l, uniform_r, n_left, n_right),
        )

    twin, twin_uniform = both_shapes(right, left)
    own, own_uniform = both_shapes(left, right)
    other_half, other_half_uniform = both_shapes(right_half, left_half)
    return {
        "twin": twin,
        "twin_uniform": twin_uniform,
        "own": own,
        "own_uniform": own_uniform,
        "other_half": other_half,
        "other_half_uniform": other_half_uniform,
    }


def _weighted_mean(a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor):
    """(wa·a + wb·b) / (wa + wb); a side with weight 0 (and a NaN value) counts for nothing."""
    total = wa * torch.nan_to_num(a) + wb * torch.nan_to_num(b)
    return total / (wa + wb)  # NaN only where both sides are empty
