"""Bad input, second runs and wrong devices: a clear error (what was wrong, how to fix it), never
a silent surprise and never lost work. Checkpoint files have their own tests in
tests/test_checkpoints.py."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from test_checkpoints import tiny_config  # the same few-step run the checkpoint tests train

import sagan_edu
from sagan_edu import cli, pretrained, training
from sagan_edu.attention import MultiHeadAttention, SelfAttention2d, scaled_dot_product_attention
from sagan_edu.cli import main
from sagan_edu.data import consistency_score, load_dataset
from sagan_edu.metrics import consistency, fd_and_kid
from sagan_edu.models import Discriminator, Generator
from sagan_edu.training import TrainConfig, Trainer, load_checkpoint, sample_images

TINY = ["--z-dim", "16", "--g-channels", "8", "--d-channels", "8", "--batch-size", "8",
        "--log-every", "1", "--no-progress"]  # fmt: skip
NO_GPU = not torch.cuda.is_available()


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect a user error: exit status 2 and exactly one line on stderr."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------
# TrainConfig: types and ranges checked when the config is built
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 2.5}, r"steps must be a whole number, got 2\.5 \(a float\)"),
        ({"steps": "100"}, r"steps must be a whole number, got '100' \(a str\)"),
        ({"steps": True}, "steps must be a whole number"),
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"batch_size": -4}, "batch_size must be a positive integer"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"img_size": None}, "img_size must be a whole number"),
        ({"attention_at": 16}, r"attention_at must be a tuple .* such as \(16,\)"),
        ({"attention_at": "16"}, r"attention_at must be a tuple .* got '16'"),
        ({"attention_at": (16.0,)}, "attention_at must hold whole numbers"),
        ({"attention_at": (0,)}, "attention_at size must be a positive integer"),
        ({"attention_at": (16, 16)}, r"attention_at names a size twice, got \(16, 16\)"),
        ({"betas": (1.5, 0.9)}, r"betas must be in \[0, 1\)"),
        ({"betas": (0.9,)}, "betas must be a pair"),
        ({"betas": 0.9}, "betas must be a pair"),
        ({"lr_d": math.inf}, "lr_d must be a finite number, got inf"),
        ({"lr_g": math.nan}, "lr_g must be a finite number"),
        ({"lr_d": -1e-4}, "lr_d must be positive"),
        ({"lr_g": "1e-4"}, "lr_g must be a number"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
        ({"resume": "yes"}, "resume must be True or False"),
        ({"amp": 1}, "amp must be True or False"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; choose one of mnist5k"),
        ({"arch": "vit"}, "unknown arch 'vit'; choose one of dcgan, resnet"),
        ({"loss": "wgan"}, "unknown loss 'wgan'; choose one of hinge"),
        ({"device": "tpu"}, r"unknown device 'tpu'; use 'auto', 'cpu', .*devices here: auto, cpu"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"out_dir": ""}, "out_dir must name a folder"),
        (
            {"seed": 2**63},
            r"seed must be at most 2\*\*63 - 1 = 9223372036854775807, got 9223372036854775808",
        ),
        ({"out_dir": 5}, "out_dir must be a string"),
        ({"resume": True, "overwrite": True}, "resume and overwrite contradict"),
        ({"img_size": 48}, "img_size must be one of 32, 64, 128, got 48"),
        ({"g_channels": 12}, "g_channels must be a multiple of 8"),
        ({"d_channels": 4}, "d_channels must be a multiple of 8"),
    ],
)
def test_bad_config_values_fail_when_the_config_is_built(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


def test_config_accepts_what_a_user_would_reasonably_pass(tmp_path):
    config = tiny_config(tmp_path, steps=np.int64(3), lr_d=1, attention_at=[16],
                         betas=[0, 0.9], out_dir=tmp_path / "run")  # fmt: skip
    assert config.steps == 3 and type(config.steps) is int
    assert config.lr_d == 1.0 and type(config.lr_d) is float
    assert config.attention_at == (16,) and config.betas == (0.0, 0.9)
    assert config.out_dir == str(tmp_path / "run")


def test_cli_type_errors_are_one_line(capsys):
    err = cli_error(capsys, ["train", "--steps", "2.5"])
    assert "--steps" in err and "2.5" in err and "--help" in err
    err = cli_error(capsys, ["train", "--betas", "1"])  # betas are not a CLI option
    assert "unrecognized arguments: --betas" in err


# ---------------------------------------------------------------------------------------------
# Second runs: never replace a checkpoint by accident
# ---------------------------------------------------------------------------------------------


def test_training_into_a_folder_with_a_checkpoint_is_refused_and_keeps_it(tmp_path):
    config = tiny_config(tmp_path, steps=3, checkpoint_every=3)
    training.train(config)
    path = Path(config.out_dir) / "checkpoint.pt"
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"already holds a training checkpoint") as error:
        Trainer(tiny_config(tmp_path, steps=1))
    for way_out in ("--resume", "--out", "--overwrite"):
        assert way_out in str(error.value)
    assert path.read_bytes() == before

    replaced = training.train(tiny_config(tmp_path, steps=1, overwrite=True))
    assert replaced.step_count == 1 and load_checkpoint(path)["step"] == 1


def test_cli_second_run_without_resume_is_refused(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--steps", "3", "--out", out, *TINY]) == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    err = cli_error(capsys, ["train", "--steps", "1", "--out", out, *TINY])
    assert "--resume" in err and "--out" in err and "--overwrite" in err
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    err = cli_error(capsys, ["train", "--steps", "1", "--out", out, "--resume", "--overwrite"])
    assert "contradict" in err
    assert main(["train", "--steps", "1", "--out", out, "--overwrite", *TINY]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 1


def test_cli_resume_without_a_checkpoint_warns_visibly_and_starts_at_0(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--steps", "1", "--out", out, "--resume", *TINY]) == 0
    captured = capsys.readouterr()
    assert "sagan-edu train: warning: resume was asked for but there is no checkpoint" in (
        captured.err
    )
    assert "from step 0 to 1" in captured.out


def test_bad_output_folders_fail_at_start(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match=r"out_dir \(--out\) .*notes.txt is a file, not a folder"):
        Trainer(tiny_config(tmp_path, out_dir=str(a_file)))
    with pytest.raises(ValueError, match=r"lies below .*notes.txt, which is a file"):
        Trainer(tiny_config(tmp_path, out_dir=str(a_file / "run")))
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder_fails_at_start(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"cannot be written .*pass a folder you can write"):
            Trainer(tiny_config(tmp_path, out_dir=str(locked / "run")))
    finally:
        locked.chmod(0o755)


def test_read_only_output_folder_check_sees_failed_writes(tmp_path, monkeypatch):
    """The check really writes a file, so it also catches read-only mounts (simulated)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ValueError, match=r"cannot be written \(Permission denied\)"):
        Trainer(tiny_config(tmp_path))


