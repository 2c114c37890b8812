"""Write the two cells every course notebook starts with, from one template.

    python tools/sync_notebooks.py          # rewrite them in notebooks/ and solutions/
    python tools/sync_notebooks.py --check  # exit 1 if any notebook is out of date (the tests do)

Cell 1 is the "Open in Colab" badge, cell 2 the setup cell (install on Colab, report the device).
Both are built from the repository URL in pyproject.toml, so changing that one setting and running
this script updates every notebook. exercises/ is generated from solutions/ and gets them from
there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from sagan_edu.course import colab_url, repository_url

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("notebooks", "solutions")
BADGE_ALT = "Open In Colab"


def badge_source(relative_path: str) -> str:
    return (
        f"[![{BADGE_ALT}](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(relative_path)})"
    )


def setup_source() -> str:
    return f"""# Setup: install sagan_edu on Colab (it has PyTorch already), then pick the device.
import sys

if "google.colab" in sys.modules:
    %pip install --quiet "sagan-edu @ git+{repository_url()}"

from sagan_edu.course import pick, setup

device = setup()"""


def is_badge(cell) -> bool:
    return cell.cell_type == "markdown" and BADGE_ALT in cell.source


def is_setup(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith("# Setup:")


def synced(nb: nbformat.NotebookNode, relative_path: str) -> nbformat.NotebookNode:
    """The notebook with its first two cells replaced (or inserted) from the template."""
    body = [c for i, c in enumerate(nb.cells) if not (i < 2 and (is_badge(c) or is_setup(c)))]
    badge = nbformat.v4.new_markdown_cell(badge_source(relative_path))
    setup = nbformat.v4.new_code_cell(setup_source())
    for new, old in zip((badge, setup), nb.cells[:2], strict=False):
        if (is_badge(old) and new.cell_type == "markdown") or (
            is_setup(old) and new.cell_type == "code"
        ):
            new.id = old.get("id", new.id)  # keep cell ids stable: smaller diffs
            new.metadata = old.metadata  # and nbgrader's metadata (tools/nbgrader_metadata.py)
    nb.cells = [badge, setup, *body]
    return nb


def notebook_paths() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in notebook_paths():
        relative = path.relative_to(ROOT).as_posix()
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        after = nbformat.writes(synced(nb, relative))
        if before != after:
            stale.append(relative)
            if not args.check:
                path.write_text(after, encoding="utf-8")
    if args.check and stale:
        print("out of date (run: python tools/sync_notebooks.py):", *stale, sep="\n  ")
        return 1
    print(f"{'checked' if args.check else 'synced'} {len(notebook_paths())} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
