"""solutions/ is an nbgrader source: its metadata follows the convention, nbgrader makes the same
student notebooks as tools/make_exercises.py, and nbgrader's whole loop grades them.

"The same student notebooks" means: the same cells in the same order, of the same types, with
the same nbgrader metadata (grade ids, points, locked, solution, grade) and the same text, except
inside the solution regions of code cells. There nbgrader writes its fixed stub
(`# YOUR CODE HERE` / `raise NotImplementedError()`) and make_exercises.py a stub that raises
NotImplementedError with a hint. nbgrader also adds bookkeeping the repository's exercises leave
out: a checksum and the cell type in each cell's nbgrader metadata, and `editable`/`deletable`
flags that lock cells in the released copy (exercises/ stays editable for readers on their own).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.api import Gradebook
from nbgrader.nbgraderformat import MetadataValidator

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
GRADED = "03_spectral_norm_and_hinge_loss"  # the loop runs on one notebook: the quickest
NBGRADER_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # ClearSolutions' default
BOOKKEEPING = ("checksum", "cell_type")  # what generate_assignment adds to the metadata


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nbgrader_metadata = _load_tool("nbgrader_metadata")
nbgrader_course = _load_tool("nbgrader_course")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def nbgrader(*args: str, course: Path) -> str:
    """Run the nbgrader command line in the course folder; its log, or a failure showing it."""
    env = dict(os.environ)
    # nbgrader starts `alembic` (its database migrations) by name, from this environment
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# The metadata convention
# ---------------------------------------------------------------------------------------------


def read_only(grade_id: str) -> dict:
    return {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
            "solution": False}  # fmt: skip


def small_notebook() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell("# Exercises 0: doubling\n\n## Learning goals\n\n- double"),
            new_code_cell("import torch"),
            new_markdown_cell("## Exercise 0a: double a number"),
            new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
                          "    ### END SOLUTION"),
            new_code_cell("check_double(double)"),
            new_code_cell("double(3)  # check_ is not the first word: read-only"),
            new_markdown_cell("**Question.** Why double?"),
            new_markdown_cell("### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
            new_markdown_cell("### BEGIN SOLUTION\nAnd again.\n### END SOLUTION"),
            new_markdown_cell("Takeaway: doubled.\n\n## Exercise 0b: halve it"),
            new_markdown_cell("## Summary\n\nDoubled."),
        ]
    )  # fmt: skip


def test_the_convention_on_a_small_notebook():
    # What nbgrader's "Create Assignment" panel writes for each kind of cell (nbgrader's
    # contributor guide, "Metadata"; schema version 3), with the grade ids the convention derives.
    expected = [
        read_only("intro_cell1"),
        read_only("intro_cell2"),
        read_only("ex0a_cell1"),
        {"grade": False, "grade_id": "ex0a_double", "locked": False, "schema_version": 3,
         "solution": True},
        {"grade": True, "grade_id": "ex0a_check_double", "locked": True, "points": 1,
         "schema_version": 3, "solution": False},
        read_only("ex0a_cell4"),
        read_only("ex0a_cell5"),
        {"grade": True, "grade_id": "ex0a_answer", "locked": False, "points": 1,
         "schema_version": 3, "solution": True},
        {"grade": True, "grade_id": "ex0a_answer2", "locked": False, "points": 1,
         "schema_version": 3, "solution": True},
        read_only("ex0b_cell1"),
        read_only("ex0b_cell2"),
    ]  # fmt: skip
    nb = nbgrader_metadata.with_nbgrader_metadata(small_notebook())
    assert [c.metadata["nbgrader"] for c in nb.cells] == expected
    MetadataValidator().validate_nb(nb)  # nbgrader's own check: ids unique, points present


def test_the_convention_is_idempotent_and_keeps_points_and_other_metadata():
    nb = small_notebook()
    nb.cells[4].metadata["tags"] = ["parameters"]
    once = nbgrader_metadata.with_nbgrader_metadata(nb)
    assert nbgrader_metadata.with_nbgrader_metadata(once) == once
    once.cells[4].metadata["nbgrader"]["points"] = 3  # an instructor weighs this check more
    twice = nbgrader_metadata.with_nbgrader_metadata(once)
    assert twice.cells[4].metadata["nbgrader"]["points"] == 3
    assert twice.cells[4].metadata["tags"] == ["parameters"]
    assert "nbgrader" not in nb.cells[0].metadata, "the input notebook is left as it was"


def test_solutions_carry_up_to_date_metadata():
    assert nbgrader_metadata.stale_notebooks(write=False) == [], "run `make exercises`"


@pytest.mark.parametrize("folder", ["solutions", "exercises"])
def test_nbgrader_accepts_the_metadata_of_every_notebook(folder):
    for path in sorted((ROOT / folder).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        MetadataValidator().validate_nb(nb)
        bare = [i for i, c in enumerate(nb.cells) if "nbgrader" not in c.metadata]
        assert not bare, f"{path.name}: cells {bare} have no nbgrader metadata"
        tests = [c for c in nb.cells if c.metadata["nbgrader"]["grade"] and c.cell_type == "code"]
        assert tests, f"{path.name}: no autograded check"


# ---------------------------------------------------------------------------------------------
# nbgrader's student notebooks are make_exercises.py's, up to the stubs' hints
# ---------------------------------------------------------------------------------------------


def stub_pattern(solution_source: str) -> tuple[re.Pattern, list[str]]:
    """A pattern matching the cell with any text in place of each solution region; the regions'
    indentations."""
    pieces, indents, inside = [], [], False
    for line in solution_source.split("\n"):
        if BEGIN in line:
            inside = True
            pieces.append("(.*?)")
            indents.append(re.match(r"\s*", line).group(0))
        elif END in line:
            inside = False
        elif not inside:
            pieces.append(re.escape(line))
    return re.compile("\n".join(pieces), re.DOTALL), indents


def raises_not_implemented(stub: str) -> bool:
    try:
        exec(textwrap.dedent(stub), {})
    except NotImplementedError:
        return True
    return False


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """nbgrader generate_assignment run on every solution notebook; the release/ folder."""
    course = tmp_path_factory.mktemp("course")
    nbgrader_course.make_course(course)
    nbgrader("generate_assignment", "*", course=course)
    return course / "release"


@pytest.mark.slow  # the fixture's generate_assignment: about 20 s on 2 busy cores
@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_nbgrader_makes_the_same_student_notebook_as_make_exercises(solution, released):
    source = nbformat.read(solution, as_version=4).cells
    theirs = nbformat.read(released / solution.stem / solution.name, as_version=4).cells
    ours = nbformat.read(ROOT / "exercises" / solution.name, as_version=4).cells
    assert [c.cell_type for c in theirs] == [c.cell_type for c in ours]
    for index, (s, t, o) in enumerate(zip(source, theirs, ours, strict=True)):
        where = f"{solution.name}, cell {index}"
        bookkept = {k: v for k, v in t.metadata["nbgrader"].items() if k not in BOOKKEEPING}
        assert bookkept == o.metadata["nbgrader"], where
        if s.cell_type == "code" and BEGIN in s.source:
            pattern, indents = stub_pattern(s.source)
            theirs_match, ours_match = pattern.fullmatch(t.source), pattern.fullmatch(o.source)
            assert theirs_match and ours_match, f"{where}: text outside the answers differs"
            their_stubs, our_stubs = theirs_match.groups(), ours_match.groups()
            assert their_stubs == tuple(textwrap.indent(NBGRADER_STUB, i) for i in indents), where
            for indent, stub in zip(indents, our_stubs, strict=True):
                assert stub.startswith(indent + "# YOUR CODE HERE\n"), where
                assert raises_not_implemented(stub), f"{where}: {stub}"
        else:
            assert t.source == o.source, where


# ---------------------------------------------------------------------------------------------
# The whole loop: generate, submit, autograde, read the gradebook
# ---------------------------------------------------------------------------------------------

# A student's mistakes, each replacing the body of one function: what the function returns.
MISTAKES = {
    "spectral_normalise": "return weight, u  # forgot to divide by σ",
    "g_hinge_loss": "return fake_logits.mean()  # the sign flipped",
}


def answered(solution_source: str, wrong: dict[str, str]) -> str:
    """The cell as a student writes it: the solution regions' code, or a wrong body in place of
    the region of a function named in `wrong`."""
    out, inside, function = [], False, None
    for line in solution_source.split("\n"):
        if match := re.match(r"\s*def (\w+)\(", line):
            function = match.group(1)
        if BEGIN in line:
            inside = True
            if function in wrong:
                out.append(re.match(r"\s*", line).group(0) + wrong[function])
        elif END in line:
            inside = False
        elif not (inside and function in wrong):
            out.append(line)
    return "\n".join(out)


def submit(course: Path, student: str, handout: Path, wrong: dict[str, str], written: bool):
    """Fill in the code answers of the notebook handed out (and the written ones if `written`),
    as `student`, and hand it in."""
    name = f"{GRADED}.ipynb"
    source = nbformat.read(course / "source" / GRADED / name, as_version=4)
    nb = nbformat.read(handout, as_version=4)
    for theirs, solution in zip(nb.cells, source.cells, strict=True):
        if theirs.cell_type == "code" and theirs.metadata["nbgrader"]["solution"]:
            theirs.source = answered(solution.source, wrong)
        elif theirs.metadata["nbgrader"]["solution"] and written:
            theirs.source = answered(solution.source, {})
    target = course / "submitted" / student / GRADED / name
    target.parent.mkdir(parents=True)
    nbformat.write(nb, target)


def grades(course: Path, student: str) -> dict[str, tuple]:
    """grade id -> (cell type, auto score, max score, needs manual grade), from the gradebook."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(GRADED, GRADED, student)
        return {
            g.name: (g.cell_type, g.auto_score, g.max_score, g.needs_manual_grade)
            for g in notebook.grades
        }


