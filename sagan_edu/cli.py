"""The `sagan-edu` command: train a SAGAN, sample from a checkpoint or exported weights.

    sagan-edu train --dataset mnist5k --steps 2000 --out runs/mnist [--resume] [--attention-at 16]
    sagan-edu sample --checkpoint runs/mnist/checkpoint.pt --n 64 --out grid.png [--overwrite]
    sagan-edu sample --checkpoint mnist.safetensors --out grid.png     # exported weights too
    sagan-edu export --checkpoint runs/mnist/checkpoint.pt --out mnist.safetensors [--float16]
    sagan-edu train-classifier      # the feature network of sagan_edu.metrics
    torchrun --standalone --nproc_per_node=4 -m sagan_edu.cli train ...   # 4 GPUs (DDP)

`train` writes into --out: checkpoint.pt (everything needed to resume), history.json, and the
figures samples.png, attention.png, losses.png and gamma.png. A folder that already holds a
checkpoint is continued with --resume, replaced with --overwrite, and otherwise refused; so is a
folder without a checkpoint that holds files train would write. `sample`, `export` and
`train-classifier` replace an existing --out file only with --overwrite.

Mistakes in what the user typed (a bad value, a missing or wrong file, a device this machine does
not have, a full disk, memory) end with one line on stderr and exit status 2, never a traceback.
Ctrl-C during `train` says which step the checkpoint holds and how to continue (exit status 130).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the CLI only writes files; never try to open a window

import matplotlib.pyplot as plt
import torch
from torchvision.utils import save_image

from sagan_edu import pretrained
from sagan_edu.checkpoints import (
    CHECKPOINT_NAME,
    CheckpointError,
    RunFolderBusy,
    check_output_file,
    is_safetensors_file,
    load_checkpoint,
)
from sagan_edu.metrics import CLASSIFIER_PATH, train_classifier
from sagan_edu.models import Generator
from sagan_edu.training import (
    TrainConfig,
    Trainer,
    TrainingDiverged,
    load_generator,
    sample_images,
)
from sagan_edu.viz import collect_attention, plot_attention_maps, plot_gammas, plot_history

# Where `train-classifier` writes by default: a run folder, never the package's shipped weights.
DEFAULT_CLASSIFIER_OUT = Path("runs/classifier/mnist5k-classifier.safetensors")
# What `train` writes into its folder besides the checkpoint (see write_figures).
RUN_FILES = ("history.json", "samples.png", "attention.png", "losses.png", "gamma.png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# Errors caused by what the user asked for, or by the machine (a full disk, a missing file): the
# message is the whole story, so the user sees it alone. Anything else is a bug: a traceback.
USER_ERRORS = (ValueError, OSError, TrainingDiverged, RunFolderBusy)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits; keep its status (0 for --help, 2 for errors)
        return int(exit_.code or 0)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning(args.command)
        try:
            return args.run(args)
        except USER_ERRORS as error:
            print(f"sagan-edu {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not _out_of_memory(error):
                raise  # a bug: keep its traceback
            print(
                f"sagan-edu {args.command}: error: the device ran out of memory; ask for less "
                "at once (a smaller --batch-size or --n, narrower --g-channels/--d-channels, a "
                "smaller --img-size)",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            print(f"sagan-edu {args.command}: interrupted", file=sys.stderr)
            return 130


def _out_of_memory(error: BaseException) -> bool:
    """A GPU's OutOfMemoryError, or the CPU allocator's RuntimeError ("can't allocate memory" on
    Linux and macOS, "not enough memory" on Windows), which torch does not give its own type."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or (
        "DefaultCPUAllocator" in text and ("can't allocate" in text or "not enough memory" in text)
    )


def _one_line(error: BaseException | Warning | str) -> str:
    """The message alone, on one line ("[Errno 28]" and the like left out)."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(text.split())


def _show_warning(command: str):
    """Warnings (say, resume without a checkpoint) as one visible line, not a file:line dump."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"sagan-edu {command}: warning: {_one_line(message)}", file=sys.stderr)

    return show


