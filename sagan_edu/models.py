"""The Generator and the Discriminator of a (self-attention) GAN.

Two architectures, chosen with `arch`:

- "dcgan": plain conv stacks. G maps z to a 4×4 map with a linear layer, then each block doubles
  the map (nearest upsample, 3×3 conv, BatchNorm, ReLU); a 3×3 conv and tanh make the image.
  D halves the map with 4×4 stride-2 convs and LeakyReLU(0.1), then a linear layer scores the
  flattened 4×4 map.
- "resnet": the residual design of SAGAN and BigGAN. The same doubling and halving, but every
  block is two 3×3 convs plus a 1×1-conv shortcut; D ends with ReLU, a sum over positions and a
  linear layer.

Attention: `attention_at` names feature-map sizes; a `SelfAttention2d` is placed right after the
block that produces a map of that size, as in SAGAN. G has maps of size 4, 8, …, img_size and D of
size img_size/2, …, 4. `attention_at=()` is the same GAN without attention, the baseline.
`attention_block="residual"` puts a `GatedResidualBlock` with about as many weights at those
places instead: the SAGAN paper's control (Table 1) for "is it attention, or just more layers?".
`attention_scaled=True` divides the attention scores by √d (see SelfAttention2d).

Conditioning (`num_classes` set): G's BatchNorms take their scale γ and shift β from the class
(conditional BatchNorm), and D adds ⟨embed(y), h⟩ to its logit, where h are the features its
linear head sees (the projection discriminator, Miyato & Koyama 2018). D then answers "is this a
real image of class y?" rather than "is this a real image?".

Every conv and linear layer, and D's projection embedding, is spectrally normalised, in G as well
as in D (SAGAN found that SN in G too makes training more stable).

Channels: full-size maps have `base_channels`; each halving of the map doubles them, up to
8·base_channels. At img_size 32: G 8b, 4b, 2b, b at 4, 8, 16, 32; D 2b, 4b, 8b at 16, 8, 4.
`base_channels` must be a multiple of 8 so every map can take attention (its queries use C/8).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.attention import SelfAttention2d, require_device, require_tensor
from sagan_edu.spectral_norm import spectral_norm

__all__ = [
    "ARCHS",
    "ATTENTION_BLOCKS",
    "IMG_SIZES",
    "Discriminator",
    "GatedResidualBlock",
    "Generator",
    "channels_at",
    "discriminator_sizes",
    "generator_sizes",
]

IMG_SIZES = (32, 64, 128)
ARCHS = ("dcgan", "resnet")
ATTENTION_BLOCKS = ("attention", "residual")  # what goes at the `attention_at` sizes
MAX_WIDTH = 8  # the widest maps have MAX_WIDTH · base_channels channels


# ---------------------------------------------------------------------------------------------
# Sizes and channels
# ---------------------------------------------------------------------------------------------


def generator_sizes(img_size: int) -> list[int]:
    """Side lengths of G's feature maps in forward order: 4, 8, …, img_size."""
    _check_img_size(img_size)
    return [4 * 2**i for i in range(img_size.bit_length() - 2)]


def discriminator_sizes(img_size: int) -> list[int]:
    """Side lengths of D's feature maps in forward order: img_size/2, …, 4."""
    return generator_sizes(img_size)[::-1][1:]


def channels_at(size: int, img_size: int, base_channels: int) -> int:
    """Channels of a size×size map: base_channels at full size, ×2 per halving, at most ×8.

    Small maps get many channels and large maps few, which keeps the cost per block similar.
    """
    return base_channels * min(MAX_WIDTH, img_size // size)


# ---------------------------------------------------------------------------------------------
# Layers: spectrally normalised, orthogonally initialised
# ---------------------------------------------------------------------------------------------


def _init_and_normalise(layer: nn.Module) -> nn.Module:
    # Orthogonal init, as BigGAN: all singular values start equal, so W/σ(W) starts as a
    # rotation that keeps signals at their scale, and σ is exact from the first step.
    # (With spectral norm the weight's scale no longer matters, only its shape.)
    nn.init.orthogonal_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return spectral_norm(layer)


def sn_conv(
    c_in: int, c_out: int, kernel_size: int, stride: int = 1, bias: bool = True
) -> nn.Module:
    """A spectrally normalised conv; padding keeps the size (stride 1) or halves it (4×4, s 2)."""
    conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=bias)
    return _init_and_normalise(conv)


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    return _init_and_normalise(nn.Linear(in_features, out_features, bias=bias))


