"""Shape-only and colour-only agreement of the two halves of twin-shapes images."""

from __future__ import annotations

import pytest
import torch

from sagan_edu.data import COLOURS, SHAPES, _draw_shapes, load_dataset
from sagan_edu.halves import half_agreement, half_colours, half_shapes


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
