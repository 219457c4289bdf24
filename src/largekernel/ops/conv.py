"""Public entry points of the convolution engine: :func:`conv` and :func:`explain`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from largekernel.ops import custom_op as _custom_op
from largekernel.ops import native
from largekernel.ops.autograd import EngineConvFunction, run_forward
from largekernel.ops.cropping import crop_unreachable_taps
from largekernel.ops.dispatch import Plan, choose_plan
from largekernel.ops.dispatch import state_token as dispatch_state_token
from largekernel.ops.fft import _pad_arg
from largekernel.ops.memory_format import expected_output_format, suggest_memory_format, to_memory_format
from largekernel.ops.record import note
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


# Call signatures (see _fast_key) whose plan is "PyTorch's own convolution, unchanged".
_TORCH_DECISIONS: set[tuple] = set()
_MAX_DECISIONS = 65536
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _hashable(value):
    if isinstance(value, list):
        return tuple(value)
    return value


def _fast_key(x, weight, bias, stride, padding, dilation, groups) -> tuple | None:
    """Everything the dispatch decision depends on, cheaply; ``None`` when the call is unusual."""
    if type(x) not in _PLAIN_TENSORS or type(weight) not in _PLAIN_TENSORS:
        return None  # subclasses (e.g. FX proxies, tensor wrappers) take the full path
    try:
        device_type = x.device.type
        return (
            x.shape, x.stride(), x.dtype, device_type, x.requires_grad,
            weight.shape, weight.stride(), weight.dtype, weight.requires_grad,
            None if bias is None else (bias.shape, bias.dtype, bias.requires_grad),
            _hashable(stride), _hashable(padding), _hashable(dilation), groups,
            torch.is_grad_enabled(), _autocast_enabled(device_type), weight.device,
            dispatch_state_token(),
        )
    except TypeError:
        return None


def _layout_safe(x, weight, bias, args: ConvArgs, requires_grad: bool) -> bool:
    if args.symmetric:
        pads = args.sym_padding
    else:
        pads = tuple(max(lo, hi) for lo, hi in args.padding)
    if not native.channels_last_forward_safe(x, weight, bias, args.stride, pads, args.groups):
        return False
    return not requires_grad or native.channels_last_grad_weight_safe(x, weight, args.stride, pads, args.groups)


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
    The output (and the input gradient) come back in the memory format PyTorch's own convolution
    returns for these arguments, whatever layout the engine computed in; under ``torch.autocast``
    tensors are cast as PyTorch casts them for a convolution.

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
        if _custom_op.use_custom_op():  # opt-in: torch.compile keeps the engine as an opaque op
            return _custom_op.compiled_conv(x, weight, bias, stride, padding, dilation, groups)
        # tracing/ONNX export/torch.compile need a plain aten graph, not a Python autograd.Function
        return _CONV_BY_DIM[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)
    key = _fast_key(x, weight, bias, stride, padding, dilation, groups)
    if key is not None and key in _TORCH_DECISIONS:
        # decided before for exactly this call signature: PyTorch's own call is the plan, so the
        # engine costs one dictionary look-up (inference of small-kernel models must not slow down)
        note("forward", "torch", weight.dim() - 2)
        return _CONV_BY_DIM[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)
    if isinstance(x, torch.Tensor) and _autocast_enabled(x.device.type):
        # A Python autograd.Function is invisible to autocast, so apply autocast's rule for
        # convolutions here, before validation (as PyTorch casts before checking dtypes): eligible
        # (floating, non-float64) tensors on the autocast device run in the autocast dtype.
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            eligible = (
                isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
                and t.device.type == device_type
            )
            return t.to(dtype) if eligible else t

        with torch.autocast(device_type, enabled=False):
            return conv(cast(x), cast(weight), cast(bias), stride, padding, dilation, groups)
    args = normalize_conv_args(x, weight, bias, stride, padding, dilation, groups)
    if args.unbatched:
        return conv(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    out_format = expected_output_format(x, weight, groups)
    requires_grad = _needs_grad(x, weight, bias)
    relayout = (
        out_format != torch.contiguous_format and x.device.type == "cpu"
        and not _layout_safe(x, weight, bias, args, requires_grad)
    )
    if relayout:
        # PyTorch's own channels-last path is broken for this case (tests/ops/test_pytorch_paths.py):
        # compute in the NC* layout; the output still comes back in the caller's format
        x = x.contiguous()
    # taps that only ever read padding (a large kernel on a small map) are dropped: exact, and
    # the sliced weight still receives its (zero) gradient for them through autograd
    full_weight = weight
    weight, args = crop_unreachable_taps(x.shape[2:], weight, args)
    xs, sargs = _symmetrize(x, args)
    plan = choose_plan(xs, weight, sargs, requires_grad)
    # PyTorch's own call: its NC* path, or its channels-last path on an input that already is
    # channels-last (e.g. timm's ConvNeXt hands its depthwise conv a permuted, channels-last view)
    already_cl = plan.forward == "native_cl" and args.nd >= 2 and suggest_memory_format(x) != torch.contiguous_format
    direct = (plan.forward == "native" or already_cl) and weight is full_weight and plan.compute_dtype == x.dtype
    if direct and (plan.uses_autograd or not requires_grad):
        # the plan is PyTorch's own call on the caller's arguments (it handles "same" padding
        # itself); remembered only when those really are the caller's tensors (not re-laid out)
        if key is not None and not relayout and len(_TORCH_DECISIONS) < _MAX_DECISIONS:
            _TORCH_DECISIONS.add(key)
        note("forward", "torch", args.nd)
        y = _CONV_BY_DIM[args.nd](x, weight, bias, stride, padding, dilation, groups)
        return to_memory_format(y, out_format)
    if plan.uses_autograd:
        if plan.forward == "native":
            note("forward", "torch", args.nd)
            if weight is full_weight:
                y = _CONV_BY_DIM[args.nd](x, weight, bias, stride, padding, dilation, groups)
            else:
                y = _CONV_BY_DIM[args.nd](xs, weight, bias, sargs.stride, sargs.sym_padding, sargs.dilation, groups)
        else:
            y = run_forward(plan.forward, xs, weight, bias, sargs.stride, sargs.padding, sargs.dilation, groups)
        return to_memory_format(y, out_format)
    if not requires_grad:
        cdt = plan.compute_dtype
        y = run_forward(
            plan.forward, xs.to(cdt), weight.to(cdt), bias.to(cdt) if bias is not None else None,
            sargs.stride, sargs.padding, sargs.dilation, groups,
        )
        return to_memory_format(y.to(x.dtype), out_format)
    return EngineConvFunction.apply(xs, weight, bias, sargs, plan, out_format)


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
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Plan:
    """Which implementations :func:`conv` would use for these shapes, and why (nothing is computed).

    Args:
        x_shape: input shape (batched or unbatched).
        weight_shape: weight shape.
        stride, padding, dilation, groups: as for :func:`conv`.
        dtype: tensor dtype.
        device: tensor device.
        requires_grad: whether a backward pass will follow.
        memory_format: the input's layout: ``torch.contiguous_format``, or ``torch.channels_last``
            (4-D input) / ``torch.channels_last_3d`` (5-D input). Plans differ by layout.

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
    channels_last = _explain_layout(memory_format, x.dim())
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
        probe = torch.zeros((), dtype=dtype, device="cpu").expand(x.shape)
    else:
        probe = _DeviceProbe(x, dev)
    return choose_plan_for_explain(probe, w, args, requires_grad, channels_last=channels_last)


