"""ImageFolder-style data sets: ``PATH/<class>/<image files>``, loaded with Pillow.

Layouts:

* ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (optionally ``PATH/val/<class>/...``):
  those splits are used as they are; without ``PATH/val`` the val split is carved from train
  (a fixed stratified eighth of it).
* otherwise ``PATH/<class>/...``: a fixed stratified 70/10/20 train/val/test split.

Images are converted to grey (1 channel) if every image of the data set is grey, else to RGB;
each is resized (shorter side to ``image_size``, then centre-cropped to a square). Normalisation
statistics come from (up to 512 of) the train images.

Every image is decoded once when the folder is first indexed, with Pillow's decompression-bomb
limit enforced (:mod:`largekernel.utils.images`): a corrupt, truncated or oversized file stops
with an :class:`~largekernel.errors.ImageError` naming it, or, with ``bad_images="skip"``
(``train bad_images=skip`` / :func:`bad_images_policy`), is left out with a warning.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from largekernel.data.base import (
    SPLIT_SEED,
    DatasetInfo,
    ImageDataset,
    channel_stats,
    check_split,
    stratified_split,
)
from largekernel.data.transforms import Compose, RandomFlip, RandomShift, resize
from largekernel.errors import ConfigError, ImageError
from largekernel.utils.images import open_image

__all__ = ["IMAGE_EXTENSIONS", "FOLDER_DEFAULT_SIZE", "FolderDataset", "build_folder", "folder_info", "load_image",
           "bad_images_policy", "BAD_IMAGE_POLICIES"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

#: Default side of folder images.
FOLDER_DEFAULT_SIZE = 64

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_STATS_IMAGES = 512


def _image_mode(path: Path) -> str:
    """Decode ``path`` once (so a corrupt file is found now, not at epoch 7); return its mode."""
    with open_image(path) as img:
        mode = img.mode
        if mode == "P":
            # a palette image is grey only if every palette entry is
            pal = img.getpalette() or []
            rgb = np.asarray(pal, dtype=np.int64).reshape(-1, 3) if len(pal) % 3 == 0 else None
            if rgb is not None and len(rgb) and (rgb == rgb[:, :1]).all():
                return "L"
        return mode


def load_image(path: str | os.PathLike, in_chans: int, image_size: int) -> torch.Tensor:
    """Load an image as a float ``C x S x S`` tensor in [0, 1].

    The shorter side is resized to ``image_size`` (bilinear, anti-aliased), then the centre
    square is cropped.

    Raises:
        ImageError: the file cannot be decoded, is truncated, or is a decompression bomb (the
            message names it; a ``ValueError``).
    """
    path = Path(path)
    with open_image(path) as img:
        try:
            if img.mode.startswith("I") or img.mode == "F":
                arr = np.asarray(img, dtype=np.float64)
                scale = 65535.0 if img.mode.startswith("I") else 1.0
                arr = np.clip(np.nan_to_num(arr / scale), 0.0, 1.0)[None]
                if in_chans == 3:
                    arr = np.repeat(arr, 3, axis=0)
            else:
                arr = np.asarray(img.convert("L" if in_chans == 1 else "RGB"), dtype=np.float64) / 255.0
                arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        except Exception as err:  # a mode Pillow cannot convert
            raise ImageError(f"cannot read image file {path}: {type(err).__name__}: {err}", path=path) from None
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    h, w = x.shape[-2:]
    if min(h, w) != image_size:
        scale = image_size / min(h, w)
        x = resize(x, (max(image_size, round(h * scale)), max(image_size, round(w * scale))), "bilinear")
        x = x.clamp(0.0, 1.0)
    h, w = x.shape[-2:]
    top, left = (h - image_size) // 2, (w - image_size) // 2
    return x[:, top : top + image_size, left : left + image_size].contiguous()


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"image folder {root} is empty: expected one sub-folder per class ({root}/<class>/<images>)")
    found: dict[str, list[Path]] = {}
    for d in class_dirs:
        files = sorted(
            p
            for p in d.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if files:
            found[d.name] = files
        else:
            log.warning("class folder %s has no images (extensions %s); skipped", d, IMAGE_EXTENSIONS)
    if not found:
        raise ValueError(f"image folder {root} has no image files (extensions {IMAGE_EXTENSIONS})")
    return found


BAD_IMAGE_POLICIES = ("error", "skip")
_BAD_IMAGES: contextvars.ContextVar[str] = contextvars.ContextVar("largekernel_bad_images", default="error")


@contextlib.contextmanager
def bad_images_policy(policy: str) -> Iterator[None]:
    """Within the block, folder data sets built without ``bad_images=`` use ``policy``.

    ``"error"`` (the default) stops with an :class:`~largekernel.errors.ImageError` listing the
    unreadable files; ``"skip"`` leaves them out with a warning naming each one.

    Example:
        >>> with bad_images_policy("skip"):
        ...     pass
    """
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {policy!r}",
                          key="bad_images", value=policy)
    token = _BAD_IMAGES.set(policy)
    try:
        yield
    finally:
        _BAD_IMAGES.reset(token)


def _policy(bad_images: str | None) -> str:
    policy = bad_images if bad_images is not None else _BAD_IMAGES.get()
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {policy!r}",
                          key="bad_images", value=policy)
    return policy


class _FolderIndex:
    """The scanned file lists, splits, channel count and train statistics of one folder.

    Every image is decoded once here, so a corrupt, truncated or oversized file is reported (by
    path) before training starts rather than when an epoch first reaches it.
    """

    def __init__(self, root: Path, bad_images: str = "error") -> None:
        self.root = root
        split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
        self.files: dict[str, list[Path]] = {}
        self.labels: dict[str, np.ndarray] = {}
        if "train" in split_dirs and "test" in split_dirs:
            per_split = {s: _scan_classes(d) for s, d in split_dirs.items()}
            self.class_names = tuple(sorted(per_split["train"]))
            for s, classes in per_split.items():
                unknown = sorted(set(classes) - set(self.class_names))
                if unknown:
                    raise ValueError(f"{root}/{s} has classes not in {root}/train: {unknown}")
            for s, classes in per_split.items():
                files = [f for c in self.class_names for f in classes.get(c, [])]
                labels = [i for i, c in enumerate(self.class_names) for _ in classes.get(c, [])]
                self.files[s], self.labels[s] = files, np.asarray(labels, dtype=np.int64)
            if "val" not in per_split:
                parts = stratified_split(self.labels["train"], (0.875, 0.125, 0.0), SPLIT_SEED)
                tf, tl = self.files["train"], self.labels["train"]
                self.files["val"] = [tf[i] for i in parts["val"]]
                self.labels["val"] = tl[parts["val"]]
                self.files["train"] = [tf[i] for i in parts["train"]]
                self.labels["train"] = tl[parts["train"]]
        else:
            classes = _scan_classes(root)
            self.class_names = tuple(classes)
            files = [f for c in self.class_names for f in classes[c]]
            labels = np.asarray([i for i, c in enumerate(self.class_names) for _ in classes[c]], dtype=np.int64)
            parts = stratified_split(labels, (0.7, 0.1, 0.2), SPLIT_SEED)
            for s, idx in parts.items():
                self.files[s] = [files[i] for i in idx]
                self.labels[s] = labels[idx]
        all_files = [f for s in self.files.values() for f in s]
        # one decoding pass: finds unreadable files now, and grey data sets stay single-channel
        modes: set[str] = set()
        bad: dict[Path, Exception] = {}
        for f in all_files:
            try:
                modes.add(_image_mode(f))
            except (ImageError, FileNotFoundError) as err:
                bad[f] = err
        if bad:
            self._drop_bad(bad, bad_images)
        self.in_chans = 1 if modes <= set(_GREY_MODES) else 3
        if not self.files["train"]:
            raise ValueError(f"image folder {root} has no training images")
        self._info: dict[int, DatasetInfo] = {}

    def _drop_bad(self, bad: dict[Path, Exception], policy: str) -> None:
        first = next(iter(bad.values()))
        if policy == "error":
            more = f" (and {len(bad) - 1} more unreadable files)" if len(bad) > 1 else ""
            raise ImageError(f"{first}{more}; fix or remove the file(s), or pass bad_images=skip "
                             f"to train without them", path=next(iter(bad)))
        for err in bad.values():
            log.warning("skipping %s", err)
        log.warning("image folder %s: skipped %d unreadable file(s)", self.root, len(bad))
        for split, files in self.files.items():
            keep = [i for i, f in enumerate(files) if f not in bad]
            self.files[split] = [files[i] for i in keep]
            self.labels[split] = self.labels[split][keep]

    def info(self, image_size: int) -> DatasetInfo:
        if image_size not in self._info:
            train = self.files["train"]
            rng = np.random.default_rng(SPLIT_SEED)
            pick = sorted(rng.permutation(len(train))[:_STATS_IMAGES])
            x = torch.stack([load_image(train[i], self.in_chans, image_size) for i in pick])
            mean, std = channel_stats(x)
            self._info[image_size] = DatasetInfo(
                name=f"folder:{self.root}",
                num_classes=len(self.class_names),
                in_chans=self.in_chans,
                image_size=image_size,
                class_names=self.class_names,
                mean=mean,
                std=std,
            )
        return self._info[image_size]


@functools.lru_cache(maxsize=8)
def _index(root: str, bad_images: str = "error") -> _FolderIndex:
    return _FolderIndex(Path(root), bad_images)


def _resolve(root: str | os.PathLike) -> str:
    if not str(root):
        raise ValueError("folder path is empty: use folder:PATH")
    return str(Path(root).expanduser().resolve())


class FolderDataset(ImageDataset):
    """Images of one split of an image folder, loaded lazily (Pillow) on access.

    Args:
        root: the folder (see the module docstring for layouts).
        split: ``train``, ``val`` or ``test``.
        image_size: output side (default 64).
        augment: random shift (reflect padding, up to 1/8 of the side) and horizontal flips.
        seed: augmentation seed.
        hflip: include horizontal flips in the augmentation.
        bad_images: ``"error"`` (stop, naming the unreadable files) or ``"skip"`` (leave them out
            with a warning); default: the enclosing :func:`bad_images_policy`, else ``"error"``.

    Example:
        >>> ds = FolderDataset("/data/shapes", "train", image_size=32)  # doctest: +SKIP
        >>> ds.info.class_names  # doctest: +SKIP
        ('circle', 'square')
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        image_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        hflip: bool = True,
        bad_images: str | None = None,
    ) -> None:
        check_split(split)
        size = image_size or FOLDER_DEFAULT_SIZE
        index = _index(_resolve(root), _policy(bad_images))
        aug = None
        if augment:
            steps = [RandomShift(max(1, size // 8), padding_mode="reflect" if size > 8 else "replicate")]
            if hflip:
                steps.append(RandomFlip(horizontal=True))
            aug = Compose(steps)
        super().__init__(index.info(size), split, aug, seed)
        self.root = index.root
        self.files = index.files[split]
        self.labels = index.labels[split]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(self.files[index], self.info.in_chans, self.info.image_size), int(self.labels[index])


def folder_info(root: str | os.PathLike, image_size: int | None = None) -> DatasetInfo:
    """:class:`DatasetInfo` of an image folder at ``image_size`` (default 64)."""
    return _index(_resolve(root), _policy(None)).info(image_size or FOLDER_DEFAULT_SIZE)


def build_folder(
    root: str | os.PathLike, split: str, image_size: int | None = None, augment: bool = False, seed: int = 0
) -> FolderDataset:
    """Shortcut for :class:`FolderDataset`."""
    return FolderDataset(root, split, image_size, augment, seed)
