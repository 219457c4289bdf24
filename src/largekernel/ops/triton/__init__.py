"""GPU engine: large-kernel depthwise convolution in Triton (forward, grad_input, grad_weight).

Importing this package does **not** import Triton: the kernels are loaded on the first call of a
compute function, so CPU-only installs never touch Triton (``pip install largekernel[gpu]``
brings it in). Without a GPU the same kernels run on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, set before Triton is first imported), which is how they are tested.

Integration contract (all padding is symmetric, one int per spatial dim; all hyper-parameter
sequences have one entry per spatial dim; 1-D, 2-D and 3-D; channel multiplier ``m >= 1``,
i.e. ``weight`` is ``(C*m, 1, *K)`` and ``groups = C``; float32/float16/bfloat16 storage with
float32 accumulation; any strides, including channels-last and non-contiguous views)::

    is_available(device) -> bool
    supports(x, weight_shape, stride, dilation, dtype) -> bool
    unsupported_reason(x, weight_shape, stride, dilation, dtype) -> str | None
    depthwise_forward(x, weight, stride, padding, dilation) -> y            # (N, C*m, *out)
    depthwise_grad_input(grad_out, weight, input_shape, stride, padding, dilation) -> grad_x
    depthwise_grad_weight(x, grad_out, kernel_size, stride, padding, dilation,
                          deterministic=False) -> grad_w                    # (C*m, 1, *K), x.dtype

Outputs keep the memory format of the input (channels-last in, channels-last out). Bad input
raises ``TypeError`` (dtype), ``ValueError`` (shapes, devices, hyper-parameters, sizes beyond
32-bit indexing) or ``RuntimeError`` (a device the kernels cannot run on), each naming the
argument; :func:`supports` answers the same questions without raising, for dispatchers.
``deterministic=True`` makes grad_weight sum its per-split partials in a fixed order instead of
with float32 atomics (bit-identical run to run).

The kernel design is described in :mod:`largekernel.ops.triton.kernels`, the performance model
(bytes, FLOPs, tiles and roofline times on A100/H100) in :mod:`largekernel.ops.triton.perf_model`;
:mod:`largekernel.ops.triton.compile_report` compiles the kernels for sm_80/sm_90 without a GPU.
Environment: ``LARGEKERNEL_TRITON_AUTOTUNE=0`` skips per-shape tile autotuning on CUDA.

Example:
    >>> import torch
    >>> from largekernel.ops import triton as lk_triton
    >>> lk_triton.supports(torch.empty(2, 8, 32, 32), (8, 1, 31, 31), (1, 1), (1, 1), torch.float32)
    False
    >>> # on a GPU: y = lk_triton.depthwise_forward(x.cuda(), w.cuda(), (1, 1), (15, 15), (1, 1))
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

import torch

from largekernel.ops.triton.checks import interpreter_enabled, supports, unsupported_reason

__all__ = [
    "is_available",
    "supports",
    "unsupported_reason",
    "depthwise_forward",
    "depthwise_grad_input",
    "depthwise_grad_weight",
]

logger = logging.getLogger(__name__)

_IMPORT_ERROR: list[str | None] = []


def _triton_importable() -> bool:
    if not _IMPORT_ERROR:
        if importlib.util.find_spec("triton") is None:
            _IMPORT_ERROR.append("triton is not installed (pip install largekernel[gpu])")
        else:
            try:
                from largekernel.ops.triton import launch  # noqa: F401, PLC0415
            except Exception as exc:  # noqa: BLE001 - a broken Triton install means "not available"
                _IMPORT_ERROR.append(f"importing triton failed: {type(exc).__name__}: {exc}")
                logger.warning("Triton kernels unavailable: %s", _IMPORT_ERROR[0])
            else:
                _IMPORT_ERROR.append(None)
    return _IMPORT_ERROR[0] is None


def is_available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton kernels can run on ``device`` (default: the current CUDA device).

    True for CUDA devices when CUDA and Triton work, and for the CPU only under Triton's
    interpreter (``TRITON_INTERPRET=1``). Calling it imports Triton if it is installed.

    Example:
        >>> is_available("meta")
        False
    """
    dev = torch.device("cuda" if device is None else device)
    if dev.type == "cuda":
        ok = torch.cuda.is_available()
    elif dev.type == "cpu":
        ok = interpreter_enabled()
    else:
        ok = False
    return ok and _triton_importable()


def _launch():
    from largekernel.ops.triton import launch  # noqa: PLC0415 - Triton only when asked for

    return launch


def depthwise_forward(
    x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> torch.Tensor:
    """Depthwise convolution ``y = conv(x, weight, groups=C)`` with the Triton forward kernel.

    Args:
        x: ``(N, C, *S)``, 1-3 spatial dims, any strides.
        weight: ``(C*m, 1, *K)``, same dtype and device as ``x``.
        stride: one int >= 1 per spatial dim.
        padding: symmetric zero padding, one int >= 0 per spatial dim.
        dilation: one int >= 1 per spatial dim.

    Returns:
        ``(N, C*m, *out)`` in ``x``'s dtype and memory format.

    Example:
        >>> y = depthwise_forward(x, w, (1, 1), (15, 15), (1, 1))  # doctest: +SKIP
    """
    return _launch().depthwise_forward(x, weight, stride, padding, dilation)


def depthwise_grad_input(
    grad_out: torch.Tensor,
    weight: torch.Tensor,
    input_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """Input gradient of :func:`depthwise_forward` (a gathered transposed convolution, no atomics).

    Args:
        grad_out: ``(N, C*m, *out)``.
        weight: ``(C*m, 1, *K)``.
        input_shape: ``(N, C, *S)`` of the forward input.
        stride, padding, dilation: as for the forward.

    Returns:
        ``(N, C, *S)`` in ``grad_out``'s dtype and memory format.

    Example:
        >>> gx = depthwise_grad_input(gy, w, x.shape, (1, 1), (15, 15), (1, 1))  # doctest: +SKIP
    """
    return _launch().depthwise_grad_input(grad_out, weight, input_shape, stride, padding, dilation)


def depthwise_grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    deterministic: bool = False,
) -> torch.Tensor:
    """Weight gradient of :func:`depthwise_forward`, reduced over batch and space in float32.

    Args:
        x: ``(N, C, *S)`` forward input.
        grad_out: ``(N, C*m, *out)``.
        kernel_size: ``K`` per spatial dim.
        stride, padding, dilation: as for the forward.
        deterministic: sum per-split partials in a fixed order (bit-reproducible) instead of
            float32 atomics.

    Returns:
        ``(C*m, 1, *K)`` in ``x``'s dtype.

    Example:
        >>> gw = depthwise_grad_weight(x, gy, (31, 31), (1, 1), (15, 15), (1, 1))  # doctest: +SKIP
    """
    return _launch().depthwise_grad_weight(x, grad_out, kernel_size, stride, padding, dilation, deterministic)
