"""Tests of the `sagan-edu` command and the figures it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sagan_edu import cli
from sagan_edu.cli import main
from sagan_edu.metrics import CLASSIFIER_PATH
from sagan_edu.training import Trainer

TINY = ["--z-dim", "16", "--g-channels", "8", "--d-channels", "8", "--batch-size", "8",
        "--log-every", "1", "--no-progress"]  # fmt: skip


def test_train_writes_checkpoint_history_and_figures_then_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(out), *TINY]) == 0
    for name in ("checkpoint.pt", "history.json", "samples.png", "attention.png", "losses.png",
                 "gamma.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert Image.open(out / "samples.png").size == (8 * 34 + 2, 8 * 34 + 2)  # 8×8 tiles of 32 px
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == [1.0, 2.0]

    assert main(["train", "--steps", "3", "--out", str(out), "--resume", *TINY]) == 0
    assert "from step 2 to 3" in capsys.readouterr().out
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_resume_keeps_the_runs_settings_and_changes_only_those_typed(tmp_path, capsys):
    """`--resume` with few flags continues the run as it was set up: settings left off the
    command line come from the checkpoint, not from the defaults (which would silently change
    the learning rate, or stop a 6-step run at the default length)."""
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(out), "--lr-d", "8e-4", "--dataset",
                 "twin-shapes", "--attention-at", *TINY]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "3"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # nothing typed differs from the run
    assert "dataset twin-shapes" in captured.out and "from step 2 to 3" in captured.out
    config = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert (config["lr_d"], config["g_channels"], config["attention_at"]) == (8e-4, 8, ())

    # A run set up for 6 steps and stopped at step 3 (say, killed) continues to step 6.
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["config"]["steps"] = 6
    torch.save(state, out / "checkpoint.pt")
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert "from step 3 to 6" in capsys.readouterr().out

    # A typed setting that cannot change is named alone in the warning, and ignored.
    assert main(["train", "--out", str(out), "--resume", "--steps", "7", "--z-dim", "32"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "ignored: z_dim=32." in warning[0]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["z_dim"] == 16


def test_train_without_attention_writes_no_attention_figure(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(out), "--attention-at", *TINY]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["attention_at"] == ()
    assert not (out / "attention.png").exists()


def test_sample_writes_a_grid(tmp_path):
    out = tmp_path / "run"
    main(["train", "--steps", "1", "--out", str(out), *TINY])
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "16",
                 "--out", str(grid)]) == 0  # fmt: skip
    assert Image.open(grid).size == (8 * 34 + 2, 2 * 34 + 2)  # 16 images: 2 rows of 8


def test_sample_from_exported_weights_gives_the_checkpoints_grid(tmp_path, capsys):
    """`sample` used to refuse the .safetensors files `export` writes."""
    run = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(run), *TINY]) == 0
    checkpoint, exported = run / "checkpoint.pt", tmp_path / "g.safetensors"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(exported)]) == 0
    renamed = tmp_path / "weights.bin"  # recognised by its bytes, whatever its name
    renamed.write_bytes(exported.read_bytes())

    grids = {}
    for source in (checkpoint, exported, renamed):
        grid = tmp_path / f"{source.name}.png"
        argv = ["sample", "--checkpoint", str(source), "--n", "8", "--seed", "5"]
        assert main([*argv, "--out", str(grid)]) == 0
        grids[source.name] = np.asarray(Image.open(grid))
    # float32 export: the same EMA weights, so the same pixels.
    assert np.array_equal(grids["checkpoint.pt"], grids["g.safetensors"])
    assert np.array_equal(grids["checkpoint.pt"], grids["weights.bin"])

    capsys.readouterr()
    argv = ["sample", "--checkpoint", str(exported), "--no-ema", "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    assert "hold only the EMA generator; leave out --no-ema" in capsys.readouterr().err

    image = tmp_path / "checkpoint.pt.png"
    argv = ["sample", "--checkpoint", str(image), "--out", str(tmp_path / "y.png")]
    assert main(argv) == 2  # an image is neither kind of file
    err = capsys.readouterr().err
    assert "is not a PyTorch checkpoint" in err and "also takes the .safetensors file" in err
    argv = ["sample", "--checkpoint", str(CLASSIFIER_PATH), "--out", str(tmp_path / "z.png")]
    assert main(argv) == 2  # safetensors, but not a GAN's
    assert "holds no GAN generator" in capsys.readouterr().err


def test_export_float16_generator_only(tmp_path):
    from safetensors import safe_open

    out = tmp_path / "run"
    main(["train", "--steps", "1", "--out", str(out), *TINY])
    path = tmp_path / "g.safetensors"
    assert main(["export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(path),
                 "--float16", "--generator-only"]) == 0  # fmt: skip
    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
        assert all(k.startswith("G.") for k in keys) and "D_config" not in f.metadata()
        floating = [f.get_tensor(k) for k in keys if f.get_tensor(k).is_floating_point()]
        assert floating and {t.dtype for t in floating} == {torch.float16}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--attention-at", "5"], "5"),
        (["train", "--img-size", "48"], "48"),
        (["train", "--dataset", "imagenet"], "imagenet"),
        (["train", "--seed", str(2**70)], "seed must be at most 2**63 - 1"),  # was torch's overflow
        (["sample", "--checkpoint", "nowhere/checkpoint.pt"], "no checkpoint at"),
    ],
)
def test_bad_input_gives_a_clear_error_and_exit_code_2(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


def test_ctrl_c_says_which_step_is_saved_and_how_to_resume(
    tmp_path, capsys, monkeypatch, ctrl_c_at_step
):
    out = tmp_path / "run"
    real_step = ctrl_c_at_step(3)
    argv = ["train", "--steps", "5", "--checkpoint-every", "2", "--out", str(out), *TINY]
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"interrupted at step 3; {out / 'checkpoint.pt'} holds step 2." in err
    assert f"sagan-edu train --out {out} --resume" in err
    monkeypatch.setattr(Trainer, "step", real_step)
    assert main(["train", "--out", str(out), "--resume"]) == 0  # the command it names works
    assert "from step 2 to 5" in capsys.readouterr().out

    early = tmp_path / "early"
    ctrl_c_at_step(3)
    assert main(["train", "--steps", "5", "--checkpoint-every", "4", "--out", str(early), *TINY])
    assert "before the first checkpoint (every 4 steps" in capsys.readouterr().err


def test_running_out_of_cpu_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """The CPU allocator's failure is a plain RuntimeError (torch.OutOfMemoryError is CUDA's):
    `sample --n 100000000` printed a 30-line traceback."""
    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(out), *TINY]) == 0

    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 409600000000 bytes. Error code 12"
        )

    monkeypatch.setattr(cli, "sample_images", no_memory)
    capsys.readouterr()
    argv = ["sample", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "s.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "ran out of memory" in err and "smaller --batch-size or --n" in err
    )

    def a_bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(cli, "sample_images", a_bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # bugs keep a traceback
        main(argv)
