"""The notebooks' `parameters` cells (papermill's convention) and a papermill run that uses one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The notebooks that have their parameters cell so far; add each one as it gets its cell.
WITH_PARAMETERS = [
    ROOT / "notebooks" / name
    for name in (
        "00_start_here.ipynb",
        "01_scaled_dot_product_attention.ipynb",
        "02_self_and_multihead_attention.ipynb",
        "03_attention_vs_recurrence.ipynb",
        "04_cost_of_attention.ipynb",
        "05_self_attention_for_images.ipynb",
        "06_gan_fundamentals.ipynb",
        "07_stabilising_gans.ipynb",
        "08_training_a_sagan.ipynb",
        "10_does_attention_help.ipynb",
    )
]


def parameters_cell(cells: list) -> int:
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found cells {tagged}"
    return tagged[0]


@pytest.mark.parametrize("path", WITH_PARAMETERS, ids=[p.name for p in WITH_PARAMETERS])
def test_parameters_cell_only_assigns_names_that_later_cells_use(path):
    cells = nbformat.read(path, as_version=4).cells
    index = parameters_cell(cells)
    statements = ast.parse(cells[index].source).body
    assert statements, "the parameters cell is empty"
    assert all(isinstance(s, ast.Assign) for s in statements), (
        "a parameters cell holds plain assignments only, so papermill can override each one"
    )
    names = [t.id for s in statements for t in s.targets if isinstance(t, ast.Name)]
    used_later = set()
    for cell in cells[index + 1 :]:
        if cell.cell_type == "code":  # IPython's %magic and !shell lines are not Python
            lines = cell.source.splitlines()
            code = "\n".join(x for x in lines if not x.lstrip().startswith(("%", "!")))
            used_later |= {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}
    unused = [name for name in names if name not in used_later]
    assert not unused, (
        f"parameters no later cell uses (overriding them would change nothing): {unused}"
    )


# Notebooks that keep every pick(fast=..., full=...) in their parameters cell.
ALL_PICKS_IN_PARAMETERS = WITH_PARAMETERS[:5]  # 00 … 04


@pytest.mark.parametrize(
    "path", ALL_PICKS_IN_PARAMETERS, ids=[p.name for p in ALL_PICKS_IN_PARAMETERS]
)
def test_every_fast_or_full_setting_is_a_parameter(path):
    # A pick(fast=..., full=...) anywhere else is a setting papermill cannot reach.
    cells = nbformat.read(path, as_version=4).cells
    index = parameters_cell(cells)
    setup = next(i for i, c in enumerate(cells) if c.source.startswith("# Setup:"))
    assert index > setup, "the parameters cell comes after the setup cell, which imports pick"
    elsewhere = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "code" and i != index and re.search(r"\bpick\(", c.source)
    ]
    assert not elsewhere, f"cells {elsewhere} call pick(); move those settings to the parameters"


@pytest.mark.slow
def test_papermill_runs_notebook_08_with_a_changed_number_of_steps(tmp_path):
    papermill = pytest.importorskip("papermill")
    source = ROOT / "notebooks" / "08_training_a_sagan.ipynb"
    out = tmp_path / "08.ipynb"
    papermill.execute_notebook(
        str(source), str(out), parameters={"steps": 4}, cwd=str(source.parent),
        kernel_name="python3", progress_bar=False,
        iopub_timeout=60, raise_on_iopub_timeout=True,  # see execute() in test_exercises.py
    )  # fmt: skip
    cells = nbformat.read(out, as_version=4).cells
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "steps = 4" in injected[0].source
    assert parameters_cell(cells) < cells.index(injected[0])  # papermill puts it after ours
    printed = "".join(
        o.get("text", "") for c in cells if c.cell_type == "code" for o in c.outputs
        if o.output_type == "stream"
    )  # fmt: skip
    assert "training 4 steps" in printed  # the default in fast mode is 6
    assert "step 4/4" in printed  # the live view's last line: the run stopped at the new value
