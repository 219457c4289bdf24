"""Image transforms in pure PyTorch (no torchvision).

Every transform works on a single ``C x H x W`` float tensor and takes an optional
``torch.Generator`` so that augmentation can be made reproducible per sample: the data sets
seed one generator per ``(seed, epoch, index)`` and pass it down the pipeline.
Deterministic transforms simply ignore the generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "resize",
    "normalize",
    "Transform",
    "Compose",
    "Resize",
    "Normalize",
    "RandomAffine",
    "RandomShift",
    "RandomFlip",
    "RandomDihedral",
]

_RESIZE_MODES = ("nearest", "bilinear", "bicubic", "area")


def _check_image(img: torch.Tensor, name: str = "img") -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() not in (3, 4):
        raise ValueError(f"{name} must be C x H x W or N x C x H x W, got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {img.dtype}")


def resize(img: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``C x H x W`` (or ``N x C x H x W``) images to ``size``.

    Down-sampling uses anti-aliasing (for bilinear/bicubic) so thin strokes don't alias; bicubic
    output is clamped to the input's range because its overshoot would create values a
    normalised pipeline never saw in training.

    Args:
        img: floating-point image tensor.
        size: output side (square) or ``(height, width)``.
        mode: one of ``nearest``, ``bilinear``, ``bicubic``, ``area``.

    Returns:
        The resized tensor (same dimensionality as ``img``).
    """
    _check_image(img)
    if mode not in _RESIZE_MODES:
        raise ValueError(f"mode must be one of {_RESIZE_MODES}, got {mode!r}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any((not isinstance(s, int)) or s <= 0 for s in hw):
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    batched = img.dim() == 4
    x = img if batched else img.unsqueeze(0)
    if tuple(x.shape[-2:]) == hw:
        return img
    kwargs: dict = {}
    if mode in ("bilinear", "bicubic"):
        kwargs = {"align_corners": False, "antialias": True}
    out = F.interpolate(x, size=hw, mode=mode, **kwargs)
    if mode == "bicubic":
        out = out.clamp(float(x.min()), float(x.max()))
    return out if batched else out.squeeze(0)


def normalize(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Return ``(img - mean) / std`` per channel (channel dim is -3)."""
    _check_image(img)
    channels = img.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean/std must have one value per channel ({channels}), got {len(mean)} and {len(std)}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    m = torch.as_tensor(mean, dtype=img.dtype, device=img.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=img.dtype, device=img.device).view(-1, 1, 1)
    return (img - m) / s


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


class Transform:
    """Base class: ``transform(img, generator=None) -> img`` on a ``C x H x W`` tensor."""

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply transforms in order, sharing one generator.

    Example:
        >>> t = Compose([Resize(16), Normalize((0.5,), (0.25,))])
        >>> t(torch.rand(1, 8, 8)).shape
        torch.Size([1, 16, 16])
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"transforms must be callables, got {type(t).__name__}")
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            img = t(img, generator)
        return img


class Resize(Transform):
    """Deterministic resize to a square ``size`` (see :func:`resize`).

    Example:
        >>> Resize(32, mode="bicubic")(torch.rand(1, 8, 8)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(self, size: int, mode: str = "bilinear") -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if mode not in _RESIZE_MODES:
            raise ValueError(f"mode must be one of {_RESIZE_MODES}, got {mode!r}")
        self.size = size
        self.mode = mode

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return resize(img, self.size, self.mode)


class Normalize(Transform):
    """Per-channel ``(x - mean) / std``.

    Example:
        >>> Normalize((0.5,), (0.5,))(torch.ones(1, 2, 2)).max().item()
        1.0
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(f"mean and std must be non-empty and equally long, got {mean!r}, {std!r}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return normalize(img, self.mean, self.std)


class RandomAffine(Transform):
    """Small random rotation / scale / translation, resampled bilinearly.

    Args:
        degrees: maximum absolute rotation in degrees.
        translate: maximum shift as a fraction of the image side (each axis).
        scale: ``(min, max)`` zoom factor range.
        padding_mode: ``zeros`` (background is 0, e.g. digits), ``border`` or ``reflection``.
        p: probability of applying the transform.

    Example:
        >>> t = RandomAffine(degrees=10, translate=0.1, scale=(0.9, 1.1))
        >>> t(torch.rand(1, 32, 32), torch.Generator().manual_seed(0)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        padding_mode: str = "zeros",
        p: float = 1.0,
    ) -> None:
        if degrees < 0:
            raise ValueError(f"degrees must be >= 0, got {degrees}")
        if not 0 <= translate < 1:
            raise ValueError(f"translate must be in [0, 1), got {translate}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale!r}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be zeros, border or reflection, got {padding_mode!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = (float(scale[0]), float(scale[1]))
        self.padding_mode = padding_mode
        self.p = float(p)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img)
        if self.p < 1 and float(torch.rand((), generator=generator)) >= self.p:
            return img
        angle = math.radians(_uniform(-self.degrees, self.degrees, generator))
        zoom = _uniform(self.scale[0], self.scale[1], generator)
        # affine_grid works in normalised [-1, 1] coordinates, so a shift of a fraction f of the
        # side is 2f there.
        tx = 2.0 * _uniform(-self.translate, self.translate, generator)
        ty = 2.0 * _uniform(-self.translate, self.translate, generator)
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        # the grid maps output coords to input coords, i.e. the inverse transform
        theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=img.dtype, device=img.device)
        x = img.unsqueeze(0) if img.dim() == 3 else img
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        out = F.grid_sample(
            x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False
        )
        return out.squeeze(0) if img.dim() == 3 else out


class RandomShift(Transform):
    """Random integer translation by up to ``max_shift`` pixels (pad-and-crop).

    Exact (no interpolation), which matters for thin one-pixel strokes.

    Example:
        >>> RandomShift(2)(torch.rand(3, 16, 16), torch.Generator().manual_seed(0)).shape
        torch.Size([3, 16, 16])
    """

    def __init__(self, max_shift: int, padding_mode: str = "constant") -> None:
        if not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative int, got {max_shift!r}")
        if padding_mode not in ("constant", "reflect", "replicate"):
            raise ValueError(
                f"padding_mode must be constant, reflect or replicate, got {padding_mode!r}"
            )
        self.max_shift = max_shift
        self.padding_mode = padding_mode

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img)
        m = self.max_shift
        if m == 0:
            return img
        h, w = img.shape[-2:]
        if self.padding_mode == "reflect" and m >= min(h, w):
            raise ValueError(f"max_shift {m} too large for reflect padding of a {h}x{w} image")
        dy, dx = (int(v) for v in torch.randint(0, 2 * m + 1, (2,), generator=generator))
        x = img.unsqueeze(0) if img.dim() == 3 else img
        padded = F.pad(x, (m, m, m, m), mode=self.padding_mode)
        out = padded[..., dy : dy + h, dx : dx + w]
        return out.squeeze(0) if img.dim() == 3 else out


class RandomFlip(Transform):
    """Flip horizontally and/or vertically, each with probability ``p``.

    Example:
        >>> RandomFlip(horizontal=True)(torch.rand(1, 4, 4)).shape
        torch.Size([1, 4, 4])
    """

    def __init__(self, horizontal: bool = True, vertical: bool = False, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.horizontal = bool(horizontal)
        self.vertical = bool(vertical)
        self.p = float(p)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img)
        dims = []
        if self.horizontal and float(torch.rand((), generator=generator)) < self.p:
            dims.append(-1)
        if self.vertical and float(torch.rand((), generator=generator)) < self.p:
            dims.append(-2)
        return img.flip(dims) if dims else img


class RandomDihedral(Transform):
    """One of the 8 symmetries of the square (rotations by 90 degrees and flips), uniformly.

    Label-preserving for orientation-free tasks such as Pathfinder, and exact on the pixel grid.

    Example:
        >>> RandomDihedral()(torch.rand(1, 8, 8), torch.Generator().manual_seed(1)).shape
        torch.Size([1, 8, 8])
    """

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img)
        k = int(torch.randint(0, 8, (), generator=generator))
        out = torch.rot90(img, k % 4, dims=(-2, -1))
        return out.flip(-1) if k >= 4 else out