def _user_path(text: str) -> Path:
    """A path argument; ~ means the home folder even where the shell left it (--out=~/x)."""
    return Path(text).expanduser()


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line that says where to find the options."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sagan-edu", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    # Only the settings typed on the command line land in `args` (SUPPRESS): the rest come from
    # TrainConfig's defaults, or on --resume from the checkpoint (see _settings_to_resume).
    train = commands.add_parser(
        "train", help="train a (self-attention) GAN", argument_default=argparse.SUPPRESS
    )
    defaults = TrainConfig()
    train.add_argument("--out", dest="out_dir", help=f"run folder (default: {defaults.out_dir})")
    train.add_argument(
        "--resume", action="store_true",
        help="continue from OUT/checkpoint.pt with the run's own settings, changing only those "
        "typed here (with a warning, from step 0 if there is no checkpoint)",
    )  # fmt: skip
    train.add_argument(
        "--overwrite", action="store_true",
        help="start from step 0 even if OUT holds a checkpoint, replacing it at the first save",
    )  # fmt: skip
    train.add_argument(
        "--download", action="store_true",
        help="download a missing torchvision dataset (mnist, fashion-mnist, cifar10; online)",
    )  # fmt: skip
    train.add_argument(
        "--attention-at", type=int, nargs="*", metavar="SIZE",
        help="feature-map sizes that get self-attention (none: no attention). Default: 16",
    )  # fmt: skip
    train.add_argument("--no-amp", dest="amp", action="store_false", help="train in float32")
    train.add_argument("--no-progress", dest="progress", action="store_false")
    flagged = {"out_dir", "resume", "overwrite", "download", "attention_at", "amp", "progress",
               "betas"}  # fmt: skip
    for field in fields(TrainConfig):
        if field.name in flagged:
            continue
        default = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            train.add_argument(flag, action="store_true", help=f"default: {default}")
        else:
            kind = type(default) if default is not None else str
            train.add_argument(flag, type=kind, help=f"default: {default}")
    train.set_defaults(run=run_train)

    sample = commands.add_parser(
        "sample", help="sample an image grid from a checkpoint or exported weights"
    )
    sample.add_argument(
        "--checkpoint", required=True, type=_user_path,
        help="a run's checkpoint.pt, or a .safetensors file written by `export`",
    )  # fmt: skip
    sample.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    sample.add_argument("--out", type=_user_path, default=Path("samples.png"))
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--no-ema", dest="ema", action="store_false", help="use G, not EMA G")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sample.set_defaults(run=run_sample)

    export = commands.add_parser(
        "export", help="write a checkpoint's EMA generator and D as a safetensors file"
    )
    export.add_argument("--checkpoint", required=True, type=_user_path)
    export.add_argument("--out", required=True, type=_user_path, help="a .safetensors path")
    export.add_argument("--float16", action="store_true", help="store half-size float16 tensors")
    export.add_argument("--generator-only", action="store_true", help="leave D out")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.set_defaults(run=run_export)

    classifier = commands.add_parser(
        "train-classifier", help="retrain the MNIST feature network the metrics use"
    )
    classifier.add_argument(
        "--out", type=_user_path, default=DEFAULT_CLASSIFIER_OUT,
        help=f"a .safetensors path (default {DEFAULT_CLASSIFIER_OUT}). The metrics use the "
        f"shipped file, {CLASSIFIER_PATH.relative_to(CLASSIFIER_PATH.parents[2])}: replacing it "
        "changes every FD/KID number and needs --overwrite",
    )  # fmt: skip
    classifier.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    classifier.add_argument("--epochs", type=int, default=30)
    classifier.add_argument("--seed", type=int, default=0)
    classifier.set_defaults(run=run_train_classifier)
    return parser


