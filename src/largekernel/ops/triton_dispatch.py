"""The dispatcher's side of the Triton engine: when ``"triton"`` may be used, and how to call it.

The engine (``dispatch.py`` / ``autograd.py``) lists ``"triton"`` among its forward, grad_input and
grad_weight implementations. It is eligible (:func:`triton_plan_ok`) for depthwise convolutions
(``groups == C``, weight ``(C*m, 1, *K)``, any multiplier ``m``) with symmetric padding in
float32/float16/bfloat16

* on CUDA tensors when Triton imports and a CUDA device works, and
* on CPU tensors only under Triton's interpreter (``TRITON_INTERPRET=1``) — for tests, via
  ``largekernel.ops.force_impl(forward="triton", grad_input="triton", grad_weight="triton")``.

Nothing here imports Triton for a CPU tensor without the interpreter, so CPU-only installs are
unaffected. Which K ranges *should* use it on a GPU (:func:`triton_preferred`) has not been
measured: the thresholds below follow published user measurements (Triton/CUDA depthwise kernels
beating cuDNN forward+backward from K ≈ 7-9) and the roofline of
:mod:`largekernel.ops.triton.perf_model`; a GPU run of ``largekernel bench conv --device cuda``
should replace them.

Example:
    >>> import torch
    >>> from largekernel.ops.validation import normalize_conv_args
    >>> x, w = torch.empty(2, 8, 16, 16), torch.empty(8, 1, 7, 7)
    >>> args = normalize_conv_args(x, w, None, 1, 3, 1, 8)
    >>> triton_plan_ok(x, tuple(w.shape), args)  # a CPU tensor without TRITON_INTERPRET=1
    False
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from largekernel.ops.triton.checks import interpreter_enabled, unsupported_reason
from largekernel.ops.validation import ConvArgs

__all__ = [
    "TRITON_MIN_K",
    "TRITON_MAX_K",
    "triton_reason",
    "triton_plan_ok",
    "triton_preferred",
    "triton_forward",
    "triton_grad_input",
    "triton_grad_weight",
]

logger = logging.getLogger(__name__)

#: smallest effective kernel extent for which the Triton path is *preferred* on CUDA (unmeasured)
TRITON_MIN_K = {1: 31, 2: 7, 3: 5}
#: largest effective kernel extent preferred on CUDA (1-D: FFT's K-independent cost wins beyond)
TRITON_MAX_K = {1: 4095, 2: 10**9, 3: 10**9}


def triton_reason(x, weight_shape: Sequence[int], args: ConvArgs) -> str | None:
    """Why ``"triton"`` cannot run this convolution (``None`` if it can); never imports Triton on CPU.

    Args:
        x: the (batched, symmetrically padded) input, or a probe with ``shape``/``dtype``/``device``.
        weight_shape: the weight's shape.
        args: the normalised convolution arguments.
    """
    if not args.symmetric:
        return "asymmetric padding (pre-pad first)"
    if args.groups != args.in_channels or args.in_per_group != 1:
        return f"not depthwise (groups={args.groups}, {args.in_channels} input channels)"
    reason = unsupported_reason(x, weight_shape, args.stride, args.dilation, x.dtype)
    if reason:
        return reason
    device = torch.device(x.device)
    if device.type == "cpu" and not interpreter_enabled():  # unsupported_reason covers this; be explicit
        return "CPU tensor without TRITON_INTERPRET=1"
    from largekernel.ops import triton as lk_triton  # noqa: PLC0415 - no Triton import before here

    if not lk_triton.is_available(device):
        return "Triton is not importable or no CUDA device works"
    return None


def triton_plan_ok(x, weight_shape: Sequence[int], args: ConvArgs) -> bool:
    """Whether the dispatcher may use implementation ``"triton"`` (see :func:`triton_reason`).

    Example:
        >>> triton_plan_ok(x, tuple(w.shape), args)  # doctest: +SKIP
    """
    return triton_reason(x, weight_shape, args) is None


def triton_preferred(args: ConvArgs) -> bool:
    """Whether the heuristic table should pick Triton on CUDA for this depthwise kernel extent."""
    return TRITON_MIN_K[args.nd] <= args.max_kernel <= TRITON_MAX_K[args.nd]


def triton_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """Forward through the Triton kernel plus bias; ``padding`` is symmetric (one int per dim)."""
    from largekernel.ops import triton as lk_triton  # noqa: PLC0415

    y = lk_triton.depthwise_forward(x, weight, tuple(stride), tuple(padding), tuple(dilation))
    if bias is not None:
        y = y + bias.view(1, -1, *([1] * (weight.dim() - 2))).to(y.dtype)
    return y


def triton_grad_input(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """Input gradient through the Triton kernel (same argument order as ``compute_grad_input``)."""
    from largekernel.ops import triton as lk_triton  # noqa: PLC0415

    return lk_triton.depthwise_grad_input(
        grad_output, weight, tuple(x.shape), tuple(stride), tuple(padding), tuple(dilation)
    )


def triton_grad_weight(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    deterministic: bool = False,
) -> torch.Tensor:
    """Weight gradient through the Triton kernel (same argument order as ``compute_grad_weight``)."""
    from largekernel.ops import triton as lk_triton  # noqa: PLC0415

    return lk_triton.depthwise_grad_weight(
        x, grad_output, tuple(weight.shape[2:]), tuple(stride), tuple(padding), tuple(dilation), deterministic
    )
