"""Tests of the 2-D toy: the ring data, the mode measures, the models and the training loop."""

from __future__ import annotations

import math

import pytest
import torch

from sagan_edu.toy2d import (
    ToyGANConfig,
    assign_modes,
    dirac_gan,
    high_quality_fraction,
    mode_counts,
    modes_covered,
    ring_centers,
    sample_ring,
    toy_discriminator,
    toy_generator,
    train_toy_gan,
)


def test_ring_centers_lie_evenly_on_the_circle():
    centers = ring_centers(8, radius=2.0)
    assert centers.shape == (8, 2)
    torch.testing.assert_close(centers.norm(dim=1), torch.full((8,), 2.0))
    torch.testing.assert_close(centers[0], torch.tensor([2.0, 0.0]))
    chord = 2 * 2.0 * math.sin(math.pi / 8)  # neighbours are one eighth of the circle apart
    torch.testing.assert_close((centers[1] - centers[0]).norm(), torch.tensor(chord))


def test_real_data_covers_every_mode_with_high_quality():
    real = sample_ring(4000, generator=torch.Generator().manual_seed(0))
    assert real.shape == (4000, 2)
    assert modes_covered(real) == 8
    assert high_quality_fraction(real) > 0.98  # 3 std of a 2-D Gaussian hold 98.9 %
    counts = mode_counts(real)
    assert counts.sum() == (assign_modes(real) >= 0).sum()
    assert counts.min() > 400  # about 500 each


def test_sampling_is_reproducible_from_a_generator():
    a = sample_ring(10, generator=torch.Generator().manual_seed(3))
    b = sample_ring(10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_a_collapsed_generator_covers_one_mode():
    on_one_mode = ring_centers()[2] + 0.01 * torch.randn(500, 2)
    assert modes_covered(on_one_mode) == 1
    assert mode_counts(on_one_mode).tolist() == [0, 0, 500, 0, 0, 0, 0, 0]


def test_points_between_modes_hit_none():
    between = torch.zeros(100, 2)  # the centre of the ring is 2 away from every mode
    assert (assign_modes(between) == -1).all()
    assert high_quality_fraction(between) == 0.0
    assert modes_covered(between) == 0


def test_a_mode_needs_a_minimum_share_of_the_samples():
    centers = ring_centers()
    points = torch.cat([centers[0].expand(995, 2), centers[1].expand(5, 2)])  # 0.5 % on mode 1
    assert modes_covered(points) == 1
    assert modes_covered(points, min_fraction=0.001) == 2


def test_assign_modes_rejects_the_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        assign_modes(torch.zeros(5, 3))


def test_models_have_the_right_shapes():
    G, D = toy_generator(z_dim=4, hidden=16), toy_discriminator(hidden=16)
    points = G(torch.randn(7, 4))
    assert points.shape == (7, 2)
    assert D(points).shape == (7,)


def test_a_spectrally_normalised_discriminator_is_at_most_lipschitz():
    torch.manual_seed(0)
    for bound in (1.0, 10.0):
        D = toy_discriminator(hidden=32, sn=True, lipschitz=bound)
        for _ in range(20):  # let the power iterations converge
            D(torch.randn(8, 2))
        D.eval()
        x = torch.randn(256, 2, requires_grad=True)
        (grad,) = torch.autograd.grad(D(x).sum(), x)
        assert grad.norm(dim=1).max() <= bound * 1.01


def test_training_records_history_and_is_reproducible():
    config = ToyGANConfig(steps=30, batch_size=32, hidden=16, log_every=10, ema_decay=0.99)
    first, second = train_toy_gan(config), train_toy_gan(config)
    assert first.history["step"] == [10.0, 20.0, 30.0]
    expected = {"step", "loss_d", "loss_g", "modes", "hq", "d_grad", "modes_ema", "hq_ema"}
    assert set(first.history) == expected
    assert all(math.isfinite(v) for values in first.history.values() for v in values)
    assert first.history == second.history
    assert first.G_ema is not None


def test_training_with_every_switch_runs():
    config = ToyGANConfig(
        loss="hinge", sn=True, lipschitz=10.0, lr_g=1e-4, lr_d=4e-4, betas=(0.0, 0.9),
        steps=12, batch_size=16, hidden=16, log_every=5,
    )  # fmt: skip
    run = train_toy_gan(config)
    assert run.G_ema is None
    assert run.history["step"] == [5.0, 10.0, 12.0]  # and a last entry at the end


def test_a_short_plain_run_moves_the_samples_towards_the_modes():
    def median_miss(G) -> float:  # median distance from a sample to its nearest mode
        with torch.no_grad():
            points = G(torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)))
        return float(torch.cdist(points, ring_centers()).min(dim=1).values.median())

    torch.manual_seed(0)
    before = median_miss(toy_generator())  # the same initial G as the run's (same seed)
    run = train_toy_gan(ToyGANConfig(steps=400, lr_g=1e-3, lr_d=1e-3, log_every=400, seed=0))
    assert median_miss(run.G) < 0.5 * before


def test_dirac_gan_circles_with_momentum_and_settles_without():
    with_momentum = dirac_gan(600, lr_g=0.02, lr_d=0.02, betas=(0.5, 0.999))
    without = dirac_gan(600, lr_g=0.02, lr_d=0.02, betas=(0.0, 0.9))
    assert with_momentum.shape == (600, 2)
    assert with_momentum[300:].norm(dim=1).min() > 0.3  # an orbit that keeps its distance
    assert without[300:].norm(dim=1).mean() < 0.1  # close to the equilibrium (0, 0)


def test_dirac_gan_runs_with_the_hinge_loss():
    path = dirac_gan(20, lr_g=0.01, lr_d=0.04, loss="hinge")
    assert torch.isfinite(path).all()
    assert path[0, 1] != 0  # D moved at the first step