def test_cli_output_paths_below_a_file(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    err = cli_error(capsys, ["train", "--out", str(a_file / "run"), "--steps", "1"])
    assert "lies below" in err and "notes.txt" in err
    out = str(tmp_path / "run")
    assert main(["train", "--steps", "1", "--out", out, *TINY]) == 0
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    err = cli_error(capsys, ["sample", "--checkpoint", checkpoint, "--out", str(a_file / "s.png")])
    assert "lies below" in err
    err = cli_error(
        capsys, ["export", "--checkpoint", checkpoint, "--out", str(a_file / "g.safetensors")]
    )
    assert "lies below" in err
    err = cli_error(capsys, ["sample", "--checkpoint", checkpoint, "--out", str(tmp_path)])
    assert "must end in .png" in err


# ---------------------------------------------------------------------------------------------
# train-classifier: never into the package, never 0 epochs
# ---------------------------------------------------------------------------------------------


def test_train_classifier_default_output_is_outside_the_package():
    default = cli.build_parser().parse_args(["train-classifier"]).out
    package = Path(sagan_edu.__file__).parent.resolve()
    assert package not in default.resolve().parents
    assert default.suffix == ".safetensors"


def test_train_classifier_bad_arguments(tmp_path, capsys):
    err = cli_error(
        capsys, ["train-classifier", "--epochs", "0", "--out", str(tmp_path / "c.safetensors")]
    )
    assert "epochs must be a whole number ≥ 1, got 0" in err
    existing = tmp_path / "c.safetensors"
    existing.write_bytes(b"keep me")
    err = cli_error(capsys, ["train-classifier", "--out", str(existing)])
    assert "exists" in err and "--overwrite" in err
    assert existing.read_bytes() == b"keep me"


# ---------------------------------------------------------------------------------------------
# Devices: each error names the devices that exist here
# ---------------------------------------------------------------------------------------------


def test_unknown_device_from_the_cli(tmp_path, capsys):
    err = cli_error(capsys, ["train", "--device", "tpu", "--out", str(tmp_path / "run")])
    assert "unknown device 'tpu'" in err and "devices here: auto, cpu" in err


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps(tmp_path, capsys):
    err = cli_error(capsys, ["train", "--device", "mps", "--out", str(tmp_path / "run"), *TINY])
    assert "'mps' (Apple GPU) is not available" in err and "devices here: auto, cpu" in err


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu(tmp_path):
    with pytest.raises(ValueError, match=r"sees no GPU here; devices here: auto, cpu"):
        pretrained.load("mnist5k-sagan32", device="cuda")
    with pytest.raises(ValueError, match=r"sees no GPU here"):
        Trainer(tiny_config(tmp_path, device="cuda"))


# ---------------------------------------------------------------------------------------------
# Tensors: empty batches just work; wrong dtypes and sizes say so
# ---------------------------------------------------------------------------------------------


def test_sample_sizes():
    G = Generator(z_dim=16, base_channels=8)
    with pytest.raises(ValueError, match=r"whole number ≥ 0, got -5"):
        sample_images(G, -5)
    with pytest.raises(ValueError, match=r"got 2.5"):
        sample_images(G, 2.5)
    assert sample_images(G, 0).shape == (0, 1, 32, 32)


def test_trainer_sample_zero_is_an_empty_batch(tmp_path):
    trainer = Trainer(tiny_config(tmp_path))
    assert trainer.sample(0).shape == (0, 1, 32, 32)


def test_self_attention_on_an_empty_batch_just_works():
    layer = SelfAttention2d(16)
    x = torch.randn(0, 16, 8, 8)
    assert layer(x).shape == (0, 16, 8, 8)
    y, attention = layer(x, return_attention=True)
    assert y.shape == (0, 16, 8, 8) and attention.shape == (0, 64, 16)


@pytest.mark.parametrize("channels", [0, -8, 8.0, True])
def test_self_attention_needs_positive_integer_channels(channels):
    with pytest.raises(ValueError, match=r"channels must be a positive integer"):
        SelfAttention2d(channels)


def test_self_attention_dtype_errors():
    layer = SelfAttention2d(16)
    with pytest.raises(ValueError, match=r"input is torch.float64 .* weights are torch.float32"):
        layer(torch.randn(2, 16, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"floating-point feature maps, got dtype torch.int64"):
        layer(torch.ones(2, 16, 8, 8, dtype=torch.long))
    # A float64 layer takes float64 input: the check is about agreement, not about float32.
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    assert SelfAttention2d(16, spectral_norm=False).double()(x).dtype == torch.float64


def test_multi_head_attention_dtype_error():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"inputs are torch.float64 but this layer's weights"):
        mha(torch.randn(2, 3, 8, dtype=torch.float64))


def test_generator_and_discriminator_dtype_errors():
    G, D = Generator(z_dim=16, base_channels=8), Discriminator(base_channels=8)
    with pytest.raises(ValueError, match=r"z is torch.float64 .* z.to\(torch.float32\)"):
        G(torch.randn(2, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"uint8.*x.float\(\) / 127.5 - 1"):
        D(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast, mixed dtypes are the point
        assert D(torch.zeros(2, 1, 32, 32, dtype=torch.bfloat16)).shape == (2,)


def test_attention_function_rejects_integers_and_zero_width_keys():
    ints = torch.ones(2, 3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"must be floating point .* .float()"):
        scaled_dot_product_attention(ints, ints, ints)
    with pytest.raises(ValueError, match=r"width 0"):
        scaled_dot_product_attention(torch.ones(2, 3, 0), torch.ones(2, 3, 0), torch.ones(2, 3, 4))


def api_calls() -> dict:
    """name -> (a call with a bad argument, what its error must say)."""
    from sagan_edu.metrics import class_coverage, class_histogram, frechet_distance
    from sagan_edu.training import update_ema
    from sagan_edu.viz import plot_history

    G = Generator(z_dim=16, base_channels=8)
    return {
        "load_checkpoint(123)": (lambda: load_checkpoint(123), "path must be a string or a Path"),
        "sample_images('G')": (lambda: sample_images("G", 2), "must be a sagan_edu Generator"),
        "sample_images(seed='a')": (lambda: sample_images(G, 2, seed="a"), "seed must be a whole"),
        "update_ema(decay=1.5)": (lambda: update_ema(G, G, 1.5), r"decay must be in \[0, 1\]"),
        "class_coverage(zeros)": (
            lambda: class_coverage(torch.zeros(10)),
            "positive total, as class_histogram returns",
        ),
        "class_histogram(empty)": (
            lambda: class_histogram(torch.zeros(0, 1, 32, 32)),
            "holds 0 image.*pass at least 1",
        ),
        "frechet_distance(numpy)": (
            lambda: frechet_distance(np.zeros((3, 4)), np.zeros((3, 4))),
            "must be a torch.Tensor",
        ),
        "plot_history({})": (lambda: plot_history({}), "history lacks step"),
        "pretrained.load(None)": (lambda: pretrained.load(None), "name must be a string"),
        "Trainer(dict)": (lambda: Trainer({"steps": 2}), r"TrainConfig\(\*\*settings\)"),
        "scaled_dot_product_attention(scale=nan)": (
            lambda: scaled_dot_product_attention(*[torch.ones(1, 2, 4)] * 3, scale=math.nan),
            "scale must be a finite number",
        ),
        "pretrained.load(device='tpu')": (
            lambda: pretrained.load(device="tpu"),
            "unknown device 'tpu'.*devices here: auto, cpu",
        ),
    }


@pytest.mark.parametrize("name", list(api_calls()))
def test_public_functions_reject_bad_arguments_clearly(name):
    call, message = api_calls()[name]
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Metrics: the wrong range, too few images
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist5k", train=False, img_size=32).images[:20]


def test_fd_and_kid_refuses_zero_one_and_uint8_images(digits):
    zero_one = (digits + 1) / 2
    with pytest.raises(ValueError, match=r"look like \[0, 1\] images.*images \* 2 - 1"):
        fd_and_kid(digits, zero_one)
    pixels = ((digits + 1) * 127.5).round().to(torch.uint8)
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*images.float\(\) / 127.5 - 1"):
        fd_and_kid(digits, pixels)
    with pytest.raises(ValueError, match=r"look like 0..255 images.*images / 127.5 - 1"):
        fd_and_kid(pixels.float(), digits)


def test_fd_and_kid_names_the_minimum_number_of_images(digits):
    with pytest.raises(ValueError, match=r"holds 1 image.*at least 2 per set"):
        fd_and_kid(digits, digits[:1])
    with pytest.raises(ValueError, match=r"holds 0 image"):
        fd_and_kid(digits[:0], digits)
    with pytest.raises(ValueError, match=r"grey images \(B, 1, H, W\)"):
        fd_and_kid(digits, digits.repeat(1, 3, 1, 1))


def test_consistency_needs_two_images_and_the_score_needs_one():
    images = load_dataset("twin-shapes", length=2).images
    with pytest.raises(ValueError, match=r"at least 2 images.*consistency_score"):
        consistency(images[:1])
    with pytest.raises(ValueError, match=r"images is empty"):
        consistency_score(images[:0])
    both = consistency(images)
    assert math.isfinite(both["mean"]) and math.isfinite(both["std"])


# ---------------------------------------------------------------------------------------------
# Shipped weights: checksums and wrong files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    """A copy of the shipped weights folder that the tests may damage."""
    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS_DIR, folder)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    return folder


def test_a_flipped_byte_in_a_shipped_file_is_caught(weights_copy):
    pretrained.load("mnist5k-sagan32")  # the intact copy loads
    path = weights_copy / "mnist5k-sagan32.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the tensors
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged or was replaced.*SHA256SUMS.*Reinstall"):
        pretrained.load("mnist5k-sagan32")


def test_a_git_lfs_pointer_is_named(weights_copy):
    path = weights_copy / "twin-shapes-sagan32.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1862406\n")
    with pytest.raises(ValueError, match=r"Git LFS pointer.*git lfs pull"):
        pretrained.load("twin-shapes-sagan32")


def test_wrong_weight_files_outside_the_package(tmp_path):
    shipped = pretrained.WEIGHTS_DIR / "mnist5k-sagan32.safetensors"
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(shipped.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"cut.safetensors cannot be loaded: it is truncated"):
        pretrained.load(str(truncated))
    classifier = tmp_path / "classifier.safetensors"
    shutil.copy(pretrained.WEIGHTS_DIR / "mnist5k-classifier.safetensors", classifier)
    with pytest.raises(ValueError, match=r"holds no GAN generator.*some other model's"):
        pretrained.load(str(classifier))
    with pytest.raises(ValueError, match=r"training checkpoint use .*load_generator"):
        pretrained.load(str(tmp_path / "run" / "checkpoint.pt"))
    with pytest.raises(FileNotFoundError, match=r"no pretrained weights 'mnist5k-sagan'; shipped:"):
        pretrained.load("mnist5k-sagan")


# ---------------------------------------------------------------------------------------------
# Datasets the CLI must download
# ---------------------------------------------------------------------------------------------


def test_missing_torchvision_dataset_tells_cli_users_about_download(tmp_path, capsys):
    err = cli_error(capsys, ["train", "--dataset", "mnist", "--data-root", str(tmp_path / "data"),
                             "--out", str(tmp_path / "run"), *TINY])  # fmt: skip
    assert "sagan-edu train --download" in err and "mnist5k" in err


def test_failed_download_from_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    """It was a RuntimeError, which the CLI shows as a traceback (it means a bug there)."""
    import torchvision.datasets.mnist

    def no_network(url, *args, **kwargs):
        raise URLError("no route to host (test)")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_network)
    data, out = str(tmp_path / "data"), str(tmp_path / "run")
    argv = ["train", "--dataset", "mnist", "--download", "--data-root", data, "--out", out, *TINY]
    err = cli_error(capsys, argv)
    assert "downloading mnist into" in err and "no route to host (test)" in err
    assert "Check the internet connection" in err and not (tmp_path / "run").exists()


