"""Public entry points of the convolution engine: :func:`conv` and :func:`explain`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from largekernel.ops.autograd import EngineConvFunction, run_forward
from largekernel.ops.cropping import crop_unreachable_taps
from largekernel.ops.dispatch import Plan, choose_plan
from largekernel.ops.fft import _pad_arg
from largekernel.ops.validation import ConvArgs, normalize_conv_args

__all__ = ["conv", "explain"]

logger = logging.getLogger(__name__)

_CONV_BY_DIM = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _symmetrize(x: torch.Tensor, args: ConvArgs) -> tuple[torch.Tensor, ConvArgs]:
    """Pre-pad the asymmetric remainder (``padding="same"`` with even kernels) so that the engine's
    implementations only ever see symmetric padding."""
    if args.symmetric:
        return x, args
    extra = tuple((0, hi - lo) if hi >= lo else (lo - hi, 0) for lo, hi in args.padding)
    return F.pad(x, _pad_arg(extra)), _sym_args(args)


def _sym_args(args: ConvArgs) -> ConvArgs:
    pads = tuple((min(lo, hi), min(lo, hi)) for lo, hi in args.padding)
    return ConvArgs(
        args.nd, args.kernel_size, args.stride, pads, args.dilation, args.groups,
        args.in_channels, args.out_channels, args.unbatched,
    )


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # devices without autocast support (e.g. "meta")
        return False


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Convolution with exactly the semantics of ``F.conv1d/2d/3d``, on the fastest implementation.

    The spatial rank is taken from ``weight`` (1-D/2-D/3-D); ``x`` may be batched or unbatched.
    Supports ``padding="same"``/``"valid"`` (even kernels padded like PyTorch), tuples, any groups,
    and autograd w.r.t. ``x``, ``weight`` and ``bias`` (double-backward falls back to PyTorch ops).
    The result may be channels-last strided for 2-D/3-D inputs (same values and shape).

    Args:
        x: ``(B, C_in, *spatial)`` or ``(C_in, *spatial)``.
        weight: ``(C_out, C_in / groups, *kernel)``.
        bias: optional ``(C_out,)``.
        stride: int or tuple, >= 1.
        padding: ``"same"``, ``"valid"``, int or tuple, >= 0.
        dilation: int or tuple, >= 1.
        groups: divides both channel counts.

    Returns:
        ``(B, C_out, *out)`` in ``x``'s dtype.

    Example:
        >>> x = torch.randn(2, 8, 32, 32)
        >>> w = torch.randn(8, 1, 17, 17)
        >>> conv(x, w, padding="same", groups=8).shape
        torch.Size([2, 8, 32, 32])
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        # tracing/ONNX export/torch.compile need a plain aten graph, not a Python autograd.Function
        return _CONV_BY_DIM[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)
    args = normalize_conv_args(x, weight, bias, stride, padding, dilation, groups)
    device_type = x.device.type
    if _autocast_enabled(device_type):
        # A Python autograd.Function is invisible to autocast, so apply its rule for convolutions
        # here: eligible (non-float64 floating) inputs run in the autocast dtype.
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t

        with torch.autocast(device_type, enabled=False):
            return conv(cast(x), cast(weight), cast(bias), stride, padding, dilation, groups)
    if args.unbatched:
        return conv(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    requires_grad = _needs_grad(x, weight, bias)
    # taps that only ever read padding (a large kernel on a small map) are dropped: exact, and
    # the sliced weight still receives its (zero) gradient for them through autograd
    full_weight = weight
    weight, args = crop_unreachable_taps(x.shape[2:], weight, args)
    xs, sargs = _symmetrize(x, args)
    plan = choose_plan(xs, weight, sargs, requires_grad)
    if plan.uses_autograd:
        if plan.forward == "native":
            if weight is full_weight:  # PyTorch handles "same" padding itself, without a pre-pad
                return _CONV_BY_DIM[args.nd](x, weight, bias, stride, padding, dilation, groups)
            return _CONV_BY_DIM[args.nd](xs, weight, bias, sargs.stride, sargs.sym_padding, sargs.dilation, groups)
        return run_forward(plan.forward, xs, weight, bias, sargs.stride, sargs.padding, sargs.dilation, groups)
    if not requires_grad:
        cdt = plan.compute_dtype
        y = run_forward(
            plan.forward, xs.to(cdt), weight.to(cdt), bias.to(cdt) if bias is not None else None,
            sargs.stride, sargs.padding, sargs.dilation, groups,
        )
        return y.to(x.dtype)
    return EngineConvFunction.apply(xs, weight, bias, sargs, plan)


def explain(
    x_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    requires_grad: bool = True,
) -> Plan:
    """Which implementations :func:`conv` would use for these shapes, and why (nothing is computed).

    Args:
        x_shape: input shape (batched or unbatched).
        weight_shape: weight shape.
        stride, padding, dilation, groups: as for :func:`conv`.
        dtype: tensor dtype.
        device: tensor device.
        requires_grad: whether a backward pass will follow.

    Returns:
        The :class:`~largekernel.ops.dispatch.Plan`; ``print(plan)`` is human-readable.

    Example:
        >>> plan = explain((8, 64, 56, 56), (64, 1, 31, 31), padding=15, groups=64)
        >>> plan.uses_autograd  # a large depthwise kernel gets the engine's own backward
        False
        >>> print(plan)  # doctest: +SKIP
        forward:     kernels
        grad_input:  kernels
        grad_weight: kernels
        ...
    """
    x = torch.empty(tuple(x_shape), dtype=dtype, device="meta")
    w = torch.empty(tuple(weight_shape), dtype=dtype, device="meta")
    args = normalize_conv_args(x, w, None, stride, padding, dilation, groups)
    dev = torch.device(device)
    if args.unbatched:
        x = x.unsqueeze(0)
    w, args = crop_unreachable_taps(x.shape[2:], w, args)
    if not args.symmetric:
        sp = [n + (hi - lo if hi >= lo else lo - hi) for n, (lo, hi) in zip(x.shape[2:], args.padding)]
        x = torch.empty((*x.shape[:2], *sp), dtype=dtype, device="meta")
        args = _sym_args(args)
    if dev.type == "cpu":
        # zero-memory CPU stand-in (expanded scalar) so availability checks see a real CPU tensor
        probe = torch.zeros((), dtype=dtype).expand(x.shape)
    else:
        probe = _DeviceProbe(x, dev)
    return choose_plan_for_explain(probe, w, args, requires_grad)


class _DeviceProbe:
    """Minimal tensor stand-in exposing shape/dtype/device for the heuristics."""

    def __init__(self, t: torch.Tensor, device: torch.device) -> None:
        self.shape = t.shape
        self.dtype = t.dtype
        self.device = device
        self._t = t

    def dim(self) -> int:
        return self._t.dim()

    def size(self, *a):
        return self._t.size(*a)


def choose_plan_for_explain(probe, weight, args: ConvArgs, requires_grad: bool) -> Plan:
    from largekernel.ops import dispatch  # noqa: PLC0415

    # explain() must not time anything: report the cached autotuned plan if there is one, else the table
    key = (
        tuple(probe.shape), tuple(weight.shape), args.stride, args.padding, args.dilation, args.groups,
        probe.dtype, probe.device.type, requires_grad,
    )
    if dispatch._STATE.forced:
        return dispatch._apply_forced(dispatch.heuristic_plan(probe, tuple(weight.shape), args, requires_grad), probe)
    cached = dispatch._TUNE_CACHE.get(key)
    if cached is not None:
        return cached
    return dispatch.heuristic_plan(probe, tuple(weight.shape), args, requires_grad)
