"""Run the issue-13 ablation sweep as many single-run processes side by side (one GPU or CPU).

Every job is ONE `benchmarks/ablation.py` invocation: one dataset, one placement, one seed, one
variant. Up to --workers jobs run at once, in the priority order of `job_list()`; after
--launch-until-s seconds no new job starts, but running jobs are never killed: the driver waits
for them. All jobs write into the same --out folder (ablation.py locks the folder around each
read-modify-write), so the folder ends up holding only

    ablation.json, ablation.md            the sweep's records and table
    tuning.json, tuning.md                the learning-rate grid
    ablation-samples.npz                  16 uint8 samples per run (and with attention off)
    gpu-sweep.log                         each finished job's summary line and full log

    PYTHONPATH=. python benchmarks/gpu_sweep.py --out $OUT                 # the sweep
    PYTHONPATH=. python benchmarks/gpu_sweep.py --dry-run                  # print the jobs

The jobs, highest priority first, seeds 1, 2, 3 (seed 0 trained the shipped weights):

    a  twin-shapes, long setting (width 32, batch 64, 2,000 steps): none, 16×16
    b  twin-shapes, width 16, batch 32, 2,000 steps: none, 16×16
    c  twin-shapes, long setting: residual control at 16, attention in G only, in D only, 8×8
    d  local-shapes, long setting: none, 16×16
    g  mnist5k, width 16, batch 32, 2,000 steps, 16×16 attention with and without √d scaling
       (notebook 05 reads these)
    e  tuning grid (tuning.json), width 16, batch 32, 1,000 steps, twin-shapes, none and 16×16:
       lr_d 1e-4, 4e-4, 8e-4, 1.6e-3 with lr_g = lr_d / 4, and lr_g = lr_d = 2e-4 (no TTUR)
    f  twin-shapes, width 16, batch 32, 4,000 steps: none, 16×16

Prepared for the next session that has a GPU (run on the CPU so far, or not at all; the default
--cells leaves them out, name them to run them, e.g. --cells hijklm):

    h  twin-shapes, width 16, batch 64, 2,000 steps: none, 16×16 (ran on the CPU, 2026-11-28)
    i  twin-shapes, width 32, batch 32, 2,000 steps: none, 16×16 (ran on the CPU, 2026-11-28)
    j  the long setting, seeds 4 and 5: none, 16×16, 16×16 in D only (ran on the CPU,
       2026-11-28)
    k  twin-shapes, width 64, batch 64, 6,000 steps: none, 16×16 — the attempt to train a
       baseline that draws recognisable shapes (never run; about 5 minutes per job on an H200
       if a step stays near the 40 ms a host-bound eager step took there: an estimate)
    l  twin-shapes, batch 32, 2,000 steps, G and D of different widths: G 16 / D 32 and
       G 32 / D 16, none and 16×16 — which network's width the gain follows (ran on the CPU,
       2026-11-29)
    m  twin-shapes, width 16, batch 32, 10,000 steps: none, 16×16 — trained until the baseline
       draws recognisable rings and bars (ran on the CPU, 2026-11-29)
    n  seeds 4 and 5 for the CPU cells whose three seeds disagree on the sign of attention's
       effect (the issue's rule: 5 seeds where a cell's seeds disagree): cell d on the CPU
       (local-shapes, the long setting; its greyscale Fréchet distance), cell b on the CPU, both
       halves of cell l, and cell h: none, 16×16; and cell c's attention in G only, whose H200
       seeds disagreed, as seeds 4 and 5 of cell j (ran on the CPU, 2026-11-29; cell h's four
       jobs in a later session the same day). The 400- and
       1,000-step sweeps (seeds 0-2) are not extended: they were trained with an older training
       step, so new seeds would not belong to their cells.
    o  seeds 4 and 5 of the whole tuning grid (cell e's ten cells: five rate pairs, none and
       16×16), because most of the CPU grid's cells had three seeds that disagree on the sign of
       attention's effect (ran on the CPU, 2026-11-29).
    p  cell m's setting (twin-shapes, width 16, batch 32, 10,000 steps) with 16×16 attention in D
       only: does D's attention alone give the gain at 10,000 steps too? (ran on the CPU,
       2026-11-29)
    q  the same with 16×16 attention in G only: does G's attention add shape matching? (ran on
       the CPU, 2026-11-29)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "benchmarks" / "ablation.py"
SEEDS = (1, 2, 3)
LONG = ("--channels", "32", "--batch", "64", "--steps", "2000")
SMALL = ("--channels", "16", "--batch", "32", "--steps", "2000")
SMALL_4000 = ("--channels", "16", "--batch", "32", "--steps", "4000")
SMALL_1000 = ("--channels", "16", "--batch", "32", "--steps", "1000")
SMALL_B64 = ("--channels", "16", "--batch", "64", "--steps", "2000")
WIDE_B32 = ("--channels", "32", "--batch", "32", "--steps", "2000")
QUALITY = ("--channels", "64", "--batch", "64", "--steps", "6000")
SMALL_10000 = ("--channels", "16", "--batch", "32", "--steps", "10000")


class Job(NamedTuple):
    cell: str  # the letter of the job list above
    name: str  # unique, also the log's file name
    args: tuple[str, ...]  # ablation.py's arguments, without --out and --eval-samples


def _runs(cell: str, label: str, dataset: str, placements: tuple[str, ...],
          setting: tuple[str, ...], *variant: str,
          seeds: tuple[int, ...] = SEEDS) -> list[Job]:  # fmt: skip
    """One job per placement × seed."""
    return [
        Job(cell, f"{cell}-{label}-{dataset}-att{p}-s{seed}",
            ("--datasets", dataset, "--attention", p, "--seeds", str(seed), *setting, *variant))
        for p in placements
        for seed in seeds
    ]  # fmt: skip


def job_list() -> list[Job]:
    """All jobs, highest priority first."""
    jobs = [
        *_runs("a", "long", "twin-shapes", ("none", "16"), LONG),
        *_runs("b", "w16", "twin-shapes", ("none", "16"), SMALL),
        *_runs("c", "long-residual", "twin-shapes", ("16",), LONG, "--block", "residual"),
        *_runs("c", "long-gonly", "twin-shapes", ("16",), LONG, "--attention-in", "g"),
        *_runs("c", "long-donly", "twin-shapes", ("16",), LONG, "--attention-in", "d"),
        *_runs("c", "long", "twin-shapes", ("8",), LONG),
        *_runs("d", "long", "local-shapes", ("none", "16"), LONG),
    ]
    jobs += _runs("g", "w16-scaled", "mnist5k", ("16",), SMALL, "--scaled")
    jobs += _runs("g", "w16", "mnist5k", ("16",), SMALL)
    # The grid trains 1,000 steps (divergence shows early) and its own default-rate cell.
    rates = (("1e-4", "2.5e-5"), ("4e-4", "1e-4"), ("8e-4", "2e-4"), ("1.6e-3", "4e-4"),
             ("2e-4", "2e-4"))  # fmt: skip
    for lr_d, lr_g in rates:
        jobs += _runs("e", f"tune-lrd{lr_d}-lrg{lr_g}", "twin-shapes", ("none", "16"), SMALL_1000,
                      "--lr-d", lr_d, "--lr-g", lr_g, "--tuning")  # fmt: skip
    jobs += _runs("f", "w16-4000", "twin-shapes", ("none", "16"), SMALL_4000)
    jobs += _runs("h", "w16-b64", "twin-shapes", ("none", "16"), SMALL_B64)
    jobs += _runs("i", "w32-b32", "twin-shapes", ("none", "16"), WIDE_B32)
    jobs += _runs("j", "long", "twin-shapes", ("none", "16"), LONG, seeds=(4, 5))
    jobs += _runs("j", "long-donly", "twin-shapes", ("16",), LONG, "--attention-in", "d",
                  seeds=(4, 5))  # fmt: skip
    jobs += _runs("k", "quality", "twin-shapes", ("none", "16"), QUALITY)
    for g_width, d_width in (("16", "32"), ("32", "16")):
        setting = ("--channels", g_width, "--d-channels", d_width, "--batch", "32",
                   "--steps", "2000")  # fmt: skip
        jobs += _runs("l", f"g{g_width}-d{d_width}", "twin-shapes", ("none", "16"), setting)
    jobs += _runs("m", "w16-10000", "twin-shapes", ("none", "16"), SMALL_10000)
    jobs += _runs("n", "long", "local-shapes", ("none", "16"), LONG, seeds=(4, 5))
    jobs += _runs("n", "w16", "twin-shapes", ("none", "16"), SMALL, seeds=(4, 5))
    for g_width, d_width in (("16", "32"), ("32", "16")):
        setting = ("--channels", g_width, "--d-channels", d_width, "--batch", "32",
                   "--steps", "2000")  # fmt: skip
        jobs += _runs("n", f"g{g_width}-d{d_width}", "twin-shapes", ("none", "16"), setting,
                      seeds=(4, 5))  # fmt: skip
    jobs += _runs("n", "w16-b64", "twin-shapes", ("none", "16"), SMALL_B64, seeds=(4, 5))
    jobs += _runs("n", "long-gonly", "twin-shapes", ("16",), LONG, "--attention-in", "g",
                  seeds=(4, 5))  # fmt: skip
    for lr_d, lr_g in rates:
        jobs += _runs("o", f"tune-lrd{lr_d}-lrg{lr_g}", "twin-shapes", ("none", "16"), SMALL_1000,
                      "--lr-d", lr_d, "--lr-g", lr_g, "--tuning", seeds=(4, 5))  # fmt: skip
    jobs += _runs(
        "p", "w16-10000-donly", "twin-shapes", ("16",), SMALL_10000, "--attention-in", "d"
    )
    jobs += _runs(
        "q", "w16-10000-gonly", "twin-shapes", ("16",), SMALL_10000, "--attention-in", "g"
    )
    return jobs


def command(job: Job, args: argparse.Namespace) -> list[str]:
    """The job's ablation.py command line; --steps overrides every job's steps (smoke tests)."""
    job_args = list(job.args)
    if args.steps is not None:
        job_args[job_args.index("--steps") + 1] = str(args.steps)
    if args.channels is not None:
        job_args[job_args.index("--channels") + 1] = str(args.channels)
    return [sys.executable, str(ABLATION), *job_args, "--out", str(args.out),
            "--eval-samples", str(args.eval_samples), "--device", args.device,
            "--skip-existing"]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--workers", type=int, default=14, help="jobs running at once")
    parser.add_argument(
        "--launch-until-s", type=float, default=330.0,
        help="start no new job after this many seconds (running jobs are left to finish)",
    )  # fmt: skip
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", type=int, default=None, help="the first N jobs only")
    parser.add_argument("--cells", default="abcdefg", help="job-list letters to run, e.g. 'ab'")
    parser.add_argument("--steps", type=int, default=None, help="override steps (smoke tests)")
    parser.add_argument("--channels", type=int, default=None, help="override width (smoke)")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and exit")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = [j for j in job_list() if j.cell in args.cells][: args.only]
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names), "every job must be a distinct cell"
    if args.dry_run:
        for i, job in enumerate(jobs):
            print(f"{i + 1:3d} {job.cell} " + " ".join(command(job, args)[1:]))
        print(f"{len(jobs)} jobs")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="gpu-sweep-logs-"))  # one log per job, outside OUT
    sweep_log = args.out / "gpu-sweep.log"
    # The repository first, then whatever the caller put on the path (say carried wheels).
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = os.environ | {"PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed = 0

    def note(line: str) -> None:
        print(line, flush=True)
        with open(sweep_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    note(f"gpu_sweep: {len(jobs)} jobs, {args.workers} workers, launch until "
         f"{args.launch_until_s:.0f}s, out {args.out}")  # fmt: skip
    note(
        "command: python benchmarks/gpu_sweep.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    while pending or running:
        elapsed = time.monotonic() - start
        while pending and len(running) < args.workers and elapsed < args.launch_until_s:
            job = pending.pop(0)
            log = open(log_dir / f"{job.name}.log", "w", encoding="utf-8")  # noqa: SIM115
            process = subprocess.Popen(command(job, args), stdout=log, stderr=subprocess.STDOUT,
                                       env=env, cwd=ROOT)  # fmt: skip
            log.close()  # the child holds its own copy of the descriptor
            running[job.name] = (process, time.monotonic())
        for name, (process, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            failed += process.returncode != 0
            text = (log_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")
            done = [line for line in text.splitlines() if line.startswith(("done:", "exists:"))]
            took = time.monotonic() - started
            status = "ok" if process.returncode == 0 else f"FAILED rc={process.returncode}"
            note(f"[{time.monotonic() - start:6.0f}s] {name}: {status} in {took:.0f}s "
                 f"{done[-1] if done else text.strip().splitlines()[-1:]}")  # fmt: skip
            with open(sweep_log, "a", encoding="utf-8") as f:
                f.write(f"---- log of {name} ----\n{text}\n")
        if not pending and not running:
            break
        if pending and time.monotonic() - start >= args.launch_until_s and not running:
            break
        time.sleep(0.5)
    not_started = [j.name for j in pending]
    # The tables from everything recorded (each job rewrote them; this is the final word).
    for extra in ([], ["--tuning"]):
        table = [sys.executable, str(ABLATION), "--table-only", "--out", str(args.out), *extra]
        subprocess.run(table, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    total = time.monotonic() - start
    note(f"gpu_sweep: finished {len(jobs) - len(not_started)} jobs ({failed} failed), "
         f"not started {len(not_started)}: {', '.join(not_started) or 'none'}; "
         f"total {total:.0f}s")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