def test_download_setting_reaches_the_dataset_loader(tmp_path, monkeypatch):
    seen = {}
    real_load = training.load_dataset

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load("mnist5k", img_size=32)

    monkeypatch.setattr(training, "load_dataset", spy)
    Trainer(tiny_config(tmp_path, dataset="mnist", download=True))
    assert seen["download"] is True
    args = cli.build_parser().parse_args(["train", "--download"])
    assert cli.train_config(args).download is True


# ---------------------------------------------------------------------------------------------
# Misspelt settings, callbacks, batches larger than the data, incomplete checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("step", "steps"),
        ("bach_size", "batch_size"),
        ("lr", "lr_g or lr_d"),
        ("batch", "batch_size"),
    ],
)
def test_misspelt_setting_names_the_closest_ones(name, suggestion):
    with pytest.raises(TypeError, match=rf"no setting '{name}' \(did you mean {suggestion}\?\)"):
        TrainConfig(**{name: 1})
    with pytest.raises(TypeError, match=r"its settings are: dataset, data_root"):
        TrainConfig(xyz=1)


def test_callback_that_cannot_take_the_trainer_fails_at_start(tmp_path):
    with pytest.raises(ValueError, match=r"called as callback\(trainer\).*def callback\(trainer\)"):
        Trainer(tiny_config(tmp_path), callback=lambda: None)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_attention_sizes_the_networks_lack_fail_before_anything_is_written(tmp_path, monkeypatch):
    """--attention-at 32 used to fail only once the data had loaded, naming D alone, and left an
    empty run folder behind."""
    monkeypatch.setattr(training, "load_dataset", None)  # the check must come before the data
    with pytest.raises(ValueError, match=r"attention_at \(32,\) names no feature map of G and D "
                       r"at img_size=32 .*choose from 4, 8, 16 \(--attention-at\)"):  # fmt: skip
        Trainer(tiny_config(tmp_path, attention_at=(4, 32)))
    with pytest.raises(ValueError, match=r"\(7,\) names no feature map of G at img_size=64 "
                       r"\(attention_in='g'\); choose from 4, 8, 16, 32, 64"):  # fmt: skip
        Trainer(tiny_config(tmp_path, attention_at=(7,), attention_in="g", img_size=64))
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_the_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=4001 is more than the 4000 images .*≤ 4000"):
        Trainer(tiny_config(tmp_path, batch_size=4001))
    assert len(Trainer(tiny_config(tmp_path, batch_size=4000)).dataset) == 4000


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "mnist", "--data-root", "TMP/no-data"], "mnist is not in"),
        (["--batch-size", "4001"], "batch_size=4001 is more than the 4000 images"),
        (["--dataset", "twin-shapes", "--conditional"], "needs class labels"),
        (["--lr-d", "1e30", "--lr-g", "1e30"], "diverged: loss_d became nan by step 2"),
    ],
)
def test_a_failed_run_removes_the_folders_it_made(tmp_path, capsys, flags, message):
    """These runs used to leave new/run/ behind, empty but for the lock file (the last one fails
    on its second step, before its first checkpoint)."""
    out = tmp_path / "new" / "run"
    flags = [flag.replace("TMP", str(tmp_path)) for flag in flags]
    err = cli_error(capsys, ["train", "--steps", "2", "--out", str(out), *TINY, *flags])
    assert message in err
    assert not (tmp_path / "new").exists()


