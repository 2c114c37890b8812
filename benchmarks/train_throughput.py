"""Training speed of the 32 px and 64 px SAGANs: images per second, FLOPs, fraction of peak.

One training step is what `Trainer.step()` does: one discriminator step (D sees B real and B fake
images) and one generator step (G makes B images, D scores them), then the EMA update. Images per
second = batch size × steps per second.

Variants, each on top of the one before:

    eager-fp32                 plain PyTorch, float32
    amp                        mixed precision (bf16 on sm80+, fp16 + GradScaler before), GPU only
    amp+channels_last          models and batches in the NHWC memory layout, GPU only
    amp+channels_last+compile  G and D wrapped in torch.compile, GPU only
    compile-fp32               float32 + torch.compile (the CPU's compiled variant)
    amp+fast_step              AMP, and the whole iteration replayed as one CUDA graph
                               (TrainConfig.fast_step), GPU only
    amp+channels_last+fast_step  the same in the NHWC layout, GPU only
    fast_step-fp32             float32 + the CUDA graph, GPU only

AMP is off on CPU (the Trainer never enables it there), so on CPU the AMP variants are reported
as "GPU only"; so is the fast step, which needs CUDA. channels_last is TrainConfig's flag of
that name.

    python benchmarks/train_throughput.py                      # GPU if there is one, else CPU
    python benchmarks/train_throughput.py --device cpu --img-sizes 32 --batch 16 --steps 3
    python benchmarks/train_throughput.py --img-sizes 64 --batch 64 256 \
        --variants eager-fp32 amp+fast_step              # the issue-14 table on a GPU

FLOPs per step are counted once, in eager fp32, with torch.utils.flop_counter.FlopCounterMode:
it counts matmul and convolution FLOPs only (not normalisation, activations or the optimizer),
so the fraction of peak below is a slight underestimate of the work done.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sagan_edu.fast_step import WARMUP_STEPS
from sagan_edu.training import TrainConfig, Trainer

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> (amp, channels_last, compile, fast_step)
VARIANTS: dict[str, tuple[bool, bool, bool, bool]] = {
    "eager-fp32": (False, False, False, False),
    "amp": (True, False, False, False),
    "amp+channels_last": (True, True, False, False),
    "amp+channels_last+compile": (True, True, True, False),
    "compile-fp32": (False, False, True, False),
    "amp+fast_step": (True, False, False, True),
    "amp+channels_last+fast_step": (True, True, False, True),
    "fast_step-fp32": (False, False, False, True),
}
GPU_VARIANTS = [
    "eager-fp32", "amp", "amp+channels_last", "amp+channels_last+compile", "amp+fast_step",
    "amp+channels_last+fast_step",
]  # fmt: skip
CPU_VARIANTS = ["eager-fp32", "compile-fp32"]

# Peak dense TFLOP/s by device name (vendor datasheet, dense, i.e. without 2:4 sparsity).
# fp32 is the plain (non-tensor-core) rate. Names are matched as substrings of the CUDA name.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},  # SXM
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "T4": {"fp16": 65.0, "fp32": 8.1},
    "L4": {"bf16": 121.0, "fp16": 121.0},
}
PEAK_SOURCE = "vendor datasheet, dense"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=None,
        help=f"default: {' '.join(GPU_VARIANTS)} on CUDA; {' '.join(CPU_VARIANTS)} on CPU",
    )  # fmt: skip
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--channels", type=int, default=32, help="g_channels = d_channels")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compiling included)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="the median repeat is kept")
    parser.add_argument("--json", type=Path, default=None, help="default: results/…-<device>.json")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no GPU here; use --device cpu")
    on_cuda = args.device == "cuda"
    args.variants = args.variants or (GPU_VARIANTS if on_cuda else CPU_VARIANTS)
    args.json = args.json or RESULTS_DIR / f"train_throughput-{args.device}.json"
    return args


def make_trainer(img_size: int, batch: int, variant: str, args, out_dir: str) -> Trainer:
    amp, channels_last, compile_, fast_step = VARIANTS[variant]
    config = TrainConfig(
        dataset=args.dataset, img_size=img_size, attention_at=(img_size // 2,),
        g_channels=args.channels, d_channels=args.channels, batch_size=batch,
        amp=amp, compile=compile_, channels_last=channels_last, fast_step=fast_step,
        device=args.device, progress=False, out_dir=out_dir,
    )  # fmt: skip
    return Trainer(config)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, n: int) -> float:
    """Seconds for n training steps, waiting for the GPU to finish before and after."""
    synchronize(trainer.device)
    start = time.perf_counter()
    for _ in range(n):
        trainer.step()
    synchronize(trainer.device)
    return time.perf_counter() - start


def flops_per_step(img_size: int, batch: int, args, out_dir: str) -> int:
    """Matmul + conv FLOPs of one eager fp32 training step (forward and backward, G and D)."""
    trainer = make_trainer(img_size, batch, "eager-fp32", args, out_dir)
    trainer.step()  # the first step allocates optimizer state; count a typical one
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    return counter.get_total_flops()


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The datasheet peak for this device and dtype, or None when the table does not know it."""
    for key, peaks in PEAK_TFLOPS.items():
        if re.search(rf"\b{key}\b", device_name):  # "T4" in "Tesla T4", not in "GT40"
            if key in ("H100", "H200") and re.search(r"PCIe|NVL", device_name):
                return None  # slower parts than the SXM ones in the table
            return peaks.get(dtype)
    return None