def sn_embedding(num_embeddings: int, embedding_dim: int) -> nn.Module:
    return _init_and_normalise(nn.Embedding(num_embeddings, embedding_dim))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, 2S, 2S) by repeating pixels.

    Nearest upsampling then a 3×3 conv, rather than a 4×4 stride-2 transposed conv: the transposed
    conv's kernel overlaps unevenly and paints checkerboard artifacts (Odena et al., 2016).
    """
    return F.interpolate(x, scale_factor=2, mode="nearest")


# ---------------------------------------------------------------------------------------------
# BatchNorm, plain or conditioned on the class
# ---------------------------------------------------------------------------------------------


class BatchNorm2d(nn.BatchNorm2d):
    """Plain BatchNorm that accepts (and ignores) labels: G's blocks read the same either way."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale γ and shift β are looked up per class: how G is told the class.

    Normalising removes each channel's mean and spread; the class then sets new ones, so the same
    features can be turned up or down per class.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(num_classes, channels)
        self.beta = nn.Embedding(num_classes, channels)
        # γ ≈ 1, β = 0: at first, close to a plain BatchNorm; the small noise (DCGAN's BN init)
        # lets classes differ from step 0. No spectral norm here: it would rescale γ away from 1.
        nn.init.normal_(self.gamma.weight, mean=1.0, std=0.02)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(y)[:, :, None, None]  # (B, C, 1, 1)
        beta = self.beta(y)[:, :, None, None]  # (B, C, 1, 1)
        return self.bn(x) * gamma + beta


def batch_norm(channels: int, num_classes: int | None) -> nn.Module:
    if num_classes is None:
        return BatchNorm2d(channels)
    return ConditionalBatchNorm2d(channels, num_classes)


# ---------------------------------------------------------------------------------------------
# The control for attention: a residual block of the same size
# ---------------------------------------------------------------------------------------------


