"""Generated 2-D/3-D shapes with masks: discs/balls (class 1) and boxes (class 2) on noise.

Tiny and instant, for tests and smoke runs. The images are a pure function of
``(split, index, size)`` (fixed seed), so every run sees the same test set.
"""

from __future__ import annotations

import numpy as np
import torch

from largekernel.data.base import SPLIT_SEED, sample_seed
from largekernel.data.segmentation import PairedDataset, SegmentationAugment, SegmentationInfo

__all__ = ["generate_shape_sample", "build_shapes", "SHAPES_CLASSES"]

SHAPES_CLASSES = ("background", "round", "box")
_COUNTS = {2: {"train": 128, "val": 32, "test": 32}, 3: {"train": 48, "val": 12, "test": 12}}
_DEFAULT_SIZE = {2: 32, 3: 16}
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def generate_shape_sample(spatial_dims: int, size: int, rng: np.random.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``1 x size^d`` image in [0, 1] and its ``size^d`` mask (0 background, 1 round, 2 box).

    Example:
        >>> img, mask = generate_shape_sample(3, 9, np.random.default_rng(0))
        >>> tuple(img.shape), tuple(mask.shape), int(mask.max()) <= 2
        ((1, 9, 9, 9), (9, 9, 9), True)
    """
    grid = np.stack(np.meshgrid(*[np.arange(size)] * spatial_dims, indexing="ij"))
    mask = np.zeros((size,) * spatial_dims, dtype=np.int64)
    centre = rng.uniform(0.25 * size, 0.75 * size, size=spatial_dims)
    radius = rng.uniform(0.12 * size, 0.25 * size)
    dist = np.sqrt(((grid - centre.reshape(-1, *[1] * spatial_dims)) ** 2).sum(0))
    mask[dist <= radius] = 1
    lo = rng.integers(0, size // 2, size=spatial_dims)
    side = rng.integers(max(2, size // 6), max(3, size // 3) + 1, size=spatial_dims)
    box = np.ones_like(mask, dtype=bool)
    for axis in range(spatial_dims):
        box &= (grid[axis] >= lo[axis]) & (grid[axis] < lo[axis] + side[axis])
    mask[box] = 2
    levels = np.array([0.2, 0.8, 0.5])
    image = levels[mask] + rng.normal(0.0, 0.08, size=mask.shape)
    return (torch.from_numpy(np.clip(image, 0, 1)).float().unsqueeze(0), torch.from_numpy(mask))


def build_shapes(spatial_dims: int, split: str, *, image_size: int | None = None, augment: bool = False,
                 seed: int = 0, num_samples: int | None = None) -> PairedDataset:
    """The ``shapes-2d`` / ``shapes-3d`` data set (see :func:`generate_shape_sample`).

    Example:
        >>> len(build_shapes(2, "val", image_size=12))
        32
    """
    size = image_size or _DEFAULT_SIZE[spatial_dims]
    if size < 6:
        raise ValueError(f"image_size must be at least 6 for the shapes data sets, got {size}")
    count = num_samples or _COUNTS[spatial_dims][split]
    images, masks = [], []
    for i in range(count):
        rng = np.random.default_rng(sample_seed(SPLIT_SEED, spatial_dims, _SPLIT_ID[split], size, i))
        img, msk = generate_shape_sample(spatial_dims, size, rng)
        images.append(img)
        masks.append(msk)
    info = SegmentationInfo(f"shapes-{spatial_dims}d", 3, 1, size, SHAPES_CLASSES, (0.45,), (0.25,),
                            spatial_dims)
    aug = SegmentationAugment(flip_axes=tuple(range(spatial_dims)), max_shift=size // 8) if augment else None
    return PairedDataset(images, masks, info, aug, seed)
