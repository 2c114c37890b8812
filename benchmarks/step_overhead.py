"""The host's share of one training step: aten ops, host time, and on CUDA kernel launches.

A small GAN on a GPU is often bound by the host: Python and PyTorch's dispatcher spend longer
issuing each step's ~1,000 small kernels than the GPU spends running them. This script measures
that overhead per `Trainer.step()` (one D step, one G step, both Adam updates, the EMA), for the
eager step and, on CUDA, the fast step (`TrainConfig.fast_step`: the iteration replayed as one
CUDA graph):

    aten_ops           aten::* events the profiler records in one step, nested calls included
                       (aten::linear counts, and so does the aten::addmm it calls)
    dispatched_ops     ops that reach the dispatcher's Python mode (TorchDispatchMode): the
                       forward and backward kernels' ops, no wrappers, no nesting
    host_ms            wall time of step() on the host; on CUDA without waiting for the GPU,
                       so it is the time to issue the step (median of --steps)
    kernel_launches    CUDA only: cudaLaunchKernel-style calls and graph launches in one step
    gpu_kernels        CUDA only: kernels the GPU ran in one step (a graph runs them all too)
    gpu_busy_ms        CUDA only: the sum of those kernels' (and copies') durations

    python benchmarks/step_overhead.py                       # GPU if there is one, else CPU
    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py --device cpu --batch 1 8

The model is TrainConfig's default (32 px, attention at 16×16, base width 32, AMP where the
device has it). The counts are taken on the step after --warmup steps (the fast step captures
its graph during warm-up).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from sagan_edu.training import TrainConfig, Trainer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = ("eager", "fast_step")
LAUNCH_CALLS = ("LaunchKernel", "GraphLaunch")  # cudaLaunchKernel(ExC), cuLaunchKernel(Ex), …


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32, help="g_channels = d_channels")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help="default: both on CUDA, eager on CPU")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=5, help="steps before measuring")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median kept)")
    parser.add_argument("--json", type=Path, default=None, help="default: results/…-<device>.json")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no GPU here; use --device cpu")
    args.variants = args.variants or (list(VARIANTS) if args.device == "cuda" else ["eager"])
    args.json = args.json or RESULTS_DIR / f"step_overhead-{args.device}.json"
    return args


class CountOps(TorchDispatchMode):
    """Counts every op that reaches the dispatcher while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def make_trainer(batch: int, variant: str, args, out_dir: str) -> Trainer:
    settings = dict(
        img_size=args.img_size, attention_at=(args.img_size // 2,), g_channels=args.channels,
        d_channels=args.channels, batch_size=batch, device=args.device, progress=False,
        out_dir=out_dir,
    )  # fmt: skip
    if variant == "fast_step":
        settings["fast_step"] = True
    return Trainer(TrainConfig(**settings))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(batch: int, variant: str, args) -> dict:
    """One row: the counts of one step and the median host time of --steps steps."""
    row = {"variant": variant, "batch": batch}
    if variant == "fast_step" and "fast_step" not in {f.name for f in fields(TrainConfig)}:
        return row | {"status": "this version of sagan_edu has no fast_step"}
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(batch, variant, args, out_dir)
        if variant == "fast_step" and getattr(trainer, "captured_step", None) is None:
            return row | {"status": "fast_step cannot run here (see the line printed above)"}
        for _ in range(args.warmup):
            trainer.step()
        synchronize(trainer.device)

        if variant == "eager":  # a graph replay dispatches nothing the mode could see
            with CountOps() as counter:
                trainer.step()
            row["dispatched_ops"] = sum(counter.counts.values())
            row["top_dispatched_ops"] = dict(counter.counts.most_common(10))

        activities = [ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            trainer.step()
            synchronize(trainer.device)
        events = prof.events()
        row["aten_ops"] = sum(e.name.startswith("aten::") for e in events)
        if trainer.device.type == "cuda":
            on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            row["kernel_launches"] = sum(any(c in e.name for c in LAUNCH_CALLS) for e in events)
            row["gpu_kernels"] = len(on_gpu)
            row["gpu_busy_ms"] = sum(e.time_range.elapsed_us() for e in on_gpu) / 1e3

        host_s = []
        for _ in range(args.steps):
            start = time.perf_counter()
            trainer.step()  # on CUDA: returns once the work is issued, not done
            host_s.append(time.perf_counter() - start)
        synchronize(trainer.device)
        row["host_ms"] = statistics.median(host_s) * 1e3
        row["host_ms_all"] = [s * 1e3 for s in host_s]
        row["compute_dtype"] = str(trainer.amp_dtype or torch.float32).replace("torch.", "")
    return row | {"status": "ok"}


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_row(r: dict) -> str:
    start = f"{r['variant']:<10} {r['batch']:>5} "
    if r["status"] != "ok":
        return start + r["status"]

    def show(key: str, spec: str) -> str:
        return format(r[key], spec) if key in r else "-"

    counts = f"{show('aten_ops', '>8')} {show('dispatched_ops', '>10')} {r['host_ms']:>8.2f} "
    gpu = f"{show('kernel_launches', '>8')} {show('gpu_kernels', '>11')} "
    gpu += show("gpu_busy_ms", ">8.2f")
    return start + counts + gpu


HEADER = (
    f"{'variant':<10} {'batch':>5} {'aten ops':>8} {'dispatched':>10} {'host ms':>8} "
    f"{'launches':>8} {'gpu kernels':>11} {'gpu ms':>8}"
)


def main(argv: list[str] | None = None) -> dict:
    """Measure, print the table, write the JSON; returns what was written."""
    args = parse_args(argv)
    command = "python benchmarks/step_overhead.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    results = {
        "meta": {
            "benchmark": "step_overhead",
            "date": datetime.date.today().isoformat(),
            "command": command.strip(),
            "device": device_name(args.device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.version.cuda if args.device == "cuda" else None,
            "threads": torch.get_num_threads(),
            "config": f"TrainConfig defaults, img_size {args.img_size}, channels {args.channels}",
            "warmup": args.warmup,
            "steps": args.steps,
        },
        "rows": [],
    }
    print(f"{results['meta']['device']}, torch {torch.__version__}")
    print(HEADER)
    for variant in args.variants:
        for batch in args.batch:
            row = measure(batch, variant, args)
            results["rows"].append(row)
            print(format_row(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
