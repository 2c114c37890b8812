"""Record notebook 05's cost cell (§5): the step time and memory with and without attention.

Runs the notebook's own cells, not a copy of them: the setup, the imports, the parameters, the
cell that defines the small CNN and loads the digits, and the cost cell, in that order and in one
namespace, then writes what they printed and the raw per-round times to
results/course-05-cost.json. The cost cell times both CNNs in alternating rounds (both in every
round), so a machine whose load changes during the run slows both alike; the ratio it reports is
the median of the per-round ratios, with their quartiles and range, for the wall clock and for
the CPU time of the process (which leaves out the time spent waiting for a busy core).

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/course_05_cost.py   # CPU, 1 thread, ~1 minute
    SAGAN_EDU_FAST=1 python benchmarks/course_05_cost.py --json /tmp/cost.json   # seconds

Without SAGAN_EDU_FAST the notebook's full settings are used (15 rounds of 3 steps per model);
--rounds and --steps override them, as papermill's -p would.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from IPython.core.inputtransformer2 import TransformerManager

from sagan_edu.course import fast_mode

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_self_attention_for_images.ipynb"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Each cell to run, found by how its source begins (cell positions change when cells are added).
CELL_STARTS = {
    "setup": "# Setup:",
    "imports": "import json",
    "parameters": "# Parameters:",
    "cnn": "train_data = load_dataset(",
    "cost": "def forward_multiply_adds(",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=None, help="default: the notebook's")
    parser.add_argument("--steps", type=int, default=None, help="default: the notebook's")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "course-05-cost.json")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    args = parser.parse_args(argv)
    for name, least in (("threads", 1), ("rounds", 2), ("steps", 1)):  # a spread needs 2 rounds
        value = getattr(args, name)
        if value is not None and value < least:
            raise SystemExit(f"--{name} must be at least {least}, got {value}")
    if fast_mode() and args.json == parser.get_default("json"):
        raise SystemExit("SAGAN_EDU_FAST is set: its tiny settings would replace the recorded "
                         "run of the full settings; pass --json with another path, or unset "
                         "SAGAN_EDU_FAST")  # fmt: skip
    return args


def notebook_cells() -> dict[str, tuple[int, str]]:
    """name -> (position in the notebook's list of cells, source) for each cell in CELL_STARTS."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code = [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    found = {}
    for name, start in CELL_STARTS.items():
        matches = [(i, source) for i, source in code if source.startswith(start)]
        if len(matches) != 1:
            raise SystemExit(f"{NOTEBOOK.name}: expected one code cell starting with {start!r}, "
                             f"found {len(matches)}; update CELL_STARTS in {__file__}")  # fmt: skip
        found[name] = matches[0]
    return found


def run_cells(cells: dict[str, tuple[int, str]], overrides: dict[str, int]) -> tuple[dict, str]:
    """Execute the cells in one namespace, as a kernel would; return it and what they printed."""
    to_python = TransformerManager().transform_cell  # `%pip ...` -> get_ipython().run_line_magic
    namespace: dict = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for name, (_, source) in cells.items():
            exec(compile(to_python(source), f"<{NOTEBOOK.name} cell {name}>", "exec"), namespace)
            if name == "parameters":  # as papermill injects them: right after the parameters cell
                namespace.update(overrides)
    return namespace, printed.getvalue()


def main(argv: list[str] | None = None) -> dict:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    torch.set_num_threads(args.threads)
    overrides = {"timing_rounds": args.rounds, "timing_steps": args.steps}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    cells = notebook_cells()
    load_before = os.getloadavg()[0]  # other jobs on the machine: the reason for the rounds
    start, cpu_start = time.perf_counter(), time.process_time()
    ns, printed = run_cells(cells, overrides)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    sys.stdout.write(printed)
    results = {
        "meta": {
            "what": "notebook 05 section 5, the cost of SelfAttention2d(32) on the 16x16 map of "
                    "the small CNN: one training step (forward + backward, batch 64) of the CNN "
                    "with and without the block, timed in alternating rounds (both models in "
                    "every round, the first one alternating) after 3 untimed warm-up steps each, "
                    "by the wall clock and by the process's CPU time; "
                    "the bytes autograd saves for the backward pass (saved_tensors_hooks, exact) "
                    "and the forward multiply-adds counted from the layer shapes; no training",
            "command": shlex.join(["python", "benchmarks/course_05_cost.py", *arguments]),
            "cells": {name: position for name, (position, _) in cells.items()},
            "fast_mode": fast_mode(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": str(ns["device"]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "threads": torch.get_num_threads(),
            "niceness": os.nice(0),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "note": args.note,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "seed": 0,
            "seconds": round(seconds, 1),
            # far below "seconds" when the process mostly waited for a core another job held
            "cpu_seconds": round(cpu_seconds, 1),
        },
        "printed": printed.splitlines(),
        "raw": {
            "timing_rounds": ns["timing_rounds"],
            "timing_steps": ns["timing_steps"],
            "batch": ns["batch"],
            # as measured, not rounded: tests/test_recorded_numbers.py recomputes the ratios
            "seconds_per_step_per_round": {
                clock: {"without": times[False], "with": times[True]}
                for clock, times in ns["times"].items()
            },
            "saved_for_backward_bytes": {"without": ns["m0"], "with": ns["m1"]},
            "forward_multiply_adds_per_image": {"without": ns["f0"], "with": ns["f1"]},
        },
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
