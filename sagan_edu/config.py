"""What defines a training run: `TrainConfig`, and the checks that a config is well formed.

Every field is checked against its annotation and its range when the config is built, so a
mistake (steps=2.5, attention_at="16", lr_d=inf, an unknown dataset) fails at once with a message
that says what to pass instead, not minutes into training.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from dataclasses import dataclass, fields

import torch

from sagan_edu.data import DATASETS
from sagan_edu.losses import LOSSES
from sagan_edu.models import (
    ARCHS,
    ATTENTION_BLOCKS,
    IMG_SIZES,
    discriminator_sizes,
    generator_sizes,
)

__all__ = [
    "RESUMABLE_OVERRIDES",
    "TrainConfig",
    "at_least",
    "available_devices",
    "check_device_name",
    "check_setting_names",
    "check_setting_types",
]


MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved in every checkpoint."""

    # data
    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False  # download a missing torchvision dataset (needs internet)
    img_size: int = 32
    conditional: bool = False  # condition G and D on the class labels
    # models
    arch: str = "dcgan"  # "dcgan" or "resnet"
    z_dim: int = 128
    g_channels: int = 32  # base width of G (its widest layer has 8× this)
    d_channels: int = 32  # base width of D
    attention_at: tuple[int, ...] = (16,)  # feature-map sizes that get self-attention; () = none
    attention_in: str = "both"  # which network gets it: "both", "g" (G only) or "d" (D only)
    attention_block: str = "attention"  # or "residual": the same-size local control (models.py)
    attention_scaled: bool = False  # divide attention scores by √d (the released SAGAN does not)
    # optimisation
    steps: int = 2000  # total generator steps
    batch_size: int = 64
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    n_dis: int = 1  # discriminator steps per generator step
    loss: str = "hinge"  # "hinge" or "nonsaturating"
    ema_decay: float = 0.999
    amp: bool = True  # mixed precision where the device supports it (never on CPU)
    compile: bool = False  # torch.compile G and D (faster on GPU after a slow first step)
    channels_last: bool = False  # NHWC memory layout: what tensor cores want under AMP (GPU)
    fast_step: bool = False  # replay each step as one CUDA graph (sagan_edu.fast_step; CUDA only)
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cuda", "cuda:N", "cpu", "mps"
    seed: int = 0
    # bookkeeping
    out_dir: str = "runs/sagan"
    log_every: int = 50  # history and callback every this many steps
    checkpoint_every: int = 500  # also at the end
    resume: bool = False  # continue from out_dir/checkpoint.pt (warns if there is none)
    overwrite: bool = False  # replace a checkpoint in out_dir (else such a folder is refused)
    progress: bool = True  # show a tqdm progress bar

    def __new__(cls, *args, **kwargs):
        # Before the generated __init__, whose TypeError for a misspelt name says nothing more.
        check_setting_names(cls, kwargs)
        return super().__new__(cls)

    def __post_init__(self):
        check_setting_types(self)
        _check_config_values(self)


def check_setting_names(cls: type, settings: dict) -> None:
    """A misspelt setting of the dataclass `cls` (step=, lr=) fails naming the closest fields."""
    names = [f.name for f in fields(cls)]
    for name in settings:
        if name not in names:
            # Prefixes first (step -> steps, lr -> lr_g, lr_d), else the most similar spellings.
            close = [n for n in names if n.startswith(name)] or difflib.get_close_matches(
                name, names, n=2, cutoff=0.6
            )
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise TypeError(
                f"{cls.__name__} has no setting {name!r}{hint}; its settings are: "
                f"{', '.join(names)}"
            )


def check_setting_types(config: object) -> None:
    """Check every field of a config dataclass against its annotation, so a wrong type fails
    here and not mid-run.

    steps=2.5 or steps="100" would otherwise train a surprising number of steps, and
    attention_at="16" would become the sizes (1, 6).
    """
    for field in fields(config):
        name, value, kind = field.name, getattr(config, field.name), field.type
        if kind == "int":
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number, got {_show(value)}")
            setattr(config, name, int(value))  # numpy integers become plain ints
        elif kind == "float" or (kind == "float | None" and value is not None):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {_show(value)}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            setattr(config, name, float(value))
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {_show(value)}")
        elif kind in ("str", "str | None"):
            if isinstance(value, os.PathLike):
                value = os.fspath(value)  # a Path is fine for folders; stored as str
                setattr(config, name, value)
            if not (isinstance(value, str) or (value is None and kind == "str | None")):
                raise ValueError(f"{name} must be a string, got {_show(value)}")
        elif kind == "tuple[int, ...]":
            setattr(config, name, _int_tuple(name, value, example="(16,) or ()"))
        elif kind == "tuple[float, float]":
            setattr(config, name, _float_pair(name, value))


