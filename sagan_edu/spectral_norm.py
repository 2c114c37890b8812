"""Spectral normalisation: divide a layer's weight by its largest singular value σ(W).

A layer with σ(W) = 1 cannot stretch any input by more than a factor of 1, so a discriminator
built from such layers is (roughly) 1-Lipschitz: its output cannot jump when the input moves a
little, which keeps its gradients useful to the generator. SAGAN puts it on G as well as D.

σ(W) is estimated by power iteration: keep a vector u, and each training step do one round of
v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖; then σ ≈ uᵀWv. Because W changes slowly between steps, one round per
step is enough (Miyato et al., 2018).

This is the same method as `torch.nn.utils.parametrizations.spectral_norm`, written out so it can
be read, and always computed in float32: under mixed precision the power iteration in bf16/fp16
would estimate σ too coarsely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SpectralNorm", "spectral_norm"]


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
        w = weight.detach().flatten(1).float()  # (out, in): a conv's kernel as a matrix
        self.register_buffer("u", F.normalize(w.new_empty(w.size(0)).normal_(), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(w.new_empty(w.size(1)).normal_(), dim=0, eps=eps))
        # Start from a good estimate of σ, not a random one (PyTorch does the same).
        self._power_iteration(w, n_iterations=15)

    @torch.no_grad()
    def _power_iteration(self, w: torch.Tensor, n_iterations: int) -> None:
        u, v = self.u, self.v
        for _ in range(n_iterations):
            v = F.normalize(w.t() @ u, dim=0, eps=self.eps)  # (in,)
            u = F.normalize(w @ v, dim=0, eps=self.eps)  # (out,)
        self.u.copy_(u)
        self.v.copy_(v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=weight.device.type, enabled=False):
            w = weight.flatten(1).float()  # (out, in)
            if self.training:
                self._power_iteration(w, self.n_power_iterations)
            # u and v are constants here: the gradient flows through W alone, as in the paper.
            # Clones, because the next training-mode forward (say D on a second batch before
            # backward) updates the buffers in place, and this σ's backward still needs them.
            sigma = torch.dot(self.u.clone(), w @ self.v.clone())
            return (weight.float() / sigma).to(weight.dtype)


def spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise `module.weight` in place and return the module.

    The learned weight is stored as `module.parametrizations.weight.original`; `module.weight`
    is recomputed as original / σ(original) on every access.
    """
    parametrize.register_parametrization(
        module, "weight", SpectralNorm(module.weight, n_power_iterations)
    )
    return module
