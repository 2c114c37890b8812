"""The fast step: the whole training iteration recorded once and replayed as a CUDA graph.

Why: the SAGANs of this course are small, so on a GPU an eager step spends most of its time on the
host, launching about a thousand small kernels one by one, while the GPU waits. A CUDA graph
records every kernel of one iteration (D step, G step, both Adam updates, the EMA) once; each
later step is then a single `graph.replay()`: one launch from the host instead of a thousand.
(See "CUDA Graphs" in the PyTorch docs, torch.cuda.graphs, "whole-network capture".)

What a graph needs, and how this module gives it:

- **Static memory.** A replay reads and writes the same addresses every time. So each step's
  inputs (real batch, noise, labels) are *copied into* tensors allocated once, and its outputs
  (losses) are read from the tensors the graph writes.
- **Nothing decided on the host.** The EMA decay changes with the step count (its warm-up), so it
  lives in a one-element GPU tensor filled before each replay; Adam is built with
  `capturable=True`, which keeps its step count on the GPU; and the step never asks the GPU for
  a value (`.item()` would stop the capture).
- **Warm-up.** The first `WARMUP_STEPS` steps run eagerly on a side stream, so everything that is
  created lazily (Adam's moments, cuBLAS and cuDNN workspaces) exists before the capture.
  They are real training steps, not thrown away.

Same random numbers as the eager step: the batch indices come from the trainer's data generator
and the noise from its noise generator, in the eager step's order, before being copied into the
static tensors. A fast run therefore follows the eager run up to floating-point rounding
(tests/test_gpu.py checks the parameters agree), and checkpoints and exact resume work as before.

Where it cannot run (no CUDA GPU, fp16 with a GradScaler, several processes, torch.compile),
`captured_step` prints one line saying why and the Trainer runs the eager step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sagan_edu.spectral_norm import update_spectral_norms

if TYPE_CHECKING:
    from sagan_edu.training import Trainer

__all__ = ["WARMUP_STEPS", "CapturedStep", "captured_step", "why_not_captured"]

WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's docs warm up for 3 as well)


def why_not_captured(trainer: Trainer) -> str | None:
    """Why this trainer's step cannot be captured as a CUDA graph, or None if it can."""
    if trainer.device.type != "cuda":
        return f"CUDA graphs need a CUDA GPU, and this run is on {trainer.device.type}"
    if trainer.scaler.is_enabled():
        return "fp16 AMP's GradScaler checks for inf on the host every step (this GPU has no bf16)"
    if trainer.world_size > 1:
        return "not with several processes (DistributedDataParallel)"
    if trainer.config.compile:
        return "it replaces compile=True rather than combining with it"
    return None


def captured_step(trainer: Trainer) -> CapturedStep | None:
    """A CapturedStep for the trainer, or None after printing why it cannot have one."""
    reason = why_not_captured(trainer)
    if reason is None:
        return CapturedStep(trainer)
    if trainer.is_main:
        print(f"fast_step is off: {reason}. Running the eager step.")
    return None


class CapturedStep:
    """Call it once per training step; it returns the step's metrics, like Trainer.eager_step."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        config, device = trainer.config, trainer.device
        batch, z_dim = config.batch_size, config.z_dim
        image_shape = trainer.dataset.images.shape[1:]  # (C, H, W)
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        conditional = trainer.num_classes is not None

        def labels() -> torch.Tensor | None:
            return torch.zeros(batch, dtype=torch.long, device=device) if conditional else None

        # The static inputs: one real batch, its labels and D's noise per D step, then G's.
        self.real = [
            torch.zeros(batch, *image_shape, device=device).contiguous(memory_format=layout)
            for _ in range(config.n_dis)
        ]  # n_dis × (B, C, H, W)
        self.real_labels = [labels() for _ in range(config.n_dis)]  # n_dis × (B,) or None
        self.z_d = [torch.zeros(batch, z_dim, device=device) for _ in range(config.n_dis)]
        self.g_labels = labels()  # (B,) or None
        self.z_g = torch.zeros(batch, z_dim, device=device)  # (B, z_dim)
        self.ema_weight = torch.zeros((), device=device)  # 1 − decay, set before every step

        self.warmup_left = WARMUP_STEPS
        self.graph: torch.cuda.CUDAGraph | None = None
        self.metrics: dict[str, torch.Tensor] = {}  # the tensors the graph writes its losses to

    def __call__(self) -> dict[str, torch.Tensor]:
        self._load_inputs()
        if self.warmup_left > 0:
            self.warmup_left -= 1
            return self._warmup_step()
        if self.graph is None:
            # Recording runs nothing: the replay below is this step.
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.metrics = self._iteration()
        self.graph.replay()
        # Copies: the next replay overwrites the graph's outputs.
        return {name: value.clone() for name, value in self.metrics.items()}

    def _load_inputs(self) -> None:
        """Draw this step's batch, noise and labels as the eager step does; copy them in."""
        t = self.trainer
        for real, real_labels, z in zip(self.real, self.real_labels, self.z_d, strict=True):
            images, labels = t._real_batch()
            real.copy_(images)
            if real_labels is not None:
                real_labels.copy_(labels)
            z.copy_(t._noise(len(images)))
        if self.g_labels is not None:
            self.g_labels.copy_(t._random_labels(t.config.batch_size))
        self.z_g.copy_(t._noise(t.config.batch_size))
        self.ema_weight.fill_(1.0 - t._ema_decay())

    def _warmup_step(self) -> dict[str, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            metrics = self._iteration()
        torch.cuda.current_stream().wait_stream(side)
        return metrics

    def _iteration(self) -> dict[str, torch.Tensor]:
        """Trainer.eager_step on the static inputs, with an EMA whose decay is a GPU tensor."""
        t = self.trainer
        t.G.train()
        t.D.train()
        update_spectral_norms(t.G)
        for real, real_labels, z in zip(self.real, self.real_labels, self.z_d, strict=True):
            metrics = t._discriminator_step(real, real_labels, z)
        metrics["loss_g"] = t._generator_step(self.g_labels, self.z_g)
        self._update_ema()
        return metrics

    @torch.no_grad()
    def _update_ema(self) -> None:
        """update_ema(G_ema, G, decay), with 1 − decay read from the GPU (same arithmetic)."""
        t = self.trainer
        for ema_param, param in zip(t.G_ema.parameters(), t.G.parameters(), strict=True):
            ema_param.lerp_(param, self.ema_weight)
        torch._foreach_copy_(list(t.G_ema.buffers()), list(t.G.buffers()))  # G has BatchNorms