def test_a_failed_run_keeps_folders_it_did_not_make_and_everything_in_them(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    cli_error(capsys, ["train", "--out", str(mine), "--batch-size", "4001"])
    huge_lr = ["--lr-d", "1e30", "--lr-g", "1e30", "--steps", "2", *TINY]
    cli_error(capsys, ["train", "--out", str(mine / "run"), *huge_lr])
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # mine/run/ was this run's
    assert (mine / "notes.txt").read_text() == "my notes"


def test_ctrl_c_before_the_first_checkpoint_removes_the_new_folder_and_fit_can_go_on(
    tmp_path, monkeypatch, ctrl_c_at_step
):
    trainer = Trainer(tiny_config(tmp_path / "new", steps=2, checkpoint_every=2))
    real_step = ctrl_c_at_step(1)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (tmp_path / "new").exists()  # nothing was saved, so nothing is left
    monkeypatch.setattr(Trainer, "step", real_step)
    trainer.fit()  # the folder comes back with the checkpoint
    assert load_checkpoint(tmp_path / "new" / "run" / "checkpoint.pt")["step"] == 2


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("trained")
    training.train(tiny_config(folder, steps=2))
    return torch.load(folder / "run" / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("key", ["opt_g", "rng", "history"])
def test_resume_from_a_checkpoint_without_the_training_state(tmp_path, saved_state, key):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({k: v for k, v in saved_state.items() if k != key}, run / "checkpoint.pt")
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=rf"not the whole training state \(it lacks {key}\)"):
        Trainer(tiny_config(tmp_path, resume=True, steps=3))
    assert (run / "checkpoint.pt").read_bytes() == before
    assert load_generator_works(run / "checkpoint.pt")  # its generator is still usable


def load_generator_works(path: Path) -> bool:
    return training.load_generator(path).z_dim == 16


def test_weights_that_do_not_fit_their_config_name_the_file(tmp_path, saved_state):
    run = tmp_path / "run"
    run.mkdir()
    wider = dict(saved_state, config=dict(saved_state["config"], g_channels=16),
                 G_config=dict(saved_state["G_config"], base_channels=16))  # fmt: skip
    torch.save(wider, run / "checkpoint.pt")
    with pytest.raises(
        ValueError, match=r"checkpoint.pt: the saved G does not fit .*size mismatch"
    ):
        Trainer(tiny_config(tmp_path, resume=True, steps=3))
    with pytest.raises(
        ValueError, match=r"the saved G_ema does not fit .*another sagan_edu version"
    ):
        training.load_generator(run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"ema must be True .* got 'no'"):
        training.load_generator(run / "checkpoint.pt", ema="no")


def test_save_checkpoint_into_a_folder_path(tmp_path):
    trainer = Trainer(tiny_config(tmp_path))
    with pytest.raises(ValueError, match=r"is a folder; pass a file path such as .*checkpoint.pt"):
        trainer.save_checkpoint(tmp_path)


def test_a_folder_named_checkpoint_pt_is_refused_before_training(tmp_path, capsys):
    """It was found only at the first save, after the training, with a message about
    save_checkpoint's argument."""
    (tmp_path / "run" / "checkpoint.pt" / "mine").mkdir(parents=True)
    err = cli_error(capsys, ["train", "--steps", "1", "--out", str(tmp_path / "run"), *TINY])
    assert "checkpoint.pt is a folder, where the run saves its checkpoint; rename or move it" in err
    assert (tmp_path / "run" / "checkpoint.pt" / "mine").is_dir()


def test_cli_train_into_a_folder_with_someone_elses_figures(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "samples.png").write_bytes(b"my own picture")
    err = cli_error(capsys, ["train", "--steps", "1", "--out", str(folder), *TINY])
    assert "holds samples.png but no checkpoint.pt" in err and "--overwrite" in err
    assert (folder / "samples.png").read_bytes() == b"my own picture"
    assert main(["train", "--steps", "1", "--out", str(folder), "--overwrite", *TINY]) == 0
    assert (folder / "samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("command", "name"), [("sample", "grid.png"), ("export", "g.safetensors")])
def test_cli_sample_and_export_keep_an_existing_out_file(tmp_path, capsys, command, name):
    run = str(tmp_path / "run")
    assert main(["train", "--steps", "1", "--out", run, *TINY]) == 0
    out = tmp_path / name
    out.write_bytes(b"keep me")
    err = cli_error(capsys, [command, "--checkpoint", f"{run}/checkpoint.pt", "--out", str(out)])
    assert "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    argv = [command, "--checkpoint", f"{run}/checkpoint.pt", "--out", str(out), "--overwrite"]
    assert main(argv) == 0 and out.read_bytes() != b"keep me"


# ---------------------------------------------------------------------------------------------
# Models and layers: numpy arrays, lists, tensors on another device
# ---------------------------------------------------------------------------------------------


def not_tensor_calls() -> dict:
    """name -> (a call with a numpy array or list where a tensor belongs, the name it must say)."""
    G, D = Generator(z_dim=16, base_channels=8), Discriminator(base_channels=8)
    Gc = Generator(z_dim=16, base_channels=8, num_classes=10)
    z, x = torch.randn(2, 16), torch.randn(2, 1, 32, 32)
    return {
        "G(numpy z)": (lambda: G(z.numpy()), r"z must be .* got ndarray.*torch.from_numpy\(z\)"),
        "G(labels list)": (lambda: Gc(z, [1, 2]), r"y must be .* got list.*torch.tensor\(y\)"),
        "D(numpy images)": (lambda: D(x.numpy()), r"x must be .* got ndarray"),
        "SelfAttention2d(list)": (lambda: SelfAttention2d(16)([[0.0]]), r"x must be .* got list"),
        "MultiHeadAttention(mask=list)": (
            lambda: MultiHeadAttention(8, 2)(torch.randn(1, 3, 8), mask=[[True] * 3] * 3),
            r"mask must be .* got list",
        ),
        "scaled_dot_product_attention(numpy)": (
            lambda: scaled_dot_product_attention(*[np.zeros((2, 3, 4))] * 3),
            r"q must be a torch.Tensor, got ndarray",
        ),
    }


@pytest.mark.parametrize("name", list(not_tensor_calls()))
def test_layers_and_models_name_an_input_that_is_not_a_tensor(name):
    call, message = not_tensor_calls()[name]
    with pytest.raises(TypeError, match=message):
        call()


def test_inputs_on_another_device_than_the_weights():
    """'meta' tensors stand in for a GPU: the check compares devices, whatever they are."""
    G = Generator(z_dim=16, base_channels=8)
    with pytest.raises(ValueError, match=r"z is on meta but the Generator's weights are on cpu"):
        G(torch.randn(2, 16, device="meta"))
    with pytest.raises(
        ValueError, match=r"x is on cpu but the Discriminator's weights are on meta"
    ):
        Discriminator(base_channels=8).to("meta")(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x is on cpu .*SelfAttention2d's weights are on meta"):
        SelfAttention2d(16).to("meta")(torch.randn(1, 16, 4, 4))
    with pytest.raises(
        ValueError, match=r"query is on cpu .*weights are on meta.*query.to\('meta'\)"
    ):
        MultiHeadAttention(8, 2).to("meta")(torch.randn(1, 3, 8))
    Gc = Generator(z_dim=16, base_channels=8, num_classes=10)
    with pytest.raises(ValueError, match=r"labels y are on meta but the inputs are on cpu"):
        Gc(torch.randn(2, 16), torch.zeros(2, dtype=torch.long, device="meta"))


def test_class_metrics_refuse_pixels_in_another_range(digits):
    from sagan_edu.metrics import class_histogram, within_class_diversity

    for call in (class_histogram, within_class_diversity):
        with pytest.raises(ValueError, match=r"look like 0..255 images.*images / 127.5 - 1"):
            call(digits * 127.5 + 127.5)
        with pytest.raises(ValueError, match=r"look like \[0, 1\] images.*images \* 2 - 1"):
            call((digits + 1) / 2)
        with pytest.raises(ValueError, match=r"must be a torch.Tensor .* got ndarray"):
            call(digits.numpy())
    assert class_histogram(digits).sum() == len(digits)  # [-1, 1] digits are still counted


def test_frechet_distance_refuses_nan_features():
    from sagan_edu.metrics import frechet_distance

    bad = torch.randn(5, 4)
    bad[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"features_a holds NaN or infinite values"):
        frechet_distance(bad, torch.randn(5, 4))


def test_load_dataset_flags_must_be_booleans_and_sizes_may_be_numpy_integers():
    with pytest.raises(ValueError, match=r"train must be True or False, got 'no'"):
        load_dataset("mnist5k", train="no")  # truthy: it would have loaded the training split
    with pytest.raises(ValueError, match=r"download must be True or False, got 1"):
        load_dataset("mnist5k", download=1)
    with pytest.raises(ValueError, match=r"unknown dataset \['mnist5k'\]; choose one of mnist5k"):
        load_dataset(["mnist5k"])
    small = load_dataset("twin-shapes", length=np.int64(3), img_size=np.int64(32))
    assert small.images.shape == (3, 3, 32, 32)


def test_pretrained_load_says_what_is_wrong_with_a_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file at .*nope.safetensors; check the path"):
        pretrained.load(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match=r"is a folder; pass a .safetensors file or a shipped"):
        pretrained.load(tmp_path)
    with pytest.raises(ValueError, match=r"name is empty; pass a shipped name: mnist5k-noattn32"):
        pretrained.load("")


def test_a_tilde_in_out_means_the_home_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert tiny_config(tmp_path, out_dir="~/runs/a").out_dir == str(tmp_path / "home/runs/a")
    assert main(["train", "--steps", "1", "--out=~/runs/b", *TINY]) == 0  # no shell expansion
    assert (tmp_path / "home/runs/b/checkpoint.pt").is_file()
    grid = tmp_path / "home/grid.png"
    assert main(["sample", "--checkpoint=~/runs/b/checkpoint.pt", "--out=~/grid.png"]) == 0
    assert grid.is_file() and not (tmp_path / "~").exists()


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--steps", "2", "--out", out, *TINY]) == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--steps", "1", "--out", out, "--resume", *TINY]) == 0
    err = capsys.readouterr().err
    assert "warning: the checkpoint in" in err and "is at step 2, so steps=1 leaves nothing" in err
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# The toy GAN's config, ablations, sampling labels, the EMA and the course setup
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"steps": 0}, ValueError, "steps must be a positive integer, got 0"),
        ({"log_every": 0}, ValueError, "log_every must be a positive integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"lr_d": "1e-3"}, ValueError, r"lr_d must be a number, got '1e-3' \(a str\)"),
        ({"ema_decay": 1.5}, ValueError, r"ema_decay must be in \[0, 1\) or None"),
        ({"loss": "wgan"}, ValueError, "unknown loss 'wgan'; choose one of hinge, nonsaturating"),
        ({"betas": (0.5,)}, ValueError, "betas must be a pair"),
        ({"step": 10}, TypeError, r"ToyGANConfig has no setting 'step' \(did you mean steps\?\)"),
    ],
)
def test_toy_gan_config_is_checked_when_built(overrides, error, message):
    from sagan_edu.toy2d import ToyGANConfig

    with pytest.raises(error, match=message):
        ToyGANConfig(**overrides)
    assert ToyGANConfig(ema_decay=0.99, steps=np.int64(5)).steps == 5  # valid values still work


