"""Spectral normalisation: divide a layer's weight by its largest singular value σ(W).

A layer with σ(W) = 1 cannot stretch any input by more than a factor of 1, so a discriminator
built from such layers is (roughly) 1-Lipschitz: its output cannot jump when the input moves a
little, which keeps its gradients useful to the generator. SAGAN puts it on G as well as D.

σ(W) is estimated by power iteration: keep a unit vector u, and do a round of
v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖; then σ ≈ uᵀWv. Because W changes slowly between steps, one round per
training step is enough (Miyato et al., 2018), starting from the u and v the last round left.

When does the round run? Two ways, chosen per model:

- By default (`update_in_forward = True`), every forward in training mode runs one round, like
  `torch.nn.utils.parametrizations.spectral_norm`. Simple, but a GAN step runs G and D twice
  each (D step and G step), so every layer does two rounds per step, each a few small kernels.
- After `update_once_per_step(model)`, forwards only read u and v, and the training loop calls
  `update_spectral_norms(model)` once per optimizer step. This is what `sagan_edu.training` does:
  it halves the power-iteration work (34 → 17 rounds per step for the default SAGAN) and keeps
  forwards free of buffer writes, which CUDA-graph capture and torch.compile like.

u and v are constants for autograd: the gradient flows through W alone, as in the paper.

Precision: the power iteration and σ run in float32 even when the weight is bf16/fp16 (say under
mixed precision): in half precision σ would be estimated too coarsely. A float64 weight (after
`.double()`) is normalised in float64, with u and v in float64 too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SpectralNorm", "spectral_norm", "update_once_per_step", "update_spectral_norms"]


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """float64 for a float64 weight, float32 for everything else (fp32, bf16, fp16)."""
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in `dtype`; t itself when it already is (even a no-op .to() costs a dispatch)."""
    return t if t.dtype == dtype else t.to(dtype)


class SpectralNorm(nn.Module):
    """A parametrization W -> W / σ(W); u and v are buffers, so they live in checkpoints."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if weight.dim() < 2:
            raise ValueError(
                "spectral norm needs a weight with at least 2 dims, "
                f"got shape {tuple(weight.shape)}"
            )
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        self.update_in_forward = True  # False after update_once_per_step(model)
        w = weight.detach().flatten(1).to(compute_dtype(weight))  # (out, in): a kernel as a matrix
        self.register_buffer("u", F.normalize(w.new_empty(w.size(0)).normal_(), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(w.new_empty(w.size(1)).normal_(), dim=0, eps=eps))
        # Start from a good estimate of σ, not a random one (PyTorch does the same).
        self.power_iteration(w, n_iterations=15)

    @torch.no_grad()
    def power_iteration(
        self, w: torch.Tensor, n_iterations: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n rounds on the matrix w (out, in), from the stored u; stores and returns (u, v).

        The returned u and v are new tensors, not the buffers, so a σ computed from them stays
        valid for backward even if the buffers are updated again before it runs.
        """
        u = _cast(self.u, w.dtype)  # (out,); a copy only if the module was cast to bf16/fp16
        for _ in range(n_iterations):
            v = F.normalize(torch.mv(w.t(), u), dim=0, eps=self.eps)  # (in,)
            u = F.normalize(torch.mv(w, v), dim=0, eps=self.eps)  # (out,)
        self.u.copy_(u)
        self.v.copy_(v)
        return u, v

    @torch.no_grad()
    def update(self, weight: torch.Tensor) -> None:
        """One step's rounds (n_power_iterations of them) on the current weight."""
        w = _cast(weight.flatten(1), compute_dtype(weight))  # (out, in)
        self.power_iteration(w, self.n_power_iterations)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(weight)
        # Under autocast, w @ v would run in bf16/fp16 whatever dtype we ask for: switch it off.
        with torch.autocast(device_type=weight.device.type, enabled=False):
            w = _cast(weight.flatten(1), dtype)  # (out, in)
            if self.training and self.update_in_forward:
                u, v = self.power_iteration(w, self.n_power_iterations)
            else:
                u, v = _cast(self.u, dtype), _cast(self.v, dtype)  # the buffers themselves
            sigma = torch.dot(u, torch.mv(w, v))  # u and v are constants: no gradient
            return _cast(_cast(weight, dtype) / sigma, weight.dtype)


def spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise `module.weight` in place and return the module.

    The learned weight is stored as `module.parametrizations.weight.original`; `module.weight`
    is recomputed as original / σ(original) on every access.
    """
    _check_normalisable(module)
    parametrize.register_parametrization(
        module, "weight", SpectralNorm(module.weight, n_power_iterations)
    )
    return module


def _check_normalisable(module: object) -> None:
    """A layer with a `weight` parameter (nn.Linear, nn.Conv2d, …), not yet normalised."""
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"spectral_norm takes a layer (an nn.Module such as nn.Conv2d), got "
            f"{type(module).__name__}; to normalise a weight tensor, wrap it in its layer"
        )
    if parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, SpectralNorm) for p in module.parametrizations.weight
    ):
        raise ValueError(
            "this layer is already spectrally normalised; a second spectral_norm would divide "
            "by σ twice and keep two sets of u, v. Call it once"
        )
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        raise ValueError(
            f"spectral_norm normalises a layer's `weight`, and this {type(module).__name__} "
            "has none; apply it to the layers that have one (nn.Linear, nn.Conv2d, nn.Embedding)"
        )


def _spectral_norms(model: nn.Module) -> list[tuple[SpectralNorm, torch.Tensor]]:
    """Every SpectralNorm inside `model`, with the (unnormalised) weight it divides."""
    found = []
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):
            found += [(p, module.original) for p in module if isinstance(p, SpectralNorm)]
    return found


def update_once_per_step(model: nn.Module) -> None:
    """Forwards of `model` stop running power iterations; call update_spectral_norms per step."""
    for sn, _ in _spectral_norms(model):
        sn.update_in_forward = False


@torch.no_grad()
def update_spectral_norms(model: nn.Module) -> None:
    """One step's power iteration in every spectrally normalised layer of `model`.

    Call it once per optimizer step, before the forwards that use the new σ (the Trainer does).
    """
    for sn, weight in _spectral_norms(model):
        sn.update(weight)
