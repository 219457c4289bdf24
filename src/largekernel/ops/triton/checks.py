"""Argument checks for the Triton depthwise kernels (pure PyTorch: never imports Triton).

Everything the kernels assume is verified here before a launch, so that bad input gives a clear
error naming the argument (or, through :func:`unsupported_reason`, a fallback decision in the
dispatcher) and never a wrong answer:

* depthwise layout: ``weight`` is ``(C * m, 1, *K)`` for an input with ``C`` channels (channel
  multiplier ``m >= 1``, ``groups = C``), 1-D/2-D/3-D;
* dtypes float32/float16/bfloat16, the same for all tensors (accumulation is always float32);
* all tensors on one device, which is CUDA, or the CPU when Triton's interpreter is on
  (``TRITON_INTERPRET=1``);
* 32-bit indexing: every element offset the kernels form (``sum((size - 1) * stride)``) fits in an
  int32, storages are aligned to the element size, strides are non-negative;
* a non-empty output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = [
    "SUPPORTED_DTYPES",
    "MAX_CHANNELS",
    "interpreter_enabled",
    "unsupported_reason",
    "unsupported_output_reason",
    "supports",
    "check_conv",
    "output_size",
]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: channel blocks run on grid axis 1, whose size CUDA limits to 65535 (one channel per block worst case)
MAX_CHANNELS = 65535
_INT32_MAX = 2**31 - 1


def interpreter_enabled() -> bool:
    """Whether Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def _max_offset(t: torch.Tensor) -> int:
    return sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if n > 0)


def output_size(
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Output spatial size of a convolution with symmetric padding (may contain values <= 0)."""
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)
    )


def _device_reason(device: torch.device) -> str | None:
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreter_enabled():
        return None
    return (
        f"the Triton kernels run on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1), got a "
        f"{device.type} tensor"
    )


def _tensor_reason(t: torch.Tensor, name: str) -> str | None:
    if t.numel() >= _INT32_MAX or _max_offset(t) >= _INT32_MAX:
        return f"{name} is too large for the kernels' 32-bit indexing ({tuple(t.shape)}, strides {t.stride()})"
    if any(s < 0 for s in t.stride()):
        return f"{name} has negative strides {t.stride()}"
    if t.numel() and t.device.type != "meta" and t.data_ptr() % t.element_size():
        return f"{name}'s storage is not aligned to its element size ({t.element_size()} bytes)"
    return None


def unsupported_output_reason(shape: Sequence[int]) -> str | None:
    """Why a (contiguous or channels-last) output of ``shape`` cannot be indexed in int32, if it cannot."""
    numel = 1
    for n in shape:
        numel *= int(n)
    if numel >= _INT32_MAX:
        return f"the output {tuple(shape)} is too large for the kernels' 32-bit indexing"
    return None


def unsupported_reason(
    x: torch.Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int] | int = 1,
    dilation: Sequence[int] | int = 1,
    dtype: torch.dtype | None = None,
) -> str | None:
    """Why the Triton kernels cannot run this depthwise convolution (``None`` if they can).

    Args:
        x: the (batched) input, or any object with ``shape``, ``dtype`` and ``device``.
        weight_shape: ``(C * m, 1, *K)``.
        stride: per-dimension strides (or one int).
        dilation: per-dimension dilations (or one int).
        dtype: the dtype the kernels would compute in (default ``x.dtype``).
    """
    dtype = x.dtype if dtype is None else dtype
    nd = len(x.shape) - 2
    if nd not in (1, 2, 3):
        return f"x must be a batched 1-D/2-D/3-D input (3 to 5 dims), got {len(x.shape)} dims"
    if len(weight_shape) != nd + 2:
        return f"weight must have {nd + 2} dims for a {nd}-D input, got shape {tuple(weight_shape)}"
    c = x.shape[1]
    c_out, ipg = weight_shape[0], weight_shape[1]
    if c < 1 or ipg != 1 or c_out % c:
        return f"not a depthwise convolution: weight {tuple(weight_shape)} for {c} input channels (need (C*m, 1, *K))"
    if c_out > MAX_CHANNELS:
        return f"{c_out} output channels exceed the kernels' limit of {MAX_CHANNELS}"
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} is not supported (float32, float16, bfloat16)"
    for name, value in (("stride", stride), ("dilation", dilation)):
        vals = (value,) * nd if isinstance(value, int) else tuple(value)
        if len(vals) != nd or any(int(v) < 1 for v in vals):
            return f"{name} must be {nd} positive ints, got {value!r}"
    reason = _device_reason(torch.device(x.device))
    if reason:
        return reason
    if isinstance(x, torch.Tensor) and x.device.type != "meta":
        return _tensor_reason(x, "x")
    return None


def supports(
    x: torch.Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int] | int = 1,
    dilation: Sequence[int] | int = 1,
    dtype: torch.dtype | None = None,
) -> bool:
    """Whether the Triton kernels can run this depthwise convolution (see :func:`unsupported_reason`).

    Example:
        >>> import torch
        >>> supports(torch.empty(2, 8, 16, 16), (8, 1, 7, 7), 1, 1, torch.float64)
        False
    """
    return unsupported_reason(x, weight_shape, stride, dilation, dtype) is None


def _tuple(value, nd: int, name: str, minimum: int) -> tuple[int, ...]:
    vals = (value,) * nd if isinstance(value, int) else tuple(value)
    if len(vals) != nd or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        raise ValueError(f"{name} must be an int or {nd} ints, got {value!r}")
    if any(v < minimum for v in vals):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return vals


def check_conv(
    tensors: dict[str, torch.Tensor],
    nd: int,
    kernel: Sequence[int],
    stride,
    padding,
    dilation,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate tensors and hyper-parameters of a launch; returns normalised (kernel, stride, padding, dilation).

    Raises:
        TypeError: a non-tensor or an unsupported/mismatched dtype.
        ValueError: mismatched devices, shapes or bad hyper-parameters, or sizes the kernels
            cannot index.
        RuntimeError: a device the kernels cannot run on.
    """
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} must be float32, float16 or bfloat16 for the Triton kernels, got {t.dtype}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; they must match")
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; they must be on one device"
            )
        if t.dim() != nd + 2:
            raise ValueError(f"{name} must have {nd + 2} dims for a {nd}-D convolution, got shape {tuple(t.shape)}")
        reason = _tensor_reason(t, name)
        if reason:
            raise ValueError(reason)
    reason = _device_reason(first.device)
    if reason:
        raise RuntimeError(reason)
    kernel = _tuple(tuple(kernel), nd, "kernel_size", 1)
    return (
        kernel,
        _tuple(stride, nd, "stride", 1),
        _tuple(padding, nd, "padding", 0),
        _tuple(dilation, nd, "dilation", 1),
    )
