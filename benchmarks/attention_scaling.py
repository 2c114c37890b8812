"""How the SAGAN self-attention block's cost grows with the feature map: time and memory.

For each feature-map size S (S×S, N = S² positions) this times one forward + backward pass of
`SelfAttention2d` and measures its peak memory, on four paths:

    explicit        pool=2 (SAGAN), return_attention=True: builds the (N, M=N/4) weight matrix
    fused           pool=2, default forward: F.scaled_dot_product_attention, with q and k
                    zero-padded to v's width so that the flash kernels accept the call
    explicit-full   pool=1, full N×N attention, explicit
    fused-full      pool=1, full N×N attention, fused

It also reports which SDPA backend ran for the fused paths (flash, efficient, cuDNN or math),
read from the profiler: the dispatcher records which SDPA implementation op was called.

    python benchmarks/attention_scaling.py                       # GPU if there is one, else CPU
    python benchmarks/attention_scaling.py --device cpu --sizes 8 16 32 --repeats 3

bf16 means torch.autocast(dtype=torch.bfloat16) around an fp32 module and input, as the Trainer
does: the 1×1 convs and matmuls run in bf16, the softmax of the explicit path in fp32.

Memory is the peak *extra* memory of one forward + backward: what was allocated on top of the
block's weights and input before the pass. On CUDA it comes from torch.cuda.max_memory_allocated;
on CPU from the profiler's record of every allocation and free (profile_memory=True).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from sagan_edu.attention import SelfAttention2d

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GIB = 2**30
MIB = 2**20

# name -> (pool, how attention is computed: "explicit" or "fused")
PATHS: dict[str, tuple[int, str]] = {
    "explicit": (2, "explicit"),
    "fused": (2, "fused"),
    "explicit-full": (1, "explicit"),
    "fused-full": (1, "fused"),
}

# The op the dispatcher calls for each SDPA implementation (seen in the profiler's op names).
BACKEND_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}

# Fused backends in PyTorch's default preference order; math is the fallback after them.
FUSED_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# The explicit (and math) path keeps about this many B·N·M-sized tensors alive at the peak of
# forward + backward: the scores, the softmax weights (saved for backward), and their gradients.
MATRICES_AT_PEAK = 4


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--dtypes", nargs="+", choices=list(DTYPES), default=None,
        help="default: fp32 bf16 on CUDA, fp32 on CPU",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the median is kept")
    parser.add_argument(
        "--max-gib", type=float, default=None,
        help="skip explicit/math runs estimated to need more (default 4 on CPU, 60 on CUDA)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="default: results/…-<device>.json")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    on_cuda = args.device.type == "cuda"
    args.dtypes = args.dtypes or (["fp32", "bf16"] if on_cuda else ["fp32"])
    args.max_gib = args.max_gib if args.max_gib is not None else (60.0 if on_cuda else 4.0)
    args.json = args.json or RESULTS_DIR / f"attention_scaling-{args.device.type}.json"
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no GPU here; use --device cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# One configuration: a block, an input, and a function doing forward + backward
# ---------------------------------------------------------------------------------------------


def make_pass(
    size: int, pool: int, mode: str, dtype: torch.dtype, args: argparse.Namespace
) -> Callable[[], None]:
    """A function that runs one forward + backward of a fresh SelfAttention2d on (B, C, S, S)."""
    block = SelfAttention2d(args.channels, pool=pool).to(args.device)
    with torch.no_grad():
        block.gamma.fill_(1.0)  # γ = 0 at init would make the attention's gradients all zero
    x = torch.randn(args.batch, args.channels, size, size, device=args.device, requires_grad=True)
    autocast = torch.autocast(args.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def one_pass() -> None:
        # Drop last pass's gradients first, so every pass allocates the same tensors.
        x.grad = None
        block.zero_grad(set_to_none=True)
        with autocast:
            y = block(x, return_attention=True)[0] if mode == "explicit" else block(x)
        y.float().sum().backward()

    return one_pass


def matrix_bytes(size: int, pool: int, batch: int) -> int:
    """Bytes of one fp32 (B, N, M) attention matrix: what the explicit path materialises."""
    n = size * size
    return batch * n * (n // pool**2) * 4


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(one_pass: Callable[[], None], device: torch.device, warmup: int, repeats: int):
    """Milliseconds per pass, one per repeat, after `warmup` untimed passes."""
    for _ in range(warmup):
        one_pass()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            # CUDA events time the GPU work itself, not how long Python took to queue it.
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            one_pass()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            one_pass()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def cuda_peak_bytes(one_pass: Callable[[], None], device: torch.device) -> int:
    """Peak memory allocated by one pass, on top of what was allocated before it."""
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    one_pass()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def profile_pass(one_pass: Callable[[], None], memory: bool):
    """Run one pass under the profiler; returns (SDPA backend seen, peak extra CPU bytes)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=memory) as prof:
        one_pass()
    events = prof.profiler.kineto_results.events()
    backends = {BACKEND_OPS[e.name()] for e in events if e.name() in BACKEND_OPS}
    backend = ", ".join(sorted(backends)) if backends else "none (explicit matmul + softmax)"
    return backend, (cpu_peak_bytes(events) if memory else None)


