"""Tests of sagan_edu.metrics against independent references (scipy, hand-made data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
import torch

from sagan_edu.data import load_dataset
from sagan_edu.metrics import (
    FD_NAME,
    KID_NAME,
    class_coverage,
    class_histogram,
    consistency,
    consistency_reference,
    fd_and_kid,
    frechet_distance,
    load_classifier,
    within_class_diversity,
)
from sagan_edu.pretrained import available, load
from sagan_edu.training import sample_images

WEIGHTS = Path(__file__).resolve().parents[1] / "sagan_edu" / "weights"


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½), with scipy's matrix square root."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@pytest.fixture(scope="module")
def held_out_digits() -> torch.Tensor:
    return load_dataset("mnist5k", train=False, img_size=32).images  # (1000, 1, 32, 32)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6))
    b = rng.normal(loc=0.5, scale=1.5, size=(250, 6)) @ rng.normal(size=(6, 6))
    expected = scipy_frechet(a, b)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"\(N, D\) with N ≥ 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))


def test_shipped_classifier_recognises_held_out_digits(held_out_digits):
    labels = load_dataset("mnist5k", train=False).labels
    classifier = load_classifier()
    with torch.no_grad():
        accuracy = (classifier.logits(held_out_digits).argmax(1) == labels).float().mean()
    assert accuracy > 0.95
    histogram = class_histogram(held_out_digits, classifier)
    assert histogram.sum() == 1000 and histogram.min() > 80  # 100 of each digit
    assert class_coverage(histogram) == {"covered": 1.0, "entropy": pytest.approx(1.0, abs=0.01)}


def test_fd_and_kid_rank_sets_sensibly(held_out_digits):
    train_digits = load_dataset("mnist5k", train=True, img_size=32).images[:1000]
    noise = torch.rand(500, 1, 32, 32) * 2 - 1
    same = fd_and_kid(held_out_digits, train_digits)
    far = fd_and_kid(held_out_digits, noise)
    assert set(same) == {FD_NAME, KID_NAME, KID_NAME + " std"}
    assert same[FD_NAME] < 0.05 * far[FD_NAME]
    assert same[KID_NAME] < 0.05 * far[KID_NAME]
    # The same numbers as the Fréchet distance of the classifier's own features.
    classifier = load_classifier()
    with torch.no_grad():
        expected = scipy_frechet(
            classifier(held_out_digits).double().numpy(), classifier(noise).double().numpy()
        )
    assert far[FD_NAME] == pytest.approx(expected, rel=1e-3)


def numpy_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³ (Bińkowski et al., 2018)."""
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


def test_kid_matches_an_independent_mmd_and_its_std_is_a_spread(held_out_digits):
    torch.manual_seed(0)
    real, fake = held_out_digits[:300], load_dataset("mnist5k", train=True).images[:300]
    fake = fake + 0.3 * torch.randn_like(fake)  # a slightly noisy "generator"
    classifier = load_classifier()
    with torch.no_grad():
        expected = numpy_kid(classifier(real).double().numpy(), classifier(fake).double().numpy())
    everything = fd_and_kid(real, fake, classifier, kid_subset_size=300)  # every image, each time
    assert everything[KID_NAME] == pytest.approx(expected, rel=1e-3)
    assert everything[KID_NAME + " std"] == pytest.approx(0, abs=1e-6 * abs(expected))
    subsets = fd_and_kid(real, fake, classifier)  # the default: subsets of 100
    assert subsets[KID_NAME + " std"] > 0.01 * abs(expected)
    assert abs(subsets[KID_NAME] - expected) < 3 * subsets[KID_NAME + " std"]


def test_within_class_diversity_matches_scipy_and_sees_repetition(held_out_digits):
    classifier = load_classifier()
    digits = held_out_digits[torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:300]]
    with torch.no_grad():
        features = classifier(digits).double().numpy()
        predicted = classifier.logits(digits).argmax(1).numpy()
    expected = np.mean([scipy.spatial.distance.pdist(features[predicted == c]).mean()
                        for c in np.unique(predicted) if (predicted == c).sum() >= 2])  # fmt: skip
    real = within_class_diversity(digits, classifier)
    assert real == pytest.approx(expected, rel=1e-6)
    # Every digit covered, but each drawn one way only: no variety inside a class.
    labels = load_dataset("mnist5k", train=False).labels
    one_per_class = torch.stack([held_out_digits[labels == c][0] for c in range(10)])
    repetitive = one_per_class.repeat(30, 1, 1, 1)  # 300 images, 10 distinct
    assert class_coverage(class_histogram(repetitive, classifier))["covered"] == 1.0
    assert within_class_diversity(repetitive, classifier) < 0.1 * real
    with pytest.raises(ValueError, match="no digit was predicted twice"):
        within_class_diversity(digits[:1], classifier)


