"""PyTorch-native building blocks of the engine: forward in either memory layout, weight gradient
through ``aten.convolution_backward``, and thin guarded wrappers around the compiled CPU kernels.

All functions take *symmetric* per-dimension padding tuples (the public entry point pre-pads the
asymmetric remainder of ``padding="same"`` with even kernels).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = [
    "native_conv",
    "aten_grad_weight",
    "aten_grad_input",
    "kernels_module",
    "kernels_grad_weight_ok",
    "kernels_forward_ok",
    "channels_last_forward_safe",
    "channels_last_grad_weight_safe",
]

logger = logging.getLogger(__name__)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    raise ValueError(f"channels-last needs a 4-D or 5-D tensor, got {t.dim()}-D")


def native_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    channels_last: bool = False,
) -> torch.Tensor:
    """PyTorch's convolution, optionally run in the channels-last layout.

    oneDNN's channels-last depthwise forward stays near peak for large kernels while its NCHW one
    falls off a cliff above K = 13, so the layout is an implementation choice. 1-D convolutions run
    channels-last as 2-D ones with a ``(1, K)`` kernel (and are returned contiguous, since 1-D
    callers commonly ``view`` their outputs); 2-D/3-D results keep the channels-last strides.
    """
    nd = weight.dim() - 2
    if not channels_last:
        return _CONV[nd](x, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups)
    if nd == 1:
        x4 = _channels_last(x.unsqueeze(2))
        y = F.conv2d(
            x4, weight.unsqueeze(2), bias, (1, stride[0]), (0, padding[0]), (1, dilation[0]), groups
        )
        return y.squeeze(2).contiguous()
    return _CONV[nd](_channels_last(x), weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups)


def _aten_backward(
    grad_output, x, weight, stride, padding, dilation, groups, mask, channels_last
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    nd = weight.dim() - 2
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    if channels_last:
        if nd == 1:
            g4 = _channels_last(grad_output.unsqueeze(2))
            x4 = _channels_last(x.unsqueeze(2))
            gi, gw, _ = torch.ops.aten.convolution_backward(
                g4, x4, weight.unsqueeze(2), None, [1] + stride, [0] + padding, [1] + dilation,
                False, [0, 0], groups, [mask[0], mask[1], False],
            )
            return (gi.squeeze(2).contiguous() if gi is not None else None,
                    gw.squeeze(2) if gw is not None else None)
        grad_output, x = _channels_last(grad_output), _channels_last(x)
    gi, gw, _ = torch.ops.aten.convolution_backward(
        grad_output, x, weight, None, stride, padding, dilation, False, [0] * nd, groups,
        [mask[0], mask[1], False],
    )
    return gi, gw


def aten_grad_weight(grad_output, x, weight, stride, padding, dilation, groups, channels_last=False):
    """Weight gradient through ``aten.convolution_backward`` (differentiable, so double-backward works)."""
    return _aten_backward(grad_output, x, weight, stride, padding, dilation, groups, (False, True), channels_last)[1]


def aten_grad_input(grad_output, x, weight, stride, padding, dilation, groups, channels_last=False):
    """Input gradient through ``aten.convolution_backward``."""
    return _aten_backward(grad_output, x, weight, stride, padding, dilation, groups, (True, False), channels_last)[0]


def _reads_padding_only(x_spatial, kernel, stride, padding, dilation=None) -> bool:
    """Whether some output position's receptive field lies entirely in the zero padding."""
    dilation = dilation or (1,) * len(kernel)
    for n, k, s, p, d in zip(x_spatial, kernel, stride, padding, dilation):
        extent = d * (k - 1) + 1
        if p >= extent:  # the first output reads only left padding
            return True
        n_out = (n + 2 * p - extent) // s + 1
        if (n_out - 1) * s >= p + n:  # the last output starts in the right padding
            return True
    return False


def channels_last_forward_safe(x, weight, bias, stride, padding, groups) -> bool:
    """Whether PyTorch's channels-last forward is trustworthy for this call.

    oneDNN's channels-last forward has been seen to crash (segfaults, heap corruption) when a bias
    is added and some outputs read only zero padding (e.g. a grouped 1x1x1 conv with bias, stride 2,
    padding (0, 1, 1)); the engine then stays in the input's own layout, which is what ``F.conv``
    runs and is correct. See tests/ops/test_pytorch_paths.py for the mapped cases.
    """
    if bias is None:
        return True
    return not _reads_padding_only(x.shape[2:], weight.shape[2:], stride, padding)


def channels_last_grad_weight_safe(x, weight, stride, padding, groups) -> bool:
    """Whether PyTorch's channels-last weight gradient is trustworthy for this call.

    PyTorch's channels-last 3-D grouped weight gradient with a stride > 1 returns garbage in float32
    (different on every run, sometimes NaN) and can corrupt the heap; the NC* layout is correct.
    """
    nd = weight.dim() - 2
    if nd == 3 and groups > 1 and any(s > 1 for s in stride):
        return False
    return True


_KERNELS_CACHE: list = []


def kernels_module():
    """The compiled-kernel module if it imports and reports itself available, else ``None``.

    The compiled kernels are built by a separate component; any import/build problem just means
    "not available" and the engine falls back to pure PyTorch.
    """
    if _KERNELS_CACHE:
        return _KERNELS_CACHE[0]
    mod = None
    try:
        from largekernel.ops import cpu_kernels as mod  # noqa: PLC0415

        if not callable(getattr(mod, "is_available", None)) or not mod.is_available():
            mod = None
    except Exception as exc:  # noqa: BLE001 - any failure means "no compiled kernels"
        logger.debug("compiled CPU kernels unavailable: %s", exc)
        mod = None
    _KERNELS_CACHE.append(mod)
    return mod


def _kernels_supports(mod, x_meta: torch.Tensor, weight_shape, stride, dilation) -> bool:
    try:
        return bool(mod.supports(x_meta, tuple(weight_shape), tuple(stride), tuple(dilation)))
    except Exception as exc:  # noqa: BLE001
        logger.debug("cpu_kernels.supports failed: %s", exc)
        return False


def _kernels_ok(x: torch.Tensor, weight_shape, args, entry_point: str) -> bool:
    """Whether the compiled ``entry_point`` can serve this (CPU, depthwise, symmetric) convolution."""
    if x.device.type != "cpu" or not args.is_depthwise or args.out_per_group != 1 or not args.symmetric:
        return False
    mod = kernels_module()
    if mod is None or not callable(getattr(mod, entry_point, None)):
        return False
    return _kernels_supports(mod, x, weight_shape, args.stride, args.dilation)


def kernels_grad_weight_ok(x: torch.Tensor, weight_shape, args) -> bool:
    """Whether the compiled ``depthwise_grad_weight`` can serve this convolution."""
    return _kernels_ok(x, weight_shape, args, "depthwise_grad_weight")


def kernels_forward_ok(x: torch.Tensor, weight_shape, args) -> bool:
    """Whether the (optional) compiled ``depthwise_forward`` can serve this convolution."""
    return _kernels_ok(x, weight_shape, args, "depthwise_forward")
