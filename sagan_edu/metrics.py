"""How good are generated images? Metrics in a local feature space, and for the synthetic data.

Published GAN results use the Fréchet Inception Distance (FID): embed real and generated images
with an ImageNet Inception network, fit a Gaussian to each set of embeddings, and measure the
Fréchet distance between the two Gaussians,

    FD = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½).

Inception weights need a download, so this course embeds images with a small classifier trained
on the embedded MNIST digits instead (its weights ship with the package; `sagan-edu
train-classifier` retrains them). The numbers are therefore "Fréchet distance (MNIST classifier
features)": lower is better, 0 for identical sets, and NOT comparable with published FIDs.
KID (kernel inception distance) is the same idea with a polynomial-kernel MMD, unbiased for small
sample counts. Both are computed by torchmetrics, given our feature network.

For the synthetic datasets `consistency(images, dataset)` scores whether far-apart parts agree
(see `sagan_edu.data.consistency_score`), with real-data reference values to compare against.
For digits, `class_histogram` / `class_coverage` show which digits a generator draws, and
`within_class_diversity` how varied its drawings of each digit are (compare with real digits).
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from sagan_edu.checkpoints import atomic_write, check_output_file
from sagan_edu.data import consistency_score, load_dataset
from sagan_edu.pretrained import verify_checksum
from sagan_edu.training import pick_device

__all__ = [
    "FD_NAME",
    "KID_NAME",
    "MIN_IMAGES",
    "MnistClassifier",
    "class_coverage",
    "class_histogram",
    "consistency",
    "consistency_reference",
    "fd_and_kid",
    "frechet_distance",
    "load_classifier",
    "train_classifier",
    "within_class_diversity",
]

FD_NAME = "Fréchet distance (MNIST classifier features)"
KID_NAME = "KID (MNIST classifier features)"
CLASSIFIER_PATH = Path(__file__).parent / "weights" / "mnist5k-classifier.safetensors"
MIN_IMAGES = 2  # per set, for the Fréchet distance and KID
RANGE_SLACK = 1e-2  # how far above 1 rounding (bf16, resizing) may take a [0, 1] image


# ---------------------------------------------------------------------------------------------
# The feature network
# ---------------------------------------------------------------------------------------------


class MnistClassifier(nn.Module):
    """A small CNN digit classifier; its penultimate layer is the feature space of the metrics.

    images (B, 1, H, W) in [-1, 1] (any H, W: resized to 32×32) -> features (B, 128).
    """

    num_features = 128  # read by torchmetrics

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 16, 16)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 8, 8)
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),  # (B, 128, 8, 8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 128)
        )  # fmt: skip
        self.head = nn.Linear(self.num_features, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The features torchmetrics compares: (B, 1, H, W) -> (B, 128)."""
        if images.dim() != 4 or images.size(1) != 1:
            raise ValueError(
                f"the MNIST feature network takes (B, 1, H, W) grey images in [-1, 1], got shape "
                f"{tuple(images.shape)}"
            )
        images = images.float()
        if images.shape[-2:] != (32, 32):
            images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        return self.body(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> class scores (B, 10)."""
        return self.head(self(images))


def train_classifier(
    out_path: str | os.PathLike, epochs: int = 30, seed: int = 0, overwrite: bool = False
) -> dict[str, float]:
    """Train the feature network on mnist5k's 4,000 training digits and save it (safetensors).

    The metrics read the shipped file, CLASSIFIER_PATH: write there only to rebuild the shipped
    weights (`make pretrained`), since a new network shifts every FD and KID number. An existing
    file at `out_path` is replaced only with overwrite=True.

    Returns the accuracy on the 1,000 held-out digits (and on the training digits).
    """
    for name, value, minimum in (("epochs", epochs, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be a whole number ≥ {minimum}, got {value!r}")
    out_path = Path(out_path)
    check_output_file(out_path, (".safetensors",), overwrite)  # before minutes of training
    torch.manual_seed(seed)
    train_set = load_dataset("mnist5k", train=True, img_size=32)
    held_out = load_dataset("mnist5k", train=False, img_size=32)
    model = MnistClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches_per_epoch = len(train_set) // 64
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=epochs * batches_per_epoch
    )
    for _ in range(epochs):
        order = torch.randperm(len(train_set))
        for i in range(batches_per_epoch):
            index = order[i * 64 : (i + 1) * 64]
            images = _random_shift(train_set.images[index])  # a little augmentation: ±2 px
            loss = F.cross_entropy(model.logits(images), train_set.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    accuracy = {
        "train_accuracy": _accuracy(model, train_set.images, train_set.labels),
        "held_out_accuracy": _accuracy(model, held_out.images, held_out.labels),
    }
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {k: f"{v:.4f}" for k, v in accuracy.items()} | {"epochs": str(epochs)}
    atomic_write(safetensors_bytes(tensors, metadata=metadata), out_path, what="weight file")
    return accuracy


def _random_shift(images: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to max_shift pixels, filling with background (-1)."""
    padded = F.pad(images, [max_shift] * 4, value=-1.0)
    size = images.shape[-1]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    return padded[..., dy : dy + size, dx : dx + size]


@torch.no_grad()
def _accuracy(model: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([model.logits(chunk).argmax(1) for chunk in images.split(500)])
    return (predictions == labels).float().mean().item()


def load_classifier(device: str | torch.device = "cpu") -> MnistClassifier:
    """The shipped feature network, in eval mode."""
    if not CLASSIFIER_PATH.exists():
        raise FileNotFoundError(
            f"the MNIST feature network's weights are missing ({CLASSIFIER_PATH}); "
            "rebuild them with `sagan-edu train-classifier`"
        )
    verify_checksum(CLASSIFIER_PATH)  # a replaced file would shift every FD/KID number
    model = MnistClassifier()
    model.load_state_dict(load_file(CLASSIFIER_PATH))
    return model.to(pick_device(device)).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Fréchet distance and KID (torchmetrics)
# ---------------------------------------------------------------------------------------------


class _Identity(nn.Module):
    """A 'feature network' that passes features through, so torchmetrics can compare them."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D).

    Computed by torchmetrics' FID code (float64), fed the features directly.
    """
    for name, f in (("features_a", features_a), ("features_b", features_b)):
        if not isinstance(f, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (N, D), got {type(f).__name__}")
        if f.dim() != 2 or len(f) < 2:
            raise ValueError(f"{name} must be (N, D) with N ≥ 2, got shape {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError(f"{name} holds NaN or infinite values; the distance would be NaN")
    if features_a.size(1) != features_b.size(1):
        raise ValueError(
            f"the feature sets must have the same width, got {features_a.size(1)} and "
            f"{features_b.size(1)}"
        )
    metric = FrechetInceptionDistance(feature=_Identity(features_a.size(1)))
    metric.update(features_a.double(), real=True)
    metric.update(features_b.double(), real=False)
    return metric.compute().item()


@torch.no_grad()
def fd_and_kid(
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    classifier: MnistClassifier | None = None,
    kid_subset_size: int = 100,
) -> dict[str, float]:
    """Fréchet distance and KID between two image sets (B, 1, H, W) in [-1, 1].

    Each set needs at least MIN_IMAGES = 2 images (a covariance needs two), but the numbers are
    only worth comparing from about a thousand images each, and between sets of equal size.
    Images in another range are refused rather than guessed at: uint8 pixels and any set without
    a single negative value (a [0, 1] or 0..255 set; [-1, 1] digits always have background at
    -1) would give FDs far too large. Convert them with `images.float() / 127.5 - 1` or
    `images * 2 - 1`.

    Keys are FD_NAME, KID_NAME and KID_NAME + " std", so printed results say what they are.
    KID is the mean over 100 random subsets of `kid_subset_size` images from each set, and its
    std the spread over those subsets: how much the estimate moves with the samples drawn. (A
    subset as large as the sets holds every image each time, and its std is 0.)
    """
    for name, images in (("real_images", real_images), ("fake_images", fake_images)):
        _check_metric_images(name, images)
    if (
        not isinstance(kid_subset_size, int)
        or isinstance(kid_subset_size, bool)
        or (kid_subset_size < MIN_IMAGES)
    ):
        raise ValueError(f"kid_subset_size must be a whole number ≥ 2, got {kid_subset_size!r}")
    fake_images = fake_images.to(real_images.device)
    classifier = classifier or load_classifier(real_images.device)
    fd = FrechetInceptionDistance(feature=classifier, reset_real_features=False).to(
        real_images.device
    )
    subset = min(kid_subset_size, len(real_images), len(fake_images))
    kid = KernelInceptionDistance(feature=classifier, subset_size=subset).to(real_images.device)
    for metric in (fd, kid):
        for chunk in real_images.split(500):
            metric.update(chunk, real=True)
        for chunk in fake_images.split(500):
            metric.update(chunk, real=False)
    kid_mean, kid_std = kid.compute()
    return {
        FD_NAME: fd.compute().item(),
        KID_NAME: kid_mean.item(),
        KID_NAME + " std": kid_std.item(),
    }


def _check_metric_images(name: str, images: object, minimum: int = MIN_IMAGES) -> None:
    """Images for the feature network: a (B, 1, H, W) float tensor in [-1, 1], B ≥ minimum."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (B, 1, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.size(1) != 1:
        raise ValueError(
            f"{name} must be grey images (B, 1, H, W) in [-1, 1], got shape {tuple(images.shape)}"
        )
    if len(images) < minimum:
        raise ValueError(
            f"{name} holds {len(images)} image(s); the Fréchet distance and KID need at least "
            f"{MIN_IMAGES} per set (and about a thousand for numbers worth comparing)"
            if minimum == MIN_IMAGES
            else f"{name} holds {len(images)} image(s); pass at least {minimum}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{name} has dtype {images.dtype}; the metrics take float images in [-1, 1]. Convert "
            "uint8 pixels with images.float() / 127.5 - 1"
        )
    low, high = images.min().item(), images.max().item()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} holds NaN or infinite values")
    if low >= 0:
        # [-1, 1] images of digits always hold background (-1); a set with no negative value
        # at all is a [0, 1] (or 0..255) set, whose FD would come out hundreds of times too big.
        convert = "images / 127.5 - 1" if high > 1 + RANGE_SLACK else "images * 2 - 1"
        raise ValueError(
            f"{name} has no negative values (from {low:.3g} to {high:.3g}): these look like "
            f"{'0..255' if high > 1 + RANGE_SLACK else '[0, 1]'} images, but the metrics take "
            f"[-1, 1] (a digit's background is -1). Convert with {convert}"
        )


# ---------------------------------------------------------------------------------------------
# Digits: which classes a generator makes
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def class_histogram(
    images: torch.Tensor, classifier: MnistClassifier | None = None
) -> torch.Tensor:
    """How many of the images (B, 1, H, W) in [-1, 1] the classifier calls 0, 1, …, 9: (10,)."""
    _check_metric_images("images", images, minimum=1)
    classifier = classifier or load_classifier(images.device)
    predictions = torch.cat([classifier.logits(chunk).argmax(1) for chunk in images.split(500)])
    return torch.bincount(predictions, minlength=10).cpu()


def class_coverage(histogram: torch.Tensor, min_share: float = 0.02) -> dict[str, float]:
    """Coverage and diversity of a class histogram.

    covered: fraction of the 10 classes that get at least `min_share` of the samples (mode
    collapse drops classes). entropy: the histogram's entropy divided by log(10), 1 for a uniform
    spread over all digits, 0 if every sample is the same digit.
    """
    if histogram.shape != (10,) or histogram.sum() <= 0 or (histogram < 0).any():
        raise ValueError(
            f"histogram must be 10 non-negative counts with a positive total, as class_histogram "
            f"returns; got {histogram.tolist()}"
        )
    if isinstance(min_share, bool) or not isinstance(min_share, numbers.Real):
        raise ValueError(f"min_share must be a number in (0, 1], got {min_share!r}")
    if not 0 < min_share <= 1:  # 0 or less counts every class, above 1 none: never a collapse
        raise ValueError(
            f"min_share must be in (0, 1], a share of the samples such as 0.02, got {min_share}"
        )
    shares = histogram.float() / histogram.sum()
    nonzero = shares[shares > 0]
    entropy = -(nonzero * nonzero.log()).sum() / torch.log(torch.tensor(10.0))
    return {"covered": (shares >= min_share).float().mean().item(), "entropy": entropy.item()}


@torch.no_grad()
def within_class_diversity(
    images: torch.Tensor, classifier: MnistClassifier | None = None
) -> float:
    """How varied a set of digits (B, 1, H, W) is inside each class, in classifier features.

    For each digit the classifier predicts at least twice: the mean distance between the features
    of two different images of that digit. Returns the mean over those digits. Class coverage
    misses a generator that draws every digit but only one way of writing each (partial mode
    collapse); this number drops towards 0 for it. Compare it with the value for real digits.
    """
    _check_metric_images("images", images, minimum=1)
    classifier = classifier or load_classifier(images.device)
    features = torch.cat([classifier(chunk) for chunk in images.split(500)]).double()  # (B, 128)
    predicted = torch.cat([classifier.head(f.float()).argmax(1) for f in features.split(500)])
    per_class = []
    for digit in predicted.unique():
        members = features[predicted == digit]  # (n, 128)
        n = len(members)
        if n >= 2:
            per_class.append(torch.cdist(members, members).sum() / (n * (n - 1)))
    if not per_class:
        raise ValueError(
            f"no digit was predicted twice among {len(images)} images; pass more images"
        )
    return torch.stack(per_class).mean().item()


# ---------------------------------------------------------------------------------------------
# Synthetic data: do far-apart parts agree?
# ---------------------------------------------------------------------------------------------


def consistency(images: torch.Tensor, dataset: str = "twin-shapes") -> dict[str, float]:
    """Mean and standard deviation of the long-range consistency score of images (B, C, H, W).

    Needs at least 2 images (one has no spread); `consistency_score` scores single images.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4 and len(images) < 2:
        raise ValueError(
            f"consistency needs at least 2 images for a mean and a standard deviation, got "
            f"{len(images)}; for single images use sagan_edu.data.consistency_score(images)"
        )
    scores = consistency_score(images, dataset=dataset)
    return {"mean": scores.mean().item(), "std": scores.std().item()}


def consistency_reference(
    dataset: str = "twin-shapes", n: int = 2000, img_size: int = 32, seed: int = 0
) -> dict[str, float]:
    """What the consistency score means, in numbers.

    real: the mean score of real held-out images (what a perfect generator would reach).
    ignores_long_range: the mean score of images whose halves were drawn independently: what a
    generator that gets each half right but ignores how the halves relate would reach.
    """
    if dataset == "mirror":
        real = load_dataset("mirror", train=False, img_size=img_size, length=n, seed=seed).images
        other = load_dataset("mirror", train=False, img_size=img_size, length=n, seed=seed + 1)
        half = img_size // 2
        independent = torch.cat([real[..., :half], other.images[..., half:]], dim=-1)
    else:
        real = load_dataset(dataset, train=False, img_size=img_size, length=n, seed=seed).images
        independent = load_dataset(
            "local-shapes", train=False, img_size=img_size, length=n, seed=seed
        ).images
    return {
        "real": consistency_score(real, dataset=dataset).mean().item(),
        "ignores_long_range": consistency_score(independent, dataset=dataset).mean().item(),
    }