def run_train(args: argparse.Namespace) -> int:
    config = train_config(args)
    _check_no_foreign_figures(Path(config.out_dir), config.overwrite)
    trainer = Trainer(config)
    say = print if trainer.is_main else (lambda *a, **k: None)  # under torchrun: rank 0 speaks
    config = trainer.config
    say(
        f"training on {trainer.device} ({_amp_name(trainer)}"
        f"{f', {trainer.world_size} processes' if trainer.world_size > 1 else ''}), "
        f"dataset {config.dataset} ({len(trainer.dataset)} images), attention at "
        f"{list(config.attention_at)}, from step {trainer.step_count} to {config.steps}"
    )
    start = time.perf_counter()
    try:
        trainer.fit()
    except KeyboardInterrupt:
        if trainer.is_main:
            print(f"sagan-edu train: {_how_to_resume(trainer)}", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    say(f"trained to step {trainer.step_count} in {time.perf_counter() - start:.0f} s")
    if trainer.is_main:
        write_figures(trainer, Path(config.out_dir))
        say(f"wrote {trainer.checkpoint_path} and figures to {config.out_dir}/")
    return 0


def _how_to_resume(trainer: Trainer) -> str:
    """After Ctrl-C: which step the checkpoint holds, and the command that continues from it."""
    path = trainer.checkpoint_path
    if not path.is_file():
        return (
            f"interrupted at step {trainer.step_count}, before the first checkpoint (every "
            f"{trainer.config.checkpoint_every} steps, --checkpoint-every): nothing was saved"
        )
    saved = load_checkpoint(path)["step"]
    return (
        f"interrupted at step {trainer.step_count}; {path} holds step {saved}. Continue with "
        f"sagan-edu train --out {trainer.config.out_dir} --resume"
    )


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a parsed `train` command line: the settings typed, the rest from the
    defaults, or (with --resume and a checkpoint) from the run being continued."""
    typed = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig(**typed)  # checks what was typed before anything is read
    return TrainConfig(**(_settings_to_resume(config) | typed))


# Settings of the machine and of this command, not of the run: on --resume they come from the
# command line (or the defaults), never from a checkpoint that may have been written elsewhere.
MACHINE_SETTINGS = ("out_dir", "resume", "overwrite", "download", "device", "compile",
                    "channels_last", "fast_step", "progress")  # fmt: skip


def _settings_to_resume(config: TrainConfig) -> dict:
    """On --resume, the run's own settings, read from its checkpoint.

    Settings left off the command line then keep the run's values instead of falling back to
    the defaults: `train --out runs/x --resume` continues a 10,000-step run at its learning
    rates to step 10,000, and only settings typed here can differ (and be warned about).
    """
    path = Path(config.out_dir) / CHECKPOINT_NAME
    if not (config.resume and path.is_file()):
        return {}
    saved = load_checkpoint(path).get("config", {})
    run_settings = {f.name for f in fields(TrainConfig)} - set(MACHINE_SETTINGS)
    return {name: value for name, value in saved.items() if name in run_settings}


def run_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    generator = _generator_from_file(args.checkpoint, args.ema)
    _check_output_file(args.out, IMAGE_SUFFIXES, args.overwrite)
    images = sample_images(generator, args.n, seed=args.seed)
    save_image(images, args.out, nrow=8, normalize=True, value_range=(-1, 1))
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def _generator_from_file(path: Path, ema: bool) -> Generator:
    """The generator in a training checkpoint, or in a safetensors file `export` wrote."""
    if is_safetensors_file(path):
        if not ema:
            raise ValueError(
                f"{path} is exported weights, which hold only the EMA generator; leave out "
                "--no-ema, or pass the run's checkpoint.pt to sample from G"
            )
        return pretrained.load(path)
    try:
        return load_generator(path, ema=ema)
    except CheckpointError as error:  # say that the other kind of file would do too
        raise CheckpointError(
            f"{error}; `sample` also takes the .safetensors file that `sagan-edu export` writes"
        ) from None


def run_export(args: argparse.Namespace) -> int:
    _check_output_file(args.out, (".safetensors",), args.overwrite)
    dtype = torch.float16 if args.float16 else torch.float32
    out = pretrained.export_pretrained(
        args.checkpoint, args.out, dtype, not args.generator_only, overwrite=args.overwrite
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_train_classifier(args: argparse.Namespace) -> int:
    _check_output_file(args.out, (".safetensors",), args.overwrite)
    accuracy = train_classifier(
        args.out, epochs=args.epochs, seed=args.seed, overwrite=args.overwrite
    )
    print(
        f"wrote {args.out}: accuracy {accuracy['train_accuracy']:.3f} on the 4,000 training "
        f"digits, {accuracy['held_out_accuracy']:.3f} on the 1,000 held-out digits"
    )
    return 0


def _check_output_file(path: Path, suffixes: tuple[str, ...], overwrite: bool) -> None:
    """Before any work: a usable --out (see check_output_file), replaced only with --overwrite."""
    check_output_file(path, suffixes, overwrite, flag="--out", overwrite_flag="--overwrite")


def _check_no_foreign_figures(out_dir: Path, overwrite: bool) -> None:
    """A folder without a checkpoint but with files `train` writes holds someone else's files
    (`--out .` in a project folder, say): replace them only with --overwrite."""
    if (out_dir / CHECKPOINT_NAME).is_file() or overwrite:
        return  # a run's own figures: replaced as the run is continued or replaced
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found:
        raise ValueError(
            f"--out {out_dir} holds {', '.join(found)} but no {CHECKPOINT_NAME}, and training "
            "would replace them; pass another --out, or --overwrite (without --resume) to "
            "replace them"
        )


def write_figures(trainer: Trainer, out_dir: Path) -> None:
    """samples.png, attention.png (if G has attention), losses.png, gamma.png and history.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_image(
        trainer.sample(64), out_dir / "samples.png", nrow=8, normalize=True, value_range=(-1, 1)
    )
    _save(plot_history(trainer.history), out_dir / "losses.png")
    _save(plot_gammas(trainer.history), out_dir / "gamma.png")
    (out_dir / "history.json").write_text(json.dumps(trainer.history))

    layers = trainer.G_ema.attention_layers()
    if layers:
        name = list(layers)[-1]  # the largest map: the finest view of where pixels look
        z = torch.randn(4, trainer.config.z_dim, generator=torch.Generator().manual_seed(0))
        labels = torch.arange(4) if trainer.num_classes else None
        with torch.no_grad():
            images, maps = collect_attention(trainer.G_ema, z.to(trainer.device), labels)
        size = int(name.split("x")[0])
        s = trainer.config.img_size
        queries = [(s // 4, s // 4), (s // 2, s // 2), (3 * s // 4, s // 3), (s // 3, 3 * s // 4)]
        fig = plot_attention_maps(
            images.cpu(), maps[name].cpu(), (size, size), queries,
            title=f"G attention at {name}, γ = {float(layers[name].gamma):.3f}",
        )  # fmt: skip
        _save(fig, out_dir / "attention.png")


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _amp_name(trainer: Trainer) -> str:
    return f"AMP {trainer.amp_dtype}" if trainer.amp_dtype is not None else "float32"


if __name__ == "__main__":
    sys.exit(main())
