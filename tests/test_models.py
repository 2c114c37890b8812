"""Generator and Discriminator: shapes, attention placement, spectral norm, conditioning, errors."""

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sagan_edu.attention import SelfAttention2d
from sagan_edu.models import (
    Discriminator,
    Generator,
    channels_at,
    discriminator_sizes,
    generator_sizes,
)
from sagan_edu.spectral_norm import SpectralNorm

SMALL = {"base_channels": 8}  # keeps every test fast on a CPU
Z_DIM = 16
CLASSES = 3


def make_pair(img_size=32, attention_at=(16,), num_classes=None, arch="dcgan"):
    kwargs = {
        "img_size": img_size,
        "img_channels": 3,
        "attention_at": attention_at,
        "num_classes": num_classes,
        "arch": arch,
        **SMALL,
    }
    return Generator(z_dim=Z_DIM, **kwargs), Discriminator(**kwargs)


def labels(num_classes, batch=2):
    return None if num_classes is None else torch.arange(batch) % num_classes


def placements(img_size):
    return [(), (16,), (8, img_size // 2)]


CASES = [
    (img_size, arch, num_classes, attention_at)
    for img_size in (32, 64, 128)
    for arch in ("dcgan", "resnet")
    for num_classes in (None, CLASSES)
    for attention_at in placements(img_size)
]


@pytest.mark.parametrize(("img_size", "arch", "num_classes", "attention_at"), CASES)
def test_shapes_range_and_attention_layers(img_size, arch, num_classes, attention_at):
    torch.manual_seed(0)
    G, D = make_pair(img_size, attention_at, num_classes, arch)
    y = labels(num_classes)

    images = G(torch.randn(2, Z_DIM), y)
    assert images.shape == (2, 3, img_size, img_size)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images, y).shape == (2,)

    g_keys = [f"{s}x{s}" for s in sorted(attention_at)]
    assert list(G.attention_layers()) == g_keys  # G's maps grow: forward order is ascending
    assert list(D.attention_layers()) == g_keys[::-1]  # D's maps shrink
    for layer in [*G.attention_layers().values(), *D.attention_layers().values()]:
        assert isinstance(layer, SelfAttention2d)
        assert layer.gamma.item() == 0.0


def test_feature_sizes_and_channel_schedule():
    assert generator_sizes(32) == [4, 8, 16, 32]
    assert discriminator_sizes(32) == [16, 8, 4]
    assert discriminator_sizes(128) == [64, 32, 16, 8, 4]
    assert [channels_at(s, 32, 32) for s in generator_sizes(32)] == [256, 128, 64, 32]
    assert [channels_at(s, 128, 8) for s in generator_sizes(128)] == [64, 64, 64, 32, 16, 8]


def test_attention_layers_have_the_maps_channels():
    G, D = make_pair(attention_at=(8, 16))
    assert G.attention_layers()["8x8"].channels == channels_at(8, 32, 8)
    assert D.attention_layers()["16x16"].channels == channels_at(16, 32, 8)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_no_attention_baseline_has_no_attention_modules(arch):
    G, D = make_pair(attention_at=(), arch=arch)
    for model in (G, D):
        assert model.attention_layers() == {}
        assert not any(isinstance(m, SelfAttention2d) for m in model.modules())


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_gamma_gets_a_gradient_at_zero(arch):
    """dL/dγ = ⟨dL/dy, o⟩ is non-zero even at γ = 0, so attention can switch itself on."""
    torch.manual_seed(0)
    G, D = make_pair(attention_at=(8, 16), num_classes=CLASSES, arch=arch)
    y = labels(CLASSES, batch=4)
    images = G(torch.randn(4, Z_DIM), y)
    (images * torch.randn_like(images)).sum().backward()
    D(torch.randn(4, 3, 32, 32), y).sum().backward()
    for model in (G, D):
        for layer in model.attention_layers().values():
            assert layer.gamma.grad is not None
            assert layer.gamma.grad.abs().item() > 0


def _normalised_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_every_conv_and_linear_is_spectrally_normalised(arch):
    torch.manual_seed(0)
    G, D = make_pair(attention_at=(8, 16), num_classes=CLASSES, arch=arch)
    y = labels(CLASSES, batch=4)
    # Training-mode forwards, each one power-iteration step. Our orthogonally initialised layers
    # have σ exact from the start; the attention convs keep PyTorch's default init, whose top two
    # singular values are close, so their estimate needs some steps to settle.
    with torch.no_grad():
        for _ in range(20):
            D(G(torch.randn(4, Z_DIM), y), y)

    checked = 0
    for model in (G, D):
        for module in _normalised_layers(model):
            if isinstance(module, nn.Embedding) and module is not D.projection:
                continue  # conditional BatchNorm's γ/β tables: deliberately not normalised
            assert parametrize.is_parametrized(module, "weight"), module
            assert isinstance(module.parametrizations.weight[0], SpectralNorm)
            with torch.no_grad():
                sigma = torch.linalg.matrix_norm(module.weight.flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.02), module
            checked += 1
    assert isinstance(D.projection, nn.Embedding)
    assert checked > 20


def test_projection_discriminator_uses_the_label():
    torch.manual_seed(0)
    _, D = make_pair(num_classes=CLASSES)
    D.eval()
    x = torch.randn(1, 3, 32, 32).repeat(2, 1, 1, 1)  # the same image twice
    logits = D(x, torch.tensor([0, 1]))
    assert not torch.isclose(logits[0], logits[1])


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conditional_generator_uses_the_label(arch):
    torch.manual_seed(0)
    G, _ = make_pair(num_classes=CLASSES, arch=arch)
    G.eval()
    z = torch.randn(1, Z_DIM).repeat(2, 1)  # the same z twice
    images = G(z, torch.tensor([0, 2]))
    assert not torch.allclose(images[0], images[1])


def test_config_rebuilds_the_same_model():
    G, D = make_pair(img_size=64, attention_at=(32, 8), num_classes=CLASSES, arch="resnet")
    for model, cls in ((G, Generator), (D, Discriminator)):
        config = json.loads(json.dumps(model.config()))
        assert config["attention_at"] == [8, 32]
        rebuilt = cls(**config)
        rebuilt.load_state_dict(model.state_dict())  # same parameters, same shapes


def test_defaults():
    G, D = Generator(), Discriminator()
    assert (G.z_dim, G.img_size, G.img_channels, G.base_channels) == (128, 32, 1, 32)
    assert (G.num_classes, G.arch) == (None, "dcgan")
    assert G.attention_at == D.attention_at == (16,)
    assert D(G(torch.randn(2, 128))).shape == (2,)


# ---------------------------------------------------------------------------------------------
# Bad configurations and inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [Generator, Discriminator])
@pytest.mark.parametrize("img_size", [48, 33, 256])
def test_img_size_must_be_supported(model, img_size):
    with pytest.raises(ValueError, match="img_size must be one of 32, 64, 128"):
        model(img_size=img_size)


@pytest.mark.parametrize("model", [Generator, Discriminator])
def test_unknown_arch(model):
    with pytest.raises(ValueError, match=r"unknown arch 'biggan'; choose one of 'dcgan', 'resnet'"):
        model(arch="biggan")


def test_attention_size_must_exist():
    with pytest.raises(ValueError, match=r"Generator has no 2 feature map.*4, 8, 16, 32"):
        Generator(attention_at=(2,))
    with pytest.raises(ValueError, match=r"Discriminator has no 32 feature map.*16, 8, 4"):
        Discriminator(attention_at=(16, 32))
    with pytest.raises(ValueError, match=r"collection of feature-map sizes such as \(16,\)"):
        Generator(attention_at=16)


@pytest.mark.parametrize("base_channels", [0, 12, 4])
def test_base_channels_multiple_of_8(base_channels):
    with pytest.raises(ValueError, match="base_channels must be a positive multiple of 8"):
        Generator(base_channels=base_channels)


def test_conditional_models_need_labels():
    G, D = make_pair(num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=3\): pass labels y"):
        G(torch.randn(2, Z_DIM))
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=3\): pass labels y"):
        D(torch.randn(2, 3, 32, 32))


