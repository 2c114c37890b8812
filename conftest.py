"""Settings for every test, the notebooks' included (nbval starts their kernels from here)."""

import os

# Notebooks and tests run in fast mode: tiny settings that check every cell works on 2 CPU cores.
os.environ.setdefault("SAGAN_EDU_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")  # draw off-screen (the kernels inherit this)
