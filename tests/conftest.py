"""Shared test setup: draw figures off-screen, skip `gpu` tests on machines without CUDA, and run
Hypothesis the same way on every run.

Hypothesis runs the "ci" profile unless HYPOTHESIS_PROFILE names another: derandomized (the same
examples on every run and machine), no per-example deadline (a loaded 2-core machine is slow),
no example database (nothing from an earlier run is replayed). To hunt for new failing examples
locally, run with HYPOTHESIS_PROFILE=explore.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib.pyplot

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