def _explain_layout(memory_format: torch.memory_format, dims: int) -> bool:
    """Whether ``memory_format`` is channels-last for an input of ``dims`` dimensions."""
    allowed = {4: torch.channels_last, 5: torch.channels_last_3d}
    if memory_format == torch.contiguous_format:
        return False
    if memory_format == allowed.get(dims):
        return True
    expected = "torch.contiguous_format" + (f" or {allowed[dims]}" if dims in allowed else "")
    raise ValueError(f"memory_format must be {expected} for a {dims}-D input, got {memory_format}")


class _DeviceProbe:
    """Minimal tensor stand-in exposing shape/dtype/device for the heuristics."""

    def __init__(self, t: torch.Tensor, device: torch.device) -> None:
        self.shape = t.shape
        self.dtype = t.dtype
        self.device = device
        self._t = t

    def dim(self) -> int:
        return self._t.dim()

    def numel(self) -> int:
        return self._t.numel()

    def size(self, *a):
        return self._t.size(*a)


def choose_plan_for_explain(probe, weight, args: ConvArgs, requires_grad: bool, *,
                            channels_last: bool = False) -> Plan:
    from largekernel.ops import dispatch  # noqa: PLC0415

    # explain() must not time anything: report the cached autotuned plan if there is one, else the table
    key = dispatch.plan_key(probe, tuple(weight.shape), args, requires_grad, channels_last)
    plan = dispatch.heuristic_plan(probe, tuple(weight.shape), args, requires_grad, channels_last=channels_last)
    if dispatch._STATE.forced:
        return dispatch._apply_forced(plan, probe)
    cached = dispatch._TUNE_CACHE.get(key)
    return cached if cached is not None else plan
