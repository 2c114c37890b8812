"""The course notebooks' shape: clean, synced first cells, goals first, a summary last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ALL = sorted(
    [*NOTEBOOKS, *(ROOT / "solutions").glob("*.ipynb"), *(ROOT / "exercises").glob("*.ipynb")]
)


def ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, f"cells {dirty} have outputs; clear them before committing"


def test_first_cells_are_in_sync_with_pyproject():
    result = subprocess.run(
        [sys.executable, "tools/sync_notebooks.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_lecture_notebooks_open_with_goals_and_end_with_a_summary(path):
    cells = nbformat.read(path, as_version=4).cells
    markdown = [c.source.lower() for c in cells if c.cell_type == "markdown"]
    assert "learning goals" in markdown[1], "the cell after the badge states the learning goals"
    assert "summary" in markdown[-1] and "try this next" in markdown[-1], (
        "the last cell is a summary with 'try this next' questions"
    )


def test_notebooks_are_numbered_in_reading_order():
    numbers = [int(p.name.split("_")[0]) for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers))
