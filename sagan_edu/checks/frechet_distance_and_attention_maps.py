"""Checks for solutions/05_frechet_distance_and_attention_maps.ipynb: FD, query maps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sagan_edu.checks._common import (
    CheckFailed,
    Tensor,
    _call,
    _expect_close,
    _fail,
    _fixed_seed,
    _lost_unit_dims,
    _number,
    _passed,
    _randn,
    _squeeze_advice,
    _tensor,
    checked,
)
from sagan_edu.viz import query_attention_map

# ---------------------------------------------------------------------------------------------
# Exercise 9: the Fréchet distance
# ---------------------------------------------------------------------------------------------


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigh)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def reference_frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) in float64, unbiased covariances.

    Tr((Σa Σb)^½) is computed as Tr((Σa^½ Σb Σa^½)^½): the same eigenvalues, but of a symmetric
    matrix, so it stays real and stable.
    """
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D), divided by N − 1
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return fd.item()


def _fd_variants(a: Tensor, b: Tensor) -> list[tuple[float, str]]:
    """Values that common mistakes give, with what to say about each."""
    a, b = a.double(), b.double()
    mu = (a.mean(0) - b.mean(0)).square().sum().item()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    tr = (cov_a.trace() + cov_b.trace()).item()
    trace_sqrt = reference_frechet_distance(a, b) - mu - tr  # −2·Tr((ΣaΣb)^½)
    biased_a, biased_b = torch.cov(a.T, correction=0), torch.cov(b.T, correction=0)
    biased = (mu + biased_a.trace() + biased_b.trace()).item() - 2 * _trace_sqrt(biased_a, biased_b)
    variance_only = mu + tr - 2 * (cov_a.diagonal() * cov_b.diagonal()).sqrt().sum().item()
    eigvalsh_product = torch.linalg.eigvalsh(cov_a @ cov_b).clamp(min=0).sqrt().sum().item()
    return [
        (
            mu / a.shape[1] + tr + trace_sqrt,
            "your mean term is the mean of the squared differences, ((μ_a − μ_b)**2).mean(); it "
            "is their sum, the squared distance ‖μ_a − μ_b‖²",
        ),
        (
            mu + tr - 2 * eigvalsh_product,
            "torch.linalg.eigvalsh assumes a symmetric matrix and reads only one triangle of it, "
            "but Σ_a Σ_b is not symmetric: use torch.linalg.eigvals (complex), or the symmetric "
            "Σ_a^½ Σ_b Σ_a^½, which has the same eigenvalues",
        ),
        (
            tr + trace_sqrt,
            "the mean term is missing: add ‖μ_a − μ_b‖², the squared distance between the two "
            "means",
        ),
        (
            math.sqrt(mu) + tr + trace_sqrt,
            "your mean term is ‖μ_a − μ_b‖; it should be squared: ((μ_a − μ_b)**2).sum()",
        ),
        (
            mu + tr - 2 * (cov_a @ cov_b).trace().item(),
            "you used Tr(Σ_a Σ_b) where the formula has Tr((Σ_a Σ_b)^½): take the matrix square "
            "root, e.g. the sum of √λ over the eigenvalues λ of Σ_a Σ_b",
        ),
        (
            mu + tr - 2 * (_sqrtm_psd(cov_a) @ _sqrtm_psd(cov_b)).trace().item(),
            "you used Σ_a^½ Σ_b^½, but (Σ_a Σ_b)^½ is not Σ_a^½ Σ_b^½ unless the matrices "
            "commute: take the square root of the product (e.g. √ of the eigenvalues of Σ_a Σ_b)",
        ),
        (
            biased,
            "your covariances divide by N; use the unbiased estimate that divides by N − 1, as "
            "torch.cov does",
        ),
        (
            variance_only,
            "you used only the variances (the diagonals of Σ_a and Σ_b); the formula needs the "
            "full covariance matrices, torch.cov(features.T)",
        ),
        (mu + tr, "the cross term −2·Tr((Σ_a Σ_b)^½) is missing"),
        (
            math.sqrt(max(reference_frechet_distance(a, b), 0.0)),
            "you took the square root of the whole expression; the Fréchet distance as FID "
            "reports it is the squared distance ‖μ_a − μ_b‖² + Tr(…), with no root at the end",
        ),
        (
            mu + tr - 2 * (cov_a @ cov_b).diagonal().sqrt().sum().item(),
            "torch.sqrt works entry by entry, but (Σ_a Σ_b)^½ is the matrix square root: e.g. "
            "the sum of √λ over the eigenvalues λ of Σ_a Σ_b "
            "(torch.linalg.eigvals(...).sqrt().real.sum())",
        ),
    ]


