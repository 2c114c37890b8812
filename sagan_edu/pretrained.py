"""Pretrained SAGAN weights shipped with the package, so a CPU student can look at a trained model.

    from sagan_edu.pretrained import load, load_pretrained
    G = load("mnist5k-sagan32")                   # the EMA generator, in eval mode
    G, D = load_pretrained("mnist5k-sagan32")     # generator and discriminator

The files are safetensors (plain tensors plus a JSON header: loading runs no code). Each holds the
EMA generator ("G." keys), the discriminator ("D." keys), and in its metadata the models' configs
and the training run that made it. `make pretrained` retrains and re-exports them:

    sagan-edu train --dataset mnist5k --steps 1500 --log-every 100 --out runs/pretrained
    sagan-edu export --checkpoint runs/pretrained/checkpoint.pt \
        --out sagan_edu/weights/mnist5k-sagan32.safetensors
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
    "WEIGHTS_DIR",
    "available",
    "export_pretrained",
    "load",
    "load_pretrained",
    "training_info",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def available() -> list[str]:
    """Names of the shipped GAN weight files, e.g. ['mnist5k-sagan32'].

    (The weights folder also holds the metrics' feature network, which is not a GAN.)
    """
    names = []
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            if "G_config" in (f.metadata() or {}):
                names.append(path.stem)
    return names


def export_pretrained(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write a training checkpoint's EMA generator and discriminator as one safetensors file."""
    state = load_checkpoint(checkpoint_path)
    tensors = {f"G.{k}": v.contiguous() for k, v in state["G_ema"].items()}
    tensors |= {f"D.{k}": v.contiguous() for k, v in state["D"].items()}
    metadata = {
        "G_config": json.dumps(state["G_config"]),
        "D_config": json.dumps(state["D_config"]),
        "train_config": json.dumps(state["config"]),
        "step": str(state["step"]),
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_path, metadata=metadata)
    return out_path


def load_pretrained(
    name: str = "mnist5k-sagan32", device: str | torch.device = "cpu"
) -> tuple[Generator, Discriminator]:
    """The shipped (EMA) generator and discriminator called `name`, in eval mode.

    `name` may also be a path to a .safetensors file written by `export_pretrained`.
    """
    path = Path(name) if str(name).endswith(".safetensors") else WEIGHTS_DIR / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"no pretrained weights {name!r}; shipped: {', '.join(available()) or 'none'}. "
            "`make pretrained` rebuilds them."
        )
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path, device=str(device))
    G = Generator(**json.loads(metadata["G_config"]))
    D = Discriminator(**json.loads(metadata["D_config"]))
    G.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    D.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
    return G.to(device).eval(), D.to(device).eval()


def load(name: str = "mnist5k-sagan32", device: str | torch.device = "cpu") -> Generator:
    """The shipped EMA generator called `name`, ready to sample from (eval mode)."""
    return load_pretrained(name, device)[0]


def training_info(name: str = "mnist5k-sagan32") -> dict:
    """The training config and step count a shipped weight file was made with."""
    with safe_open(WEIGHTS_DIR / f"{name}.safetensors", framework="pt") as f:
        metadata = f.metadata()
    return {"step": int(metadata["step"]), **json.loads(metadata["train_config"])}