class GatedResidualBlock(nn.Module):
    """y = x + γ·conv1x1(relu(conv3x3(relu(conv1x1(x))))): a local block as big as attention.

    The SAGAN paper's control (Zhang et al., 2019, Table 1): put a residual block with the same
    number of parameters where attention was, to tell "attention helps" from "one more block
    helps". The bottleneck width b = round(5C/18) gives 2·C·b + 9·b² ≈ 1.25·C² weights, the
    weights of SelfAttention2d(C). Like SAGAN's block it starts as the identity (γ = 0), has no
    biases and is spectrally normalised; unlike it, each position sees only its 3×3 neighbours.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        width = round(5 * channels / 18)  # the bottleneck b
        self.reduce = _init_and_normalise(nn.Conv2d(channels, width, 1, bias=False))
        self.mix = _init_and_normalise(nn.Conv2d(width, width, 3, padding=1, bias=False))
        self.expand = _init_and_normalise(nn.Conv2d(width, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        h = F.relu(self.reduce(x))  # (B, b, H, W)
        h = F.relu(self.mix(h))  # (B, b, H, W)
        return x + self.gamma * self.expand(h)  # (B, C, H, W)


# ---------------------------------------------------------------------------------------------
# Generator pieces
# ---------------------------------------------------------------------------------------------


class GeneratorStem(nn.Module):
    """z (B, z_dim) -> (B, C, 4, 4) with one linear layer.

    DCGAN follows it with BatchNorm + ReLU (`activate=True`); a ResNet block starts with its own.
    """

    def __init__(self, z_dim: int, channels: int, num_classes: int | None, activate: bool):
        super().__init__()
        self.channels = channels
        # No bias before a BatchNorm: subtracting the mean would cancel it.
        self.linear = sn_linear(z_dim, channels * 4 * 4, bias=not activate)
        self.bn = batch_norm(channels, num_classes) if activate else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.linear(z).view(z.size(0), self.channels, 4, 4)  # (B, C, 4, 4)
        return h if self.bn is None else F.relu(self.bn(h, y))


class DCGANUpBlock(nn.Module):
    """(B, C_in, S, S) -> (B, C_out, 2S, 2S): upsample, 3×3 conv, BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int, num_classes: int | None):
        super().__init__()
        self.conv = sn_conv(c_in, c_out, 3, bias=False)
        self.bn = batch_norm(c_out, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return F.relu(self.bn(self.conv(_upsample(x)), y))


class ResUpBlock(nn.Module):
    """(B, C_in, S, S) -> (B, C_out, 2S, 2S): BN-ReLU-upsample-conv-BN-ReLU-conv + shortcut.

    The shortcut (upsample and a 1×1 conv) gives gradients a short path through deep G's.
    """

    def __init__(self, c_in: int, c_out: int, num_classes: int | None):
        super().__init__()
        self.bn1 = batch_norm(c_in, num_classes)
        self.conv1 = sn_conv(c_in, c_out, 3, bias=False)
        self.bn2 = batch_norm(c_out, num_classes)
        self.conv2 = sn_conv(c_out, c_out, 3)
        self.shortcut = sn_conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(_upsample(F.relu(self.bn1(x, y))))  # (B, C_out, 2S, 2S)
        h = self.conv2(F.relu(self.bn2(h, y)))
        # A 1×1 conv and nearest upsampling commute; convolving first is 4× cheaper.
        return h + _upsample(self.shortcut(x))


class GeneratorHead(nn.Module):
    """(B, C, S, S) -> image (B, img_channels, S, S) in [-1, 1]: [BN-ReLU-] 3×3 conv, tanh.

    The ResNet's blocks end on a conv, so it normalises and activates first (`activate=True`).
    """

    def __init__(self, channels: int, img_channels: int, activate: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels) if activate else None
        self.conv = sn_conv(channels, img_channels, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            h = F.relu(self.bn(h))
        return torch.tanh(self.conv(h))


# ---------------------------------------------------------------------------------------------
# Discriminator pieces
# ---------------------------------------------------------------------------------------------


class DCGANDownBlock(nn.Module):
    """(B, C_in, S, S) -> (B, C_out, S/2, S/2): 4×4 stride-2 conv, LeakyReLU(0.1)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = sn_conv(c_in, c_out, 4, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Leaky, so D passes gradient to G even where a unit is "off".
        return F.leaky_relu(self.conv(x), 0.1)


class ResDownBlock(nn.Module):
    """(B, C_in, S, S) -> (B, C_out, S/2, S/2): ReLU-conv-ReLU-conv-avgpool + shortcut.

    D's first block skips the leading ReLU (`preactivate=False`): on the image it would throw
    away every pixel value below 0.
    """

    def __init__(self, c_in: int, c_out: int, preactivate: bool):
        super().__init__()
        self.preactivate = preactivate
        self.conv1 = sn_conv(c_in, c_out, 3)
        self.conv2 = sn_conv(c_out, c_out, 3)
        self.shortcut = sn_conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivate else x
        h = self.conv2(F.relu(self.conv1(h)))  # (B, C_out, S, S)
        # A 1×1 conv and average pooling commute; pooling first is 4× cheaper.
        return F.avg_pool2d(h, 2) + self.shortcut(F.avg_pool2d(x, 2))


# ---------------------------------------------------------------------------------------------
# The two networks
# ---------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """z (B, z_dim) [and class labels y (B,)] -> images (B, img_channels, img_size, img_size).

    A linear layer makes a 4×4 map, blocks double it up to img_size, a 3×3 conv and tanh turn it
    into an image in [-1, 1]. Self-attention follows the blocks whose output size is listed in
    `attention_at`.
    """

    def __init__(
        self,
        z_dim: int = 128,
        img_size: int = 32,
        img_channels: int = 1,
        base_channels: int = 32,
        attention_at: Iterable[int] = (16,),
        num_classes: int | None = None,
        arch: str = "dcgan",
        attention_block: str = "attention",
        attention_scaled: bool = False,
    ):
        super().__init__()
        _check_positive(z_dim=z_dim, img_channels=img_channels)
        _check_common(img_size, base_channels, num_classes, arch)
        _check_attention_block(attention_block)
        sizes = generator_sizes(img_size)
        self.z_dim = z_dim
        self.img_size = img_size
        self.img_channels = img_channels
        self.base_channels = base_channels
        self.attention_at = _check_attention_at(attention_at, sizes, "Generator")
        self.num_classes = num_classes
        self.arch = arch
        self.attention_block = attention_block
        self.attention_scaled = attention_scaled

        channels = [channels_at(s, img_size, base_channels) for s in sizes]
        is_dcgan = arch == "dcgan"
        self.stem = GeneratorStem(z_dim, channels[0], num_classes, activate=is_dcgan)
        up_block = DCGANUpBlock if is_dcgan else ResUpBlock
        self.blocks = nn.ModuleList(
            up_block(c_in, c_out, num_classes) for c_in, c_out in itertools.pairwise(channels)
        )
        self.attention = _attention_layers(
            self.attention_at, sizes, channels, attention_block, attention_scaled
        )
        self.head = GeneratorHead(channels[-1], img_channels, activate=not is_dcgan)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, z_dim), y (B,) long or None -> images (B, img_channels, S, S) in [-1, 1]."""
        self._check_inputs(z, y)
        h = self._attend(self.stem(z, y))  # (B, 8·base, 4, 4)
        for block in self.blocks:
            h = self._attend(block(h, y))  # the map doubles: (B, C, 2S, 2S)
        return self.head(h)  # (B, img_channels, img_size, img_size)

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        key = _size_key(h.size(-1))
        return self.attention[key](h) if key in self.attention else h

    def attention_layers(self) -> dict[str, nn.Module]:
        """The self-attention layers in forward order, keyed by map size, e.g. {"16x16": …}."""
        return dict(self.attention.items())

    def config(self) -> dict:
        """The constructor arguments, as plain JSON types: Generator(**g.config()) rebuilds g."""
        return {
            "z_dim": self.z_dim,
            "img_size": self.img_size,
            "img_channels": self.img_channels,
            "base_channels": self.base_channels,
            "attention_at": list(self.attention_at),
            "num_classes": self.num_classes,
            "arch": self.arch,
            "attention_block": self.attention_block,
            "attention_scaled": self.attention_scaled,
        }

    def _check_inputs(self, z: torch.Tensor, y: torch.Tensor | None) -> None:
        require_tensor(z, "z")
        if z.dim() != 2 or z.size(1) != self.z_dim:
            raise ValueError(
                f"z must have shape (batch, z_dim={self.z_dim}), got {tuple(z.shape)}; "
                f"sample it with torch.randn(batch, {self.z_dim})"
            )
        _check_dtype(z, "z", self)
        require_device(z, "z", self)
        _check_labels(y, z, self.num_classes, "Generator")


class Discriminator(nn.Module):
    """Images (B, img_channels, img_size, img_size) [and labels y (B,)] -> logits (B,).

    Blocks halve the map down to 4×4; a linear head turns the features into one score per image,
    high for "real". Self-attention follows the blocks whose output size is in `attention_at`.
    """

    def __init__(
        self,
        img_size: int = 32,
        img_channels: int = 1,
        base_channels: int = 32,
        attention_at: Iterable[int] = (16,),
        num_classes: int | None = None,
        arch: str = "dcgan",
        attention_block: str = "attention",
        attention_scaled: bool = False,
    ):
        super().__init__()
        _check_positive(img_channels=img_channels)
        _check_common(img_size, base_channels, num_classes, arch)
        _check_attention_block(attention_block)
        sizes = discriminator_sizes(img_size)
        self.img_size = img_size
        self.img_channels = img_channels
        self.base_channels = base_channels
        self.attention_at = _check_attention_at(attention_at, sizes, "Discriminator")
        self.num_classes = num_classes
        self.arch = arch
        self.attention_block = attention_block
        self.attention_scaled = attention_scaled

        channels = [channels_at(s, img_size, base_channels) for s in sizes]
        c_ins = [img_channels, *channels[:-1]]
        if arch == "dcgan":
            self.blocks = nn.ModuleList(
                DCGANDownBlock(i, o) for i, o in zip(c_ins, channels, strict=True)
            )
            features = channels[-1] * 4 * 4  # the head sees the whole flattened 4×4 map
        else:
            self.blocks = nn.ModuleList(
                ResDownBlock(i, o, preactivate=n > 0)
                for n, (i, o) in enumerate(zip(c_ins, channels, strict=True))
            )
            features = channels[-1]  # the head sees the map summed over positions
        self.attention = _attention_layers(
            self.attention_at, sizes, channels, attention_block, attention_scaled
        )
        self.linear = sn_linear(features, 1)
        self.projection = None if num_classes is None else sn_embedding(num_classes, features)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, img_channels, S, S), y (B,) long or None -> logits (B,)."""
        self._check_inputs(x, y)
        h = x
        for block in self.blocks:
            h = self._attend(block(h))  # the map halves: (B, C, S/2, S/2)
        # DCGAN: flatten to (B, C·4·4). ResNet: sum (not average) over positions, as SN-GAN and
        # BigGAN do, to (B, C).
        h = h.flatten(1) if self.arch == "dcgan" else F.relu(h).sum(dim=(2, 3))
        logits = self.linear(h).squeeze(1)  # (B,)
        if self.projection is not None:
            # Projection: score how well the features match the class's learned direction.
            logits = logits + (self.projection(y) * h).sum(dim=1)
        return logits

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        key = _size_key(h.size(-1))
        return self.attention[key](h) if key in self.attention else h

    def attention_layers(self) -> dict[str, nn.Module]:
        """The self-attention layers in forward order, keyed by map size, e.g. {"16x16": …}."""
        return dict(self.attention.items())

    def config(self) -> dict:
        """The constructor arguments as plain JSON types: Discriminator(**d.config()) rebuilds d."""
        return {
            "img_size": self.img_size,
            "img_channels": self.img_channels,
            "base_channels": self.base_channels,
            "attention_at": list(self.attention_at),
            "num_classes": self.num_classes,
            "arch": self.arch,
            "attention_block": self.attention_block,
            "attention_scaled": self.attention_scaled,
        }

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        require_tensor(x, "x")
        expected = (self.img_channels, self.img_size, self.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        _check_dtype(x, "images", self)
        require_device(x, "x", self)
        _check_labels(y, x, self.num_classes, "Discriminator")


# ---------------------------------------------------------------------------------------------
# Shared helpers and checks
# ---------------------------------------------------------------------------------------------


def _size_key(size: int) -> str:
    return f"{size}x{size}"


def _attention_layers(
    attention_at: tuple[int, ...],
    sizes: list[int],
    channels: list[int],
    block: str = "attention",
    scaled: bool = False,
) -> nn.ModuleDict:
    """One block per requested size, in forward order (the order of `sizes`).

    The block is a SelfAttention2d, or with block="residual" the same-size GatedResidualBlock.
    """

    def make(c: int) -> nn.Module:
        return SelfAttention2d(c, scaled=scaled) if block == "attention" else GatedResidualBlock(c)

    return nn.ModuleDict(
        (_size_key(s), make(c)) for s, c in zip(sizes, channels, strict=True) if s in attention_at
    )


def _check_attention_block(block: str) -> None:
    if block not in ATTENTION_BLOCKS:
        raise ValueError(
            f"unknown attention_block {block!r}; choose one of "
            f"{', '.join(map(repr, ATTENTION_BLOCKS))} (residual: the same-size local control)"
        )


def _check_img_size(img_size: int) -> None:
    if not isinstance(img_size, int) or img_size not in IMG_SIZES:
        raise ValueError(
            f"img_size must be one of {', '.join(map(str, IMG_SIZES))}, got {img_size!r}; "
            "resize or pad your images to one of these"
        )


def _check_common(img_size: int, base_channels: int, num_classes: int | None, arch: str) -> None:
    _check_img_size(img_size)
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(map(repr, ARCHS))}")
    if not isinstance(base_channels, int) or base_channels < 8 or base_channels % 8:
        raise ValueError(
            f"base_channels must be a positive multiple of 8 (self-attention uses channels/8 "
            f"for its queries and keys), got {base_channels!r}"
        )
    if num_classes is not None:
        _check_positive(num_classes=num_classes)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_attention_at(
    attention_at: Iterable[int], sizes: list[int], model: str
) -> tuple[int, ...]:
    """Return the requested attention sizes as a sorted tuple, or raise ValueError."""
    if isinstance(attention_at, (int, str)):
        raise ValueError(
            f"attention_at must be a collection of feature-map sizes such as (16,), "
            f"got {attention_at!r}"
        )
    requested = list(dict.fromkeys(attention_at))  # drops duplicates
    missing = [s for s in requested if s not in sizes]
    if missing:
        raise ValueError(
            f"the {model} has no {' or '.join(map(str, missing))} feature map for attention; "
            f"at this img_size its maps are {', '.join(map(str, sizes))} pixels wide"
        )
    return tuple(sorted(requested))


def _check_dtype(x: torch.Tensor, name: str, model: nn.Module) -> None:
    """Floating point, and (outside autocast) the dtype of the model's weights."""
    weight_dtype = next(model.parameters()).dtype
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be floating point, got {x.dtype}"
            + (
                "; convert uint8 pixels with x.float() / 127.5 - 1"
                if x.dtype == torch.uint8
                else ""
            )
        )
    if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"{name} is {x.dtype} but the {type(model).__name__}'s weights are {weight_dtype}; "
            f"convert with {name if name == 'z' else 'x'}.to({weight_dtype})"
        )


