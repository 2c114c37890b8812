"""Does self-attention help? The SAGAN placement ablation, and D's overfitting on small data.

The SAGAN paper's central ablation (Zhang et al., 2019, Table 1): on ImageNet 128×128, attention
on the 32×32 and 64×64 feature maps improved FID from 22.96 (no attention) to about 18.3, while
attention on 8×8 barely mattered. This script repeats the *direction* of that experiment at
course scale: the same GAN with attention at no map, at 8×8, at 16×16 or at 32×32 (where the
image size has such a map in both G and D), several seeds, the same number of steps, on

    twin-shapes    the two halves must hold the same shape and colour (long-range structure)
                   metric: long-range consistency of generated samples (1 = halves agree),
                   next to the real-data references (real images; halves drawn independently)
    mnist5k        real digits
                   metrics: Fréchet distance and KID in MNIST-classifier features, against the
                   1,000 held-out digits; class coverage and entropy of the predicted classes
    local-shapes   the same drawing with independent halves: only local features matter
                   metrics: consistency (should match real data, ~0.38, with or without
                   attention) and the Fréchet distance in MNIST-classifier features of the
                   images turned grey (a rough, clearly labelled quality measure, see below)

Every run is one JSON record (config, seed, steps, parameter counts, metrics, wall time, device,
versions, date) in OUT/ablation.json; OUT/ablation.md is the mean ± std table generated from it.

    python benchmarks/ablation.py                                   # the default sweep
    python benchmarks/ablation.py --datasets twin-shapes --attention none 16 --seeds 0 1 --steps 50
    python benchmarks/ablation.py --skip-existing                   # resume an interrupted sweep
    python benchmarks/ablation.py --table-only                      # rewrite ablation.md only
    python benchmarks/ablation.py --overfitting                     # D(train) − D(held-out)

Variants (each is part of a run's identity, so records of different variants never replace
each other): `--attention-in g|d` puts the block in one network only; `--block residual` puts the
same-size local residual block there instead (the SAGAN paper's control); `--scaled` divides the
attention scores by √d; `--lr-d/--lr-g` set the learning rates (default: TTUR 4e-4 / 1e-4).

Besides the mean scores, every record of a shape dataset holds the per-sample consistency,
shape agreement and colour agreement (sagan_edu.halves) of its samples, rounded to 3 decimals
(and, since 2026-11-29, its metrics hold each agreement's own chance level and Cohen's kappa
against it: see OWN_CHANCE_NAME);
for runs with attention in G, the same scores with G's attention switched off at inference
(`scaled_attention(G_ema, 0)`) and made uniform (`uniform_attention(G_ema)`): the causal test;
the final γ of every block; and a `status`: "diverged" (a loss became NaN/inf: TrainingDiverged),
"collapsed" (COLLAPSE_RULE) or "trained". 16 samples per run (and 16 with attention off, from
the same noise) go to OUT/ablation-samples.npz as uint8, keyed by the record's `run_id`.

    python benchmarks/ablation.py --tuning --lr-d 1e-4 --lr-g 2.5e-5 ...   # -> tuning.json/.md

`--tuning` writes the records to OUT/tuning.json and a table of statuses and scores per learning
rate to OUT/tuning.md instead of ablation.json/.md; everything else is the same.

Seeds default to 1, 2, 3: the shipped weights were trained with seed 0, so the sweep's seeds are
other draws (pass --seeds 0 to include it deliberately).

The overfitting experiment trains on a random 500-image subset of mnist5k's training digits and
records, every --every steps, the mean D output on those 500 training images and on 500 held-out
digits. A growing gap D(train) − D(held-out) means D is memorising its training images.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sagan_edu.attention_ablation import attention_blocks, scaled_attention, uniform_attention
from sagan_edu.data import ImageDataset, consistency_score, load_dataset
from sagan_edu.halves import chance_agreement, cohens_kappa, half_agreement
from sagan_edu.metrics import (
    FD_NAME,
    KID_NAME,
    class_coverage,
    class_histogram,
    consistency,
    consistency_reference,
    fd_and_kid,
    load_classifier,
)
from sagan_edu.models import discriminator_sizes, generator_sizes
from sagan_edu.training import TrainConfig, Trainer, TrainingDiverged, pick_device

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DATASETS = ("twin-shapes", "mnist5k", "local-shapes")
PLACEMENTS = ("none", "8", "16", "32")
EVAL_SEED = 1234  # the noise the evaluation samples are drawn from: the same for every run
EMPTY_ABLATION = {"runs": [], "references": {}, "skipped": []}
GREY_FD_NAME = "Fréchet distance (MNIST classifier features, greyscale images)"
CONSISTENCY_NAME = "consistency (mean over samples)"
SHAPE_NAME = "shape agreement (halves' shape classes match)"
COLOUR_NAME = "colour agreement (halves' colour classes match)"
SAMPLES_SAVED = 16  # uint8 samples per run in ablation-samples.npz
DIVERSITY_SAMPLES = 200
COLLAPSE_FRACTION = 0.5
COLLAPSE_RULE = (
    f"collapsed: the mean pairwise L2 distance between {DIVERSITY_SAMPLES} generated images is "
    f"below {COLLAPSE_FRACTION} x the same distance between {DIVERSITY_SAMPLES} real held-out "
    "images; diverged: a loss became NaN or infinite (TrainingDiverged); trained: neither"
)

# A generator's halves agree by chance more often than real images' when it draws a few classes
# much more often than others. Records since 2026-11-29 hold, for shape and colour, this model's
# own chance level and its agreement above it (sagan_edu.halves); kappa is left out when it is
# undefined (both halves always one and the same class).
OWN_CHANCE_NAME = "{}: this model's own chance level"
KAPPA_NAME = "{}: Cohen's kappa against its own chance level"

# Which metric the table shows per dataset, and whether lower is better.
HEADLINE: dict[str, list[tuple[str, bool]]] = {
    "twin-shapes": [
        (CONSISTENCY_NAME, False),
        (SHAPE_NAME, False),
        (COLOUR_NAME, False),
        (GREY_FD_NAME, True),
    ],
    "mnist5k": [(FD_NAME, True), (KID_NAME, True), ("classes covered", False)],
    "local-shapes": [
        (CONSISTENCY_NAME, False),
        (SHAPE_NAME, False),
        (COLOUR_NAME, False),
        (GREY_FD_NAME, True),
    ],
}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument(
        "--attention", nargs="+", choices=PLACEMENTS, default=list(PLACEMENTS),
        help="feature-map sizes that get attention in G and D; 'none' is the baseline. "
        "Sizes the image size does not have in both G and D are skipped with a note.",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3],
        help="training seeds; 0 is the shipped weights' seed, so it is left out by default",
    )  # fmt: skip
    parser.add_argument(
        "--attention-in", choices=("both", "g", "d"), default="both",
        help="the network(s) that get the block: both, G only or D only",
    )  # fmt: skip
    parser.add_argument(
        "--block", choices=("attention", "residual"), default="attention",
        help="what sits at the --attention sizes: self-attention or the same-size residual block",
    )  # fmt: skip
    parser.add_argument("--scaled", action="store_true", help="divide attention scores by √d")
    parser.add_argument("--lr-d", type=float, default=4e-4, help="discriminator learning rate")
    parser.add_argument("--lr-g", type=float, default=1e-4, help="generator learning rate")
    parser.add_argument(
        "--tuning", action="store_true",
        help="write to tuning.json / tuning.md (the learning-rate grid) instead of ablation.*",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=400, help="generator steps per run")
    parser.add_argument("--channels", type=int, default=16, help="base width of G and D")
    parser.add_argument("--d-channels", type=int, default=None,
                        help="base width of D alone (default: --channels); with it, --channels "
                        "is G's width")  # fmt: skip
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=500, help="generated images scored")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for JSON and .md")
    parser.add_argument(
        "--runs-dir", type=Path, default=None,
        help="training outputs (checkpoints); default: a temporary folder, deleted afterwards",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--skip-existing", action="store_true",
        help="skip runs whose record (same dataset, placement, seed and settings) is already saved",
    )  # fmt: skip
    parser.add_argument(
        "--table-only", action="store_true",
        help="train nothing: rewrite ablation.md (with --overfitting: print its table)",
    )  # fmt: skip
    parser.add_argument(
        "--overfitting", action="store_true",
        help="run the discriminator-overfitting experiment instead of the sweep",
    )  # fmt: skip
    parser.add_argument("--subset", type=int, default=500, help="training images (--overfitting)")
    parser.add_argument("--every", type=int, default=50, help="measure every k steps")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def attention_sizes(placement: str) -> tuple[int, ...]:
    return () if placement == "none" else (int(placement),)


def placement_fits(placement: str, img_size: int) -> bool:
    """Attention goes in both G and D, so the map must exist in both (D has no full-size map)."""
    sizes = attention_sizes(placement)
    both = set(generator_sizes(img_size)) & set(discriminator_sizes(img_size))
    return all(s in both for s in sizes)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def environment(device: torch.device) -> dict:
    """Where a run happened: enough to tell whether two timings are comparable."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": f"{device.type}: {name or platform.machine()}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def save_json(obj: object, path: Path) -> None:
    """Write to a temporary file, then rename: an interrupted sweep never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def load_json(path: Path, empty: dict) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else empty


@contextlib.contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` itself (no lock file left behind) for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_json(path: Path, empty: dict) -> Iterator[dict]:
    """The file's contents, to change in a `with` block; written back when the block ends.

    An exclusive lock on the file's folder is held throughout, so sweeps running side by side
    never overwrite each other's records.
    """
    with locked_folder(path.parent):
        results = load_json(path, empty)
        yield results
        save_json(results, path)


def save_text(text: str, path: Path) -> None:
    """Write through a temporary file and a rename, like save_json: never half a table."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) colour -> (B, 1, H, W): the mean of the channels, still in [-1, 1]."""
    return images.mean(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Evaluation: what each dataset is scored on
# ---------------------------------------------------------------------------------------------


def held_out_images(dataset: str, n: int, img_size: int, seed: int = 0) -> torch.Tensor:
    """Real images no run trained on (mnist5k has 1,000 of them; synthetic data has any n)."""
    if dataset == "mnist5k":
        n = min(n, 1000)  # a random subset: the split is sorted by digit, so never the first n
    return load_dataset(dataset, train=False, img_size=img_size, length=n, seed=seed).images


@torch.no_grad()
def evaluate(samples: torch.Tensor, dataset: str, real: torch.Tensor) -> dict[str, float]:
    """The metrics of one run's samples (B, C, H, W), against held-out real images `real`.

    For the shape datasets the quality measure is the Fréchet distance between greyscale images
    in the MNIST classifier's feature space. That network never saw a shape, so the number is
    only a rough "do these look like the real images" score; the real-vs-real value in the
    references says how low it can go with this many samples.
    """
    samples, real = samples.cpu(), real.cpu()
    classifier = load_classifier()
    if dataset == "mnist5k":
        metrics = fd_and_kid(real, samples, classifier)
        coverage = class_coverage(class_histogram(samples, classifier))
        metrics["classes covered"] = coverage["covered"]
        metrics["class entropy"] = coverage["entropy"]
        return metrics
    scores = consistency(samples, dataset)
    fd = fd_and_kid(grey(real), grey(samples), classifier)[FD_NAME]
    halves = half_agreement(samples)
    metrics = {CONSISTENCY_NAME: scores["mean"], "consistency std over samples": scores["std"],
               GREY_FD_NAME: fd, SHAPE_NAME: halves["shape"].mean().item(),
               COLOUR_NAME: halves["colour"].mean().item(),
               "shape confidence": halves["shape_confidence"].mean().item()}  # fmt: skip
    for kind, name in (("shape", SHAPE_NAME), ("colour", COLOUR_NAME)):
        left, right = halves[f"{kind}_left"], halves[f"{kind}_right"]  # (N,) class indices
        metrics[OWN_CHANCE_NAME.format(name)] = chance_agreement(left, right)
        kappa = cohens_kappa(left, right)
        if not math.isnan(kappa):
            metrics[KAPPA_NAME.format(name)] = kappa
    return metrics


def per_sample(samples: torch.Tensor, dataset: str) -> dict[str, list[float]]:
    """Per-sample scores and half classes of a shape dataset's samples (for histograms)."""
    if dataset == "mnist5k":
        return {}
    halves = half_agreement(samples.cpu())
    values = {"consistency": consistency_score(samples.cpu(), dataset), **halves}
    # Class indices and 0/1 agreements as ints, scores to 3 decimals: a small JSON.
    return {name: [round(v, 3) if name in ("consistency", "shape_confidence") else int(v)
                   for v in t.tolist()] for name, t in values.items()}  # fmt: skip


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean L2 distance between all pairs of (B, C, H, W) images: how varied they are."""
    flat = images.float().cpu().flatten(1)
    distances = torch.cdist(flat, flat)  # (B, B), zeros on the diagonal
    n = len(flat)
    return (distances.sum() / (n * (n - 1))).item()


def references(dataset: str, n: int, img_size: int) -> dict[str, float]:
    """What real data scores: the numbers a perfect generator would reach."""
    if dataset == "mnist5k":
        # Two random halves of the 1,000 held-out digits against each other: about the floor.
        digits = load_dataset("mnist5k", train=False, img_size=img_size).images
        shuffled = digits[torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))]
        half = len(digits) // 2
        fd = fd_and_kid(shuffled[:half], shuffled[half:])
        return {f"real vs real ({half} vs {half}): {FD_NAME}": fd[FD_NAME],
                f"real vs real ({half} vs {half}): {KID_NAME}": fd[KID_NAME]}  # fmt: skip
    ref = consistency_reference(dataset, n=n, img_size=img_size)
    real_a = held_out_images(dataset, n, img_size, seed=0)
    real_b = held_out_images(dataset, n, img_size, seed=1)
    independent = load_dataset("local-shapes", train=False, img_size=img_size, length=n).images
    real_halves, independent_halves = half_agreement(real_a), half_agreement(independent)
    return {
        "consistency, real images": ref["real"],
        "consistency, halves drawn independently (ignores long range)": ref["ignores_long_range"],
        f"real vs real: {GREY_FD_NAME}": fd_and_kid(grey(real_a), grey(real_b))[FD_NAME],
        f"{SHAPE_NAME}, real images": real_halves["shape"].mean().item(),
        f"{SHAPE_NAME}, halves drawn independently": independent_halves["shape"].mean().item(),
        f"{COLOUR_NAME}, real images": real_halves["colour"].mean().item(),
        f"{COLOUR_NAME}, halves drawn independently": independent_halves["colour"].mean().item(),
        "mean pairwise distance, real images": mean_pairwise_distance(real_a[:DIVERSITY_SAMPLES]),
    }


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


def run_key(record: dict) -> tuple:
    """Two records describe the same run when all of these agree.

    Records written before the variants existed lack their fields: they get the defaults, which
    is what they ran with.
    """
    c = record["config"]
    return (record["dataset"], record["placement"], record["seed"], record["steps"],
            width(c), c["batch_size"], c["img_size"], record["eval_samples"],
            *variant(c), device_kind(record))  # fmt: skip


def width(config: dict) -> int | str:
    """The base width: one number when G and D share it, else 'G/D' (say '16/32').

    One number keeps the ids of every run made before D's width could differ.
    """
    g, d = config["g_channels"], config.get("d_channels", config["g_channels"])
    return g if g == d else f"{g}/{d}"


def device_kind(record: dict) -> str:
    """'cpu' or 'cuda': where a run trained, from its 'device' field ('cuda: NVIDIA H200').

    Part of a run's identity because the two are different experiments: on CUDA the sweep
    trains in bf16 mixed precision, on the CPU in float32, so the same seed gives other numbers.
    """
    return record["device"].split(":")[0]


def variant(config: dict) -> tuple:
    """(attention_in, attention_block, attention_scaled, lr_d, lr_g) of a record's config."""
    return (config.get("attention_in", "both"), config.get("attention_block", "attention"),
            config.get("attention_scaled", False), config.get("lr_d", 4e-4),
            config.get("lr_g", 1e-4))  # fmt: skip


def run_id(record: dict) -> str:
    """run_key as one string, e.g. 'twin-shapes|16|1|2000|32|64|32|500|both|attention|…|cuda'."""
    return "|".join(str(part) for part in run_key(record))


def d_channels(args: argparse.Namespace) -> int:
    return args.channels if args.d_channels is None else args.d_channels


def make_config(args: argparse.Namespace, dataset: str, placement: str, seed: int,
                out_dir: Path) -> TrainConfig:  # fmt: skip
    return TrainConfig(
        dataset=dataset, img_size=args.img_size, attention_at=attention_sizes(placement),
        attention_in=args.attention_in, attention_block=args.block,
        attention_scaled=args.scaled, lr_d=args.lr_d, lr_g=args.lr_g,
        g_channels=args.channels, d_channels=d_channels(args), batch_size=args.batch,
        steps=args.steps, seed=seed, device=args.device, out_dir=str(out_dir),
        log_every=max(1, min(50, args.steps)), checkpoint_every=args.steps, progress=False,
        overwrite=True,  # a run without a record (say, an interrupted one) is trained afresh
    )  # fmt: skip


def run_one(args: argparse.Namespace, dataset: str, placement: str, seed: int,
            real: torch.Tensor, runs_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:  # fmt: skip
    """Train one GAN, score its EMA generator's samples; return the record and samples to keep.

    A run that diverges is recorded too (status "diverged", no scores): the tuning grid counts it.
    """
    variant_name = f"{args.attention_in}-{args.block}{'-scaled' if args.scaled else ''}"
    out_dir = runs_dir / f"{dataset}-att{placement}-{variant_name}-lr{args.lr_d:g}-s{seed}"
    config = make_config(args, dataset, placement, seed, out_dir)
    start = time.perf_counter()
    trainer = Trainer(config)
    record = {
        "dataset": dataset,
        "placement": placement,
        "attention_at": list(config.attention_at),
        "seed": seed,
        "steps": config.steps,
        "eval_samples": args.eval_samples,
        "params": {"G": count_parameters(trainer.G), "D": count_parameters(trainer.D)},
        "amp_dtype": str(trainer.amp_dtype),  # None on CPU
    }
    kept: dict[str, np.ndarray] = {}
    fit_start = time.perf_counter()
    try:
        trainer.fit()
        diverged = None
    except TrainingDiverged as error:
        diverged = error
    train_time = time.perf_counter() - start
    fit_time = time.perf_counter() - fit_start  # the steps only: no data loading, no model setup
    if diverged is None:
        record |= score(trainer, dataset, real, args.eval_samples, kept)
    else:
        record |= {"status": "diverged", "diverged_at_step": trainer.step_count,
                   "error": str(diverged).splitlines()[0], "metrics": {}}  # fmt: skip
    losses = {k: trainer.history[k][-1] for k in ("loss_d", "loss_g") if trainer.history.get(k)}
    record |= {
        "final_losses": losses,
        "train_time_s": round(train_time, 1),
        "time_per_step_ms": round(1000 * fit_time / max(1, trainer.step_count), 2),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "config": asdict(config),
        "command": args.command,
        **environment(trainer.device),
    }
    record["run_id"] = run_id(record)
    return record, {f"{record['run_id']}|{name}": images for name, images in kept.items()}


@torch.no_grad()
def score(trainer: Trainer, dataset: str, real: torch.Tensor, n: int,
          kept: dict[str, np.ndarray]) -> dict:  # fmt: skip
    """Metrics, per-sample scores, γs, status and the causal test of a trained run.

    Fills `kept` with SAMPLES_SAVED uint8 samples (and, with attention in G, the same noise's
    samples with attention switched off).
    """
    G = trainer.G_ema
    samples = trainer.sample(n, seed=EVAL_SEED).cpu()
    diversity = mean_pairwise_distance(samples[:DIVERSITY_SAMPLES])
    real_diversity = mean_pairwise_distance(real[:DIVERSITY_SAMPLES])
    collapsed = diversity < COLLAPSE_FRACTION * real_diversity
    kept["samples"] = to_uint8(samples[:SAMPLES_SAVED])
    result = {
        "status": "collapsed" if collapsed else "trained",
        "collapse_rule": COLLAPSE_RULE,
        "diversity": {"samples": round(diversity, 4), "real": round(real_diversity, 4)},
        "metrics": evaluate(samples, dataset, real),
        "per_sample": per_sample(samples, dataset),
        "gamma": gammas(trainer.G_ema, "G") | gammas(trainer.D, "D"),
    }
    if attention_blocks(G):  # the causal test: the same noise with G's attention off or blurred
        result["attention_off"] = {}
        for name, ablation in (("scale 0", lambda: scaled_attention(G, 0.0)),
                               ("uniform", lambda: uniform_attention(G))):  # fmt: skip
            with ablation():
                ablated = trainer.sample(n, seed=EVAL_SEED).cpu()
            result["attention_off"][name] = evaluate(ablated, dataset, real)
            if name == "scale 0":
                kept["samples_attention_off"] = to_uint8(ablated[:SAMPLES_SAVED])
    return result


def gammas(model: torch.nn.Module, tag: str) -> dict[str, float]:
    """The final γ of each attention (or residual control) block, keyed like 'G/16x16'."""
    layers = model.attention_layers().items()
    return {f"{tag}/{key}": round(float(block.gamma), 5) for key, block in layers}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, C, H, W) in [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def save_samples(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Add `arrays` to the npz at `path` (read, add, write to a temp file, rename), under a lock."""
    if not arrays:
        return
    with locked_folder(path.parent):
        saved = {}
        if path.exists():
            with np.load(path) as old:
                saved = dict(old)
        saved |= arrays
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **saved)
        os.replace(tmp, path)


def sweep(args: argparse.Namespace) -> dict:
    """Every dataset × placement × seed, saving the JSON after each run (so a sweep resumes).

    Each save re-reads the file under a lock and adds to it, so two sweeps over different
    datasets or seeds may run at once (one per core) and write into the same ablation.json.
    """
    path = args.out / ("tuning.json" if args.tuning else "ablation.json")
    done = {run_key(r) for r in load_json(path, EMPTY_ABLATION)["runs"]}
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="ablation-"))
    device = pick_device(args.device).type  # run_key's device kind, before anything trains
    for dataset in args.datasets:
        real = held_out_images(dataset, args.eval_samples, args.img_size)
        ref_key = f"{dataset} @ {args.img_size}px, n={args.eval_samples}"
        if ref_key not in load_json(path, EMPTY_ABLATION)["references"]:
            refs = references(dataset, args.eval_samples, args.img_size)
            with locked_json(path, EMPTY_ABLATION) as results:
                results["references"][ref_key] = refs
        for placement in args.attention:
            if not placement_fits(placement, args.img_size):
                note = (
                    f"attention at {placement}: a {args.img_size}px discriminator has no "
                    f"{placement}×{placement} map (it needs img_size ≥ {2 * int(placement)})"
                )
                print("skipped", note, flush=True)  # fmt: skip
                with locked_json(path, EMPTY_ABLATION) as results:
                    if note not in results["skipped"]:
                        results["skipped"].append(note)
                continue
            for seed in args.seeds:
                probe = {"dataset": dataset, "placement": placement, "seed": seed,
                         "steps": args.steps, "eval_samples": args.eval_samples,
                         "config": {"g_channels": args.channels,
                                    "d_channels": d_channels(args), "batch_size": args.batch,
                                    "img_size": args.img_size, "attention_in": args.attention_in,
                                    "attention_block": args.block,
                                    "attention_scaled": args.scaled, "lr_d": args.lr_d,
                                    "lr_g": args.lr_g}, "device": device}  # fmt: skip
                if args.skip_existing and run_key(probe) in done:
                    print(f"exists: {dataset} attention={placement} seed={seed} "
                          f"({run_id(probe)})", flush=True)  # fmt: skip
                    continue
                record, samples = run_one(args, dataset, placement, seed, real, runs_dir)
                with locked_json(path, EMPTY_ABLATION) as results:
                    replace_run(results, record, run_key)
                    results["collapse_rule"] = COLLAPSE_RULE
                save_samples(args.out / "ablation-samples.npz", samples)
                done.add(run_key(record))
                took = f"{record['wall_time_s']:.0f}s"
                print(f"done: {record['run_id']} {record['status']} {took} "
                      f"{short(record['metrics'])}", flush=True)  # fmt: skip
    return load_json(path, EMPTY_ABLATION)


def replace_run(results: dict, record: dict, key: Callable[[dict], tuple]) -> None:
    """Add `record`; a rerun replaces the old record of the same run instead of doubling it."""
    results["runs"] = [r for r in results["runs"] if key(r) != key(record)] + [record]


def short(metrics: dict[str, float]) -> str:
    """Metric names short enough for one line: 'KID (MNIST classifier features) std' -> 'KID std',
    "shape agreement (...): Cohen's kappa against its own chance level" -> 'shape agreement
    kappa', "shape agreement (...): this model's own chance level" -> 'shape agreement chance'."""

    def name(key: str) -> str:
        if KAPPA_NAME.format("") in key:
            return key.split(" (")[0] + " kappa"
        if OWN_CHANCE_NAME.format("") in key:
            return key.split(" (")[0] + " chance"
        return key.split(" (")[0] + (" std" if key.endswith(" std") else "")

    return ", ".join(f"{name(k)}={v:.3g}" for k, v in metrics.items())


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3g} (1 seed)"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def group_runs(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs grouped by everything but the seed, in a stable order."""
    groups: dict[tuple, list[dict]] = {}
    order = {d: i for i, d in enumerate(DATASETS)}
    for r in sorted(
        runs,
        key=lambda r: (
            order.get(r["dataset"], 99),
            r["steps"],
            r["placement"] != "none",
            int(r["placement"]) if r["placement"] != "none" else 0,
        ),
    ):
        c = r["config"]
        key = (r["dataset"], r["placement"], r["steps"], width(c), c["batch_size"],
               c["img_size"], *variant(c), device_kind(r))  # fmt: skip
        groups.setdefault(key, []).append(r)
    return groups


def variant_label(attention_in: str, block: str, scaled: bool, lr_d: float, lr_g: float) -> str:
    """E.g. 'G only, residual, √d, lr 0.0008/0.0002'; 'default' for both, attention, 4e-4/1e-4."""
    parts = [{"both": "", "g": "G only", "d": "D only"}[attention_in],
             "" if block == "attention" else block, "√d" if scaled else "",
             "" if (lr_d, lr_g) == (4e-4, 1e-4) else f"lr {lr_d:g}/{lr_g:g}"]  # fmt: skip
    return ", ".join(p for p in parts if p) or "default"


def table(results: dict) -> str:
    """The Markdown table: one row per dataset × placement × settings, mean ± std over seeds."""
    lines = [
        "# Does attention help? Ablation results",
        "",
        "Generated by `benchmarks/ablation.py` from `ablation.json` (do not edit by hand). "
        "Mean ± standard deviation over seeds. Lower is better for distances, higher for "
        "consistency and coverage. Distances use an MNIST classifier's features, not Inception: "
        "they are not comparable with published FIDs. `ch` is the base width of G and D "
        "(G/D where they differ). `train s/run` is the wall time of "
        "training on whatever machine ran it, shared or not: a rough cost, not a benchmark.",
        "",
    ]
    for dataset in DATASETS:
        groups = {k: v for k, v in group_runs(results["runs"]).items() if k[0] == dataset}
        if not groups:
            continue
        names = [name for name, _ in HEADLINE[dataset]]
        lines += [f"## {dataset}", ""]
        lines.append("| attention at | variant | steps | ch | batch | device | seeds | "
                     "params G / D | " + " | ".join(names) + " | train s/run |")  # fmt: skip
        lines.append("|" + " --- |" * (9 + len(names)))
        for (_, placement, steps, ch, batch, _size, *var, device), runs in groups.items():
            scored = [r for r in runs if r["metrics"]]  # diverged runs have no scores
            cells = [mean_std([r["metrics"][n] for r in scored if n in r["metrics"]])
                     for n in names]  # fmt: skip
            params = f"{runs[0]['params']['G']:,} / {runs[0]['params']['D']:,}"
            seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
            time_s = statistics.mean(r["train_time_s"] for r in runs)
            label = "none" if placement == "none" else f"{placement}×{placement}"
            lines.append(f"| {label} | {variant_label(*var)} | {steps} | {ch} | {batch} | "
                         f"{device} | {seeds} | {params} | "
                         + " | ".join(cells) + f" | {time_s:.0f} |")  # fmt: skip
        refs = {k: v for k, v in results["references"].items() if k.startswith(dataset + " @")}
        for where, values in refs.items():
            lines += ["", f"Real-data references ({where}):", ""]
            lines += [f"- {name}: {value:.3g}" for name, value in values.items()]
        lines.append("")
    if results.get("skipped"):
        lines += ["## Not run", ""] + [f"- {note}" for note in results["skipped"]] + [""]
    envs = sorted({(r["device"], r["torch"]) for r in results["runs"]})
    dates = sorted(r["date"] for r in results["runs"])
    if envs:
        lines += ["## Where", ""]
        lines += [f"- device {d}, torch {t}" for d, t in envs]
        lines += [f"- runs from {dates[0]} to {dates[-1]}"]
        commands = sorted({r["command"] for r in results["runs"] if "command" in r})
        lines += [f"- `{c}`" for c in commands] + [""]
    return "\n".join(lines)


def write_table(results: dict, out: Path) -> str:
    text = table(results)
    save_text(text, out / "ablation.md")
    return text


def with_default_rates(tuning_runs: list[dict], ablation: dict) -> list[dict]:
    """The tuning runs plus the ablation's default-rate runs (4e-4 / 1e-4) of the same settings:
    the grid's default cell is trained once, for ablation.json, and shown in both tables."""

    def setting(r: dict) -> tuple:
        c = r["config"]
        return (r["dataset"], r["placement"], r["steps"], width(c), c["batch_size"],
                c["img_size"], r["eval_samples"], *variant(c)[:3], device_kind(r))  # fmt: skip

    # Settings whose grid already holds its own default-rate runs take nothing from ablation.json.
    own_defaults = {setting(r) for r in tuning_runs if variant(r["config"])[3:] == (4e-4, 1e-4)}
    settings = {setting(r) for r in tuning_runs} - own_defaults
    defaults = [r for r in ablation["runs"]
                if setting(r) in settings and variant(r["config"])[3:] == (4e-4, 1e-4)]  # fmt: skip
    return tuning_runs + defaults


def tuning_table(results: dict) -> str:
    """The learning-rate grid: per cell, how many seeds diverged, collapsed or trained, and the
    scores of the runs that did not diverge (mean ± std over seeds)."""
    names = [CONSISTENCY_NAME, SHAPE_NAME, COLOUR_NAME, GREY_FD_NAME]
    lines = [
        "# The tuning burden: learning rates with and without attention",
        "",
        "Generated by `benchmarks/ablation.py --tuning` from `tuning.json` (do not edit by hand).",
        f"Status rule: {results.get('collapse_rule', COLLAPSE_RULE)}.",
        "",
        "| dataset | attention at | variant | steps | ch | batch | lr_d | lr_g | device | seeds | "
        "diverged / collapsed / trained | " + " | ".join(n.split(" (")[0] for n in names) + " |",
        "|" + " --- |" * (11 + len(names)),
    ]
    for (dataset, placement, steps, ch, batch, _size, *var, device), runs in group_runs(
        results["runs"]
    ).items():
        counts = [sum(r.get("status") == s for r in runs)
                  for s in ("diverged", "collapsed", "trained")]  # fmt: skip
        scored = [r for r in runs if r["metrics"]]
        cells = [mean_std([r["metrics"][n] for r in scored if n in r["metrics"]]) for n in names]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        lr_d, lr_g = var[3], var[4]
        lines.append(f"| {dataset} | {placement} | {variant_label(*var[:3], 4e-4, 1e-4)} | "
                     f"{steps} | {ch} | {batch} | {lr_d:g} | {lr_g:g} | {device} | {seeds} | "
                     f"{' / '.join(map(str, counts))} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The discriminator-overfitting experiment
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def mean_d_output(trainer: Trainer, images: torch.Tensor) -> float:
    """D's mean logit on images, without changing D (eval: spectral norm's u stays put)."""
    trainer.D.eval()
    logits = torch.cat([trainer.D(chunk.to(trainer.device)) for chunk in images.split(250)])
    trainer.D.train()
    return logits.float().mean().item()


def overfit_one(args: argparse.Namespace, placement: str, seed: int, runs_dir: Path) -> dict:
    """Train on a small random subset of mnist5k; record D(train) and D(held-out) every k steps."""
    config = make_config(
        args, "mnist5k", placement, seed, runs_dir / f"overfit-att{placement}-s{seed}"
    )
    trainer = Trainer(config)
    # A random subset, not the first images: mnist5k's training split is sorted by digit.
    subset = load_dataset("mnist5k", train=True, img_size=args.img_size, length=args.subset,
                          seed=seed)  # fmt: skip
    trainer.dataset = ImageDataset(subset.images, subset.labels, "mnist5k-subset", 10)
    held_out = held_out_images("mnist5k", args.subset, args.img_size)
    curve: dict[str, list[float]] = {"step": [], "d_train": [], "d_held_out": [], "gap": []}
    start = time.perf_counter()
    while True:
        if trainer.step_count % args.every == 0 or trainer.step_count == args.steps:
            d_train = mean_d_output(trainer, trainer.dataset.images)
            d_held = mean_d_output(trainer, held_out)
            for name, value in (("step", trainer.step_count), ("d_train", d_train),
                                ("d_held_out", d_held), ("gap", d_train - d_held)):  # fmt: skip
                curve[name].append(value)
        if trainer.step_count == args.steps:
            break
        trainer.step()
    return {
        "dataset": f"mnist5k, {args.subset} random training images (seed {seed})",
        "placement": placement,
        "attention_at": list(config.attention_at),
        "seed": seed,
        "steps": args.steps,
        "params": {"G": count_parameters(trainer.G), "D": count_parameters(trainer.D)},
        "curve": curve,
        "final_gap": curve["gap"][-1],
        "wall_time_s": round(time.perf_counter() - start, 1),
        "config": asdict(config),
        "command": args.command,
        **environment(trainer.device),
    }


def overfit_key(record: dict) -> tuple:
    return (record["placement"], record["seed"], record["steps"], width(record["config"]))


def overfitting(args: argparse.Namespace) -> dict:
    path = args.out / "overfitting.json"
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="overfitting-"))
    placements = [p for p in args.attention if placement_fits(p, args.img_size)]
    for placement in placements:
        for seed in args.seeds:
            widths = {"g_channels": args.channels, "d_channels": d_channels(args)}
            wanted = (placement, seed, args.steps, width(widths))
            saved = load_json(path, {"runs": []})["runs"]
            if args.skip_existing and any(overfit_key(r) == wanted for r in saved):
                print(f"exists: overfitting attention={placement} seed={seed}", flush=True)
                continue
            record = overfit_one(args, placement, seed, runs_dir)
            with locked_json(path, {"runs": []}) as results:
                replace_run(results, record, overfit_key)
            gap, took = record["final_gap"], record["wall_time_s"]
            print(f"done: overfitting attention={placement} seed={seed} gap={gap:.3f} {took:.0f}s",
                  flush=True)  # fmt: skip
    return load_json(path, {"runs": []})


def overfitting_table(results: dict) -> str:
    lines = [
        "| attention at | steps | seeds | final D(train) − D(held-out) |",
        "| --- | --- | --- | --- |",
    ]
    by_placement: dict[tuple, list[dict]] = {}
    for r in results["runs"]:
        by_placement.setdefault((r["placement"], r["steps"]), []).append(r)
    for (placement, steps), runs in by_placement.items():
        gaps = [r["final_gap"] for r in runs]
        lines.append(f"| {placement} | {steps} | {len(runs)} | {mean_std(gaps)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Recorded with every run, so the results say exactly how they were made.
    args.command = "python benchmarks/ablation.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overfitting:
        if args.table_only:
            results = load_json(args.out / "overfitting.json", {"runs": []})
        else:
            results = overfitting(args)
        print(overfitting_table(results))
        return 0
    if args.table_only:
        name = "tuning.json" if args.tuning else "ablation.json"
        results = load_json(args.out / name, {"runs": [], "references": {}})
    else:
        results = sweep(args)
    if args.tuning:
        ablation = load_json(args.out / "ablation.json", EMPTY_ABLATION)
        text = tuning_table(results | {"runs": with_default_rates(results["runs"], ablation)})
        save_text(text, args.out / "tuning.md")
        print(text)
    else:
        print(write_table(results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
