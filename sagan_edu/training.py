"""The GAN training loop: plain PyTorch, readable top to bottom.

One iteration (`Trainer.step`):

    for each of n_dis discriminator steps:
        real = a batch of real images; fake = G(z), detached
        D sees real and fake in one forward; loss_D = hinge(D(real), D(fake)); update D
    fake = G(z); loss_G = -mean(D(fake)); update G
    G_ema ← a moving average of G's weights (the generator we sample from)

The pieces SAGAN relies on, and why:

- TTUR (two time-scale update rule): D learns 4× faster than G (lr 4e-4 vs 1e-4), so D stays a
  good critic without several D steps per G step. Adam with β₁ = 0: momentum makes the adversarial
  game oscillate.
- Hinge loss (sagan_edu.losses) and spectral norm (inside the models) keep D's gradients useful.
- The EMA generator averages away the last steps' jitter: its samples are cleaner than G's.
- Mixed precision (AMP) where the device supports it: bf16 on GPUs from Ampere (sm80) on, fp16
  with a GradScaler on older GPUs, off on CPU. Spectral norm always runs in float32.

Kept lean, because on a GPU these small models are bound by the host issuing kernels:

- spectral norm's power iteration runs once per layer per optimizer step (`update_spectral_norms`
  at the start of the iteration for G, of each D step for D), not in each of the four
  training-mode forwards; forwards only read u and v;
- Adam is the fused kernel (one call for all parameters) on CUDA and CPU, and the EMA one
  multi-tensor lerp;
- nothing in a step makes the host wait for the GPU: losses are summed on the device and read
  only every log_every steps (tests/test_gpu.py checks this with torch.cuda.set_sync_debug_mode).

`fast_step=True` replays the same iteration as one CUDA graph (sagan_edu.fast_step); `step()`
then runs it instead of `eager_step()`.

More than one GPU: launched with
`torchrun --standalone --nproc_per_node=K -m sagan_edu.cli train ...`, each process trains on its
own shard of every batch, DistributedDataParallel averages the gradients, and rank 0 alone writes
checkpoints and logs. `batch_size` is per process. All processes draw the same global batch of
indices and noise and take their rows of it, so the random state is the same
everywhere and a run can resume with a different K.

Checkpoints hold everything needed to continue exactly (models, optimizers, EMA, scaler, random
generator states, step, history, config). `sagan_edu.checkpoints` writes them (atomically: a
crash, kill or full disk mid-write leaves the previous checkpoint intact) and reads them
(weights_only=True, with errors that say what is wrong with a file).

A second run into the same folder: a folder that already holds a checkpoint is continued only
with resume=True, replaced only with overwrite=True, and otherwise refused; while a run trains it
holds a lock on its folder, so two runs never write into one folder at once. A run that fails
before its first checkpoint removes the folders it made (if they hold nothing else).

Ctrl-C inside `fit()` lets the step under way finish (`interrupts_deferred`), so calling `fit()`
again continues exactly as if the run had never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import numbers
import os
import signal
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sagan_edu import __version__
from sagan_edu.checkpoints import (
    CHECKPOINT_NAME,
    RunLock,
    atomic_save,
    check_known_settings,
    check_output_folder,
    check_resumable,
    folders_to_make,
    load_checkpoint,
    load_weights,
    remove_stale_temp_files,
    remove_unused_run_folder,
)
from sagan_edu.config import (
    RESUMABLE_OVERRIDES,
    TrainConfig,
    available_devices,
    check_attention_sizes,
    check_device_name,
)
from sagan_edu.data import load_dataset
from sagan_edu.fast_step import captured_step
from sagan_edu.losses import get_losses
from sagan_edu.models import Discriminator, Generator
from sagan_edu.spectral_norm import update_once_per_step, update_spectral_norms

__all__ = [
    "CHECKPOINT_NAME",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "atomic_save",
    "available_devices",
    "init_distributed",
    "interrupts_deferred",
    "load_checkpoint",
    "load_generator",
    "pick_device",
    "sample_images",
    "train",
    "update_ema",
]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left on disk."""


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Holds the models, optimizers and state of one run; `step()` does one iteration.

    Notebooks can call `step()` themselves; `fit()` runs the whole schedule with a progress bar,
    history, callbacks and checkpoints.
    """

    def __init__(self, config: TrainConfig, callback: Callable[[Trainer], None] | None = None):
        if not isinstance(config, TrainConfig):
            hint = "; build one with TrainConfig(**settings)" if isinstance(config, dict) else ""
            raise ValueError(f"Trainer needs a TrainConfig, got {type(config).__name__}{hint}")
        if callback is not None:
            _check_callback(callback)
        checkpoint_path = Path(config.out_dir) / CHECKPOINT_NAME
        checkpoint = _checkpoint_to_resume(config, checkpoint_path)
        if checkpoint is not None:
            config = _resumed_config(config, checkpoint["config"], checkpoint_path)
        check_attention_sizes(config)  # before the folder is made or the data loaded
        self.config = config
        self.callback = callback
        self.checkpoint_path = checkpoint_path
        self.rank, self.world_size, self.device = init_distributed(config.device)
        self.is_main = self.rank == 0  # only rank 0 writes checkpoints, logs and figures
        self._lock: RunLock | None = None  # held while fit() runs (see _locked)
        torch.manual_seed(config.seed)  # model initialisation: the same on every rank

        self.dataset = load_dataset(
            config.dataset, root=config.data_root, img_size=config.img_size,
            download=config.download,
        )  # fmt: skip
        if config.batch_size * self.world_size > len(self.dataset):
            processes = f" (× {self.world_size} processes)" if self.world_size > 1 else ""
            raise ValueError(
                f"batch_size={config.batch_size}{processes} is more than the "
                f"{len(self.dataset)} images of dataset {config.dataset!r}: every batch would "
                f"repeat images. Use batch_size ≤ {len(self.dataset) // self.world_size}"
            )
        self.num_classes = self.dataset.num_classes if config.conditional else None
        if config.conditional and self.num_classes is None:
            raise ValueError(
                f"conditional=True needs class labels, but dataset {config.dataset!r} has none; "
                "use conditional=False or a labelled dataset such as 'mnist5k'"
            )

        self.G = Generator(
            z_dim=config.z_dim, img_size=config.img_size, img_channels=self.dataset.channels,
            base_channels=config.g_channels,
            attention_at=config.attention_at if config.attention_in != "d" else (),
            num_classes=self.num_classes, arch=config.arch,
            attention_block=config.attention_block, attention_scaled=config.attention_scaled,
        ).to(self.device)  # fmt: skip
        self.D = Discriminator(
            img_size=config.img_size, img_channels=self.dataset.channels,
            base_channels=config.d_channels,
            attention_at=config.attention_at if config.attention_in != "g" else (),
            num_classes=self.num_classes, arch=config.arch,
            attention_block=config.attention_block, attention_scaled=config.attention_scaled,
        ).to(self.device)  # fmt: skip
        if config.channels_last:
            # In place, before the optimizers see the parameters: each pixel's channels sit next
            # to each other in memory, so cuDNN need not transpose around every convolution.
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        # Spectral norm: one power-iteration round per layer per optimizer step, run by step()
        # itself, instead of one in each of the four training-mode forwards of G and D.
        update_once_per_step(self.G)
        update_once_per_step(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        capturable = config.fast_step and self.device.type == "cuda"  # see adam()
        self.opt_g = adam(self.G, config.lr_g, config.betas, self.device, capturable)
        self.opt_d = adam(self.D, config.lr_d, config.betas, self.device, capturable)
        self.d_loss_fn, self.g_loss_fn = get_losses(config.loss)

        self.amp_dtype = amp_dtype(self.device) if config.amp else None
        # fp16 has a narrow range: scale the loss so small gradients do not underflow to zero.
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        # Separate random streams for data and noise, so a resumed run draws the same batches.
        self.data_rng = torch.Generator().manual_seed(config.seed + 1)
        self.noise_rng = torch.Generator(self.device).manual_seed(config.seed + 2)
        # DDP and torch.compile wrap the modules; state is saved from the unwrapped ones.
        self.g_forward = self._wrap(self.G, distributed=True)
        self.d_forward = self._wrap(self.D, distributed=True)
        # In the G step D's gradients are not needed, so D runs without DDP's gradient sync.
        self.d_forward_g_step = self._wrap(self.D, distributed=False)

        self.step_count = 0
        self.history: dict[str, list[float]] = {}
        self._window: dict[str, float] = {}  # sums since the last history entry
        self._window_steps = 0
        if checkpoint is not None:
            self._load_state(checkpoint)
            if self.step_count >= config.steps:
                warnings.warn(
                    f"the checkpoint in {config.out_dir} is at step {self.step_count}, so "
                    f"steps={config.steps} leaves nothing to train; pass a larger steps (--steps) "
                    "to continue the run",
                    stacklevel=2,
                )
        # fast_step: the iteration captured once as a CUDA graph, or None (eager) where it cannot
        # run; captured_step() then says why in one line.
        self.captured_step = captured_step(self) if config.fast_step else None

        # Last, once every other setting is known to work, so that a run refused above leaves
        # no empty folder behind; and still before training, not at the first checkpoint
        # minutes later: the folder must be writable, and no other run may be training into it.
        self._made_folders: list[Path] = []  # removed again if fit() fails before saving
        if self.is_main:
            self._made_folders = folders_to_make(config.out_dir)
            check_output_folder(config.out_dir, "out_dir (--out)")
            with RunLock(config.out_dir):
                pass

    # -- one iteration --------------------------------------------------------------------------

    def step(self) -> dict[str, torch.Tensor]:
        """One iteration: n_dis discriminator steps, then one generator step; returns metrics.

        With `fast_step` (on a CUDA GPU), the same iteration is replayed as a CUDA graph.
        """
        run = self.captured_step if self.captured_step is not None else self.eager_step
        metrics = run()
        self.step_count += 1
        self._accumulate(metrics)
        return metrics

    def eager_step(self) -> dict[str, torch.Tensor]:
        """The iteration in plain PyTorch: what `step()` does, and what the course reads."""
        self.G.train()
        self.D.train()
        update_spectral_norms(self.G)  # G's weights change once per iteration
        for _ in range(self.config.n_dis):
            real, labels = self._real_batch()  # (B, C, H, W), (B,) or None
            metrics = self._discriminator_step(real, labels, self._noise(len(real)))
        labels = self._random_labels(self.config.batch_size)
        metrics["loss_g"] = self._generator_step(labels, self._noise(self.config.batch_size))
        update_ema(self.G_ema, self.G, self._ema_decay())
        return metrics

    def _discriminator_step(
        self, real: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        update_spectral_norms(self.D)  # D's weights change once per D step
        with torch.no_grad(), self._autocast():
            fake = self.g_forward(z, labels)  # same labels as the real batch: a fair pair
        with self._autocast():
            # Real and fake in one forward: one pass through D instead of two.
            both = torch.cat([real, fake.to(real.dtype)])
            both_labels = None if labels is None else torch.cat([labels, labels])
            logits = self.d_forward(both, both_labels).float()  # (2B,)
            real_logits, fake_logits = logits.chunk(2)
            loss_d = self.d_loss_fn(real_logits, fake_logits)
        self._update(self.opt_d, loss_d)
        return {
            "loss_d": loss_d.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
        }

    def _generator_step(self, labels: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        self.D.requires_grad_(False)  # gradients flow through D to G, but D's own are not needed
        with self._autocast():
            fake = self.g_forward(z, labels)
            loss_g = self.g_loss_fn(self.d_forward_g_step(fake, labels).float())
        self._update(self.opt_g, loss_g)
        self.D.requires_grad_(True)
        return loss_g.detach()

    def _update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's part of a batch drawn uniformly at random (with replacement)."""
        n = self.config.batch_size * self.world_size
        index = self._shard(torch.randint(len(self.dataset), (n,), generator=self.data_rng))
        images, labels = self.dataset.images[index], self.dataset.labels[index]
        if self.device.type == "cuda":
            # From page-locked memory the copy really is asynchronous: the host goes on without
            # waiting for the GPU to finish the previous step.
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True) if self.num_classes else None
        return images, labels

    def _random_labels(self, n: int) -> torch.Tensor | None:
        if self.num_classes is None:
            return None
        n_all = n * self.world_size
        labels = torch.randint(
            self.num_classes, (n_all,), generator=self.noise_rng, device=self.device
        )
        return self._shard(labels)

    def _noise(self, n: int) -> torch.Tensor:
        n_all = n * self.world_size
        z = torch.randn(n_all, self.config.z_dim, generator=self.noise_rng, device=self.device)
        return self._shard(z)

    def _shard(self, batch: torch.Tensor) -> torch.Tensor:
        """Rows rank, rank + K, rank + 2K, … of a global batch: each rank gets its own rows."""
        return batch[self.rank :: self.world_size]

    def _wrap(self, model: nn.Module, distributed: bool) -> nn.Module:
        if distributed and self.world_size > 1:
            device_ids = [self.device] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.config.compile else model

    def _autocast(self):
        # No cast cache: it only keeps casts of leaf weights, and spectral norm makes every weight
        # a computed one; and CUDA-graph capture (fast_step) needs it off.
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
            cache_enabled=False,
        )

    def _ema_decay(self) -> float:
        # Warm up: early on, G changes fast and a 0.999 average would mostly remember the random
        # initial weights, so short runs would sample from a worse generator than they trained.
        return min(self.config.ema_decay, (1 + self.step_count) / (10 + self.step_count))

    # -- the whole schedule ---------------------------------------------------------------------

    def fit(self) -> dict[str, list[float]]:
        """Train until `config.steps`, logging, calling back and checkpointing. Returns history."""
        with self._locked():
            if self.is_main:  # the lock is ours: a temporary file here is a killed run's leftover
                remove_stale_temp_files(self.checkpoint_path)
            try:
                return self._fit()
            except BaseException:
                if self.is_main:  # a run that failed before saving anything leaves no trace
                    remove_unused_run_folder(self._made_folders)
                raise

    def _fit(self) -> dict[str, list[float]]:
        config = self.config
        bar = tqdm(
            total=config.steps, initial=self.step_count, desc="training", unit="step",
            disable=not (config.progress and self.is_main), dynamic_ncols=True,
        )  # fmt: skip
        try:
            while self.step_count < config.steps:
                with interrupts_deferred():  # a Ctrl-C waits for the end of the iteration
                    self._fit_iteration(bar)
        finally:
            bar.close()
        return self.history

    def _fit_iteration(self, bar: tqdm) -> None:
        """One step, then the log, callback and checkpoint due after it."""
        config = self.config
        self.step()
        bar.update(1)
        at_end = self.step_count == config.steps
        if self.step_count % config.log_every == 0 or at_end:
            last = self._log()
            bar.set_postfix(loss_d=f"{last['loss_d']:.3f}", loss_g=f"{last['loss_g']:.3f}")
            if self.callback is not None and self.is_main:
                self.callback(self)
        if self.step_count % config.checkpoint_every == 0 or at_end:
            self._check_finite(parameters=True)  # never overwrite a good checkpoint with NaNs
            if self.is_main:
                self.save_checkpoint()

    def _accumulate(self, metrics: dict[str, torch.Tensor]) -> None:
        # Summed as tensors: no GPU-to-CPU sync on every step.
        for name, value in metrics.items():
            self._window[name] = self._window.get(name, 0.0) + value.float()
        self._window_steps += 1

    def _log(self) -> dict[str, float]:
        """Append the window's means and every attention layer's γ to the history."""
        self._average_window_over_ranks()
        self._check_finite()
        entry = {"step": float(self.step_count)}
        entry |= {name: float(total) / self._window_steps for name, total in self._window.items()}
        entry |= gammas(self.G, self.D)
        for name, value in entry.items():
            self.history.setdefault(name, []).append(value)
        self._window, self._window_steps = {}, 0
        return entry

    def _average_window_over_ranks(self) -> None:
        """Under DDP, every rank logs the mean over all ranks (so all stop together on NaN)."""
        if self.world_size == 1 or not self._window:
            return
        names = sorted(self._window)
        totals = torch.stack([torch.as_tensor(self._window[n], device=self.device) for n in names])
        dist.all_reduce(totals)
        self._window = dict(zip(names, totals / self.world_size, strict=True))

    def _check_finite(self, parameters: bool = False) -> None:
        values = {name: float(total) for name, total in self._window.items()}
        if parameters:
            for tag, model in (("G", self.G), ("D", self.D)):
                finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
                values[f"a parameter of {tag}"] = 0.0 if finite else math.nan
        for name, total in values.items():
            if not math.isfinite(total):
                what_now = (
                    f"The last good checkpoint is {self.checkpoint_path}. Resume from it with "
                    "lower learning rates (lr_d, lr_g may change on resume), or start a new run "
                    "with amp=False or another seed."
                    if self.checkpoint_path.exists()
                    else "No checkpoint was written before this happened. Start again with lower "
                    "learning rates (lr_d, lr_g), amp=False or another seed."
                )
                raise TrainingDiverged(
                    f"Training diverged: {name} became {total} by step {self.step_count}. "
                    + what_now
                )

    # -- sampling -------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1] from the EMA generator, reproducible from `seed`."""
        return sample_images(self.G_ema, n, seed=seed, labels=labels)

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "sagan_edu_version": __version__,  # named in the error if an older version reads it
            "step": self.step_count,
            "G_config": self.G.config(),  # enough to rebuild G and D without the dataset
            "D_config": self.D.config(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "data": self.data_rng.get_state(),
                "noise": self.noise_rng.get_state(),
                "torch": torch.get_rng_state(),
            },
            "history": self.history,
            "window": {name: float(total) for name, total in self._window.items()},
            "window_steps": self._window_steps,
        }

    def _load_state(self, state: dict) -> None:
        self.step_count = state["step"]
        path = self.checkpoint_path
        for name, part in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema),
                           ("opt_g", self.opt_g), ("opt_d", self.opt_d)):  # fmt: skip
            load_weights(part, state[name], path, name)
        # load_state_dict restores the saved learning rates; the config's may have been lowered.
        # So do the implementation flags (fused, capturable): the checkpoint may come from
        # another device or from a run with(out) fast_step.
        for optimizer, lr in ((self.opt_g, self.config.lr_g), (self.opt_d, self.config.lr_d)):
            flags = {k: optimizer.defaults[k] for k in ("fused", "foreach", "capturable")}
            for group in optimizer.param_groups:
                group |= flags | {"lr": lr}
        self.scaler.load_state_dict(state["scaler"])
        self.data_rng.set_state(state["rng"]["data"])
        self.noise_rng.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        self.history = state["history"]
        self._window = dict(state["window"])
        self._window_steps = state["window_steps"]

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write the full training state atomically; returns the path."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path.is_dir():
            raise ValueError(
                f"path {path} is a folder; pass a file path such as {path / CHECKPOINT_NAME}"
            )
        with self._locked():
            atomic_save(self.state_dict(), path)
        return path

    @contextlib.contextmanager
    def _locked(self):
        """Hold the run folder's lock (rank 0 only) unless this trainer holds it already."""
        if self._lock is not None or not self.is_main:
            yield
            return
        self._lock = RunLock(self.config.out_dir)
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()
            self._lock = None


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) until the block ends, then deliver it.

    Why: a step changes D, then G, the optimizers, the EMA and the random generators one after
    the other. A Ctrl-C landing between the D and the G update would leave a half-done step
    that `fit()` cannot undo: calling it again would do that D update twice, and the run would
    no longer match an uninterrupted one. Waiting a moment for the iteration (the step, and the
    log, callback and checkpoint due after it) to finish is simpler than saving everything
    before each step to roll it back, and costs nothing.

    A second Ctrl-C stops at once (for a step that hangs); the step is then left half done.
    Only the main thread receives signals, so elsewhere the block runs as it is; so it does where
    Ctrl-C is ignored or handled outside Python.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if on_main_thread else None
    if previous in (None, signal.SIG_IGN):
        yield
        return
    caught = []

    def hold(signum: int, frame: object) -> None:
        if caught:  # pressed twice: give up waiting
            signal.signal(signal.SIGINT, previous)
            signal.raise_signal(signal.SIGINT)
        caught.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)  # now handled as usual: KeyboardInterrupt, mostly