def _check_labels(
    y: torch.Tensor | None, inputs: torch.Tensor, num_classes: int | None, model: str
) -> None:
    if num_classes is None:
        if y is not None:
            raise ValueError(
                f"this {model} is unconditional (num_classes=None) but was given labels y; "
                "call it without y, or build it with num_classes=... to condition on classes"
            )
        return
    if y is None:
        raise ValueError(
            f"this {model} is class-conditional (num_classes={num_classes}): pass labels y, "
            "a (batch,) tensor of class indices"
        )
    require_tensor(y, "y")
    batch_size = inputs.size(0)
    if y.dtype != torch.long:
        raise ValueError(f"labels y must be a torch.long tensor, got {y.dtype}; use y.long()")
    if tuple(y.shape) != (batch_size,):
        raise ValueError(f"labels y must have shape ({batch_size},), got {tuple(y.shape)}")
    if y.device != inputs.device:
        raise ValueError(
            f"labels y are on {y.device} but the inputs are on {inputs.device}; move them with "
            f"y.to('{inputs.device}')"
        )
    if y.device.type != "cpu":
        # Reading y's range would make the host wait for the GPU in every forward (and stop a
        # CUDA-graph capture); an out-of-range label there raises CUDA's device-side assert.
        return
    low, high = (int(y.min()), int(y.max())) if y.numel() else (0, 0)
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels y must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values from {low} to {high}"
        )
