"""Inference-time attention ablations and the same-size residual control."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sagan_edu.attention import SelfAttention2d
from sagan_edu.attention_ablation import scaled_attention, uniform_attention
from sagan_edu.models import Discriminator, GatedResidualBlock, Generator
from sagan_edu.training import TrainConfig


def _generator_with_live_attention(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=16, img_size=32, img_channels=3, base_channels=8, attention_at=(8, 16))
    for i, block in enumerate(G.attention_layers().values()):
        block.gamma.data.fill_(0.7 + i)  # γ = 0 at init would make every test pass trivially
    return G.eval()


def test_scale_zero_is_the_model_without_its_attention_blocks():
    G = _generator_with_live_attention()
    without = copy.deepcopy(G)
    for key in list(without.attention.keys()):
        without.attention[key] = nn.Identity()  # the reference: the blocks taken out
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        normal = G(z)
        with scaled_attention(G, 0.0):
            ablated = G(z)
        expected = without(z)
    assert torch.equal(ablated, expected)
    assert not torch.allclose(normal, expected, atol=1e-3)  # attention did change the samples


def test_scaled_attention_multiplies_gamma_and_restores_bit_identically_even_on_error():
    G = _generator_with_live_attention()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    gammas = [b.gamma.item() for b in G.attention_layers().values()]
    with pytest.raises(RuntimeError, match="boom"), scaled_attention(G, 0.3):
        inside = [b.gamma.item() for b in G.attention_layers().values()]
        raise RuntimeError("boom")
    assert inside == pytest.approx([0.3 * g for g in gammas])
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_uniform_attention_is_the_mean_of_the_pooled_values():
    torch.manual_seed(3)
    block = SelfAttention2d(16).eval()  # spectral norm runs in float32 only
    block.gamma.data.fill_(0.5)
    x = torch.randn(2, 16, 6, 8)
    with torch.no_grad(), uniform_attention(block):
        y, weights = block(x, return_attention=True)
        y_fused = block(x)
        w_v = block.value.weight[:, :, 0, 0].double().numpy()  # (C/2, C), normalised
        w_o = block.out.weight[:, :, 0, 0].double().numpy()  # (C, C/2)
    assert block.uniform is False  # restored
    xs = x.double().numpy()  # the reference in float64
    expected = np.empty_like(xs)
    for b in range(2):
        values = np.einsum("vc,chw->vhw", w_v, xs[b])  # (C/2, 6, 8)
        pooled = [values[:, i : i + 2, j : j + 2].max(axis=(1, 2))
                  for i in range(0, 6, 2) for j in range(0, 8, 2)]  # fmt: skip
        mean_value = np.mean(pooled, axis=0)  # (C/2,): every query's output
        expected[b] = xs[b] + 0.5 * (w_o @ mean_value)[:, None, None]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_fused.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights.numpy(), 1 / 12)


def test_uniform_attention_restores_the_flag_and_changes_g_samples():
    G = _generator_with_live_attention()
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        normal = G(z)
        with uniform_attention(G):
            assert all(b.uniform for b in G.attention_layers().values())
            uniform = G(z)
        again = G(z)
    assert torch.equal(normal, again)
    # At initialisation the scores are small and softmax is close to uniform already, so the
    # change is small, but it must be there.
    assert (normal - uniform).abs().max() > 1e-6


@pytest.mark.parametrize("channels", [32, 64, 128, 256])
def test_residual_control_has_about_as_many_weights_as_attention(channels):
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    attention, residual = count(SelfAttention2d(channels)), count(GatedResidualBlock(channels))
    assert attention == 1.25 * channels**2 + 1  # 4 convs and γ, by hand
    assert abs(residual - attention) / attention < 0.03


def test_residual_control_is_the_identity_at_gamma_zero_and_not_otherwise():
    block = GatedResidualBlock(32).eval()
    x = torch.randn(2, 32, 8, 8)
    assert torch.equal(block(x), x)
    block.gamma.data.fill_(1.0)
    assert not torch.allclose(block(x), x)


def test_models_and_config_choose_the_block_and_the_network():
    G = Generator(base_channels=8, attention_at=(16,), attention_block="residual")
    D = Discriminator(base_channels=8, attention_at=(16,), attention_scaled=True)
    assert isinstance(G.attention_layers()["16x16"], GatedResidualBlock)
    assert D.attention_layers()["16x16"].scaled
    assert Generator(**G.config()).config() == G.config()
    with pytest.raises(ValueError, match="attention_block"):
        Generator(base_channels=8, attention_block="conv")
    with pytest.raises(ValueError, match="attention_in"):
        TrainConfig(attention_in="both networks")