def _trace_sqrt(cov_a: Tensor, cov_b: Tensor) -> float:
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    return torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum().item()


def _correlated(n: int, d: int, gen: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    mixing = _randn(d, d, gen=gen, dtype=dtype)
    return _randn(n, d, gen=gen, dtype=dtype) @ mixing


@checked
def check_frechet_distance(frechet_distance: Callable[[Tensor, Tensor], Any]) -> None:
    """Exercise 9: `frechet_distance(features_a (N, D), features_b (M, D))` -> a float.

    FD = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½), with unbiased covariances (torch.cov).
    """
    fn = frechet_distance
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        a, b = _correlated(60, 6, gen), 1.3 * _correlated(45, 6, gen) + 0.5
        c, d = _correlated(10, 3, gen), _correlated(13, 3, gen) - 1.0
        e, f = _correlated(300, 12, gen).float(), (0.8 * _correlated(200, 12, gen) + 0.2).float()
        constant_a, constant_b = a.clone(), b.clone()
        constant_a[:, 2], constant_b[:, 2] = 1.0, 3.0  # a dead feature: Σ has a zero row
        few_a, few_b = _correlated(5, 12, gen), _correlated(7, 12, gen) + 0.5  # rank 4 and 6 of 12
        cases = [
            ("a (60, 6) and b (45, 6), float64", a, b, 1e-4),
            ("a (10, 3) and b (13, 3): few samples, float64", c, d, 1e-4),
            ("a (300, 12) and b (200, 12), float32", e, f, 1e-3),
            ("a (60, 6) and b (45, 6) whose feature 2 is constant (singular Σ)", constant_a,
             constant_b, 1e-4),
            ("a (5, 12) and b (7, 12): fewer samples than features (singular Σ)", few_a, few_b,
             1e-4),
        ]  # fmt: skip
        hint = (
            "torch.cov treats each ROW as one variable: for features (N, D), torch.cov(features.T) "
            "is the (D, D) covariance. Covariances can be singular here (a constant feature, "
            "fewer samples than features), so avoid a Cholesky factor or an inverse."
        )
        for where, x, y, rtol in cases:
            expected = reference_frechet_distance(x, y)
            value = _number(_call(fn, x.clone(), y.clone(), hint=hint), "your Fréchet distance")
            if math.isnan(value) and "singular" in where:
                _fail(
                    f"your Fréchet distance is NaN for {where}. When a covariance is singular, "
                    "some eigenvalues of Σ_a Σ_b are 0 in exact arithmetic and come out as tiny "
                    "negative numbers (−1e-17) in floating point, and their square root is NaN. "
                    "This happens with real features (a classifier's dead ReLU units, or fewer "
                    "images than features): clamp them at 0 before the square root "
                    "(.real.clamp(min=0).sqrt()), or take the square root of the complex "
                    "eigenvalues and keep its real part (.sqrt().real)"
                )
            if math.isnan(value):
                _fail(
                    f"your Fréchet distance is NaN ({where}): a square root of a negative "
                    "number? torch.sqrt works entry by entry; Tr((Σ_a Σ_b)^½) needs the matrix "
                    "square root, e.g. the sum of √λ over the eigenvalues λ of Σ_a Σ_b "
                    "(torch.linalg.eigvals(...).sqrt().real.sum())"
                )
            if math.isclose(value, expected, rel_tol=rtol, abs_tol=1e-6):
                continue
            for wrong, explanation in _fd_variants(x, y):
                if math.isclose(value, wrong, rel_tol=rtol, abs_tol=1e-6):
                    _fail(
                        f"{explanation}\n  (Your value {value:.5g}, expected {expected:.5g}, for "
                        f"{where}.)"
                    )
            if math.isclose(value, expected, rel_tol=1e-2):
                _fail(
                    f"your Fréchet distance is {value:.6g}, close to {expected:.6g} but not close "
                    f"enough ({where}): compute in float64 (.double()), since the trace term is a "
                    "small difference of large numbers"
                )
            _fail(
                f"your Fréchet distance is {value:.5g}, expected {expected:.5g} ({where}).\n  "
                "FD = ‖μ_a − μ_b‖² + Tr(Σ_a) + Tr(Σ_b) − 2·Tr((Σ_a Σ_b)^½), covariances from "
                "torch.cov(features.T)"
            )

        same = _number(_call(fn, a.clone(), a.clone()), "your Fréchet distance")
        if abs(same) > 1e-4 * (1 + torch.cov(a.T).trace().item()):
            _fail(f"the Fréchet distance of a feature set to itself must be 0, yours is {same:.4g}")
        shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0], dtype=torch.float64)
        shifted = _number(_call(fn, a.clone(), a + shift), "your Fréchet distance")
        if not math.isclose(shifted, shift.square().sum().item(), rel_tol=1e-4, abs_tol=1e-3):
            _fail(
                f"moving every feature vector by the same c (same covariance) should give "
                f"FD = ‖c‖² = {shift.square().sum().item():.4g}, yours is {shifted:.4g}: check "
                "the mean term ‖μ_a − μ_b‖²"
            )
        swapped = _number(_call(fn, b.clone(), a.clone()), "your Fréchet distance")
        if not math.isclose(swapped, reference_frechet_distance(a, b), rel_tol=1e-4):
            _fail("your Fréchet distance is not symmetric: FD(a, b) must equal FD(b, a)")
    _passed(
        "check_frechet_distance",
        "5 pairs of correlated feature sets (different sizes, few samples, float32, a constant "
        "feature, fewer samples than features), FD(a, a) = 0, "
        "a shift c gives ‖c‖², symmetry.",
    )


