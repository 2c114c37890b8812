"""Make an nbgrader course folder from solutions/: one assignment per exercise notebook.

    python tools/nbgrader_course.py ~/sagan-grading    # then: cd ~/sagan-grading; nbgrader ...

Writes, in the folder given:

    nbgrader_config.py                   the course's settings (written once, then yours to edit)
    source/<name>/<name>.ipynb           solutions/<name>.ipynb, for every solution notebook

and leaves the rest of nbgrader's layout (release/, submitted/, autograded/, feedback/,
gradebook.db) to nbgrader. Run it again after the solutions change: it rewrites source/ (then
`nbgrader generate_assignment --force <name>` remakes the release).

The copies in source/ differ from solutions/ in one cell: the "Open in Colab" badge links to the
exercise notebook, as it does in exercises/, so the released notebook does not link students to
the answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_exercises import MARKDOWN_PROMPT, SOLUTIONS  # sibling scripts, not a package
from sync_notebooks import synced

CONFIG = f'''"""nbgrader settings for the sagan_edu exercises (made by tools/nbgrader_course.py)."""

c = get_config()  # nbgrader defines get_config() when it reads this file
c.CourseDirectory.course_id = "sagan_edu"

# A written answer becomes the same prompt as in the repository's exercises/.
c.ClearSolutions.text_stub = {MARKDOWN_PROMPT!r}

# Cells that train or sample run for minutes on a laptop CPU (nbgrader's default limit is 30 s).
# Set SAGAN_EDU_FAST=1 when autograding to run them with tiny settings: the checks are the same.
c.Execute.timeout = 900
'''


def make_course(root: Path) -> list[Path]:
    """Write the course folder's config (if missing) and its source notebooks; return those."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "nbgrader_config.py"
    if not config.exists():
        config.write_text(CONFIG, encoding="utf-8")
    written = []
    for solution in sorted(SOLUTIONS.glob("*.ipynb")):
        nb = synced(nbformat.read(solution, as_version=4), f"exercises/{solution.name}")
        target = root / "source" / solution.stem / solution.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="the course folder (created if missing)")
    args = parser.parse_args(argv)
    written = make_course(args.root)
    print(f"{args.root}: nbgrader_config.py and {len(written)} assignments in source/:")
    for path in written:
        print(f"  {path.parent.name}")
    print(f"next: cd {args.root} && nbgrader generate_assignment {written[0].parent.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