def _check_callback(callback: object) -> None:
    """The callback is called as callback(trainer): it must take exactly that one argument."""
    if not callable(callback):
        raise ValueError(f"callback must be a function of the trainer, got {callback!r}")
    try:
        inspect.signature(callback).bind(None)
    except TypeError:
        raise ValueError(
            f"callback is called as callback(trainer), but {callback!r} cannot take that one "
            "argument; define it as def callback(trainer): ..."
        ) from None
    except ValueError:  # some built-in callables have no signature to inspect
        pass


def train(config: TrainConfig, callback: Callable[[Trainer], None] | None = None) -> Trainer:
    """Build a Trainer from `config` (resuming if asked), train it to the end, and return it."""
    trainer = Trainer(config, callback=callback)
    trainer.fit()
    return trainer


# ---------------------------------------------------------------------------------------------
# Pieces the trainer is made of (and notebooks and exercises use on their own)
# ---------------------------------------------------------------------------------------------


def adam(
    model: nn.Module,
    lr: float,
    betas: tuple[float, float],
    device: torch.device,
    capturable: bool = False,
) -> torch.optim.Adam:
    """Adam over `model`'s parameters, in the fastest form the device has.

    On CUDA and CPU the fused kernel updates every parameter in one call; elsewhere (MPS) the
    multi-tensor ("foreach") form does. `capturable` keeps Adam's step count on the GPU, which
    CUDA-graph capture (fast_step) needs. The arithmetic is Adam's either way.
    """
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(
        model.parameters(), lr=lr, betas=betas,
        fused=fused, foreach=None if fused else True, capturable=capturable,
    )  # fmt: skip


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for every parameter; buffers are copied as they are.

    Buffers (BatchNorm running statistics, spectral-norm vectors) are statistics of the current
    weights, not weights to average, so the EMA model takes them from the model directly.
    """
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1] (1 keeps the EMA unchanged), got {decay!r}")
    ema_params, params = list(ema_model.parameters()), list(model.parameters())
    ema_buffers, buffers = list(ema_model.buffers()), list(model.buffers())
    same = len(ema_params) == len(params) and len(ema_buffers) == len(buffers)
    pairs = zip(ema_params + ema_buffers, params + buffers, strict=False)
    if not same or any(a.shape != b.shape for a, b in pairs):
        raise ValueError("update_ema needs two models of the same architecture (deepcopy one)")
    # One multi-tensor ("foreach") call each instead of one small kernel per tensor (they
    # refuse empty lists: a model without buffers has none to copy).
    if params:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ema + (1 − decay)·(param − ema)
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)


def gammas(G: Generator, D: Discriminator) -> dict[str, float]:
    """γ of every attention layer, keyed like 'gamma/G/16x16'."""
    values = {}
    for tag, model in (("G", G), ("D", D)):
        for name, layer in model.attention_layers().items():
            values[f"gamma/{tag}/{name}"] = layer.gamma.item()
    return values


@torch.no_grad()
def sample_images(
    generator: Generator, n: int, seed: int = 0, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] from `generator` in eval mode, reproducible from seed.

    For a class-conditional generator without `labels`, the classes cycle 0, 1, 2, ...
    The noise z is drawn on the CPU, so a seed gives the same images on every device.
    n = 0 gives an empty (0, C, H, W) batch.
    """
    if not isinstance(generator, nn.Module) or not hasattr(generator, "z_dim"):
        raise ValueError(f"generator must be a sagan_edu Generator, got {type(generator).__name__}")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n, the number of images, must be a whole number ≥ 0, got {n!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    if not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise ValueError(f"seed must fit in 64 bits (-2**63 to 2**64 - 1), got {seed}")
    if labels is not None and not isinstance(labels, torch.Tensor):
        raise ValueError(
            f"labels must be a (n,) tensor of class indices, got {type(labels).__name__}; "
            "for example torch.tensor([3, 3, 7])"
        )
    device = next(generator.parameters()).device
    # Drawn on the CPU, then moved: CPU and CUDA generators give different numbers for the same
    # seed, and this way every device samples the same images (up to rounding).
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    z = z.to(device)
    if generator.num_classes is not None and labels is None:
        labels = torch.arange(n, device=device) % generator.num_classes
    was_training = generator.training
    generator.eval()
    images = generator(z, None if labels is None else labels.to(device))
    generator.train(was_training)
    return images.float()


def init_distributed(device_name: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) join the process group first.

    Each process of a multi-GPU run uses the GPU numbered by its LOCAL_RANK; on CPU-only machines
    the processes talk over gloo, which is slow but lets the multi-process path be tested.
    """
    device = pick_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' means CUDA when a GPU is visible, else CPU. Raises ValueError, naming the devices
    that exist here, for a device this machine does not have."""
    if isinstance(name, torch.device):
        name = str(name)
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name!r} was asked for but PyTorch sees no GPU here; devices here: "
            f"{', '.join(available_devices())}. Use device='auto' or 'cpu' (on Colab: Runtime > "
            "Change runtime type > GPU)"
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"device={name!r} does not exist; devices here: {', '.join(available_devices())}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device='mps' (Apple GPU) is not available on this machine; devices here: "
            f"{', '.join(available_devices())}"
        )
    return device


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for a device: bf16 on sm80+, fp16 on older GPUs, none on CPU."""
    if device.type != "cuda":
        return None  # CPU autocast is slower than fp32 for these convs, and fp32 is exact
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
) -> Generator:
    """The (EMA, by default) generator of a checkpoint, in eval mode, ready to sample from."""
    if not isinstance(ema, bool):
        raise ValueError(f"ema must be True (the EMA generator) or False (G), got {ema!r}")
    device = pick_device(device)
    state = load_checkpoint(path, map_location=device)
    known = set(inspect.signature(Generator).parameters)
    check_known_settings(path, "generator config", state["G_config"], known)
    generator = Generator(**state["G_config"])
    load_weights(generator, state["G_ema" if ema else "G"], path, "G_ema" if ema else "G")
    return generator.to(device).eval()


def _checkpoint_to_resume(config: TrainConfig, path: Path) -> dict | None:
    """The checkpoint a run continues from, or None to start at step 0; refuses to clobber one.

    A folder that holds a checkpoint is continued (resume), replaced (overwrite) or refused:
    training into it from step 0 would silently replace the work saved there.
    """
    if path.exists() and not path.is_file():  # else found only at the first save
        raise ValueError(
            f"{path} is a folder, where the run saves its checkpoint; rename or move it, or "
            "pass another --out (out_dir)"
        )
    if path.is_file():
        if config.resume:
            checkpoint = load_checkpoint(path)
            check_resumable(path, checkpoint)
            return checkpoint
        if not config.overwrite:
            raise ValueError(
                f"{path.parent} already holds a training checkpoint ({path.name}). To continue "
                f"that run pass --resume (resume=True); to start a new run, pass another --out "
                f"(out_dir); to replace it, pass --overwrite (overwrite=True)"
            )
    elif config.resume:
        warnings.warn(
            f"resume was asked for but there is no checkpoint in {path.parent}; starting a new "
            "run from step 0",
            stacklevel=3,
        )
    return None


def _resumed_config(requested: TrainConfig, saved: dict, path: Path) -> TrainConfig:
    """The checkpoint's config, with only the settings that may change taken from `requested`."""
    check_known_settings(path, "training config", saved, {f.name for f in fields(TrainConfig)})
    saved_config = TrainConfig(**saved)
    ignored = [
        f.name for f in fields(TrainConfig)
        if f.name not in RESUMABLE_OVERRIDES
        and getattr(requested, f.name) != getattr(saved_config, f.name)
    ]  # fmt: skip
    if ignored:
        warnings.warn(
            f"resuming with the checkpoint's settings; these requested values were ignored: "
            f"{', '.join(f'{n}={getattr(requested, n)!r}' for n in ignored)}. Start a new run "
            "(another out_dir) to change them.",
            stacklevel=3,
        )
    overrides = {name: getattr(requested, name) for name in RESUMABLE_OVERRIDES}
    return replace(saved_config, **overrides)
