"""Segmentation data sets: image + mask pairs in 1-D/2-D/3-D, augmentation, and their registry.

Specs (case-insensitive), built with :func:`build_segmentation_dataset`:

================  ============================================================================
``mni152-2d``     coronal slices of nilearn's MNI152 template (2 mm) with background / grey
                  matter / white matter labels (see :mod:`largekernel.data.mni152`)
``mni152-3d``     the same volume: random 3-D training patches, whole-region evaluation volumes
``shapes-2d``     generated discs and boxes on noise, 3 classes (fast tests)
``shapes-3d``     generated balls and boxes on noise, 3 classes (fast tests)
================  ============================================================================

Every item is ``(float32 C x *spatial normalised image, int64 *spatial mask)``; every data set
has ``.info`` (:class:`SegmentationInfo`) and ``.set_epoch(epoch)`` (augmentation is a pure
function of ``(seed, epoch, index)``, so interrupted runs resume exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from largekernel.data.base import check_split, sample_seed

__all__ = [
    "SegmentationInfo",
    "SegmentationAugment",
    "PairedDataset",
    "RandomPatchDataset",
    "check_pair",
    "build_segmentation_dataset",
    "list_segmentation_datasets",
    "is_segmentation_dataset",
]


@dataclass(frozen=True)
class SegmentationInfo:
    """What a segmentation model needs to know about its data.

    Attributes:
        name: canonical spec.
        num_classes: classes (mask values ``0 .. num_classes - 1``; 0 is background).
        in_chans: image channels.
        image_size: side of the training crops/patches, or the largest image side.
        class_names: one name per class.
        mean, std: per-channel normalisation (raw intensity scale).
        spatial_dims: 1, 2 or 3.
        slice_axis: For 2-D slices of volumes: the volume axis the slices were cut across
            (``predict`` cuts NIfTI volumes the same way); ``None`` otherwise.

    Example:
        >>> SegmentationInfo("toy", 2, 1, 8, ("bg", "fg"), (0.5,), (0.2,), 2).spatial_dims
        2
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spatial_dims: int
    slice_axis: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data (stored in checkpoints), with ``task="segment"``."""
        return {"name": self.name, "spec": self.name, "num_classes": self.num_classes,
                "in_chans": self.in_chans, "image_size": self.image_size,
                "class_names": list(self.class_names), "mean": list(self.mean), "std": list(self.std),
                "spatial_dims": self.spatial_dims, "slice_axis": self.slice_axis, "task": "segment"}


def check_pair(image: torch.Tensor, mask: torch.Tensor, spatial_dims: int, where: str = "") -> None:
    """Check a ``C x *spatial`` image and its ``*spatial`` mask.

    Raises:
        ValueError: Wrong number of dims, or a mask whose size differs from its image.
    """
    at = f" ({where})" if where else ""
    if image.dim() != spatial_dims + 1:
        raise ValueError(f"image{at} must be C x {spatial_dims} spatial dims, got shape {tuple(image.shape)}")
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(f"mask{at} has size {tuple(mask.shape)} but its image has spatial size "
                         f"{tuple(image.shape[1:])}: the mask size must equal the image size")


class SegmentationAugment:
    """Mask-aware augmentation: random flips, translation and intensity jitter.

    Args:
        flip_axes: Spatial axes (0-based) flipped with probability 1/2 each.
        max_shift: Largest translation in voxels (edge-replicated image, background-filled mask).
        intensity: ``(scale, shift)``: the raw image becomes ``x * U(1 - scale, 1 + scale) + U(-shift, shift)``.
    """

    def __init__(self, flip_axes: Sequence[int] = (0,), max_shift: int = 0,
                 intensity: tuple[float, float] = (0.1, 0.05)) -> None:
        self.flip_axes = tuple(flip_axes)
        self.max_shift = int(max_shift)
        self.intensity = intensity

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        for axis in self.flip_axes:
            if rng.random() < 0.5:
                image, mask = image.flip(axis + 1), mask.flip(axis)
        if self.max_shift:
            shifts = [int(s) for s in rng.integers(-self.max_shift, self.max_shift + 1, size=mask.dim())]
            image, mask = _translate(image, mask, shifts)
        scale, shift = self.intensity
        if scale or shift:
            image = image * float(rng.uniform(1 - scale, 1 + scale)) + float(rng.uniform(-shift, shift))
        return image, mask


def _translate(image: torch.Tensor, mask: torch.Tensor, shifts: Sequence[int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    m = max(abs(s) for s in shifts)
    if m == 0:
        return image, mask
    pad = [m, m] * mask.dim()
    img = F.pad(image.unsqueeze(0), pad, mode="replicate").squeeze(0)
    msk = F.pad(mask.unsqueeze(0), pad, mode="constant", value=0).squeeze(0)
    region = tuple(slice(m - s, m - s + n) for s, n in zip(shifts, mask.shape))
    return img[(slice(None),) + region].contiguous(), msk[region].contiguous()


class _SegmentationBase(Dataset):
    def __init__(self, info: SegmentationInfo, augment: SegmentationAugment | None, seed: int) -> None:
        self.info = info
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, *([1] * info.spatial_dims))
        self._std = torch.tensor(info.std, dtype=torch.float32).view(-1, *([1] * info.spatial_dims))

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(sample_seed(self.seed, self.epoch, index))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self._mean) / self._std


class PairedDataset(_SegmentationBase):
    """Fixed image/mask pairs (slices, volumes or generated shapes), optionally augmented.

    Args:
        images: Raw ``C x *spatial`` float tensors (equal shapes are not required).
        masks: ``*spatial`` integer masks, one per image, each of its image's spatial size.
        info: The data set's :class:`SegmentationInfo`.
        augment: Augmentation applied to training items (``None``: none).
        seed: Augmentation seed.

    Raises:
        ValueError: Different numbers of images and masks, or a mask whose size differs from
            its image.

    Example:
        >>> info = SegmentationInfo("toy", 2, 1, 4, ("bg", "fg"), (0.0,), (1.0,), 2)
        >>> ds = PairedDataset([torch.zeros(1, 4, 5)], [torch.zeros(4, 5, dtype=torch.long)], info)
        >>> [tuple(t.shape) for t in ds[0]]
        [(1, 4, 5), (4, 5)]
    """

    def __init__(self, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], info: SegmentationInfo,
                 augment: SegmentationAugment | None = None, seed: int = 0) -> None:
        super().__init__(info, augment, seed)
        if len(images) != len(masks):
            raise ValueError(f"masks has {len(masks)} entries but images has {len(images)}")
        for i, (img, msk) in enumerate(zip(images, masks)):
            check_pair(img, msk, info.spatial_dims, where=f"index {i}")
        self.images = [img.float() for img in images]
        self.masks = [msk.long() for msk in masks]

    def __len__(self) -> int:
        return len(self.images)

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The un-normalised, un-augmented pair."""
        return self.images[index], self.masks[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None:
            image, mask = self.augment(image, mask, self._rng(index))
        return self.normalize(image), mask


class RandomPatchDataset(_SegmentationBase):
    """Random patches of one (or a few) large volume(s): ``samples_per_epoch`` items per epoch.

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the patch position and the
    augmentation are drawn from a generator seeded with them.

    Args:
        volumes: Raw ``C x *spatial`` tensors.
        masks: Their ``*spatial`` masks.
        patch_size: Patch side (clipped to the volume).
        samples_per_epoch: Number of items.
        info, augment, seed: As in :class:`PairedDataset`.
        foreground_fraction: Probability that a patch is centred on a non-background voxel.
    """

    def __init__(self, volumes: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], patch_size: int,
                 samples_per_epoch: int, info: SegmentationInfo, augment: SegmentationAugment | None = None,
                 seed: int = 0, foreground_fraction: float = 0.67) -> None:
        super().__init__(info, augment, seed)
        if len(volumes) != len(masks) or not volumes:
            raise ValueError(f"masks has {len(masks)} entries but volumes has {len(volumes)} (need >= 1)")
        for i, (img, msk) in enumerate(zip(volumes, masks)):
            check_pair(img, msk, info.spatial_dims, where=f"volume {i}")
        if samples_per_epoch < 1 or patch_size < 1:
            raise ValueError(f"patch_size and samples_per_epoch must be positive, got {patch_size}, "
                             f"{samples_per_epoch}")
        self.volumes = [v.float() for v in volumes]
        self.masks = [m.long() for m in masks]
        self.patch_size = int(patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.foreground_fraction = float(foreground_fraction)
        self._foreground = [torch.nonzero(m > 0) for m in self.masks]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = self._rng(index)
        k = int(rng.integers(len(self.volumes)))
        vol, mask = self.volumes[k], self.masks[k]
        shape = mask.shape
        size = [min(self.patch_size, n) for n in shape]
        fg = self._foreground[k]
        if len(fg) and rng.random() < self.foreground_fraction:
            centre = fg[int(rng.integers(len(fg)))].tolist()
            start = [min(max(c - s // 2, 0), n - s) for c, s, n in zip(centre, size, shape)]
        else:
            start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, shape)]
        region = tuple(slice(a, a + s) for a, s in zip(start, size))
        image, patch = vol[(slice(None),) + region], mask[region]
        if self.augment is not None:
            image, patch = self.augment(image, patch, rng)
        return self.normalize(image), patch.contiguous()


_SPECS = {
    "mni152-2d": "MNI152 template (2 mm) coronal slices: background / grey matter / white matter",
    "mni152-3d": "MNI152 template (2 mm) volume: random 3-D patches (train), whole slabs (val/test)",
    "shapes-2d": "generated discs and boxes on noise, 3 classes (default 32 px)",
    "shapes-3d": "generated balls and boxes on noise, 3 classes (default 16 voxels)",
}


def list_segmentation_datasets() -> dict[str, str]:
    """``{spec: description}`` of the segmentation data sets."""
    return dict(_SPECS)


def is_segmentation_dataset(spec: str) -> bool:
    """Whether ``spec`` names a segmentation data set."""
    return isinstance(spec, str) and spec.strip().lower() in _SPECS


def build_segmentation_dataset(spec: str, split: str, *, image_size: int | None = None,
                               augment: bool = False, seed: int = 0, **options: Any) -> Dataset:
    """Build one split of a segmentation data set.

    Args:
        spec: One of :func:`list_segmentation_datasets`.
        split: ``train``, ``val`` or ``test`` (fixed regions/samples, independent of ``seed``).
        image_size: Training patch/crop size (3-D) or generated image side (shapes); the MNI152
            slices keep their native size.
        augment: Augment (for training).
        seed: Augmentation seed.
        **options: Data-set specific options (e.g. ``samples_per_epoch`` for ``mni152-3d``).

    Example:
        >>> ds = build_segmentation_dataset("shapes-2d", "test", image_size=17)
        >>> x, y = ds[0]; tuple(x.shape), tuple(y.shape), ds.info.num_classes
        ((1, 17, 17), (17, 17), 3)
    """
    check_split(split)
    if not isinstance(spec, str):
        raise TypeError(f"data set spec must be a string, got {type(spec).__name__}")
    key = spec.strip().lower()
    if key not in _SPECS:
        raise ValueError(f"unknown segmentation data set {spec!r}; valid: {', '.join(_SPECS)}")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if key.startswith("mni152"):
        from largekernel.data.mni152 import build_mni152

        return build_mni152(3 if key.endswith("3d") else 2, split, image_size=image_size, augment=augment,
                            seed=seed, **options)
    from largekernel.data.shapes_seg import build_shapes

    return build_shapes(3 if key.endswith("3d") else 2, split, image_size=image_size, augment=augment,
                        seed=seed, **options)
