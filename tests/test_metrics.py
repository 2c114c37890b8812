"""Tests of sagan_edu.metrics against independent references (scipy, hand-made data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
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
)

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


def test_class_coverage_sees_mode_collapse():
    collapsed = torch.tensor([0, 0, 0, 995, 0, 0, 0, 5, 0, 0])
    result = class_coverage(collapsed)
    assert result["covered"] == pytest.approx(0.1) and result["entropy"] < 0.05


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
