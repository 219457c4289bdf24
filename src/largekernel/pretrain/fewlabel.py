"""Few-label subsets for fine-tuning experiments: the first ``n`` training samples of every class."""

from __future__ import annotations

from collections import defaultdict

from torch.utils.data import Dataset

__all__ = ["first_per_class"]


def _label(dataset: Dataset, index: int) -> int:
    raw = getattr(dataset, "raw", None)  # largekernel data sets: the label without augmenting the image
    return int(raw(index)[1] if callable(raw) else dataset[index][1])


def first_per_class(dataset: Dataset, n: int) -> list[int]:
    """Indices of the first ``n`` samples of each class, in data-set order.

    A ``train_subset`` of the first ``N`` samples can miss classes when a split is sorted by class
    (``lfw-faces``: faces first); this keeps every class, ``n`` labels each (fewer if a class has
    fewer samples).

    Args:
        dataset: Samples ``(image, int label)``.
        n: Samples per class, ``>= 1``.

    Returns:
        Sorted indices into ``dataset``.

    Raises:
        ValueError: ``n`` is not a positive int.

    Example:
        >>> data = [(None, c) for c in [1, 1, 1, 0, 0, 2]]
        >>> first_per_class(data, 2)
        [0, 1, 3, 4, 5]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"train_subset_per_class must be a positive int, got {n!r}")
    taken: dict[int, int] = defaultdict(int)
    keep = []
    for index in range(len(dataset)):
        label = _label(dataset, index)
        if taken[label] < n:
            taken[label] += 1
            keep.append(index)
    return keep
