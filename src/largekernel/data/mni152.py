"""The MNI152 template with tissue labels, from the files that ship inside nilearn (offline).

Labels (2 mm grid, 99 x 117 x 95 voxels, axes x = left-right, y = posterior-anterior,
z = inferior-superior):

* 0 background: outside nilearn's brain mask (``load_mni152_brain_mask``);
* 1 grey matter and 2 white matter: inside the brain mask, a voxel inside exactly one of
  nilearn's tissue masks (``load_mni152_gm_mask`` / ``load_mni152_wm_mask``) takes that tissue.
  Those masks are dilated and overlap (about 30 % of the white-matter mask), and 0.5 % of the
  brain mask lies in neither (mostly CSF): such voxels take the tissue whose probability map
  (``load_mni152_gm_template`` / ``load_mni152_wm_template``) is larger.

Splits are disjoint slabs of the one template along the anterior-posterior axis ``y``:
``train`` is ``y < 70`` (occipital, parietal, temporal and central parts, the cerebellum),
``val`` ``70 <= y < 80`` and ``test`` ``y >= 80`` (the frontal lobe), in 2 mm voxels. The split
cannot be left/right: nilearn's template is the *symmetric* ICBM 2009 average, whose right half
is an exact mirror image of its left half. With a single brain this measures how well a model
segments unseen tissue of the same subject, not generalisation to new subjects.

``mni152-2d`` items are coronal slices (``1 x 99 x 95``, one per ``y`` plane containing brain),
``mni152-3d`` training items random ``image_size``-cube patches of the training slab, and its
val/test items the whole slab (evaluated with sliding windows).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from largekernel.data.segmentation import (
    PairedDataset,
    RandomPatchDataset,
    SegmentationAugment,
    SegmentationInfo,
)

__all__ = ["MNI152_CLASSES", "load_mni152_maps", "load_mni152_labels", "mni152_region", "build_mni152"]

log = logging.getLogger(__name__)

MNI152_CLASSES = ("background", "grey matter", "white matter")
_TRAIN_END, _TEST_START = 70, 80  # y planes (2 mm grid): train | val | test


@functools.lru_cache(maxsize=2)
def load_mni152_maps(resolution: int = 2) -> dict[str, np.ndarray]:
    """nilearn's MNI152 images as arrays: ``template``, ``brain``, ``gm``, ``wm`` (boolean masks),
    ``gm_p``, ``wm_p`` (tissue probabilities) and ``affine``.

    Raises:
        ImportError: nilearn is not installed.
    """
    try:
        from nilearn import datasets
    except ImportError as err:  # pragma: no cover - nilearn is a test dependency
        raise ImportError("the MNI152 data sets need nilearn (pip install nilearn)") from err
    template = datasets.load_mni152_template(resolution=resolution)
    return {
        "template": np.asarray(template.get_fdata(), dtype=np.float32),
        "affine": np.asarray(template.affine),
        "brain": datasets.load_mni152_brain_mask(resolution=resolution).get_fdata() > 0,
        "gm": datasets.load_mni152_gm_mask(resolution=resolution).get_fdata() > 0,
        "wm": datasets.load_mni152_wm_mask(resolution=resolution).get_fdata() > 0,
        "gm_p": datasets.load_mni152_gm_template(resolution=resolution).get_fdata(),
        "wm_p": datasets.load_mni152_wm_template(resolution=resolution).get_fdata(),
    }


@functools.lru_cache(maxsize=2)
def load_mni152_labels(resolution: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(template float32 in [0, 1], labels int64, affine)`` of the MNI152 template.

    Raises:
        ImportError: nilearn is not installed.

    Example:
        >>> image, labels, affine = load_mni152_labels()  # doctest: +SKIP
        >>> image.shape, sorted(set(labels.ravel().tolist()))  # doctest: +SKIP
        ((99, 117, 95), [0, 1, 2])
    """
    maps = load_mni152_maps(resolution)
    brain, gm, wm = maps["brain"], maps["gm"], maps["wm"]
    labels = np.zeros(brain.shape, dtype=np.int64)
    undecided = gm == wm  # in both dilated masks, or in neither: the more probable tissue
    grey = brain & ((gm & ~wm) | (undecided & (maps["gm_p"] >= maps["wm_p"])))
    labels[brain] = 2
    labels[grey] = 1
    image = maps["template"] / max(float(maps["template"].max()), 1e-6)
    return image, labels, maps["affine"]


def mni152_region(split: str, resolution: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 x X x Y x Z image, X x Y x Z labels)`` of a split's slab (see the module notes)."""
    image, labels, _ = load_mni152_labels(resolution)
    scale = 2 / resolution
    a, b = int(round(_TRAIN_END * scale)), int(round(_TEST_START * scale))
    region = (slice(None), {"train": slice(0, a), "val": slice(a, b), "test": slice(b, None)}[split])
    img = torch.from_numpy(np.ascontiguousarray(image[region]))
    lab = torch.from_numpy(np.ascontiguousarray(labels[region]))
    return img.unsqueeze(0), lab


@functools.lru_cache(maxsize=1)
def _train_stats() -> tuple[float, float]:
    img, _ = mni152_region("train")
    return float(img.mean()), float(img.std())


def build_mni152(spatial_dims: int, split: str, *, image_size: int | None = None, augment: bool = False,
                 seed: int = 0, samples_per_epoch: int = 64) -> PairedDataset | RandomPatchDataset:
    """The ``mni152-2d`` (``spatial_dims=2``) or ``mni152-3d`` data set.

    Args:
        spatial_dims: 2 (coronal slices) or 3 (patches / whole slabs).
        split: ``train``, ``val`` or ``test``.
        image_size: 3-D training patch side (default 32); ignored in 2-D (native slices).
        augment: Left-right flips, intensity jitter, and (2-D) shifts of up to 4 voxels.
        seed: Augmentation seed.
        samples_per_epoch: Training patches per epoch (3-D).
    """
    mean, std = _train_stats()
    volume, labels = mni152_region(split)
    if spatial_dims == 2:
        planes = [y for y in range(labels.shape[1]) if bool((labels[:, y] > 0).any())]
        images = [volume[:, :, y] for y in planes]  # coronal slices, 1 x X x Z
        masks = [labels[:, y] for y in planes]
        info = SegmentationInfo("mni152-2d", 3, 1, max(volume.shape[1], volume.shape[3]), MNI152_CLASSES,
                                (mean,), (std,), 2, slice_axis=1)
        aug = SegmentationAugment(flip_axes=(0,), max_shift=4) if augment else None
        return PairedDataset(images, masks, info, aug, seed)
    patch = image_size or 32
    info = SegmentationInfo("mni152-3d", 3, 1, patch, MNI152_CLASSES, (mean,), (std,), 3)
    if split == "train":
        aug = SegmentationAugment(flip_axes=(0,), max_shift=0) if augment else None
        return RandomPatchDataset([volume], [labels], patch, samples_per_epoch, info, aug, seed)
    return PairedDataset([volume], [labels], info, None, seed)
