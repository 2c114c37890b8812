"""Tests of the shipped weights and of exporting a checkpoint as safetensors."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from sagan_edu import cli, training
from sagan_edu.data import load_dataset
from sagan_edu.pretrained import (
    RECIPES,
    WEIGHTS_DIR,
    available,
    export_pretrained,
    load,
    load_pretrained,
    training_info,
)
from sagan_edu.training import TrainConfig, load_generator, sample_images


def test_export_then_load_gives_the_checkpoints_models(tmp_path):
    config = TrainConfig(z_dim=16, g_channels=8, d_channels=8, batch_size=8, steps=2,
                         out_dir=str(tmp_path / "run"), progress=False)  # fmt: skip
    trainer = training.train(config)
    path = export_pretrained(trainer.checkpoint_path, tmp_path / "w.safetensors")
    G, D = load_pretrained(str(path))
    assert not G.training and not D.training
    assert torch.equal(
        sample_images(G, 4, seed=5),
        sample_images(load_generator(trainer.checkpoint_path), 4, seed=5),
    )
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    trainer.D.eval()
    assert torch.equal(D(x), trainer.D(x))


def test_python_api_writers_keep_an_existing_file_unless_told_to_replace_it(tmp_path):
    """Only the CLI refused before: export_pretrained and metrics.train_classifier replaced
    any file at their path, the shipped classifier included."""
    from sagan_edu.metrics import train_classifier

    config = TrainConfig(z_dim=16, g_channels=8, d_channels=8, batch_size=8, steps=1,
                         out_dir=str(tmp_path / "run"), progress=False)  # fmt: skip
    trainer = training.train(config)
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my own weights")
    with pytest.raises(
        ValueError, match=r"mine.safetensors exists; pass another out_path, or overwrite=True"
    ):
        export_pretrained(trainer.checkpoint_path, mine)
    with pytest.raises(ValueError, match=r"mine.safetensors exists; .*overwrite=True"):
        train_classifier(mine, epochs=1)  # refused before any training
    assert mine.read_bytes() == b"my own weights"
    export_pretrained(trainer.checkpoint_path, mine, overwrite=True)
    assert load(str(mine)).z_dim == 16


def test_float16_generator_only_export(tmp_path):
    config = TrainConfig(z_dim=16, g_channels=8, d_channels=8, batch_size=8, steps=2,
                         out_dir=str(tmp_path / "run"), progress=False)  # fmt: skip
    trainer = training.train(config)
    full = export_pretrained(trainer.checkpoint_path, tmp_path / "full.safetensors")
    half = export_pretrained(trainer.checkpoint_path, tmp_path / "half.safetensors",
                             dtype=torch.float16, keep_discriminator=False)  # fmt: skip
    # G alone in half precision: well under half the bytes of G and D in float32.
    assert half.stat().st_size < 0.4 * full.stat().st_size
    G = load(str(half))
    assert next(G.parameters()).dtype == torch.float32  # loaded back as float32
    reference = sample_images(load_generator(trainer.checkpoint_path), 8, seed=1)
    difference = (sample_images(G, 8, seed=1) - reference).abs()
    assert 0 < difference.max() < 1e-2  # rounded, but far below one 8-bit grey level (0.0078)
    with pytest.raises(ValueError, match=r"ships only its generator: use load\("):
        load_pretrained(str(half))


def test_every_recipe_is_shipped_and_matches_its_file():
    assert available() == sorted(RECIPES)  # the metrics' classifier is not listed
    parser = cli.build_parser()
    for name, recipe in RECIPES.items():
        wanted = asdict(cli.train_config(parser.parse_args(["train", *recipe["train_args"]])))
        info = training_info(name)
        for key in ("dataset", "img_size", "steps", "g_channels", "d_channels", "batch_size",
                    "lr_g", "lr_d", "n_dis", "loss", "ema_decay", "seed", "arch"):  # fmt: skip
            assert info[key] == wanted[key], (name, key)
        assert tuple(info["attention_at"]) == tuple(wanted["attention_at"]), name
        assert info["step"] == wanted["steps"], f"{name} stopped before its last step"
        if recipe["keep_discriminator"]:
            load_pretrained(name)
    # The pairs differ only in attention.
    for dataset in ("mnist5k", "twin-shapes"):
        with_attention = training_info(f"{dataset}-sagan32")
        without = training_info(f"{dataset}-noattn32")
        differ = {k for k in with_attention if with_attention[k] != without[k]}
        assert differ <= {"attention_at", "out_dir"}, (dataset, differ)
    gan_bytes = sum((WEIGHTS_DIR / f"{name}.safetensors").stat().st_size for name in RECIPES)
    assert gan_bytes < 10.5e6, f"the shipped generators take {gan_bytes / 1e6:.1f} MB"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_generators_load_on_cpu_and_sample(name):
    G = load(name)
    channels = 1 if name.startswith("mnist5k") else 3
    images = sample_images(G, 8, seed=0)
    assert images.shape == (8, channels, 32, 32)
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    assert images.std() > 0.2  # not a flat grey: a trained generator draws something
    layers = G.attention_layers()
    if "sagan" in name:
        assert list(layers) == ["16x16"] and abs(layers["16x16"].gamma.item()) > 0.01
    else:
        assert layers == {}


def test_shipped_weights_are_a_trained_sagan():
    G, D = load_pretrained("mnist5k-sagan32")
    assert list(G.attention_layers()) == ["16x16"] and list(D.attention_layers()) == ["16x16"]
    assert training_info()["step"] >= 1000
    assert torch.equal(sample_images(load("mnist5k-sagan32"), 2), sample_images(G, 2))
    # Trained: γ has moved away from 0, and D tells real digits from noise.
    assert abs(G.attention_layers()["16x16"].gamma.item()) > 0.01
    real = load_dataset("mnist5k", train=False, img_size=32).images[:64]
    noise = torch.rand_like(real) * 2 - 1
    with torch.no_grad():
        assert D(real).mean() > D(noise).mean() + 1.0
        images = sample_images(G, 16)
    assert images.shape == (16, 1, 32, 32)
    # Digits are mostly background: most pixels near -1, a few near +1.
    assert (images < -0.8).float().mean() > 0.5 and (images > 0.5).float().mean() > 0.05


def test_unknown_name_says_what_is_shipped():
    with pytest.raises(FileNotFoundError, match="mnist5k-sagan32"):
        load_pretrained("cifar-biggan")
