"""Retrain and re-export shipped weights, then rewrite their checksums.

    python tools/make_pretrained.py twin-shapes-sagan32     # one generator (see RECIPES)
    python tools/make_pretrained.py --all                   # every GAN in RECIPES
    python tools/make_pretrained.py --export-only NAME      # re-export runs/pretrained/NAME

For NAME this runs `sagan-edu train <RECIPES[NAME] args> --out runs/pretrained/NAME` (which
resumes if a checkpoint is already there), exports the EMA generator (and D where the recipe keeps
it) in float16 to sagan_edu/weights/NAME.safetensors, and rewrites weights/SHA256SUMS.
On 2 CPU cores a 1,500-step run takes 10 to 20 minutes; on a GPU, a minute or two.
The metrics' classifier has its own command, which writes into the package only when told to:
`sagan-edu train-classifier --out sagan_edu/weights/mnist5k-classifier.safetensors --overwrite`
(what `make pretrained` runs).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from sagan_edu import cli
from sagan_edu.pretrained import RECIPES, WEIGHTS_DIR, export_pretrained

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "pretrained"


def write_checksums(folder: Path) -> None:
    """SHA256SUMS in `sha256sum` format, so `sha256sum -c SHA256SUMS` checks the files too."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
             for p in sorted(folder.glob("*.safetensors"))]  # fmt: skip
    (folder / "SHA256SUMS").write_text("".join(lines))


def build(name: str, export_only: bool) -> None:
    recipe = RECIPES[name]
    run_dir = RUNS / name
    if not export_only:
        argv = ["train", *recipe["train_args"], "--log-every", "100", "--out", str(run_dir)]
        if (run_dir / "checkpoint.pt").exists():
            argv.append("--resume")
        print("sagan-edu", " ".join(argv), flush=True)
        if cli.main(argv) != 0:
            raise SystemExit(f"training {name} failed")
    out = export_pretrained(
        run_dir / "checkpoint.pt",
        WEIGHTS_DIR / f"{name}.safetensors",
        dtype=torch.float16,
        keep_discriminator=recipe["keep_discriminator"],
        overwrite=True,  # rebuilding the shipped file is the point (SHA256SUMS is rewritten)
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(RECIPES)}")
    parser.add_argument("--all", action="store_true", help="every name in RECIPES")
    parser.add_argument("--export-only", action="store_true", help="export, do not train")
    args = parser.parse_args(argv)
    names = list(RECIPES) if args.all else args.names
    if not names:
        parser.error("name at least one set of weights, or pass --all")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown weights {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    for name in names:
        build(name, args.export_only)
    write_checksums(WEIGHTS_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
