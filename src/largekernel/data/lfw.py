"""scikit-image's bundled LFW subset: 200 grey 25 x 25 crops, faces vs non-faces, offline."""

from __future__ import annotations

import functools

import numpy as np
import torch

from largekernel.data.base import DatasetInfo, InMemorySource, TensorImageDataset, check_split
from largekernel.data.transforms import Compose, RandomAffine, RandomFlip

__all__ = ["LFW_DEFAULT_SIZE", "build_lfw_faces", "lfw_faces_info"]

#: Default side the 25 x 25 crops are up-sampled to.
LFW_DEFAULT_SIZE = 32


@functools.lru_cache(maxsize=1)
def _source() -> InMemorySource:
    from skimage.data import lfw_subset

    raw = np.asarray(lfw_subset(), dtype=np.float64)
    if raw.max() > 1.0:  # older scikit-image versions return uint8
        raw = raw / 255.0
    images = torch.from_numpy(raw.astype(np.float32)).unsqueeze(1)
    # scikit-image documents the first 100 crops as faces, the next 100 as non-faces
    labels = np.zeros(len(raw), dtype=np.int64)
    labels[:100] = 1
    return InMemorySource("lfw-faces", images, labels, ("non-face", "face"), resize_mode="bicubic")


def lfw_faces_info(image_size: int | None = None) -> DatasetInfo:
    """:class:`DatasetInfo` of the LFW faces at ``image_size`` (default 32)."""
    return _source().prepared(image_size or LFW_DEFAULT_SIZE)[1]


def build_lfw_faces(
    split: str, image_size: int | None = None, augment: bool = False, seed: int = 0
) -> TensorImageDataset:
    """The LFW faces split (fixed stratified 70/10/20 train/val/test: 140/20/40 images).

    Augmentation: small random affine map (border padding) and horizontal flips.

    Example:
        >>> ds = build_lfw_faces("train")
        >>> len(ds), ds.info.class_names
        (140, ('non-face', 'face'))
    """
    check_split(split)
    aug = (
        Compose(
            [
                RandomAffine(degrees=10.0, translate=0.08, scale=(0.9, 1.1), padding_mode="border"),
                RandomFlip(horizontal=True),
            ]
        )
        if augment
        else None
    )
    return _source().dataset(split, image_size or LFW_DEFAULT_SIZE, aug, seed)
