"""Moving digits: generated video clips labelled by the direction and speed of motion.

Each clip has ``T = 8`` frames of 32 x 32 pixels: one of scikit-learn's 8 x 8 handwritten digits
(the digit itself is irrelevant to the label) moves in a straight line, up / down / left / right,
slowly (1 pixel per frame) or fast (3 pixels per frame), over Gaussian noise. 8 classes
(direction x speed). No single frame tells the class: a network has to relate frames in time.

Two layouts, through :mod:`largekernel.nn.adapters`:

* ``moving-digits-3d`` -- the clip ``(1, T, H, W)`` for a 3-D backbone (``spatial_dims=3``);
* ``moving-digits-2d`` -- the frames folded into one ``(1, 2H, 4W)`` mosaic (frame ``t`` in tile
  row ``t // 4``, column ``t % 4``) for a 2-D backbone, the authors' way.

Deterministic: a fixed seed per sample; train 800, val 160, test 400 clips, classes balanced.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from largekernel.data.arrays import ArrayDataset, array_info
from largekernel.data.base import DatasetInfo, check_split, sample_seed
from largekernel.nn.adapters import fold_frames

__all__ = ["MOTION_CLASSES", "VIDEO_VARIANTS", "make_moving_digit", "build_moving_digits", "moving_digits_info"]

_DIRECTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_SPEEDS = {"slow": 1, "fast": 3}
MOTION_CLASSES = tuple(f"{d}-{s}" for d in _DIRECTIONS for s in _SPEEDS)
VIDEO_VARIANTS = ("moving-digits-3d", "moving-digits-2d")
FRAMES, SIZE, _ROWS, _COLS = 8, 32, 2, 4
_SPLIT_SIZES = {"train": 800, "val": 160, "test": 400}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)


def make_moving_digit(label: int, seed: int, noise: float = 0.1) -> torch.Tensor:
    """One clip ``(1, T, 32, 32)`` of class ``label`` (see :data:`MOTION_CLASSES`), values ~[0, 1].

    Example:
        >>> make_moving_digit(0, seed=3).shape
        torch.Size([1, 8, 32, 32])
    """
    if not 0 <= label < len(MOTION_CLASSES):
        raise ValueError(f"label must be in [0, {len(MOTION_CLASSES)}), got {label!r}")
    rng = np.random.default_rng(seed)
    direction, speed = MOTION_CLASSES[label].split("-")
    (dy, dx), step = _DIRECTIONS[direction], _SPEEDS[speed]
    digit = _digits()[rng.integers(len(_digits()))]
    travel = step * (FRAMES - 1)
    free = SIZE - 8  # top-left positions 0..free keep the digit inside the frame
    def start(d: int) -> int:
        lo, hi = (travel, free) if d < 0 else (0, free - travel) if d > 0 else (0, free)
        return int(rng.integers(lo, hi + 1))
    y0, x0 = start(dy), start(dx)
    clip = np.zeros((FRAMES, SIZE, SIZE), np.float32)
    for t in range(FRAMES):
        y, x = y0 + dy * step * t, x0 + dx * step * t
        clip[t, y : y + 8, x : x + 8] = digit
    clip += rng.normal(scale=noise, size=clip.shape).astype(np.float32)
    return torch.from_numpy(clip).unsqueeze(0)


@functools.lru_cache(maxsize=6)
def _generate(split: str) -> tuple[torch.Tensor, np.ndarray]:
    n = _SPLIT_SIZES[split]
    labels = np.arange(n) % len(MOTION_CLASSES)
    clips = torch.stack([make_moving_digit(int(c), sample_seed(20261131, _SPLIT_IDS[split], i)) for i, c in enumerate(labels)])
    return (clips - 0.5) / 0.5, labels


def moving_digits_info(variant: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``moving-digits-3d`` / ``moving-digits-2d``."""
    return build_moving_digits(variant, "val").info


def build_moving_digits(variant: str, split: str) -> ArrayDataset:
    """One split: clips ``(1, 8, 32, 32)`` (``-3d``) or mosaics ``(1, 64, 128)`` (``-2d``).

    Example:
        >>> build_moving_digits("moving-digits-2d", "val")[0][0].shape
        torch.Size([1, 64, 128])
    """
    if variant not in VIDEO_VARIANTS:
        raise ValueError(f"variant must be one of {VIDEO_VARIANTS}, got {variant!r}")
    x, labels = _generate(check_split(split))
    if variant == "moving-digits-2d":
        x = fold_frames(x, _ROWS, _COLS)
    return ArrayDataset(x, labels, array_info(variant, x, MOTION_CLASSES), split)