@pytest.mark.slow
def test_nbgraders_loop_gives_full_marks_to_the_solution_and_none_for_each_mistake(tmp_path):
    """Both handouts are graded: nbgrader's release, and exercises/ (the same grade ids)."""
    course = tmp_path / "course"
    nbgrader_course.make_course(course)
    for other in (course / "source").iterdir():
        if other.name != GRADED:
            shutil.rmtree(other)
    nbgrader("generate_assignment", GRADED, course=course)
    # alice works in nbgrader's release, bob in the repository's exercises/ notebook
    release = course / "release" / GRADED / f"{GRADED}.ipynb"
    submit(course, "alice", release, wrong={}, written=True)
    exercise = ROOT / "exercises" / f"{GRADED}.ipynb"
    submit(course, "bob", exercise, wrong=MISTAKES, written=False)
    nbgrader("autograde", GRADED, course=course)

    source = nbformat.read(course / "source" / GRADED / f"{GRADED}.ipynb", as_version=4)
    graded = {c.metadata["nbgrader"]["grade_id"]: c for c in source.cells
              if c.metadata["nbgrader"]["grade"]}  # fmt: skip
    checks = {gid: c for gid, c in graded.items() if c.cell_type == "code"}
    checked = {gid: re.match(r"check_\w+\((\w+)", c.source).group(1) for gid, c in checks.items()}
    assert set(MISTAKES) <= set(checked.values()), "every planted mistake has its check"
    assert set(checked.values()) - set(MISTAKES), "and some check has no mistake to find"

    alice, bob = grades(course, "alice"), grades(course, "bob")
    assert set(alice) == set(bob) == set(graded)
    for gid, cell in graded.items():
        points = cell.metadata["nbgrader"]["points"]
        if gid in checks:
            assert alice[gid] == ("code", points, points, False), gid
            expected = 0 if checked[gid] in MISTAKES else points
            assert bob[gid] == ("code", expected, points, False), gid
        else:  # a written answer: nbgrader leaves it to the instructor, or 0 if left blank
            assert alice[gid] == ("markdown", None, points, True), gid
            assert bob[gid] == ("markdown", 0, points, False), gid