# ---------------------------------------------------------------------------------------------
# Exercise 10: where one query pixel looks
# ---------------------------------------------------------------------------------------------


_QUERY_MISTAKES = {
    "round": "you rounded the query's position on the feature map to the nearest row and column; "
    "a pixel lies in the feature cell that contains it, so round down: row · H // rows, "
    "col · W // cols",
    "inverted": "you scaled the query by rows / H instead of H / rows: going from image pixels to "
    "the smaller feature map divides, row · H // rows, col · W // cols",
    "swapped": "you read the query as (x, y); it is (row, col), like the tensor index "
    "image[row, col]: row = query[0], col = query[1]",
}


def _query_on_features(
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None,
    rule: str = "floor",
) -> tuple[int, int]:
    """The query's (row, col) on the feature map, worked out by the right rule or a mistake."""
    H, W = feature_size
    rows, cols = image_size or (H, W)
    r, c = query
    if rule == "floor":
        return r * H // rows, c * W // cols
    if rule == "round":
        return round(r * H / rows), round(c * W / cols)
    if rule == "inverted":
        return r * rows // H, c * cols // W
    if rule == "swapped":
        return c * H // rows, r * W // cols
    return r, c  # no rescaling at all


def _query_map_variant(
    attention: Tensor,
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None,
    *,
    column_major: bool = False,
    mode: str = "bilinear",
    align_corners: bool | None = False,
    rescale_query: bool = True,
    use_column: bool = False,
    query_rule: str = "floor",
    query_on_pooled_grid: bool = False,
    grid_columns_first: bool = False,
    normalise: str = "sum",
) -> Tensor | None:
    """query_attention_map, with one thing done the way a common mistake does it."""
    H, W = feature_size
    B, N, M = attention.shape
    pool = round((N / M) ** 0.5)
    rows, cols = image_size or (H, W)
    r, c = _query_on_features(feature_size, query, image_size, query_rule if rescale_query else "")
    n = c * H + r if column_major else r * W + c
    if query_on_pooled_grid:  # as if queries were pooled like the keys
        n = (r // pool) * (W // pool) + c // pool
    if n >= N or (use_column and M != N):
        return None
    row = attention[:, :, n] if use_column else attention[:, n]
    if grid_columns_first:
        grid = row.reshape(B, 1, W // pool, H // pool).transpose(-2, -1).float()
    else:
        grid = row.reshape(B, 1, H // pool, W // pool).float()
    kwargs = {"align_corners": align_corners} if mode in ("bilinear", "bicubic") else {}
    up = F.interpolate(grid, size=(rows, cols), mode=mode, **kwargs)[:, 0]
    if normalise == "softmax":
        return up.flatten(1).softmax(dim=-1).view_as(up)
    return up / up.sum(dim=(1, 2), keepdim=True)


def _explain_out_of_range(
    err: CheckFailed,
    attention: Tensor,
    feature_size: tuple[int, int],
    query: tuple[int, int],
    image_size: tuple[int, int] | None,
    where: str,
) -> None:
    """Your code indexed past the attention's rows: say which mistake puts the query there."""
    H, W = feature_size
    N = attention.shape[1]
    for rule, explanation in _QUERY_MISTAKES.items():
        r, c = _query_on_features(feature_size, query, image_size, rule)
        if not (0 <= r < H and 0 <= c < W) or r * W + c >= N:
            _fail(
                f"your code indexed outside the attention ({type(err.__cause__).__name__}: "
                f"{err.__cause__}) for {where}: {explanation}. (That rule puts the query at "
                f"row {r}, col {c} of a {H}×{W} feature map.)"
            )
    if image_size is not None:
        r, c = query
        if r * W + c >= N:
            _fail(
                f"your code indexed outside the attention ({err.__cause__}) for {where}: the "
                "query is given in image coordinates; map it to the feature map first "
                "(row · H // rows, col · W // cols)"
            )


@checked
def check_query_attention_map(query_attention_map_fn: Callable[..., Tensor]) -> None:
    """Exercise 10: `query_attention_map(attention, feature_size, query, image_size=None)`.

    attention (B, N, M) from a SAGAN block on an (H, W) map with keys pooled p×p; query (row, col)
    in image_size coordinates -> (B, rows, cols): the query's row of attention laid out on the
    (H/p, W/p) grid, upsampled bilinearly (align_corners=False) and rescaled to sum to 1.
    """
    fn = query_attention_map_fn
    cases = [
        ((1, 24, 24), (4, 6), (1, 4), None),  # pool 1, non-square
        ((2, 64, 16), (8, 8), (3, 5), None),
        ((2, 64, 16), (8, 8), (2, 3), (16, 16)),  # upsampled ×2
        ((2, 60, 15), (6, 10), (7, 33), (24, 40)),  # non-square, upsampled ×4
        ((1, 64, 16), (8, 8), (31, 0), (32, 32)),  # a corner pixel
    ]
    hint = (
        "Each row of attention has M = (H/p)·(W/p) entries on the pooled grid (not H·W), "
        "p = √(N/M); the query (row, col) is in image_size coordinates."
    )
    with _fixed_seed():
        gen = torch.Generator().manual_seed(0)
        for shape, feature_size, query, image_size in cases:
            attention = torch.softmax(_randn(*shape, gen=gen), dim=-1)
            where = (
                f"attention {shape}, feature_size={feature_size}, query={query}, "
                f"image_size={image_size}"
            )
            expected = query_attention_map(attention, feature_size, query, image_size)
            args = (attention.clone(), feature_size, query)
            args += (image_size,) if image_size is not None else ()
            try:
                got = _call(fn, *args, hint=hint)
            except CheckFailed as err:
                if isinstance(err.__cause__, IndexError | RuntimeError):
                    _explain_out_of_range(err, attention, feature_size, query, image_size, where)
                raise
            got = _tensor(got, "your map")
            if _lost_unit_dims(got.shape, expected.shape):
                _fail(_squeeze_advice("your map", got.shape, expected.shape, where))
            if got.shape != expected.shape:
                _fail(
                    f"your map has shape {tuple(got.shape)}, expected {tuple(expected.shape)} = "
                    f"(B, rows, cols) ({where})"
                )
            sums = got.detach().double().sum(dim=(1, 2))
            if len(sums) > 1 and math.isclose(sums.sum().item(), 1.0, abs_tol=1e-4):
                _fail(
                    f"your maps sum to 1 all together, not one by one ({where}): divide each "
                    "map by its own sum, up.sum(dim=(1, 2), keepdim=True), not by the sum over "
                    "the whole batch"
                )
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                _fail(
                    f"your map sums to {sums[0].item():.3g}, not 1 ({where}): upsampling changes "
                    "the total, so divide by the sum afterwards"
                )
            variant = {
                "attention": attention,
                "feature_size": feature_size,
                "query": query,
                "image_size": image_size,
            }
            _expect_close(
                got,
                expected,
                "your map",
                where,
                mistakes=[
                    (
                        _query_map_variant(**variant, column_major=True),
                        "you counted positions column by column; the attention's rows follow "
                        "positions row by row: n = row · W + col",
                    ),
                    (
                        _query_map_variant(**variant, use_column=True),
                        "you took column n of the attention (which queries look at position n); "
                        "where query n looks is row n: attention[:, n]",
                    ),
                    (
                        _query_map_variant(**variant, mode="nearest", align_corners=None),
                        "you upsampled with mode='nearest'; use bilinear (F.interpolate(..., "
                        "mode='bilinear', align_corners=False)) for a smooth overlay",
                    ),
                    (
                        _query_map_variant(**variant, mode="bicubic"),
                        "you upsampled with mode='bicubic'; the reference uses bilinear "
                        "(F.interpolate(..., mode='bilinear', align_corners=False)), which never "
                        "overshoots below 0",
                    ),
                    (
                        _query_map_variant(**variant, normalise="softmax"),
                        "you normalised with a softmax, which re-weights the map (exp of "
                        "probabilities); divide by the sum instead, so the upsampled weights "
                        "keep their proportions",
                    ),
                    (
                        _query_map_variant(**variant, query_on_pooled_grid=True)
                        if attention.shape[1] != attention.shape[2]
                        else None,
                        "you looked the query up on the pooled grid; only keys and values are "
                        "pooled, queries are not: the query's row is n = r·W + c on the full "
                        "H×W feature map",
                    ),
                    (
                        _query_map_variant(**variant, grid_columns_first=True),
                        "you laid the row out as a (W/p, H/p) grid and transposed it; the keys "
                        "are numbered row by row, so reshape straight to (B, 1, H/p, W/p)",
                    ),
                    (
                        _query_map_variant(**variant, align_corners=True),
                        "use align_corners=False when upsampling, as the reference does",
                    ),
                    *(
                        (_query_map_variant(**variant, query_rule=rule), explanation)
                        for rule, explanation in _QUERY_MISTAKES.items()
                    ),
                    (
                        _query_map_variant(**variant, rescale_query=False) if image_size else None,
                        "the query is given in image coordinates: map it to the feature map "
                        "first (row · H // rows, col · W // cols)",
                    ),
                ],
                advice="Take row n = r·W + c of attention (r, c: the query on the feature map), "
                "reshape it to (B, 1, H/p, W/p), upsample bilinearly to (rows, cols), divide by "
                "the sum.",
                rtol=1e-4,
                atol=1e-6,
            )
    _passed(
        "check_query_attention_map",
        "5 maps (pool 1 and 2, non-square, upsampled, a corner query) against the library's "
        "query_attention_map.",
    )
