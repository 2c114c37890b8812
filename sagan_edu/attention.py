"""Attention, from the formula to the SAGAN block.

Three pieces, each built on the one before:

- `scaled_dot_product_attention`: softmax(q kᵀ · scale) v, written out so the weights can be seen.
- `MultiHeadAttention`: several attentions side by side on learned projections (sequences).
- `SelfAttention2d`: the self-attention block of SAGAN, for feature maps (images).

Shapes use B = batch, L = sequence length, N = H·W positions of a feature map, M = number of
key/value positions, C = channels, d = width of a query/key vector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.spectral_norm import spectral_norm as apply_spectral_norm

__all__ = ["MultiHeadAttention", "SelfAttention2d", "scaled_dot_product_attention"]


# ---------------------------------------------------------------------------------------------
# Input checks shared by the layers here and the models
# ---------------------------------------------------------------------------------------------


def require_tensor(value: object, name: str) -> None:
    """Raise TypeError unless `value` is a torch.Tensor, saying how to make one from it."""
    if isinstance(value, torch.Tensor):
        return
    convert = (
        f"torch.from_numpy({name}).float()"
        if type(value).__module__ == "numpy"
        else f"torch.tensor({name})"
    )
    raise TypeError(
        f"{name} must be a torch.Tensor, got {type(value).__name__}; convert it with {convert}"
    )


def require_device(x: torch.Tensor, name: str, module: nn.Module) -> None:
    """Raise ValueError unless `x` is on the device of `module`'s weights (PyTorch's own error
    names neither the tensor nor the fix)."""
    weight = next(module.parameters(), None)
    if weight is not None and x.device != weight.device:
        raise ValueError(
            f"{name} is on {x.device} but the {type(module).__name__}'s weights are on "
            f"{weight.device}; move one to the other: {name}.to('{weight.device}') or "
            f"model.to('{x.device}')"
        )


# ---------------------------------------------------------------------------------------------
# Scaled dot-product attention
# ---------------------------------------------------------------------------------------------


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(q, k, v) = softmax(q kᵀ · scale) v, computed explicitly.

    Args:
        q: queries, shape (..., Lq, d).
        k: keys, shape (..., Lk, d).
        v: values, shape (..., Lk, dv).
        mask: optional boolean tensor broadcastable to (..., Lq, Lk). True means "this query may
            attend to this key"; False positions get zero weight.
        scale: multiplies the scores before the softmax. Defaults to 1/√d, which keeps the scores'
            spread independent of d so the softmax does not saturate as d grows.

    Returns:
        out: (..., Lq, dv), each row a weighted average of the rows of v.
        weights: (..., Lq, Lk), each row sums to 1 over the keys.

    A query whose mask row is entirely False may attend to nothing: its weights row is all zeros
    and its output row is zeros (never NaN), and no gradient flows through it.
    """
    _check_qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1))
    elif not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale}")

    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if mask is None:
        weights = torch.softmax(scores, dim=-1)
    else:
        mask = _check_mask(mask, scores.shape)
        attends, safe_mask = _split_empty_rows(mask)
        weights = torch.softmax(scores.masked_fill(~safe_mask, float("-inf")), dim=-1)
        weights = weights * attends  # rows with nothing to attend to become zeros
    return weights @ v, weights


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ValueError unless q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv) fit together."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(t, name)
        if t.dim() < 2:
            raise ValueError(
                f"{name} must have at least 2 dims (..., length, features), "
                f"got shape {tuple(t.shape)}"
            )
    if not all(t.is_floating_point() for t in (q, k, v)):
        raise ValueError(
            f"q, k and v must be floating point (a softmax of integers is not defined), got "
            f"{q.dtype}, {k.dtype} and {v.dtype}; convert them with .float() first"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(
            f"q, k and v must share a dtype, got {q.dtype}, {k.dtype} and {v.dtype}; "
            "convert them with .to(dtype) first"
        )
    if q.size(-1) == 0:
        raise ValueError(
            f"q and k have width 0 (last dim), so there is nothing to compare; queries and keys "
            f"need at least one feature, got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if q.size(-1) != k.size(-1):
        raise ValueError(
            f"q and k must have the same last dim (the dot product needs equal widths), "
            f"got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if k.size(-2) != v.size(-2):
        raise ValueError(
            f"k and v must have the same number of positions (dim -2), "
            f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dims of q, k and v must broadcast, got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)} and v {tuple(v.shape)}"
        ) from None


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> torch.Tensor:
    """Return `mask` broadcast to the scores' shape (..., Lq, Lk), or raise ValueError."""
    require_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}; "
            "use mask.bool() or a comparison such as `lengths[:, None] > positions`"
        )
    try:
        return mask.expand(scores_shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores' "
            f"shape {tuple(scores_shape)} (..., Lq, Lk)"
        ) from None