def _check_config_values(config: TrainConfig) -> None:
    """Ranges and names: everything a value can be wrong about without looking at the data."""
    for name in ("img_size", "z_dim", "g_channels", "d_channels", "steps", "batch_size", "n_dis",
                 "log_every", "checkpoint_every"):  # fmt: skip
        at_least(name, getattr(config, name), 1)
    at_least("seed", config.seed, 0)
    if config.seed > MAX_SEED:  # torch seeds are 64-bit (and the run seeds seed + 1, seed + 2)
        raise ValueError(f"seed must be at most 2**63 - 1 = {MAX_SEED}, got {config.seed}")
    if config.img_size not in IMG_SIZES:
        raise ValueError(
            f"img_size must be one of {', '.join(map(str, IMG_SIZES))}, got {config.img_size}; "
            "the datasets are resized to it"
        )
    for name in ("g_channels", "d_channels"):
        if getattr(config, name) % 8:
            raise ValueError(
                f"{name} must be a multiple of 8 (self-attention uses channels/8 for its queries "
                f"and keys), got {getattr(config, name)}"
            )
    for size in config.attention_at:
        at_least("every attention_at size", size, 1)
    if len(set(config.attention_at)) != len(config.attention_at):
        raise ValueError(
            f"attention_at names a size twice, got {config.attention_at}; each feature-map size "
            "gets at most one attention layer"
        )
    for name in ("lr_g", "lr_d"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    for beta in config.betas:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"each of betas must be in [0, 1), got {config.betas}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.attention_in not in ("both", "g", "d"):
        raise ValueError(
            f"attention_in must be 'both', 'g' (generator only) or 'd' (discriminator "
            f"only), got {config.attention_in!r}"
        )
    for name, known in (("dataset", DATASETS), ("arch", ARCHS), ("loss", LOSSES),
                        ("attention_block", ATTENTION_BLOCKS)):  # fmt: skip
        if getattr(config, name) not in known:
            raise ValueError(
                f"unknown {name} {getattr(config, name)!r}; choose one of {', '.join(known)}"
            )
    check_device_name(config.device)
    if not config.out_dir:
        raise ValueError("out_dir must name a folder, got an empty string")
    # "~/runs" means the home folder, as in a shell (unexpanded it would make a folder named ~).
    config.out_dir = os.path.expanduser(config.out_dir)
    if config.resume and config.overwrite:
        raise ValueError(
            "resume and overwrite contradict each other: resume continues the checkpoint in "
            "out_dir, overwrite replaces it. Pass one of them"
        )


def _show(value: object) -> str:
    return f"{value!r} (a {type(value).__name__})"


def at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value}")


def _int_tuple(name: str, value: object, example: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, numbers.Number)) or not hasattr(value, "__iter__"):
        raise ValueError(
            f"{name} must be a tuple of whole numbers such as {example}, got {_show(value)}"
        )
    items = tuple(value)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must hold whole numbers only, such as {example}, got {value!r}")
    return tuple(int(v) for v in items)


def _float_pair(name: str, value: object) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a pair of numbers such as (0.0, 0.9), got {_show(value)}")
    items = tuple(value)
    if len(items) != 2 or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in items
    ):
        raise ValueError(
            f"{name} must be a pair of finite numbers such as (0.0, 0.9), got {value!r}"
        )
    return (float(items[0]), float(items[1]))


# Settings that may change when a run is resumed; everything else comes from the checkpoint.
# The learning rates may change too: lowering them is the usual answer to a diverged run.
RESUMABLE_OVERRIDES = (
    "steps", "out_dir", "log_every", "checkpoint_every", "device", "compile", "progress", "resume",
    "lr_g", "lr_d", "channels_last", "fast_step", "overwrite", "download",
)  # fmt: skip


def available_devices() -> list[str]:
    """The device names this machine can use, e.g. ['auto', 'cpu', 'cuda', 'cuda:0']."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def check_attention_sizes(config: TrainConfig) -> None:
    """Every attention_at size must be a feature map of each network that gets attention.

    Checked by the Trainer, on the settings it trains with (on resume, the checkpoint's), before
    it writes anything or loads the data: G's maps are 4 … img_size, D's img_size/2 … 4.
    """
    networks = {"both": ("G", "D"), "g": ("G",), "d": ("D",)}[config.attention_in]
    sizes = {"G": generator_sizes(config.img_size), "D": discriminator_sizes(config.img_size)}
    usable = sorted(set.intersection(*(set(sizes[name]) for name in networks)))
    wrong = [size for size in config.attention_at if size not in usable]
    if wrong:
        raise ValueError(
            f"attention_at {tuple(wrong)} names no feature map of {' and '.join(networks)} at "
            f"img_size={config.img_size} (attention_in={config.attention_in!r}); choose from "
            f"{', '.join(map(str, usable))} (--attention-at), or () for no attention"
        )


def check_device_name(name: object) -> None:
    """A device string in a form this library trains on (whether it exists is checked later)."""
    if not isinstance(name, str):
        raise ValueError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {name!r}")
    kind, _, index = name.partition(":")
    if kind == "cuda":
        known = not index or index.isdigit()  # "cuda" or "cuda:N"
    else:
        known = kind in ("auto", "cpu", "mps") and not index
    if not known:
        raise ValueError(
            f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (devices "
            f"here: {', '.join(available_devices())})"
        )
