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
float16 to keep all four under 10 MB; `load` returns float32 models. Loading a shipped file checks
its SHA256 against weights/SHA256SUMS first (a few milliseconds), so a damaged or replaced file is
reported instead of quietly changing every sample and metric. Each file's metadata holds
the models' configs and the training run that made it. `RECIPES` below is how each was trained,
and one command retrains and re-exports one of them (a test checks the files against RECIPES):

    python tools/make_pretrained.py twin-shapes-sagan32
    make pretrained                                       # all of them, and the classifier
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from sagan_edu.checkpoints import atomic_write, check_output_file, is_safetensors_file
from sagan_edu.models import Discriminator, Generator
from sagan_edu.training import load_checkpoint, pick_device

__all__ = [
    "RECIPES",
    "WEIGHTS_DIR",
    "available",
    "export_pretrained",
    "load",
    "load_pretrained",
    "training_info",
    "verify_checksum",
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
        try:
            with safe_open(path, framework="pt") as f:
                if "G_config" in (f.metadata() or {}):
                    names.append(path.stem)
        except Exception:  # a damaged file is reported when it is loaded, not here
            continue
    return names


def export_pretrained(
    checkpoint_path: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    keep_discriminator: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint's EMA generator (and D) as one safetensors file, tensors in `dtype`.

    float16 halves the file; a generator's outputs move by about 1e-3 (the shipped files use it).
    An existing file at `out_path` is replaced only with overwrite=True.
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
    check_output_file(out_path, (".safetensors",), overwrite)
    atomic_write(safetensors_bytes(tensors, metadata=metadata), out_path, what="weight file")
    return out_path


def _path(name: str | os.PathLike) -> Path:
    """A shipped name, or a path to a .safetensors file written by `export_pretrained`."""
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"name must be a string or a path, got {name!r}")
    if not str(name):
        raise ValueError(f"name is empty; pass a shipped name: {', '.join(available())}")
    if Path(name).is_dir():
        raise ValueError(f"{name} is a folder; pass a .safetensors file or a shipped name")
    if is_safetensors_file(name):
        path = Path(name)
    elif Path(name).suffix == ".pt" or Path(name).is_file():
        raise ValueError(
            f"{name} is not a safetensors weight file: for a training checkpoint use "
            "sagan_edu.training.load_generator(path), or export it first with "
            "`sagan-edu export --checkpoint PATH --out NAME.safetensors`"
        )
    else:
        path = WEIGHTS_DIR / f"{name}.safetensors"
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass a .safetensors file")
    if not path.exists() and path.parent != WEIGHTS_DIR:
        raise FileNotFoundError(f"no file at {path}; check the path, or pass a shipped name")
    if not path.exists():
        raise FileNotFoundError(
            f"no pretrained weights {str(name)!r}; shipped: {', '.join(available()) or 'none'}. "
            "`make pretrained` rebuilds them."
        )
    return path


def verify_checksum(path: str | os.PathLike) -> None:
    """Raise ValueError unless a shipped file's SHA256 is the one weights/SHA256SUMS lists."""
    path = Path(path)
    head = path.read_bytes()[:64]
    if head.startswith(b"version https://git-lfs"):
        raise ValueError(
            f"{path} is a Git LFS pointer, not the weights: run `git lfs pull` in the repository "
            "(or install sagan_edu from a release, which holds the real files)"
        )
    sums = {}
    for line in (path.parent / "SHA256SUMS").read_text().splitlines():
        digest, _, filename = line.partition("  ")
        sums[filename] = digest
    if path.name not in sums:
        raise ValueError(
            f"{path.name} is not listed in {path.parent / 'SHA256SUMS'}; `make pretrained` "
            "rewrites the list"
        )
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sums[path.name]:
        raise ValueError(
            f"{path} is damaged or was replaced: its SHA256 is {actual[:12]}…, SHA256SUMS says "
            f"{sums[path.name][:12]}…. Reinstall sagan_edu (or `git checkout -- {path.name}` in "
            "the repository) to get the shipped file back; `make pretrained` rebuilds it"
        )


def _read(name: str | os.PathLike, device: str | torch.device) -> tuple[dict, dict]:
    """(tensors as float32 on `device`, metadata) of one weight file, checked first."""
    device = pick_device(device)
    path = _path(name)
    if path.parent.resolve() == WEIGHTS_DIR.resolve():
        verify_checksum(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(path, device=str(device))
    except Exception as error:  # safetensors' own errors name byte offsets, not the fix
        first = path.read_bytes()[:64]
        what = (
            "a Git LFS pointer, not the weights (run `git lfs pull`)"
            if first.startswith(b"version https://git-lfs")
            else f"truncated or not a safetensors file ({error})"
        )
        raise ValueError(f"{path} cannot be loaded: it is {what}") from None
    if "G_config" not in metadata:
        raise ValueError(
            f"{path} holds no GAN generator (its metadata has no G_config): it is some other "
            "model's safetensors file. Pass a file written by `sagan-edu export` or a shipped "
            f"name: {', '.join(available())}"
        )
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return tensors, metadata


def _model(
    cls: type, config: str, tensors: dict, prefix: str, device: str | torch.device
) -> torch.nn.Module:
    """A Generator or Discriminator built from its JSON config, with the tensors under `prefix`."""
    model = cls(**json.loads(config))
    state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ValueError(
            f"the {cls.__name__} tensors in this file do not fit the {cls.__name__} its metadata "
            "describes: the file was assembled from different models. Export it again with "
            "`sagan-edu export`"
        ) from None
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
    device = pick_device(device)
    G = _model(Generator, metadata["G_config"], tensors, "G.", device)
    D = _model(Discriminator, metadata["D_config"], tensors, "D.", device)
    return G, D


def load(name: str = "mnist5k-sagan32", device: str | torch.device = "cpu") -> Generator:
    """The shipped EMA generator called `name`, ready to sample from (eval mode, float32)."""
    tensors, metadata = _read(name, device)
    return _model(Generator, metadata["G_config"], tensors, "G.", pick_device(device))


def training_info(name: str = "mnist5k-sagan32") -> dict:
    """The training config and step count a shipped weight file was made with."""
    _, metadata = _read(name, "cpu")
    return {"step": int(metadata["step"]), **json.loads(metadata["train_config"])}
