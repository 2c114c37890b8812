"""Tests of the shipped weights and of exporting a checkpoint as safetensors."""

from __future__ import annotations

import pytest
import torch

from sagan_edu import training
from sagan_edu.data import load_dataset
from sagan_edu.pretrained import available, export_pretrained, load, load_pretrained, training_info
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


def test_shipped_weights_are_a_trained_sagan():
    assert available() == ["mnist5k-sagan32"]  # the metrics' classifier is not listed
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