def test_class_coverage_sees_mode_collapse():
    collapsed = torch.tensor([0, 0, 0, 995, 0, 0, 0, 5, 0, 0])
    result = class_coverage(collapsed)
    assert result["covered"] == pytest.approx(0.1) and result["entropy"] < 0.05


@pytest.mark.parametrize(("min_share", "message"), [(2, r"in \(0, 1\].*got 2"), (0, "got 0"),
                                                   ("2%", "must be a number")])  # fmt: skip
def test_class_coverage_refuses_a_share_outside_0_1(min_share, message):
    """min_share=2 (meant as 2 %) counted no class as covered, without an error."""
    with pytest.raises(ValueError, match=message):
        class_coverage(torch.full((10,), 100), min_share=min_share)


def test_consistency_reference_values():
    reference = consistency_reference("twin-shapes", n=300)
    assert reference["real"] > 0.99 and 0.2 < reference["ignores_long_range"] < 0.6
    images = load_dataset("twin-shapes", train=False, length=50).images
    assert consistency(images)["mean"] == pytest.approx(1.0, abs=1e-3)
    mirror = consistency_reference("mirror", n=200)
    assert mirror["real"] > 0.99 and mirror["ignores_long_range"] < 0.3


def test_shipped_weight_files_match_their_checksums():
    recorded = dict(
        reversed(line.split()) for line in (WEIGHTS / "SHA256SUMS").read_text().splitlines()
    )
    shipped = sorted(p.name for p in WEIGHTS.glob("*.safetensors"))
    assert sorted(recorded) == shipped, "every shipped file has a checksum, and no more"
    for name, digest in recorded.items():
        assert hashlib.sha256((WEIGHTS / name).read_bytes()).hexdigest() == digest, name


# ---------------------------------------------------------------------------------------------
# The recorded scores of the shipped generators (benchmarks/evaluate_pretrained.py)
# ---------------------------------------------------------------------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def shipped_scores() -> tuple[dict, dict[str, np.ndarray]]:
    recorded = json.loads((RESULTS / "pretrained.json").read_text(encoding="utf-8"))
    with np.load(RESULTS / "pretrained-samples.npz") as samples:
        return recorded, {name: samples[name] for name in samples.files}


def as_images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float() / 127.5 - 1  # uint8 -> [-1, 1]


def test_recorded_samples_come_from_the_shipped_generators(shipped_scores):
    recorded, samples = shipped_scores
    assert sorted(samples) == sorted(recorded["generators"]) == available()
    for name, array in samples.items():
        images = sample_images(load(name), 64, seed=recorded["sample_seed"])
        again = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        levels = np.abs(again.astype(int) - array[:64].astype(int))
        # Another machine's float rounding may move a pixel across a .5 boundary: one level.
        assert levels.max() <= 1 and (levels > 0).mean() < 0.01, name


def test_recorded_digit_scores_recompute_with_numpy_and_scipy(shipped_scores, held_out_digits):
    recorded, samples = shipped_scores
    classifier = load_classifier()
    with torch.no_grad():
        real = classifier(held_out_digits).double().numpy()
    for name, result in recorded["generators"].items():
        if result["dataset"] != "mnist5k":
            continue
        images = as_images(samples[name])
        with torch.no_grad():
            fake = classifier(images).double().numpy()
            predicted = classifier.logits(images).argmax(1)
        metrics = result["metrics"]
        assert metrics[FD_NAME] == pytest.approx(scipy_frechet(real, fake), rel=1e-3), name
        kid, spread = numpy_kid(real, fake), metrics[KID_NAME + " std"]
        assert abs(metrics[KID_NAME] - kid) < 3 * spread, (name, metrics[KID_NAME], kid)
        assert metrics["class histogram"] == np.bincount(predicted, minlength=10).tolist(), name
        per_class = [scipy.spatial.distance.pdist(fake[predicted.numpy() == c]).mean()
                     for c in range(10) if (predicted == c).sum() >= 2]  # fmt: skip
        assert metrics["within-class diversity"] == pytest.approx(np.mean(per_class), rel=1e-5)


def test_recorded_consistency_recomputes(shipped_scores):
    recorded, samples = shipped_scores
    for name, result in recorded["generators"].items():
        if result["dataset"] == "mnist5k":
            continue
        scores = consistency(as_images(samples[name]), result["dataset"])
        assert result["metrics"]["consistency (mean over samples)"] == pytest.approx(
            scores["mean"], abs=1e-6
        ), name
