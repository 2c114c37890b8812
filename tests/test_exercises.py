"""exercises/ is generated from solutions/, stays in sync, leaks no answer, and fails only on stubs.

The solution notebooks also run under nbval (they are in testpaths); here they run once more so
the test can read every check's success line. The exercise notebooks run with their stubs in
place: every cell that fails must fail with the stub's NotImplementedError, nothing else.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sagan_edu import checks

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LECTURES = [
    "00_start_here", "01_scaled_dot_product_attention", "02_self_and_multihead_attention",
    "03_attention_vs_recurrence", "04_cost_of_attention", "05_self_attention_for_images",
    "06_gan_fundamentals", "07_stabilising_gans", "08_training_a_sagan", "09_inspecting_attention",
    "10_does_attention_help",
]  # fmt: skip
CHECK_CALL = re.compile(r"^(check_\w+)\(", re.MULTILINE)


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "make_exercises", ROOT / "tools/make_exercises.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_exercises = _load_tool()


def ids(paths):
    return [p.stem for p in paths]


def exercise_path(solution: Path) -> Path:
    return ROOT / "exercises" / solution.name


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def check_calls(path: Path) -> list[str]:
    return [m for c in code_cells(path) for m in CHECK_CALL.findall(c.source)]


# ---------------------------------------------------------------------------------------------
# Generated, in sync, no answers inside
# ---------------------------------------------------------------------------------------------


def test_there_are_solution_notebooks_and_each_has_its_exercise():
    assert len(SOLUTIONS) >= 5
    exercises = sorted((ROOT / "exercises").glob("*.ipynb"))
    assert [p.name for p in exercises] == [p.name for p in SOLUTIONS]


def test_exercises_are_what_make_exercises_generates():
    expected = make_exercises.expected_exercises()
    stale = [p.name for p, text in expected.items() if p.read_text("utf-8") != text]
    assert not stale, f"exercises/ is out of date, run `make exercises`: {stale}"
    assert make_exercises.main(["--check"]) == 0


def solution_regions(source: str) -> list[str]:
    """The lines between the markers, markers excluded."""
    regions, inside = [], False
    for line in source.split("\n"):
        if make_exercises.BEGIN in line:
            inside = True
        elif make_exercises.END in line:
            inside = False
        elif inside:
            regions.append(line)
    return regions


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids(SOLUTIONS))
def test_no_answer_leaks_into_the_exercise(solution):
    cells = nbformat.read(solution, as_version=4).cells
    answers = {line.strip() for c in cells for line in solution_regions(c.source)}
    elsewhere = {
        line.strip()
        for c in cells
        for line in make_exercises.clear_solutions(c.source, c.cell_type).split("\n")
    }
    secret = {line for line in answers - elsewhere if len(line) > 3}
    assert secret, "a solution notebook without answers"
    exercise = nbformat.read(exercise_path(solution), as_version=4)
    text = {line.strip() for c in exercise.cells for line in c.source.split("\n")}
    assert not secret & text, f"answer lines in {exercise_path(solution).name}: {secret & text}"
    assert not any("SOLUTION" in c.source for c in exercise.cells)


def test_a_stub_keeps_the_indentation_and_carries_the_hint():
    source = "def f(x):\n    ### BEGIN SOLUTION: double it\n    return 2 * x\n    ### END SOLUTION"
    assert make_exercises.clear_solutions(source, "code") == (
        'def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError("double it")'
    )
    long = "### BEGIN SOLUTION: " + "a hint that is long " * 8 + "\nx = 1\n### END SOLUTION"
    stub = make_exercises.clear_solutions(long, "code")
    assert all(len(line) <= 100 for line in stub.split("\n"))
    namespace = {}
    with pytest.raises(NotImplementedError, match="a hint that is long a hint"):
        exec(stub, namespace)
    assert make_exercises.clear_solutions(
        "Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "markdown"
    ) == ("Why?\n" + make_exercises.MARKDOWN_PROMPT)


@pytest.mark.parametrize(
    "source", ["### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n" * 2]
)
def test_unbalanced_markers_are_an_error(source):
    with pytest.raises(make_exercises.MarkerError):
        make_exercises.clear_solutions(source, "code")


# ---------------------------------------------------------------------------------------------
# What every exercise notebook has
# ---------------------------------------------------------------------------------------------


def test_every_check_is_used_by_some_exercise():
    used = {name for path in SOLUTIONS for name in check_calls(path)}
    assert used == {n for n in checks.__all__ if n.startswith("check_")}


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids(SOLUTIONS))
def test_each_exercise_is_explained_hinted_and_followed_by_its_check(solution):
    cells = nbformat.read(solution, as_version=4).cells
    intro = cells[2]
    assert intro.cell_type == "markdown" and intro.source.startswith("# ")
    assert "Learning goals" in intro.source
    assert any(name in intro.source for name in LECTURES), "name the lecture notebook it follows"
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and make_exercises.BEGIN in cell.source:
            prose = cells[i - 1]
            assert prose.cell_type == "markdown" and "<details>" in prose.source, (
                f"cell {i}: the exercise's description, with a hint in <details>, comes first"
            )
            assert "Why it matters" in prose.source, f"cell {i}: say why the exercise matters"
            follow = cells[i + 1]
            assert follow.cell_type == "code" and CHECK_CALL.match(follow.source), (
                f"cell {i}: the check cell comes right after the exercise"
            )
    last = cells[-1].source
    assert "Summary" in last and "Try this next" in last


# ---------------------------------------------------------------------------------------------
# Running them: solutions pass every check, exercises fail only with the stubs' error
# ---------------------------------------------------------------------------------------------


def execute(path: Path, allow_errors: bool) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        # After a cell's reply, nbclient waits only 4 s for the kernel's last outputs and then
        # carries on without them (a warning in a log): on a busy 2-core machine a check's success
        # line could go missing. Wait longer, and fail loudly if they still do not come.
        iopub_timeout=60,
        raise_on_iopub_timeout=True,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids(SOLUTIONS))
def test_solutions_run_and_every_check_prints_its_success_line(solution):
    nb = execute(solution, allow_errors=False)
    for cell in nb.cells:
        if cell.cell_type == "code" and (match := CHECK_CALL.match(cell.source)):
            assert f"✅ {match.group(1)} passed" in stdout(cell), cell.source


@pytest.mark.slow
@pytest.mark.parametrize("exercise", [exercise_path(p) for p in SOLUTIONS], ids=ids(SOLUTIONS))
def test_exercises_fail_only_with_the_stubs_not_implemented_error(exercise):
    nb = execute(exercise, allow_errors=True)
    errors = {}
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                errors[index] = (output.ename, output.evalue)
    wrong = {i: e for i, e in errors.items() if e[0] != "NotImplementedError"}
    assert not wrong, f"cells failing with something other than the stub's error: {wrong}"
    check_cells = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and CHECK_CALL.match(c.source)
    ]
    assert check_cells and all(i in errors for i in check_cells), (
        "every check cell shows the stub's NotImplementedError until the exercise is done"
    )
    assert all(errors[i][1] for i in check_cells), "the stub's hint reaches the check cell"
