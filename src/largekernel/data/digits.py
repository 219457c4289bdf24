"""scikit-learn's bundled handwritten digits (1797 grey 8 x 8 images, 10 classes), offline."""

from __future__ import annotations

import functools

import numpy as np
import torch

from largekernel.data.base import DatasetInfo, InMemorySource, TensorImageDataset, check_split
from largekernel.data.transforms import RandomAffine

__all__ = ["DIGITS_DEFAULT_SIZE", "build_digits", "digits_info"]

#: Default side the 8 x 8 digits are up-sampled to.
DIGITS_DEFAULT_SIZE = 32


@functools.lru_cache(maxsize=1)
def _source() -> InMemorySource:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # pixel values are counts 0..16 of a 4x4 block; scale to [0, 1]
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    return InMemorySource(
        "digits",
        images,
        np.asarray(bunch.target),
        tuple(str(i) for i in range(10)),
        resize_mode="bicubic",
    )


def digits_info(image_size: int | None = None) -> DatasetInfo:
    """:class:`DatasetInfo` of the digits at ``image_size`` (default 32)."""
    return _source().prepared(image_size or DIGITS_DEFAULT_SIZE)[1]


def build_digits(
    split: str, image_size: int | None = None, augment: bool = False, seed: int = 0
) -> TensorImageDataset:
    """The digits split (fixed stratified 70/10/20 train/val/test), up-sampled bicubically.

    Augmentation (``augment=True``): a small random affine map (rotation <= 10 degrees, shift
    <= 10 %, zoom 0.9-1.1) with black padding; no flips (they change digits).

    Example:
        >>> ds = build_digits("test")
        >>> ds[0][0].shape, ds.info.num_classes
        (torch.Size([1, 32, 32]), 10)
    """
    check_split(split)
    aug = RandomAffine(degrees=10.0, translate=0.1, scale=(0.9, 1.1), padding_mode="zeros") if augment else None
    return _source().dataset(split, image_size or DIGITS_DEFAULT_SIZE, aug, seed)
