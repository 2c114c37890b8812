"""What attention costs per training step: none vs 8×8 vs 16×16 vs the residual control.

Notebook 10's cost section. The setting is the ablation's long setting (twin-shapes, 32 px,
base width 32, batch 64); each variant is one `Trainer`, and one training step is what
`Trainer.step()` does (a D step, a G step, the EMA update). The variants are timed in turns
inside one process (round 1: none, 8, 16, residual; round 2: the same ...), so that a machine
getting busier or quieter during the run affects all of them alike; each variant's time is the
median over rounds, and its ratio is divided by the no-attention median of the same run.

    python benchmarks/attention_cost.py                       # CPU, 1 thread, ~2 minutes
    python benchmarks/attention_cost.py --channels 8 --batch 4 --steps 1 --rounds 1 --json /tmp/x

The GPU wall times recorded in ablation.json come from 14 training processes sharing one GPU:
they say nothing clean about cost. This script measures on one device, one process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sagan_edu.training import TrainConfig, Trainer

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> (attention_at, attention_block)
VARIANTS: dict[str, tuple[tuple[int, ...], str]] = {
    "none": ((), "attention"),
    "8x8": ((8,), "attention"),
    "16x16": ((16,), "attention"),
    "16x16 residual": ((16,), "residual"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--channels", type=int, default=32, help="g_channels = d_channels")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5, help="the median round is kept")
    parser.add_argument("--json", type=Path, default=None,
                        help="default: results/attention_cost-<device>.json")  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no GPU here; use --device cpu")
    for name in ("threads", "channels", "batch", "steps", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1, got {getattr(args, name)}")
    args.json = args.json or RESULTS_DIR / f"attention_cost-{args.device}.json"
    return args


def make_trainer(variant: str, args: argparse.Namespace, out_dir: str) -> Trainer:
    attention_at, block = VARIANTS[variant]
    config = TrainConfig(
        dataset="twin-shapes", img_size=32, attention_at=attention_at, attention_block=block,
        g_channels=args.channels, d_channels=args.channels, batch_size=args.batch,
        device=args.device, seed=0, out_dir=out_dir, progress=False,
    )  # fmt: skip
    return Trainer(config)


def time_steps(trainer: Trainer, steps: int) -> float:
    """Milliseconds per step over `steps` consecutive steps (synchronised on a GPU)."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / steps


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # other jobs on the machine slow every variant alike
    with tempfile.TemporaryDirectory(prefix="attention-cost-") as tmp:
        trainers = {name: make_trainer(name, args, tmp) for name in VARIANTS}
        for trainer in trainers.values():
            for _ in range(args.warmup):  # first steps allocate buffers: not timed
                trainer.step()
        per_round: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):  # in turns: drift in machine load hits every variant
            for name, trainer in trainers.items():
                per_round[name].append(round(time_steps(trainer, args.steps), 2))
    baseline = statistics.median(per_round["none"])
    rows = []
    for name, trainer in trainers.items():
        median = statistics.median(per_round[name])
        rows.append({
            "variant": name,
            "params_G": count(trainer.G),
            "params_D": count(trainer.D),
            "ms_per_step_median": round(median, 2),
            "ms_per_step_per_round": per_round[name],
            "ratio_vs_none": round(median / baseline, 3),
        })  # fmt: skip
    results = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python benchmarks/attention_cost.py", *(argv or sys.argv[1:])]),
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "setting": f"twin-shapes, 32 px, base width {args.channels}, batch {args.batch}, "
                       "float32 (no AMP on CPU), eager Trainer.step()",
            "warmup": args.warmup,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
        },
        "rows": rows,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    for r in rows:
        print(f"{r['variant']:15s} G {r['params_G']:>9,} D {r['params_D']:>9,}  "
              f"{r['ms_per_step_median']:8.1f} ms/step  ×{r['ratio_vs_none']:.3f}")  # fmt: skip
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
