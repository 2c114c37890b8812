"""Shape apart from colour: what each half of a twin-shapes image holds, and whether they agree.

The consistency score (sagan_edu.data.consistency_score) compares the two halves pixel by pixel,
so colour and shape are mixed in one number. Here each half is read separately:

- shape: a tiny colour-blind CNN classifies the half as ring, x-cross, h-bar or v-bar. It sees
  only the half's *coverage* (the brightest channel of each pixel, which is the shape's mask
  for every colour in the dataset, since each colour has a channel at full value), scaled so the
  half's brightest pixel is 1. Trained on synthetic halves (seeded, in seconds) and shipped in
  sagan_edu/weights/shape-classifier.safetensors.
- colour: the coverage-weighted mean colour of the half, scaled to a maximum channel of 1, then
  the nearest of the six dataset colours.

Agreement of an image = 1 if both halves get the same class, else 0. Real twin-shapes images
agree in both (≈ 1); halves drawn independently (local-shapes) agree by chance: 1/4 in shape,
1/6 in colour. A generator that matches colour but not shape lands near (1/4, 1): the two
numbers tell which long-range property it learned.

The 1/4 and 1/6 are chance for halves whose classes are equally common. A generator's are not:
one that draws mostly bars has halves that match in shape by chance far more often than 1/4.
`chance_agreement` gives the chance level of a model's own halves, and `cohens_kappa` the
agreement measured against it (Cohen's kappa: 0 = no more than chance, 1 = always the same).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sagan_edu.data import COLOURS, SHAPES, _draw_shapes, _shape_params

__all__ = [
    "SHAPE_CLASSIFIER_PATH",
    "ShapeClassifier",
    "chance_agreement",
    "cohens_kappa",
    "coverage",
    "half_agreement",
    "half_colours",
    "half_shapes",
    "load_shape_classifier",
    "train_shape_classifier",
]

SHAPE_CLASSIFIER_PATH = Path(__file__).parent / "weights" / "shape-classifier.safetensors"


def coverage(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 1, H, W) in [0, 1]: the brightest channel, colour-blind."""
    return ((images.float() + 1) / 2).clamp(0, 1).amax(dim=1, keepdim=True)


def _normalise(mask: torch.Tensor) -> torch.Tensor:
    """Scale each (B, 1, H, W) half so its brightest pixel is 1: dim and bright shapes alike."""
    return mask / mask.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


class ShapeClassifier(nn.Module):
    """A half's normalised coverage (B, 1, H, W) -> shape logits (B, 4), in the order of SHAPES.

    Three 3×3 convs and a global max pool: where the shape sits does not matter, only its form.
    """

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.linear = nn.Linear(32, len(SHAPES))

    def forward(self, halves: torch.Tensor) -> torch.Tensor:
        h = self.convs(halves)  # (B, 32, H/2, W/2)
        return self.linear(h.amax(dim=(2, 3)))  # (B, 4)


def _synthetic_halves(n: int, size: int, generator: torch.Generator) -> tuple:
    """n random shapes drawn like one half of a twin-shapes image: (images (n, 3, size, size/2)
    in [-1, 1], kinds (n,), colours (n,))."""
    half = size // 2
    params = _shape_params(torch.rand(n, 5, generator=generator), size, half)
    images = _draw_shapes(**params, height=size, width=half) * 2 - 1
    return images, params["kind"], params["colour"]


