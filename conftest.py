"""Settings for every test, the notebooks' included (nbval starts their kernels from here)."""

import os

# Notebooks and tests run in fast mode: tiny settings that check every cell works on 2 CPU cores.
os.environ.setdefault("SAGAN_EDU_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")  # draw off-screen (the kernels inherit this)

# nbval waits a fixed 5 s for a cell's outputs after the kernel's reply and then fails the cell
# ("Timeout of 5 seconds exceeded waiting for output"); a busy 2-core CI machine can take longer.
# The wait ends as soon as the outputs arrive, so a longer limit slows no passing run.
NBVAL_OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item).__name__ == "IPyNbCell":  # one notebook cell, run by nbval
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
