"""Shared test setup: draw figures off-screen, skip `gpu` tests on machines without CUDA, and make
every test start from the same random state, so that no run can fail by chance.

Hypothesis runs the "ci" profile unless HYPOTHESIS_PROFILE names another: derandomized (the same
examples on every run and machine), no per-example deadline (a loaded 2-core machine is slow),
no example database (nothing from an earlier run is replayed). To hunt for new failing examples
locally, run with HYPOTHESIS_PROFILE=explore.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib.pyplot

import random

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TEST_SEED = 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before each test and before its fixtures (module-wide ones too): seed every global random
    generator and undo process-wide torch settings an earlier test may have changed. Without this
    a test's random numbers would depend on which tests ran before it, and numpy's and Python's
    generators are seeded from the OS at start-up: a different draw on every run."""
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)  # the CPU generator, and every CUDA device's
    # One CPU thread, on every machine: the last bits of a multi-threaded sum can depend on the
    # thread count (and, for some kernels, on the run), and a test must not pass on a developer's
    # OMP_NUM_THREADS=1 machine and fail on a CI runner with more cores. It also undoes
    # benchmarks/attention_cost.py's torch.set_num_threads, which used to leak into later tests.
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ctrl_c_at_step(monkeypatch):
    """ctrl_c_at_step(n): from now on Trainer.step raises KeyboardInterrupt, as a Ctrl-C there
    would, when the trainer is about to do step n + 1 (step_count == n). Returns the real
    Trainer.step, to put back with monkeypatch.setattr(Trainer, "step", real_step)."""
    from sagan_edu.training import Trainer

    def patch(step_count: int):
        real_step = Trainer.step

        def step_or_ctrl_c(trainer):
            if trainer.step_count == step_count:
                raise KeyboardInterrupt
            return real_step(trainer)

        monkeypatch.setattr(Trainer, "step", step_or_ctrl_c)
        return real_step

    return patch