def train_shape_classifier(
    out_path: str | os.PathLike = SHAPE_CLASSIFIER_PATH,
    steps: int = 600,
    size: int = 32,
    seed: int = 0,
) -> float:
    """Train the classifier on fresh synthetic halves each step and save it; return its accuracy
    on 2,000 other halves. Generated halves are noisy, so training adds Gaussian pixel noise
    (σ = 0.1 on the coverage) to half of each batch."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ShapeClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        images, kinds, _ = _synthetic_halves(128, size, generator)
        masks = coverage(images)  # (128, 1, size, size/2)
        noise = 0.1 * torch.randn(masks.shape, generator=generator)
        masks[64:] = (masks[64:] + noise[64:]).clamp(0, 1)
        loss = F.cross_entropy(model(_normalise(masks)), kinds)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test_images, test_kinds, _ = _synthetic_halves(2000, size, torch.Generator().manual_seed(99))
    with torch.no_grad():
        accuracy = (model(_normalise(coverage(test_images))).argmax(1) == test_kinds).float()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        Path(out_path),
        metadata={"accuracy": f"{accuracy.mean().item():.4f}", "steps": str(steps)},
    )
    return accuracy.mean().item()


def load_shape_classifier(device: str | torch.device = "cpu") -> ShapeClassifier:
    """The shipped shape classifier, in eval mode."""
    if not SHAPE_CLASSIFIER_PATH.exists():
        raise FileNotFoundError(
            f"the shape classifier's weights are missing ({SHAPE_CLASSIFIER_PATH}); rebuild "
            "them with `python -c 'from sagan_edu.halves import *; train_shape_classifier()'`"
        )
    model = ShapeClassifier()
    model.load_state_dict(load_file(SHAPE_CLASSIFIER_PATH))
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def half_shapes(halves: torch.Tensor, classifier: ShapeClassifier | None = None) -> tuple:
    """Halves (B, 3, H, W/2) in [-1, 1] -> (shape class (B,), its probability (B,))."""
    classifier = classifier or load_shape_classifier()
    logits = torch.cat([classifier(_normalise(coverage(c))) for c in halves.cpu().split(500)])
    probs = logits.softmax(dim=1)  # (B, 4)
    confidence, kind = probs.max(dim=1)
    return kind, confidence


@torch.no_grad()
def half_colours(halves: torch.Tensor) -> torch.Tensor:
    """Halves (B, 3, H, W/2) in [-1, 1] -> index of the nearest dataset colour (B,).

    The mean colour is weighted by coverage², so the shape's pixels count and the dark,
    slightly noisy background hardly does; scaled to a brightest channel of 1 like COLOURS.
    """
    pixels = ((halves.float().cpu() + 1) / 2).clamp(0, 1)  # (B, 3, H, W)
    weight = coverage(halves.cpu()) ** 2  # (B, 1, H, W)
    mean = (pixels * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1e-6)  # (B, 3)
    mean = mean / mean.amax(dim=1, keepdim=True).clamp_min(1e-6)
    return torch.cdist(mean, COLOURS).argmin(dim=1)  # (B,)


def half_agreement(
    images: torch.Tensor, classifier: ShapeClassifier | None = None
) -> dict[str, torch.Tensor]:
    """Per image (B, 3, H, W): do the left and right halves agree in shape, and in colour?

    Returns (B,) float tensors: "shape" and "colour" (1 = same class in both halves, 0 = not),
    "shape_confidence" (the classifier's probability for its answer, averaged over the two
    halves: low values mean the halves look like none of the four shapes), and the classes
    themselves, "shape_left", "shape_right", "colour_left", "colour_right" (indices into SHAPES
    and COLOURS). A generator that draws one shape everywhere agrees perfectly: read agreement
    against the model's own chance level (chance_agreement, cohens_kappa on these classes).
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.size(1) != 3:
        raise ValueError(
            f"half_agreement reads colour images (batch, 3, height, width) of twin-shapes or "
            f"local-shapes, got shape {tuple(images.shape)}"
        )
    half = images.size(-1) // 2
    left, right = images[..., :half], images[..., -half:]
    shape_l, conf_l = half_shapes(left, classifier)
    shape_r, conf_r = half_shapes(right, classifier)
    colour_l, colour_r = half_colours(left), half_colours(right)
    return {
        "shape": (shape_l == shape_r).float(),
        "colour": (colour_l == colour_r).float(),
        "shape_left": shape_l.float(),
        "shape_right": shape_r.float(),
        "colour_left": colour_l.float(),
        "colour_right": colour_r.float(),
        "shape_confidence": (conf_l + conf_r) / 2,
    }


def _class_labels(labels, name: str) -> torch.Tensor:
    """Per-sample class labels (a 1-D tensor or a sequence of ints, or of whole floats such as
    the 2.0 that ablation.json records) -> a (N,) int64 tensor; a clear error for anything else."""
    values = torch.as_tensor(labels).flatten().double()  # (N,)
    if values.numel() == 0:
        raise ValueError(f"{name} is empty: give one class label per sample")
    if not torch.isfinite(values).all() or (values != values.round()).any():
        raise ValueError(f"{name} must hold whole-number class labels (0, 1, 2, ...)")
    if (values < 0).any():
        raise ValueError(f"{name} holds negative labels; classes are indices 0, 1, 2, ...")
    return values.long()


def _class_frequencies(left, right) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both halves' labels as (N,) int64 tensors, and their class frequencies (2, K): row 0 is
    P(left = k), row 1 P(right = k), over the K classes seen in either half."""
    left, right = _class_labels(left, "left"), _class_labels(right, "right")
    if left.numel() != right.numel():
        raise ValueError(
            f"left and right must have one label per sample each, got {left.numel()} left and "
            f"{right.numel()} right labels"
        )
    classes = int(max(left.max(), right.max())) + 1
    p_left = torch.bincount(left, minlength=classes).double() / left.numel()  # (K,)
    p_right = torch.bincount(right, minlength=classes).double() / right.numel()  # (K,)
    return left, right, torch.stack([p_left, p_right])  # (2, K)


def chance_agreement(left, right) -> float:
    """How often the two halves would agree by chance, given how often each class occurs.

    left, right: the class of each sample's left and right half, (N,) (tensors or sequences of
    ints, e.g. half_agreement's "shape_left" and "shape_right"). Returns
    sum over classes k of P(left = k) * P(right = k), the frequencies taken from these samples:
    the agreement of halves drawn independently from the same class frequencies. It is 1/K for K
    equally common classes and higher when a few classes dominate.
    """
    _, _, p = _class_frequencies(left, right)
    return (p[0] * p[1]).sum().item()


def cohens_kappa(left, right) -> float:
    """Agreement of the halves measured against their own chance level:
    kappa = (agreement - chance) / (1 - chance), with chance from chance_agreement (Cohen, "A
    coefficient of agreement for nominal scales", Educational and Psychological Measurement, 1960).

    left, right: (N,) class labels, as for chance_agreement. kappa is 1 when every sample's halves
    agree, 0 when they agree no more often than chance_agreement, negative when less often. When
    both halves always hold one and the same class, chance is 1 and kappa is 0 / 0: NaN, since
    such samples cannot show whether the halves match on purpose.
    """
    left, right, p = _class_frequencies(left, right)
    agreement = (left == right).double().mean().item()
    chance = (p[0] * p[1]).sum().item()
    if chance == 1.0:
        return float("nan")
    return (agreement - chance) / (1 - chance)