def test_unconditional_models_refuse_labels():
    G, D = make_pair()
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="Generator is unconditional"):
        G(torch.randn(2, Z_DIM), y)
    with pytest.raises(ValueError, match="Discriminator is unconditional"):
        D(torch.randn(2, 3, 32, 32), y)


@pytest.mark.parametrize("bad", [[0, 3], [-1, 0]])
def test_labels_out_of_range(bad):
    G, D = make_pair(num_classes=CLASSES)
    y = torch.tensor(bad)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 2\]"):
        G(torch.randn(2, Z_DIM), y)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 2\]"):
        D(torch.randn(2, 3, 32, 32), y)


def test_labels_dtype_and_shape():
    G, _ = make_pair(num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"torch.long tensor, got torch.float32; use y.long\(\)"):
        G(torch.randn(2, Z_DIM), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels y must have shape \(2,\), got \(3,\)"):
        G(torch.randn(2, Z_DIM), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("shape", [(2, Z_DIM + 1), (Z_DIM,), (2, Z_DIM, 1)])
def test_z_with_the_wrong_shape(shape):
    G, _ = make_pair()
    with pytest.raises(ValueError, match=rf"z must have shape \(batch, z_dim={Z_DIM}\)"):
        G(torch.randn(shape))


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 64, 64), (3, 32, 32)])
def test_images_with_the_wrong_shape(shape):
    _, D = make_pair()
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 3, 32, 32\)"):
        D(torch.randn(shape))
