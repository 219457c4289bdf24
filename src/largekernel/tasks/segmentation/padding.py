"""Pad inputs to a backbone's stride and crop outputs back, for any spatial size (odd included)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

__all__ = ["pad_to_multiple", "crop_to"]


def pad_to_multiple(x: torch.Tensor, multiple: int | Sequence[int], mode: str = "replicate"
                    ) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the trailing spatial dims of ``x`` (``N x C x *spatial``) at their end to a multiple.

    Padding goes at the end of every dimension only, so the original content keeps its
    coordinates and cropping back is a plain slice.

    Args:
        x: Batch of ``N x C x *spatial`` tensors (1 to 3 spatial dims).
        multiple: One multiple for all spatial dims, or one per dim.
        mode: ``F.pad`` mode (``"replicate"``, ``"reflect"`` or ``"constant"``). Replicating the
            edge avoids inventing a hard border the network never saw.

    Returns:
        ``(padded, original_spatial_size)``.

    Example:
        >>> y, size = pad_to_multiple(torch.zeros(1, 1, 5, 7), 4)
        >>> tuple(y.shape), size
        ((1, 1, 8, 8), (5, 7))
    """
    if x.dim() < 3:
        raise ValueError(f"x must be N x C x spatial..., got shape {tuple(x.shape)}")
    size = tuple(x.shape[2:])
    mult = (multiple,) * len(size) if isinstance(multiple, int) else tuple(multiple)
    if len(mult) != len(size) or any(int(m) < 1 for m in mult):
        raise ValueError(f"multiple must be a positive int or {len(size)} positive ints, got {multiple!r}")
    extra = [(-s) % int(m) for s, m in zip(size, mult)]
    if not any(extra):
        return x, size
    pad: list[int] = []
    for e in reversed(extra):  # F.pad lists the last dimension first
        pad += [0, e]
    if mode == "reflect" and any(e >= s for e, s in zip(extra, size)):
        mode = "replicate"  # reflection needs pad < size (tiny inputs); the edge is the next best
    return F.pad(x, pad, mode=mode), size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial dims of ``x`` to ``size`` (from the start, undoing
    :func:`pad_to_multiple`).

    Example:
        >>> crop_to(torch.zeros(1, 3, 8, 8), (5, 7)).shape
        torch.Size([1, 3, 5, 7])
    """
    index = (slice(None), slice(None)) + tuple(slice(0, int(s)) for s in size)
    return x[index]