def cpu_peak_bytes(events) -> int:
    """The highest net bytes allocated at any moment, from the profiler's allocation records.

    Each "[memory]" record is one allocation (+bytes) or free (-bytes) by PyTorch's CPU
    allocator; their running sum in time order is what the pass has allocated so far.
    (Python's tracemalloc cannot do this: it does not see PyTorch's allocations.)
    """
    records = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak


def eligible_backends(size: int, pool: int, mode: str, dtype: torch.dtype, args) -> list[str]:
    """The fused backends that accept these shapes and dtype (tried on a batch of 1).

    Inside sdpa_kernel([X]) PyTorch may use only X, and raises instead of falling back to math,
    so a pass that succeeds proves X can run these shapes.
    """
    small = argparse.Namespace(**{**vars(args), "batch": 1})
    one_pass = make_pass(size, pool, mode, dtype, small)
    eligible = []
    for name, backend in FUSED_BACKENDS.items():
        try:
            with sdpa_kernel([backend]), _quiet():
                one_pass()
            eligible.append(name)
        except RuntimeError:
            pass
    if args.device.type == "cpu":  # only flash has a CPU kernel
        eligible = ["flash (CPU)" for name in eligible if name == "flash"]
    return eligible


@contextlib.contextmanager
def _quiet():
    """Silence PyTorch's "kernel not used because…" warnings while probing backends."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def run_one(size: int, path: str, dtype_name: str, args: argparse.Namespace) -> dict:
    """Measure one (size, path, dtype) configuration; returns one row of the results."""
    pool, mode = PATHS[path]
    dtype = DTYPES[dtype_name]
    n = size * size
    row = {
        "size": size, "N": n, "M": n // pool**2, "path": path, "pool": pool,
        "dtype": dtype_name, "batch": args.batch, "channels": args.channels,
        "matrix_mib": matrix_bytes(size, pool, args.batch) / MIB,
    }  # fmt: skip
    if size % pool:
        return row | {"status": f"skipped: size {size} not divisible by pool {pool}"}

    explicit = mode == "explicit"
    row["eligible_backends"] = [] if explicit else eligible_backends(size, pool, mode, dtype, args)
    # The math fallback materialises the matrix just like the explicit path. PyTorch prefers
    # flash, then efficient, then math, and tries cuDNN only after math.
    falls_back = not set(row["eligible_backends"]) & {"flash", "efficient", "flash (CPU)"}
    need_gib = MATRICES_AT_PEAK * matrix_bytes(size, pool, args.batch) / GIB
    if (explicit or falls_back) and need_gib > args.max_gib:
        why = "" if explicit else ", math fallback"
        return row | {"status": f"skipped: would need ~{need_gib:.1f} GiB (> --max-gib{why})"}

    one_pass = make_pass(size, pool, mode, dtype, args)
    try:
        times = time_pass(one_pass, args.device, args.warmup, args.repeats)
        on_cpu = args.device.type == "cpu"
        backend, peak = profile_pass(one_pass, memory=on_cpu)
        if not on_cpu:
            peak = cuda_peak_bytes(one_pass, args.device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return row | {"status": "OOM"}
    except RuntimeError as error:
        if "allocate" not in str(error):  # the CPU allocator's out-of-memory message
            raise
        return row | {"status": "OOM"}
    return row | {
        "status": "ok",
        "backend": backend,
        "time_ms": statistics.median(times),
        "times_ms": times,
        "peak_mib": peak / MIB,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def metadata(args: argparse.Namespace, argv: list[str] | None) -> dict:
    command = "python benchmarks/attention_scaling.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    return {
        "benchmark": "attention_scaling",
        "date": datetime.date.today().isoformat(),
        "command": command.strip(),
        "device": device_name(args.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if args.device.type == "cuda" else None,
        "batch": args.batch,
        "channels": args.channels,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "max_gib": args.max_gib,
        "bf16": "torch.autocast(dtype=torch.bfloat16) around an fp32 module and input",
        "time": "median ms of forward + backward"
        + (" (CUDA events)" if args.device.type == "cuda" else " (perf_counter)"),
        "memory": "peak extra bytes during forward + backward, "
        + (
            "torch.cuda.max_memory_allocated after reset_peak_memory_stats"
            if args.device.type == "cuda"
            else "from torch.profiler allocation records (profile_memory=True)"
        ),
        "load_average": _load_average(),
    }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


TABLE_HEADER = (
    f"{'size':>5} {'N':>6} {'M':>6} {'path':<14} {'dtype':<5} {'backend':<32} "
    f"{'ms':>9} {'peak MiB':>9} {'matrix MiB':>10}"
)


def format_row(r: dict) -> str:
    start = f"{r['size']:>5} {r['N']:>6} {r['M']:>6} {r['path']:<14} {r['dtype']:<5} "
    if r["status"] != "ok":
        return start + r["status"]
    return start + (
        f"{r['backend'][:32]:<32} {r['time_ms']:>9.2f} {r['peak_mib']:>9.1f} "
        f"{r['matrix_mib']:>10.1f}"
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write the JSON; returns what was written."""
    args = parse_args(argv)
    results = {"meta": metadata(args, argv), "rows": []}
    print(f"{results['meta']['device']}, torch {torch.__version__}, batch {args.batch}, "
          f"channels {args.channels}")  # fmt: skip
    print(TABLE_HEADER)
    for dtype_name in args.dtypes:
        for size in args.sizes:
            for path in args.paths:
                row = run_one(size, path, dtype_name, args)
                results["rows"].append(row)
                print(format_row(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