def compute_dtype(trainer: Trainer) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[trainer.amp_dtype]


def run_one(img_size: int, batch: int, variant: str, flops: int, args) -> dict:
    """Measure one (image size, batch, variant); returns one row of the results."""
    amp, channels_last, _, fast_step = VARIANTS[variant]
    row = {"img_size": img_size, "attention_at": [img_size // 2], "batch": batch,
           "variant": variant, "flops_per_step": flops}  # fmt: skip
    if args.device == "cpu" and (amp or channels_last or fast_step):
        return row | {"status": "GPU only"}

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(img_size, batch, variant, args, out_dir)
        first_step_s = time_steps(trainer, 1)  # includes compilation for compiled variants
        # The fast step replays its graph from step WARMUP_STEPS + 2 on: time only replays.
        warmup = max(args.warmup, WARMUP_STEPS + 1) if fast_step else args.warmup
        time_steps(trainer, max(warmup - 1, 0))
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        seconds = [time_steps(trainer, args.steps) / args.steps for _ in range(args.repeats)]
    step_s = statistics.median(seconds)
    dtype = compute_dtype(trainer)
    achieved = flops / step_s / 1e12
    peak = peak_tflops(device_name(trainer.device), dtype) if args.device == "cuda" else None
    return row | {
        "status": "ok",
        "compute_dtype": dtype,
        "images_per_s": batch / step_s,
        "ms_per_step": step_s * 1e3,
        "ms_per_step_repeats": [s * 1e3 for s in seconds],
        "first_step_s": first_step_s,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "fraction_of_peak": None if peak is None else achieved / peak,
        "peak_memory_mib": (
            torch.cuda.max_memory_allocated(trainer.device) / 2**20
            if trainer.device.type == "cuda"
            else None
        ),
    }


def run_or_report(img_size: int, batch: int, variant: str, flops: int, args) -> dict:
    """run_one, but a variant that fails (torch.compile, say) becomes a row saying why.

    One failing variant then does not lose the other variants' numbers.
    """
    try:
        return run_one(img_size, batch, variant, flops, args)
    except Exception as error:  # any failure is reported in the table, not hidden
        if isinstance(error, torch.OutOfMemoryError):
            torch.cuda.empty_cache()
        lines = str(error).strip().splitlines() or [""]
        return {"img_size": img_size, "attention_at": [img_size // 2], "batch": batch,
                "variant": variant, "flops_per_step": flops,
                "status": f"error: {type(error).__name__}: {lines[0][:200]}"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def metadata(args: argparse.Namespace, argv: list[str] | None) -> dict:
    command = "python benchmarks/train_throughput.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    on_cuda = args.device == "cuda"
    return {
        "benchmark": "train_throughput",
        "date": datetime.date.today().isoformat(),
        "command": command.strip(),
        "device": device_name(args.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if on_cuda else None,
        "dataset": args.dataset,
        "g_channels": args.channels,
        "d_channels": args.channels,
        "attention_at": "img_size/2 in G and D (16 for 32 px, 32 for 64 px)",
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "images_per_s": "batch / median seconds per step (one D step + one G step + EMA)",
        "fast_step": "TrainConfig.fast_step: the first 3 steps run eagerly, the 4th captures "
        "the CUDA graph; the warm-up steps include them",
        "flops": "FlopCounterMode over one eager fp32 step: matmul and conv FLOPs only",
        "peak_source": PEAK_SOURCE,
        # cuDNN convolutions use TF32 tensor cores in "fp32" unless this is False.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


TABLE_HEADER = (
    f"{'px':>3} {'batch':>5} {'variant':<26} {'dtype':<5} {'img/s':>9} {'ms/step':>9} "
    f"{'GFLOP/step':>10} {'TFLOP/s':>8} {'% peak':>7}"
)


def format_row(r: dict) -> str:
    start = f"{r['img_size']:>3} {r['batch']:>5} {r['variant']:<26} "
    if r["status"] != "ok":
        return start + r["status"]
    fraction = "-" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f}"
    return start + (
        f"{r['compute_dtype']:<5} {r['images_per_s']:>9.1f} {r['ms_per_step']:>9.1f} "
        f"{r['flops_per_step'] / 1e9:>10.2f} {r['achieved_tflops']:>8.3f} {fraction:>7}"
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write the JSON; returns what was written."""
    args = parse_args(argv)
    results = {"meta": metadata(args, argv), "rows": []}
    print(f"{results['meta']['device']}, torch {torch.__version__}, dataset {args.dataset}")
    print(TABLE_HEADER)
    with tempfile.TemporaryDirectory() as out_dir:
        for img_size in args.img_sizes:
            for batch in args.batch:
                flops = flops_per_step(img_size, batch, args, out_dir)
                for variant in args.variants:
                    row = run_or_report(img_size, batch, variant, flops, args)
                    results["rows"].append(row)
                    print(format_row(row), flush=True)
    add_speedups(results["rows"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return results


def add_speedups(rows: list[dict]) -> None:
    """speedup = images/s over eager-fp32's at the same image size and batch."""
    baseline = {
        (r["img_size"], r["batch"]): r["images_per_s"]
        for r in rows
        if r["variant"] == "eager-fp32" and r["status"] == "ok"
    }
    for r in rows:
        base = baseline.get((r["img_size"], r["batch"]))
        if r["status"] == "ok" and base:
            r["speedup_vs_eager_fp32"] = r["images_per_s"] / base


if __name__ == "__main__":
    main()
