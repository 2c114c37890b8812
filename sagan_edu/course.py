"""What the notebooks share: the speed switch, the first cell's device report, Colab links.

    from sagan_edu.course import setup, pick
    device = setup()                    # prints the device and what it means for this notebook
    steps = pick(fast=20, full=2000)    # 20 when SAGAN_EDU_FAST=1 (CI), 2000 otherwise

SAGAN_EDU_FAST=1 shrinks steps, sizes and sample counts so the whole course runs on 2 CPU cores in
CI; without it a notebook does the real thing.
"""

from __future__ import annotations

import importlib.metadata
import numbers
import os
import random
import sys
from typing import TypeVar

import torch

__all__ = ["colab_url", "fast_mode", "in_colab", "pick", "repository_url", "setup"]

T = TypeVar("T")

FAST_ENV_VAR = "SAGAN_EDU_FAST"


def fast_mode() -> bool:
    """True when SAGAN_EDU_FAST is set to anything but '' or '0'."""
    return os.environ.get(FAST_ENV_VAR, "") not in ("", "0")


def pick(fast: T, full: T) -> T:
    """`fast` in fast mode (CI), `full` otherwise: one line per setting that has to shrink."""
    return fast if fast_mode() else full


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup(seed: int = 0) -> torch.device:
    """Seed everything, print what this machine is, and return the device to use."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        print(f"Device: GPU ({torch.cuda.get_device_name(device)}), PyTorch {torch.__version__}")
    else:
        print(f"Device: CPU ({os.cpu_count()} cores), PyTorch {torch.__version__}")
        print(
            "No GPU: everything here still runs, with smaller settings where training would be "
            "slow, and the shipped pretrained weights where a trained model is needed."
        )
        if in_colab():
            print("For a GPU on Colab: Runtime > Change runtime type > T4 GPU, then run again.")
        else:
            print("For a GPU, open this notebook on Colab (the badge at the top).")
    if fast_mode():
        print(f"Fast mode ({FAST_ENV_VAR}=1): tiny settings, for checking that cells run.")
    return device


def repository_url() -> str:
    """The project's repository, from pyproject.toml's [project.urls] (the one setting)."""
    urls = importlib.metadata.metadata("sagan-edu").get_all("Project-URL") or []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip() == "Repository":
            return url.strip()
    raise LookupError("pyproject.toml has no [project.urls] Repository entry")


def colab_url(notebook_path: str, branch: str = "main") -> str:
    """The 'Open in Colab' address of a notebook given by its path in the repository."""
    github = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{branch}/{notebook_path}"