def more_api_calls() -> dict:
    from sagan_edu.attention_ablation import scaled_attention
    from sagan_edu.course import setup
    from sagan_edu.halves import half_agreement
    from sagan_edu.toy2d import train_toy_gan
    from sagan_edu.training import update_ema

    Gc = Generator(z_dim=16, base_channels=8, num_classes=10)
    return {
        "train_toy_gan(dict)": (lambda: train_toy_gan({"steps": 2}), r"ToyGANConfig\(\*\*settings"),
        "sample_images(labels=list)": (
            lambda: sample_images(Gc, 2, labels=[1, 2]),
            r"labels must be a \(n,\) tensor .*got list.*torch.tensor",
        ),
        "sample_images(seed=2**70)": (  # was torch's "Overflow when unpacking long long"
            lambda: sample_images(Gc, 2, seed=2**70),
            r"seed must fit in 64 bits \(-2\*\*63 to 2\*\*64 - 1\), got 1180591620717411303424",
        ),
        "update_ema(different widths)": (
            lambda: update_ema(Gc, Generator(z_dim=16, base_channels=16, num_classes=10), 0.9),
            "same architecture",
        ),
        "update_ema(decay='0.9')": (  # was torch's "'<=' not supported between ... 'str'"
            lambda: update_ema(Gc, Gc, "0.9"),
            r"decay must be in \[0, 1\] \(1 keeps the EMA unchanged\), got '0.9'",
        ),
        "scaled_attention(nan)": (
            lambda: scaled_attention(Gc, math.nan).__enter__(),
            r"scale must be a finite number \(0 switches attention off\), got nan",
        ),
        "course.setup('a')": (lambda: setup("a"), "seed must be a whole number, got 'a'"),
        "half_agreement(numpy)": (
            lambda: half_agreement(np.zeros((2, 3, 32, 32))),
            "images must be a torch.Tensor, got ndarray",
        ),
    }


@pytest.mark.parametrize("name", list(more_api_calls()))
def test_more_public_functions_reject_bad_arguments_clearly(name):
    call, message = more_api_calls()[name]
    with pytest.raises(ValueError, match=message):
        call()
