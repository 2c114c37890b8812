"""Generate exercises/ from solutions/: every answer becomes a stub for the student to fill in.

    python tools/make_exercises.py          # rewrite exercises/ (`make exercises`)
    python tools/make_exercises.py --check  # exit 1 if exercises/ is out of date (the tests do)

In solutions/NN_topic.ipynb answers sit between `### BEGIN SOLUTION` and `### END SOLUTION`,
nbgrader's markers, so instructors who use nbgrader can feed it the same notebooks.

- In a code cell the marked lines, markers included, become two lines at the BEGIN marker's
  indentation:

      # YOUR CODE HERE
      raise NotImplementedError("<hint>")

  The hint is whatever follows the marker on its line (`### BEGIN SOLUTION: softmax over the
  keys`); without one, a generic hint is used.
- In a markdown cell the marked lines become a prompt for the student's answer.
- Everything else is copied as it is; outputs are cleared, and the first two cells (Colab badge
  and setup) are rewritten for the exercise notebook's own path by tools/sync_notebooks.py.

First it gives solutions/ its nbgrader cell metadata (tools/nbgrader_metadata.py), which the
exercises keep, so an instructor can autograde them with nbgrader.

A small script rather than nbgrader itself: nbgrader's ClearSolutions writes one fixed stub for
every exercise (no per-exercise hint), and students and Colab should not need nbgrader's database
layer and server extensions. tests/test_nbgrader.py checks that `nbgrader generate_assignment`
makes the same student notebooks, up to the stubs' hints.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbgrader_metadata import main as write_nbgrader_metadata  # sibling scripts, not a package
from sync_notebooks import synced

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
DEFAULT_HINT = "Your turn: write this part (the hint above the exercise helps)."
MARKDOWN_PROMPT = "**Your answer:** _double-click this cell and write it here._"
LINE_LENGTH = 100  # ruff's limit for the course, notebooks included


class MarkerError(ValueError):
    """BEGIN and END SOLUTION markers that do not pair up."""


def _python_string(text: str) -> str:
    """`text` as a double-quoted Python string literal (non-ASCII kept readable)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def code_stub(indent: str, hint: str) -> list[str]:
    """The lines that replace an answer in a code cell, wrapped to the line-length limit."""
    one_line = f"{indent}raise NotImplementedError({_python_string(hint)})"
    if len(one_line) <= LINE_LENGTH:
        return [f"{indent}# YOUR CODE HERE", one_line]
    width = LINE_LENGTH - len(indent) - 4 - 2  # inner indentation and the quotes
    pieces = textwrap.wrap(hint, width=width - 1, break_long_words=False, break_on_hyphens=False)
    pieces = [p + " " for p in pieces[:-1]] + pieces[-1:]  # keep the spaces between pieces
    return [
        f"{indent}# YOUR CODE HERE",
        f"{indent}raise NotImplementedError(",
        *(f"{indent}    {_python_string(p)}" for p in pieces),
        f"{indent})",
    ]


def clear_solutions(source: str, cell_type: str) -> str:
    """The cell's source with every marked answer replaced by a stub (code) or a prompt."""
    lines = source.split("\n")
    out: list[str] = []
    inside = False
    for number, line in enumerate(lines, start=1):
        if BEGIN in line:
            if inside:
                raise MarkerError(f"line {number}: BEGIN SOLUTION inside another solution")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            if cell_type == "code":
                hint = line.split(BEGIN, 1)[1].strip().lstrip(":—-").strip() or DEFAULT_HINT
                out.extend(code_stub(indent, hint))
            else:
                out.append(indent + MARKDOWN_PROMPT)
        elif END in line:
            if not inside:
                raise MarkerError(f"line {number}: END SOLUTION without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError("BEGIN SOLUTION without an END")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    return BEGIN in source


def exercise_notebook(solution: nbformat.NotebookNode, relative_path: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook; `relative_path` is where it will live."""
    nb = nbformat.from_dict(solution)  # a deep copy
    for index, cell in enumerate(nb.cells):
        try:
            cell.source = clear_solutions(cell.source, cell.cell_type)
        except MarkerError as err:
            raise MarkerError(f"{relative_path}, cell {index}: {err}") from None
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return synced(nb, relative_path)


def expected_exercises() -> dict[Path, str]:
    """Each exercise notebook's path and the text it should have, from solutions/."""
    texts = {}
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        target = EXERCISES / path.name
        solution = nbformat.read(path, as_version=4)
        exercise = exercise_notebook(solution, target.relative_to(ROOT).as_posix())
        texts[target] = nbformat.writes(exercise)
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is out of date")
    args = parser.parse_args(argv)
    if write_nbgrader_metadata(["--check"] if args.check else []):  # solutions/ first
        return 1
    try:
        expected = expected_exercises()
    except MarkerError as err:
        print(f"unbalanced solution markers: {err}")
        return 1
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text("utf-8") != text]
    orphans = [p for p in sorted(EXERCISES.glob("*.ipynb")) if p not in expected]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}")
        for path in orphans:
            print(f"no solution for: {path.relative_to(ROOT)}")
        if stale or orphans:
            print("regenerate with: make exercises")
            return 1
        print(f"exercises/ is up to date ({len(expected)} notebooks)")
        return 0
    EXERCISES.mkdir(exist_ok=True)
    for path in stale:
        path.write_text(expected[path], encoding="utf-8")
    for path in orphans:
        path.unlink()
    print(
        f"exercises/: {len(stale)} written, {len(expected) - len(stale)} unchanged, "
        f"{len(orphans)} removed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
