"""Shape-only and colour-only agreement of the two halves of twin-shapes images."""

from __future__ import annotations

import math

import pytest
import torch

from sagan_edu.data import COLOURS, SHAPES, _draw_shapes, load_dataset
from sagan_edu.halves import (
    chance_agreement,
    cohens_kappa,
    half_agreement,
    half_colours,
    half_shapes,
)


def _half(kind: int, colour: int, cy: float = 12.0, cx: float = 7.0) -> torch.Tensor:
    """One shape of known kind and colour on a (3, 32, 16) canvas, in [-1, 1]."""
    t = torch.tensor
    drawn = _draw_shapes(t([kind]), t([colour]), t([3.5]), t([cy]), t([cx]), height=32, width=16)
    return drawn[0] * 2 - 1


def _image(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return torch.cat([left, right], dim=-1)  # (3, 32, 32)


def test_the_classifiers_read_known_shapes_and_colours_anywhere_in_the_half():
    halves, kinds, colours = [], [], []
    for kind in range(len(SHAPES)):
        for colour in range(len(COLOURS)):
            for cy, cx in ((6.0, 5.0), (20.0, 9.0)):
                halves.append(_half(kind, colour, cy, cx))
                kinds.append(kind)
                colours.append(colour)
    halves = torch.stack(halves)
    predicted, confidence = half_shapes(halves)
    assert predicted.tolist() == kinds
    assert confidence.min() > 0.9
    assert half_colours(halves).tolist() == colours


def test_hand_built_images_agree_in_exactly_what_they_share():
    same_colour = _image(_half(0, 2), _half(2, 2))  # ring and h-bar, both blue
    same_shape = _image(_half(1, 0, 8.0), _half(1, 4, 20.0))  # two x-crosses, red and cyan
    both = _image(_half(3, 5), _half(3, 5, 22.0, 5.0))
    scores = half_agreement(torch.stack([same_colour, same_shape, both]))
    assert scores["shape"].tolist() == [0.0, 1.0, 1.0]
    assert scores["colour"].tolist() == [1.0, 0.0, 1.0]
    assert scores["shape_left"].tolist() == [0, 1, 3] and scores["shape_right"].tolist() == [
        2,
        1,
        3,
    ]
    assert scores["colour_left"].tolist() == [2, 0, 5] and scores["colour_right"].tolist() == [
        2,
        4,
        5,
    ]


def test_real_twins_agree_and_independent_halves_agree_by_chance():
    twins = half_agreement(load_dataset("twin-shapes", train=False, length=400).images)
    assert twins["shape"].mean() == 1.0 and twins["colour"].mean() == 1.0
    independent = half_agreement(load_dataset("local-shapes", train=False, length=2000).images)
    # chance: 1/4 of kinds and 1/6 of colours match; binomial standard errors ≈ 0.01
    assert independent["shape"].mean().item() == pytest.approx(1 / 4, abs=0.04)
    assert independent["colour"].mean().item() == pytest.approx(1 / 6, abs=0.04)


def test_grey_images_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="colour images"):
        half_agreement(torch.zeros(2, 1, 32, 32))


def test_chance_and_kappa_of_a_hand_computed_example():
    left, right = [0, 0, 1, 2], [0, 1, 1, 1]
    # P(left) = (1/2, 1/4, 1/4), P(right) = (1/4, 3/4, 0): chance = 1/8 + 3/16 = 5/16.
    # Samples 1 and 3 agree: agreement 1/2, kappa = (1/2 - 5/16) / (1 - 5/16) = 3/11.
    assert chance_agreement(left, right) == pytest.approx(5 / 16)
    assert cohens_kappa(left, right) == pytest.approx(3 / 11)
    # The float labels ablation.json records give the same answer as ints and tensors.
    assert cohens_kappa([0.0, 0.0, 1.0, 2.0], torch.tensor([0, 1, 1, 1])) == pytest.approx(3 / 11)


def test_perfect_agreement_gives_kappa_one_and_single_class_gives_nan():
    labels = [0, 3, 3, 1, 2, 2, 2]
    assert cohens_kappa(labels, labels) == pytest.approx(1.0)
    # Both halves always one class: chance is 1, kappa is 0 / 0.
    assert chance_agreement([2, 2, 2], [2, 2, 2]) == 1.0
    assert math.isnan(cohens_kappa([2, 2, 2], [2, 2, 2]))


def test_chance_matches_a_brute_force_count_over_all_pairs_of_samples():
    # chance = the probability that the left half of one sample and the right half of another,
    # both drawn at random (with replacement), share a class: count it over every pair.
    generator = torch.Generator().manual_seed(0)
    left = torch.randint(0, 4, (37,), generator=generator).tolist()
    right = torch.randint(0, 3, (37,), generator=generator).tolist()
    pairs = sum(a == b for a in left for b in right) / (len(left) * len(right))
    agreement = sum(a == b for a, b in zip(left, right, strict=True)) / len(left)
    assert chance_agreement(left, right) == pytest.approx(pairs)
    assert cohens_kappa(left, right) == pytest.approx((agreement - pairs) / (1 - pairs))


def test_independent_halves_with_skewed_classes_sit_at_their_own_chance():
    # Like a generator that draws mostly bars: classes far from equally common, halves independent.
    generator = torch.Generator().manual_seed(1)
    p_left, p_right = torch.tensor([0.05, 0.15, 0.5, 0.3]), torch.tensor([0.1, 0.1, 0.4, 0.4])
    left = torch.multinomial(p_left, 200_000, replacement=True, generator=generator)
    right = torch.multinomial(p_right, 200_000, replacement=True, generator=generator)
    expected = (p_left * p_right).sum().item()  # 0.34, well above 1/4
    assert chance_agreement(left, right) == pytest.approx(expected, abs=0.005)
    # the raw agreement is high, but no higher than chance: kappa about 0 (its s.e. ≈ 0.003)
    assert (left == right).float().mean().item() == pytest.approx(expected, abs=0.005)
    assert cohens_kappa(left, right) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize(
    ("left", "right", "message"),
    [
        ([0, 1, 2], [0, 1], "3 left and 2 right"),
        ([], [], "empty"),
        ([0, -1], [0, 1], "negative"),
        ([0, 1.5], [0, 1], "whole-number"),
    ],
)
def test_bad_labels_are_refused_with_a_clear_error(left, right, message):
    with pytest.raises(ValueError, match=message):
        cohens_kappa(left, right)
    with pytest.raises(ValueError, match=message):
        chance_agreement(left, right)
