"""Pretrained GANs shipped with the package, so a CPU student can look at trained models.

    from sagan_edu.pretrained import load, load_pretrained
    G = load("mnist5k-sagan32")                   # an EMA generator, in eval mode
    G, D = load_pretrained("mnist5k-sagan32")     # generator and discriminator

Four generators ship: with attention (at 16×16) and without it, for MNIST digits and for the
synthetic `twin-shapes` data. Same settings within a pair, so the pair is a small ablation:

    name                   dataset       attention   files hold
    mnist5k-sagan32        mnist5k       16×16       EMA G and D (the widgets look inside D too)
    mnist5k-noattn32       mnist5k       none        EMA G
    twin-shapes-sagan32    twin-shapes   16×16       EMA G
    twin-shapes-noattn32   twin-shapes   none        EMA G

The files are safetensors (plain tensors plus a JSON header: loading runs no code), stored in
float16 to keep all four under 10 MB; `load` returns float32 models. Each file's metadata holds
the models' configs and the training run that made it. `RECIPES` below is how each was trained,
and one command retrains and re-exports one of them (a test checks the files against RECIPES):

    python tools/make_pretrained.py twin-shapes-sagan32
    make pretrained                                       # all of them, and the classifier
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from sagan_edu.models import Discriminator, Generator
from sagan_edu.training import load_checkpoint

__all__ = [
    "RECIPES",
    "WEIGHTS_DIR",
    "available",
    "export_pretrained",
    "load",
    "load_pretrained",
    "training_info",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"

# name -> the `sagan-edu train` arguments that made it, and whether its file keeps D.
# Within a dataset the pair differs only in --attention-at (an empty list means none).
RECIPES: dict[str, dict] = {
    "mnist5k-sagan32": {
        "train_args": ["--dataset", "mnist5k", "--steps", "1500", "--attention-at", "16"],
        "keep_discriminator": True,
    },
    "mnist5k-noattn32": {
        "train_args": ["--dataset", "mnist5k", "--steps", "1500", "--attention-at"],
        "keep_discriminator": False,
    },
    "twin-shapes-sagan32": {
        "train_args": ["--dataset", "twin-shapes", "--steps", "2000", "--attention-at", "16"],
        "keep_discriminator": False,
    },
    "twin-shapes-noattn32": {
        "train_args": ["--dataset", "twin-shapes", "--steps", "2000", "--attention-at"],
        "keep_discriminator": False,
    },
}


def available() -> list[str]:
    """Names of the shipped GAN weight files, e.g. ['mnist5k-noattn32', 'mnist5k-sagan32', ...].

    (The weights folder also holds the metrics' feature network, which is not a GAN.)
    """
    names = []
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            if "G_config" in (f.metadata() or {}):
                names.append(path.stem)
    return names


def export_pretrained(
    checkpoint_path: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    keep_discriminator: bool = True,
) -> Path:
    """Write a checkpoint's EMA generator (and D) as one safetensors file, tensors in `dtype`.

    float16 halves the file; a generator's outputs move by about 1e-3 (the shipped files use it).
    """
    state = load_checkpoint(checkpoint_path)
    tensors = {f"G.{k}": v for k, v in state["G_ema"].items()}
    if keep_discriminator:
        tensors |= {f"D.{k}": v for k, v in state["D"].items()}
    # Only floating-point tensors change type (integer buffers, if any, stay exact).
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
               for k, v in tensors.items()}  # fmt: skip
    metadata = {
        "G_config": json.dumps(state["G_config"]),
        "train_config": json.dumps(state["config"]),
        "step": str(state["step"]),
    }
    if keep_discriminator:
        metadata["D_config"] = json.dumps(state["D_config"])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_path, metadata=metadata)
    return out_path


def _path(name: str | os.PathLike) -> Path:
    """A shipped name, or a path to a .safetensors file written by `export_pretrained`."""
    path = Path(name) if str(name).endswith(".safetensors") else WEIGHTS_DIR / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"no pretrained weights {str(name)!r}; shipped: {', '.join(available()) or 'none'}. "
            "`make pretrained` rebuilds them."
        )
    return path


def _read(name: str | os.PathLike, device: str | torch.device) -> tuple[dict, dict]:
    """(tensors as float32 on `device`, metadata) of one weight file."""
    path = _path(name)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path, device=str(device))
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return tensors, metadata


def _model(
    cls: type, config: str, tensors: dict, prefix: str, device: str | torch.device
) -> torch.nn.Module:
    """A Generator or Discriminator built from its JSON config, with the tensors under `prefix`."""
    model = cls(**json.loads(config))
    model.load_state_dict(
        {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    )
    return model.to(device).eval()


def load_pretrained(
    name: str = "mnist5k-sagan32", device: str | torch.device = "cpu"
) -> tuple[Generator, Discriminator]:
    """The shipped (EMA) generator and discriminator called `name`, in eval mode, in float32.

    `name` may also be a path to a .safetensors file written by `export_pretrained`.
    """
    tensors, metadata = _read(name, device)
    if "D_config" not in metadata:
        with_d = [n for n in RECIPES if RECIPES[n]["keep_discriminator"]]
        raise ValueError(
            f"{name!r} ships only its generator: use load({str(name)!r}). Files with a "
            f"discriminator: {', '.join(with_d)}."
        )
    G = _model(Generator, metadata["G_config"], tensors, "G.", device)
    D = _model(Discriminator, metadata["D_config"], tensors, "D.", device)
    return G, D


def load(name: str = "mnist5k-sagan32", device: str | torch.device = "cpu") -> Generator:
    """The shipped EMA generator called `name`, ready to sample from (eval mode, float32)."""
    tensors, metadata = _read(name, device)
    return _model(Generator, metadata["G_config"], tensors, "G.", device)


def training_info(name: str = "mnist5k-sagan32") -> dict:
    """The training config and step count a shipped weight file was made with."""
    with safe_open(_path(name), framework="pt") as f:
        metadata = f.metadata()
    return {"step": int(metadata["step"]), **json.loads(metadata["train_config"])}
