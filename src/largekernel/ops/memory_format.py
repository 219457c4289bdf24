"""The memory format PyTorch's own convolution returns, so the engine can return the same.

Internally the engine picks whatever layout is fastest (oneDNN's channels-last depthwise forward is
near peak where its NCHW one falls off a cliff), but a drop-in must hand back what
``F.conv2d`` would: a contiguous NCHW input must not come back channels-last (``.view()`` then
fails, and the next train-mode BatchNorm silently switches to its less accurate channels-last
kernel). A contiguous input and weight always give a contiguous output, in every backend. When the input
or the weight is channels-last, PyTorch's answer depends on the backend it picks (oneDNN returns
channels-last; float64 3-D convolutions on CPU always return contiguous outputs), so rather than
re-deriving it, it is *measured*: once per (device, dtype, rank, suggested input/weight formats,
depthwise or not) a small PyTorch convolution with those formats is run and its output format
cached. (PyTorch's fallbacks for tiny problems, e.g. batch 1 with a 1x1 kernel on one thread, can
answer differently for channels-last inputs; the values are the same either way.)
"""

from __future__ import annotations

import threading

import torch
from torch.nn import functional as F

__all__ = ["suggest_memory_format", "expected_output_format", "to_memory_format"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CL = {4: torch.channels_last, 5: torch.channels_last_3d}
_CACHE: dict[tuple, torch.memory_format] = {}
_LOCK = threading.Lock()


def suggest_memory_format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor.suggest_memory_format()`` as PyTorch's C++ defines it (not exposed in Python).

    A tensor "suggests" channels-last when its strides order the channel dimension innermost;
    tensors whose strides are ambiguous (e.g. one channel, or 1x1 spatial size) suggest the
    contiguous format, as in C++.
    """
    if t.layout != torch.strided or t.dim() not in _CL:
        return torch.contiguous_format
    return _CL[t.dim()] if _strides_like_channels_last(t.shape, t.stride()) else torch.contiguous_format


def _strides_like_channels_last(sizes, strides) -> bool:
    # c10's is_channels_last_strides_{2d,3d}: walk the dimensions from innermost (C, then W, H, (D),
    # N) and require non-decreasing strides, skipping the size-1 dimensions' contribution
    order = (1, 3, 2, 0) if len(sizes) == 4 else (1, 4, 3, 2, 0)
    if strides[1] == 0:
        return False
    minimum = 0
    for d in order:
        if sizes[d] == 0 or strides[d] < minimum:
            return False
        if d == 0 and minimum == strides[1]:
            return False  # e.g. N and C both of stride 1: ambiguous, PyTorch says contiguous
        minimum = strides[d]
        if sizes[d] > 1:
            minimum *= sizes[d]
    return True


def _probe(nd: int, dtype: torch.dtype, device: torch.device, x_cl: bool, w_cl: bool, depthwise: bool):
    # unambiguous shapes (2 channels, 4+ taps) that make PyTorch pick its regular backend (oneDNN on
    # CPU: batch > 1 and kernels wider than 3); its tiny-problem fallbacks may differ
    x = torch.zeros((2, 2) + (5,) * nd, dtype=dtype, device=device)
    w = torch.zeros((2, 1 if depthwise else 2) + (4,) * nd, dtype=dtype, device=device)
    if x_cl:
        x = x.contiguous(memory_format=_CL[x.dim()])
    if w_cl and not depthwise:
        w = w.contiguous(memory_format=_CL[w.dim()])
    with torch.no_grad(), torch.autocast("cpu" if device.type == "meta" else device.type, enabled=False):
        y = _CONV[nd](x, w, None, 1, 0, 1, 2 if depthwise else 1)
    return _CL[y.dim()] if (not y.is_contiguous() and y.is_contiguous(memory_format=_CL[y.dim()])) else (
        torch.contiguous_format
    )


def expected_output_format(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.memory_format:
    """The memory format ``F.conv{1,2,3}d(x, weight, groups=groups)`` returns on this device.

    Args:
        x: the (batched) input.
        weight: the weight.
        groups: the number of groups.

    Returns:
        ``torch.contiguous_format``, ``torch.channels_last`` or ``torch.channels_last_3d``.

    Example:
        >>> x = torch.randn(1, 4, 8, 8)
        >>> expected_output_format(x, torch.randn(4, 1, 3, 3), 4)
        torch.contiguous_format
    """
    nd = weight.dim() - 2
    if nd == 1 or x.dim() != nd + 2:
        return torch.contiguous_format
    x_cl = suggest_memory_format(x) != torch.contiguous_format
    w_cl = suggest_memory_format(weight) != torch.contiguous_format
    if not (x_cl or w_cl):
        return torch.contiguous_format  # every backend returns a contiguous output here
    depthwise = groups > 1 and weight.shape[1] == 1
    key = (x.device.type, x.dtype, nd, x_cl, w_cl, depthwise)
    fmt = _CACHE.get(key)
    if fmt is None:
        fmt = _probe(nd, x.dtype, x.device, x_cl, w_cl, depthwise)
        with _LOCK:
            _CACHE[key] = fmt
    return fmt


def to_memory_format(y: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``y`` in memory format ``fmt`` (no copy when it already is)."""
    if y.is_contiguous(memory_format=fmt):
        return y
    return y.contiguous(memory_format=fmt)