def _split_empty_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a boolean mask (..., Lq, Lk) return (attends, safe_mask).

    attends (..., Lq, 1) is False for queries whose row is fully masked. safe_mask lets those rows
    attend everywhere, so the softmax never sees a row of only -inf (which would give NaN in the
    forward pass and NaN gradients in the backward pass); their results are zeroed afterwards.
    """
    attends = mask.any(dim=-1, keepdim=True)  # (..., Lq, 1)
    return attends, mask | ~attends


# ---------------------------------------------------------------------------------------------
# Multi-head attention (sequences)
# ---------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head attention for batch-first sequences.

    Each head attends in its own embed_dim/num_heads-wide subspace; the heads' outputs are
    concatenated and mixed by an output projection. Loaded with the same weights it computes what
    `torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)` computes.

    Two paths, one answer: with `need_weights=True` attention runs explicitly and returns the
    per-head weights; otherwise it calls PyTorch's fused `F.scaled_dot_product_attention`, which
    never materialises the (Lq, Lk) matrix on the flash/memory-efficient kernels.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads}), "
                "so every head gets the same width"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from `query` to `key`/`value` (self-attention when they are left out).

        Args:
            query: (B, Lq, E).
            key: (B, Lk, E); defaults to `query`.
            value: (B, Lk, E); defaults to `key`.
            mask: boolean, True = may attend. (Lq, Lk) is shared by the batch, (B, Lq, Lk) is per
                example, (B, heads, Lq, Lk) per head; any shape broadcastable to those works.
            need_weights: also return the attention weights.

        Returns:
            out: (B, Lq, E).
            weights: (B, heads, Lq, Lk) before dropout, or None unless need_weights.
        """
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        if mask is not None:
            require_tensor(mask, "mask")
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, Lq, Lk) -> (B, 1, Lq, Lk): the same for every head

        q = self._split_heads(self.q_proj(query))  # (B, h, Lq, d)
        k = self._split_heads(self.k_proj(key))  # (B, h, Lk, d)
        v = self._split_heads(self.v_proj(value))  # (B, h, Lk, d)
        dropout_p = self.dropout if self.training else 0.0

        if need_weights:
            _, weights = scaled_dot_product_attention(q, k, v, mask=mask)
            out = F.dropout(weights, dropout_p) @ v  # (B, h, Lq, d)
        else:
            weights = None
            out = _fused_attention(q, k, v, mask=mask, dropout_p=dropout_p)
        return self.out_proj(self._merge_heads(out)), weights

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, E) -> (B, heads, L, head_dim)."""
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, L, head_dim) -> (B, L, E): the heads' outputs side by side."""
        B, _, L, _ = x.shape
        return x.transpose(1, 2).reshape(B, L, self.embed_dim)

    def _check_inputs(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        for name, t in (("query", query), ("key", key), ("value", value)):
            require_tensor(t, name)
            require_device(t, name, self)
            if t.dim() != 3 or t.size(-1) != self.embed_dim:
                raise ValueError(
                    f"{name} must have shape (batch, length, {self.embed_dim}) (batch first), "
                    f"got {tuple(t.shape)}"
                )
        if not (query.size(0) == key.size(0) == value.size(0)):
            raise ValueError(
                f"query, key and value must have the same batch size, got {query.size(0)}, "
                f"{key.size(0)} and {value.size(0)}"
            )
        if key.size(1) != value.size(1):
            raise ValueError(
                f"key and value must have the same length, got {key.size(1)} and {value.size(1)}"
            )
        if not (query.dtype == key.dtype == value.dtype):
            raise ValueError(
                f"query, key and value must share a dtype, got {query.dtype}, {key.dtype} and "
                f"{value.dtype}"
            )
        weight_dtype = self.q_proj.weight.dtype
        if query.dtype != weight_dtype and not torch.is_autocast_enabled(query.device.type):
            raise ValueError(
                f"the inputs are {query.dtype} but this layer's weights are {weight_dtype}; "
                f"convert one to the other: x.to({weight_dtype}) or layer.to({query.dtype})"
            )


def _fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """PyTorch's fused attention with our conventions: (B, h, L, d) in, fully masked rows -> 0.

    The fused kernels (flash, memory-efficient, cuDNN) are only eligible for 4-D inputs whose last
    dim has stride 1; anything else silently falls back to the slower math path.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    mask = _check_mask(mask, q.shape[:-1] + k.shape[-2:-1])
    attends, safe_mask = _split_empty_rows(mask)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=safe_mask, dropout_p=dropout_p, scale=scale
    )
    return out * attends


# ---------------------------------------------------------------------------------------------
# The SAGAN self-attention block (feature maps)
# ---------------------------------------------------------------------------------------------


class SelfAttention2d(nn.Module):
    """The self-attention block of SAGAN (Zhang et al., 2019), as the authors' released code has it.

    Every position of a (B, C, H, W) feature map looks at every (pooled) position and takes a
    weighted average of their values, so far-apart regions can inform each other in one layer:

        q = Wq x                    1×1 conv C -> C/8, one query per position       (B, N, C/8)
        k = maxpool(Wk x)           1×1 conv C -> C/8, then 2×2 max-pool            (B, M, C/8)
        v = maxpool(Wv x)           1×1 conv C -> C/2, then 2×2 max-pool            (B, M, C/2)
        o = Wo softmax(q kᵀ) v      1×1 conv C/2 -> C                               (B, C, H, W)
        y = x + γ·o                 γ is a learned scalar, 0 at initialisation

    with N = H·W and M = N/pool². Pooling the keys and values cuts the cost by pool² at little
    loss; `pool=1` gives full N×N attention. γ starts at 0 so the block begins as the identity:
    the network first learns local features, then lets attention in as γ grows.

    The released code takes the softmax of q kᵀ without dividing by √d (d = C/8); `scaled=True`
    divides, as the textbook formula does. All four convs have no bias and are spectrally
    normalised by default, as in the paper: 1.25·C² weights plus γ.

    `uniform` (a plain attribute, False by default, not saved in checkpoints) replaces
    softmax(q kᵀ) by equal weights 1/M: every query then gets the mean of all pooled values. It
    exists for ablations (`sagan_edu.attention_ablation.uniform_attention`): does the block need
    *where* it looks, or only a global summary of the map?
    """

    def __init__(
        self,
        channels: int,
        *,
        qk_reduction: int = 8,
        v_reduction: int = 2,
        pool: int = 2,
        scaled: bool = False,
        spectral_norm: bool = True,
    ):
        super().__init__()
        for name, value in (("channels", channels), ("qk_reduction", qk_reduction),
                            ("v_reduction", v_reduction), ("pool", pool)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("qk_reduction", qk_reduction), ("v_reduction", v_reduction)):
            if channels < value or channels % value != 0:
                raise ValueError(
                    f"channels ({channels}) must be divisible by {name} ({value}); "
                    f"choose channels that are a multiple of {value}"
                )
        self.channels = channels
        self.pool = pool
        self.scaled = scaled
        qk_channels, v_channels = channels // qk_reduction, channels // v_reduction

        def conv1x1(c_in: int, c_out: int) -> nn.Module:
            conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
            return apply_spectral_norm(conv) if spectral_norm else conv

        self.query = conv1x1(channels, qk_channels)
        self.key = conv1x1(channels, qk_channels)
        self.value = conv1x1(channels, v_channels)
        self.out = conv1x1(v_channels, channels)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.uniform = False  # True: equal attention weights, see the class docstring

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> y (B, C, H, W), plus attention (B, N, M) if return_attention.

        Row n of the attention holds where position n = row·W + col looks, over the M = N/pool²
        pooled positions (laid out row-major on the (H/pool, W/pool) grid); each row sums to 1.
        """
        self._check_input(x)
        B, _C, H, W = x.shape
        q = _positions_last(self.query(x))  # (B, N, C/8)
        k = _positions_last(self._pool(self.key(x)))  # (B, M, C/8)
        v = _positions_last(self._pool(self.value(x)))  # (B, M, C/2)
        scale = 1.0 / math.sqrt(q.size(-1)) if self.scaled else 1.0

        if self.uniform:
            # Every query averages all M values alike: the mean value, the same at every position.
            o = v.mean(dim=1, keepdim=True).expand(B, q.size(1), v.size(-1))  # (B, N, C/2)
            attention = torch.full((B, q.size(1), k.size(1)), 1.0 / k.size(1), device=x.device)
        elif return_attention:
            o, attention = scaled_dot_product_attention(q, k, v, scale=scale)  # (B, N, C/2)
        else:
            # Flash attention (the only fused kernel on CPU) needs q, k and v equally wide.
            # Zero-padding q and k to v's width leaves every dot product q·k unchanged.
            q, k = _pad_last(q, v.size(-1)), _pad_last(k, v.size(-1))  # (B, N|M, C/2)
            # A head dim of 1 makes the inputs 4-D, which the fused kernels require.
            o = _fused_attention(q[:, None], k[:, None], v[:, None], scale=scale)[:, 0]

        o = o.transpose(1, 2).reshape(B, v.size(-1), H, W)  # (B, C/2, H, W); B may be 0
        y = x + self.gamma * self.out(o)
        return (y, attention) if return_attention else y

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.pool) if self.pool > 1 else x

    def _check_input(self, x: torch.Tensor) -> None:
        require_tensor(x, "x")
        require_device(x, "x", self)
        if x.dim() != 4:
            raise ValueError(
                f"SelfAttention2d expects a feature map of shape (batch, channels, height, width), "
                f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            )
        if x.size(1) != self.channels:
            raise ValueError(
                f"this layer was built for {self.channels} channels but the input has "
                f"{x.size(1)} (shape {tuple(x.shape)})"
            )
        weight_dtype = self.gamma.dtype
        if not x.is_floating_point():
            raise ValueError(
                f"SelfAttention2d takes floating-point feature maps, got dtype {x.dtype}; "
                "convert with x.float()"
            )
        if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"the input is {x.dtype} but this layer's weights are {weight_dtype}; convert "
                f"the input with x.to({weight_dtype})"
            )
        H, W = x.shape[-2:]
        if H == 0 or W == 0:
            raise ValueError(f"the feature map has no positions (shape {tuple(x.shape)})")
        if H % self.pool or W % self.pool:
            raise ValueError(
                f"height and width ({H}×{W}) must be divisible by pool={self.pool}, which pools "
                f"keys and values in {self.pool}×{self.pool} blocks; use pool=1 or an even size"
            )

    def extra_repr(self) -> str:
        return f"channels={self.channels}, pool={self.pool}, scaled={self.scaled}"


def _pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the last dim of x to `width` (no copy when it is already that wide)."""
    return F.pad(x, (0, width - x.size(-1))) if x.size(-1) < width else x


def _positions_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W, C), contiguous so the fused kernels see last-dim stride 1.

    For a channels_last input this is a free view; otherwise it copies once.
    """
    return x.flatten(2).transpose(1, 2).contiguous()
