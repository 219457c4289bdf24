"""Shared pieces of the data sets: ``DatasetInfo``, the in-memory data set, splits, statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from largekernel.data.transforms import Normalize, Transform, resize

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "TensorImageDataset",
    "SPLITS",
    "check_split",
    "check_image_size",
    "stratified_split",
    "channel_stats",
    "sample_seed",
    "evaluation_shard",
]

SPLITS = ("train", "val", "test")

#: The fixed seed of every data split: the data (and therefore the test set) never depends on the
#: run's ``seed``, so runs with different seeds are evaluated on the same images.
SPLIT_SEED = 20261121


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set.

    Attributes:
        name: canonical spec of the data set (e.g. ``"digits"``, ``"pathfinder32"``).
        num_classes: number of classes (labels are ``0 .. num_classes - 1``).
        in_chans: image channels.
        image_size: side of the (square) images the data set yields.
        class_names: one name per label.
        mean: per-channel mean used for normalisation (train statistics, raw [0, 1] scale).
        std: per-channel standard deviation used for normalisation.

    Example:
        >>> info = DatasetInfo("toy", 2, 1, 8, ("a", "b"), (0.5,), (0.25,))
        >>> info.num_classes
        2
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def check_split(split: str) -> str:
    """Validate ``split`` (one of ``train``, ``val``, ``test``) and return it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_image_size(image_size: int | None, name: str = "image_size") -> int | None:
    """Validate an optional positive integer image size."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int or None, got {type(image_size).__name__}")
    if image_size <= 0:
        raise ValueError(f"{name} must be positive, got {image_size}")
    return int(image_size)


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = SPLIT_SEED,
) -> dict[str, np.ndarray]:
    """Deterministic stratified train/val/test split of sample indices.

    Each class is shuffled with a seeded RNG and cut by ``fractions``; every class with at least
    three samples gets at least one sample in each split.

    Args:
        labels: one integer label per sample.
        fractions: ``(train, val, test)`` fractions summing to 1 (val may be 0).
        seed: RNG seed of the split.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` of sorted index arrays.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions!r}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = int(round(fractions[2] * n))
        n_val = int(round(fractions[1] * n))
        if n >= 3:
            n_test = max(n_test, 1 if fractions[2] > 0 else 0)
            n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = min(n_test, n)
        n_val = min(n_val, n - n_test)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {s: np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for s, p in parts.items()}


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``N x C x H x W`` images (computed in float64).

    A channel with zero variance gets std 1 so normalisation never divides by zero.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty N x C x H x W tensor, got {tuple(images.shape)}")
    x = images.double().transpose(0, 1).reshape(images.shape[1], -1)
    mean = x.mean(dim=1)
    std = x.std(dim=1, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def evaluation_shard(dataset: Dataset, rank: int, world_size: int) -> Subset:
    """This rank's share of an evaluation set: every ``world_size``-th sample from ``rank``.

    Unlike ``DistributedSampler``, nothing is repeated to even out the ranks (they may differ by
    one sample), so counts summed over ranks are exactly the single-process counts. Evaluate the
    unwrapped model on it: a DDP-wrapped forward would expect the same batch count on each rank.

    Args:
        dataset: the evaluation set (anything with ``__len__``).
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of processes.

    Returns:
        A ``Subset``; the shards of all ranks partition ``range(len(dataset))``.

    Example:
        >>> [list(evaluation_shard(range(5), r, 2).indices) for r in range(2)]
        [[0, 2, 4], [1, 3]]
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    return Subset(dataset, range(rank, len(dataset), world_size))


def sample_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (independent of Python's hash randomisation)."""
    digest = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ImageDataset(Dataset):
    """Base class: labelled images with per-sample reproducible augmentation.

    Subclasses implement :meth:`load` returning the raw image (float, ``C x H x W`` in [0, 1],
    already at ``info.image_size``) and its label. ``__getitem__`` then applies the augmentation
    (if any) and normalises with ``info.mean`` / ``info.std``.

    Randomness: after :meth:`set_epoch` is called, sample ``i`` of epoch ``e`` is augmented with a
    generator seeded by ``(seed, e, i)``, so results don't depend on worker count or order.
    Without ``set_epoch`` a per-sample seed is drawn from torch's global RNG (so augmentation
    still differs between epochs, and is reproducible under ``torch.manual_seed``).

    Attributes:
        info: the :class:`DatasetInfo`.
        split: ``train``, ``val`` or ``test``.
        augment: whether augmentation is applied.
        seed: augmentation seed.
    """

    def __init__(
        self,
        info: DatasetInfo,
        split: str,
        augment_transform: Transform | Callable | None,
        seed: int = 0,
    ) -> None:
        self.info = info
        self.split = check_split(split)
        self.augment_transform = augment_transform
        self.augment = augment_transform is not None
        self.seed = int(seed)
        self.epoch: int | None = None
        self._normalize = Normalize(info.mean, info.std)

    def set_epoch(self, epoch: int) -> None:
        """Fix the augmentation stream of an epoch (call before iterating, like a sampler's)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def raw(self, index: int) -> tuple[torch.Tensor, int]:
        """The un-augmented, un-normalised image (values in [0, 1]) and its label."""
        return self.load(self._check_index(index))

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} samples")
        return index % n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._check_index(int(index))
        img, label = self.load(index)
        if self.augment_transform is not None:
            if self.epoch is not None:
                s = sample_seed(self.seed, self.epoch, index)
            else:
                s = int(torch.randint(0, 2**62, ()))
            img = self.augment_transform(img, torch.Generator().manual_seed(s))
        return self._normalize(img).to(torch.float32).contiguous(), int(label)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.info.name!r}, split={self.split!r}, "
            f"n={len(self)}, image_size={self.info.image_size}, augment={self.augment})"
        )


class TensorImageDataset(ImageDataset):
    """An :class:`ImageDataset` over images held in memory.

    Args:
        images: ``N x C x H x W`` tensor, float in [0, 1] or uint8 (divided by 255 on access).
        labels: ``N`` integer labels.
        info: the data set's :class:`DatasetInfo`.
        split: ``train``, ``val`` or ``test``.
        augment_transform: augmentation applied before normalisation (``None``: none).
        seed: augmentation seed.

    Example:
        >>> info = DatasetInfo("toy", 2, 1, 4, ("a", "b"), (0.5,), (0.5,))
        >>> ds = TensorImageDataset(torch.rand(6, 1, 4, 4), torch.arange(6) % 2, info, "train")
        >>> ds[0][0].shape, len(ds)
        (torch.Size([1, 4, 4]), 6)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | np.ndarray | Sequence[int],
        info: DatasetInfo,
        split: str,
        augment_transform: Transform | Callable | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(info, split, augment_transform, seed)
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if images.dim() != 4:
            raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if images.shape[1] != info.in_chans:
            raise ValueError(f"images have {images.shape[1]} channels, info says {info.in_chans}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        return img, int(self.labels[index])


class InMemorySource:
    """A small data set held entirely in memory, split and normalised once per image size.

    Used by the bundled data sets (digits, LFW faces): ``images`` are resized once to
    ``image_size``, split with :func:`stratified_split` (fixed seed), and normalisation statistics
    are computed from the train split.

    Args:
        name: canonical spec.
        images: ``N x C x H x W`` float images in [0, 1] at native resolution.
        labels: ``N`` integer labels.
        class_names: one name per label.
        resize_mode: interpolation used to reach ``image_size``.
    """

    def __init__(
        self,
        name: str,
        images: torch.Tensor,
        labels: np.ndarray,
        class_names: tuple[str, ...],
        resize_mode: str = "bicubic",
        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    ) -> None:
        self.name = name
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = tuple(class_names)
        self.resize_mode = resize_mode
        self.splits = stratified_split(self.labels, fractions)
        self._by_size: dict[int, tuple[torch.Tensor, DatasetInfo]] = {}

    def prepared(self, image_size: int) -> tuple[torch.Tensor, DatasetInfo]:
        """All images resized to ``image_size`` and the matching :class:`DatasetInfo`."""
        if image_size not in self._by_size:
            x = resize(self.images, image_size, self.resize_mode).contiguous()
            mean, std = channel_stats(x[torch.from_numpy(self.splits["train"])])
            info = DatasetInfo(
                name=self.name,
                num_classes=len(self.class_names),
                in_chans=int(x.shape[1]),
                image_size=image_size,
                class_names=self.class_names,
                mean=mean,
                std=std,
            )
            self._by_size[image_size] = (x, info)
        return self._by_size[image_size]

    def dataset(
        self,
        split: str,
        image_size: int,
        augment_transform: Transform | Callable | None,
        seed: int,
    ) -> TensorImageDataset:
        x, info = self.prepared(image_size)
        idx = torch.from_numpy(self.splits[check_split(split)])
        return TensorImageDataset(x[idx], self.labels[idx.numpy()], info, split, augment_transform, seed)
