"""Give every cell of solutions/*.ipynb the nbgrader metadata it needs, by the course's convention.

    python tools/nbgrader_metadata.py          # rewrite solutions/ (make_exercises.py calls this)
    python tools/nbgrader_metadata.py --check  # exit 1 if a solution notebook lacks it

nbgrader (https://nbgrader.readthedocs.io) reads a dictionary under each cell's
`metadata["nbgrader"]` to know what it grades. The course never writes it by hand; it follows
from how the solution notebooks are written:

| the cell                                         | nbgrader calls it       | grade  | points |
|--------------------------------------------------|-------------------------|--------|--------|
| code with `### BEGIN SOLUTION`                   | autograded answer       | no     |        |
| code starting with a `check_…(` call             | autograder tests        | yes    | 1      |
| markdown with `### BEGIN SOLUTION` (a question)  | manually graded answer  | yes    | 1      |
| anything else                                    | read-only               | no     |        |

Answer cells, code or written, stay editable; every other cell is locked. Points already in a
cell's metadata (an instructor changed them in nbgrader's "Create Assignment" panel) are kept.

A cell's grade id names its exercise and what the cell is, so it does not change when cells are
added elsewhere. The exercise is the last `## Exercise <label>` heading in or above the cell
(`## Exercise 1a: …` gives `ex1a`; cells above the first one are `intro`). Then comes the
function or class an answer defines (`ex1a_attention_weights`), the check a test cell calls
(`ex1a_check_attention_weights`), `answer` for a written answer, or `cell<k>`, the cell's
position from the heading on, for a read-only cell (`intro_cell1`). nbgrader keys grade ids by
notebook: they need only be unique within one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"

BEGIN = "### BEGIN SOLUTION"  # the marker tools/make_exercises.py and nbgrader both look for
SCHEMA_VERSION = 3  # nbgrader's cell-metadata schema since 0.7
DEFAULT_POINTS = 1

CHECK_CALL = re.compile(r"(check_\w+)\(")  # matched at the start of a cell
DEFINITION = re.compile(r"^(?:def|class)\s+(\w+)", re.MULTILINE)
EXERCISE = re.compile(r"^##\s+Exercise\s+(\w+)", re.MULTILINE)  # `## Exercise 1a: …` -> 1a


def cell_kind(cell: nbformat.NotebookNode) -> str:
    """One of "answer" (code to write), "written" (prose to write), "test" or "read-only"."""
    if BEGIN in cell.source:
        return "answer" if cell.cell_type == "code" else "written"
    if cell.cell_type == "code" and CHECK_CALL.match(cell.source):
        return "test"
    return "read-only"


def nbgrader_fields(kind: str, grade_id: str, points: float) -> dict:
    """The metadata nbgrader's "Create Assignment" panel writes for this kind of cell."""
    fields = {
        "grade": kind in ("test", "written"),
        "grade_id": grade_id,
        "locked": kind in ("test", "read-only"),
        "schema_version": SCHEMA_VERSION,
        "solution": kind in ("answer", "written"),
    }
    if fields["grade"]:
        fields["points"] = points
    return fields


def with_nbgrader_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook where every cell carries nbgrader metadata (other metadata kept)."""
    nb = nbformat.from_dict(nb)  # a deep copy
    section, position = "intro", 0
    used: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown" and (labels := EXERCISE.findall(cell.source)):
            section, position = f"ex{labels[-1].lower()}", 0
        position += 1
        kind = cell_kind(cell)
        if kind == "answer":
            names = DEFINITION.findall(cell.source)
            name = f"{section}_{names[0] if names else 'answer'}"
        elif kind == "test":
            name = f"{section}_{CHECK_CALL.match(cell.source).group(1)}"
        elif kind == "written":
            name = f"{section}_answer"
        else:
            name = f"{section}_cell{position}"
        grade_id, repeat = name, 1
        while grade_id in used:  # two answers in one section: ex1_answer, ex1_answer2, …
            repeat += 1
            grade_id = f"{name}{repeat}"
        used.add(grade_id)
        points = cell.metadata.get("nbgrader", {}).get("points", DEFAULT_POINTS)
        cell.metadata["nbgrader"] = nbgrader_fields(kind, grade_id, points)
    return nb


def stale_notebooks(write: bool) -> list[Path]:
    """The solution notebooks whose metadata is missing or out of date; rewritten if `write`."""
    stale = []
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        text = path.read_text("utf-8")
        expected = nbformat.writes(with_nbgrader_metadata(nbformat.reads(text, as_version=4)))
        if text != expected:
            stale.append(path)
            if write:
                path.write_text(expected, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is out of date")
    args = parser.parse_args(argv)
    stale = stale_notebooks(write=not args.check)
    names = ", ".join(p.name for p in stale)
    if not stale:
        print("nbgrader metadata: solutions/ is up to date")
    elif args.check:
        print(f"nbgrader metadata out of date in: {names}\nrewrite it with: make exercises")
        return 1
    else:
        print(f"nbgrader metadata written to: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
