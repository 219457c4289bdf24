"""In-memory data sets of non-image tensors: sequences ``(C, L)``, maps ``(C, H, W)`` and volumes
``(C, D, H, W)``, with the same interface as the image data sets (``info``, ``raw``, ``set_epoch``).

The modality data sets (UCR/UEA series, spoken-digit MFCCs, point clouds, moving digits) prepare
all their samples once, already normalised, and hand them to :class:`ArrayDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from largekernel.data.base import DatasetInfo, check_split

__all__ = ["ArrayDataset", "array_info"]


def array_info(
    name: str, x: torch.Tensor, class_names: Sequence[str], *, size: int | None = None
) -> DatasetInfo:
    """The :class:`DatasetInfo` of already-normalised samples ``x`` of shape ``(N, C, *spatial)``.

    ``image_size`` holds the first spatial extent (the length of a sequence, the side of a map or
    volume) unless ``size`` is given; ``mean``/``std`` are 0/1 because the samples are normalised
    when they are built (per series, per image or per volume, as the data set documents).

    Example:
        >>> array_info("toy", torch.zeros(4, 2, 50), ["a", "b"]).image_size
        50
    """
    if x.dim() < 3:
        raise ValueError(f"samples must be (N, C, *spatial), got shape {tuple(x.shape)}")
    channels = int(x.shape[1])
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        in_chans=channels,
        image_size=int(size if size is not None else x.shape[2]),
        class_names=tuple(str(c) for c in class_names),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


class ArrayDataset(Dataset):
    """Labelled tensors held in memory, returned as ``(float32 tensor, int label)``.

    Args:
        samples: ``(N, C, *spatial)`` tensor (already normalised).
        labels: ``N`` integer labels in ``[0, info.num_classes)``.
        info: the data set's :class:`DatasetInfo`.
        split: ``train``, ``val`` or ``test``.

    Example:
        >>> x = torch.randn(6, 1, 20)
        >>> ds = ArrayDataset(x, [0, 1] * 3, array_info("toy", x, ["a", "b"]), "train")
        >>> ds[0][0].shape, len(ds)
        (torch.Size([1, 20]), 6)
    """

    def __init__(
        self,
        samples: torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        info: DatasetInfo,
        split: str,
    ) -> None:
        self.split = check_split(split)
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if samples.dim() < 3:
            raise ValueError(f"samples must be (N, C, *spatial), got shape {tuple(samples.shape)}")
        if samples.shape[0] != labels.shape[0]:
            raise ValueError(f"{samples.shape[0]} samples but {labels.shape[0]} labels")
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < info.num_classes):
            raise ValueError(f"labels must be in [0, {info.num_classes}), got {labels.min()}..{labels.max()}")
        self.samples = samples.to(torch.float32).contiguous()
        self.labels = labels
        self.info = info
        self.augment = False
        self.epoch: int | None = None

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Kept for the loaders' interface; these data sets have no augmentation."""
        self.epoch = int(epoch)

    def raw(self, index: int) -> tuple[torch.Tensor, int]:
        """The sample and its label (the stored samples are already normalised)."""
        return self[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} samples")
        return self.samples[index], int(self.labels[index])

    def __repr__(self) -> str:
        shape = tuple(self.samples.shape[1:])
        return f"{type(self).__name__}(name={self.info.name!r}, split={self.split!r}, n={len(self)}, sample={shape})"
