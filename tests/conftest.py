"""Shared test setup: draw figures off-screen, and skip `gpu` tests on machines without CUDA."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib.pyplot

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
