"""The engine's convolution as a PyTorch custom operator, so ``torch.compile`` can keep it.

``torch.compile`` cannot trace into the engine (compiled C++ kernels, FFT plans, a Python
``autograd.Function`` choosing implementations at run time), so by default :func:`largekernel.ops.conv`
steps aside while compiling and hands dynamo a plain ``F.conv*d``: the non-convolution parts get
fused, but the large-kernel convolutions get PyTorch's slow backward back. This module registers the
engine as two opaque operators that dynamo and inductor treat like any aten kernel:

* ``largekernel::conv(x, weight, bias, stride, padding, dilation, groups, requires_grad)`` -- the
  engine's forward, ``padding`` flattened as explicit ``(lo, hi)`` pairs per spatial dimension;
* ``largekernel::conv_backward(grad_output, x, weight, ..., output_mask)`` -- the engine's own
  ``grad_input`` / ``grad_weight`` implementations (``grad_bias`` is a sum), registered as the
  forward's autograd formula.

Both run the full engine at run time (tap cropping, symmetric pre-padding, the dispatcher with its
forcing and autotuning), so :func:`~largekernel.ops.record_impls` records what ran inside a
compiled model. Their fake (meta) implementations give the shape, dtype and the memory format
PyTorch's own convolution would return (:mod:`largekernel.ops.memory_format`); the real ones return
exactly those strides.

The switch (:func:`set_compile_engine`, default off) decides whether :func:`largekernel.ops.conv`
emits ``largekernel::conv`` under ``torch.compile``. Exporting (``torch.export``, ONNX, jit tracing)
always sees plain aten convolutions so deployed graphs contain standard operators only.
Double-backward through a compiled engine convolution is not supported (the backward operator has
no derivative); eager :func:`~largekernel.ops.conv` supports it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from largekernel.ops import native
from largekernel.ops.autograd import compute_grad_input, compute_grad_weight, run_forward
from largekernel.ops.cropping import crop_unreachable_taps
from largekernel.ops.dispatch import choose_plan, engine_may_differ
from largekernel.ops.fft import _pad_arg
from largekernel.ops.memory_format import expected_output_format, suggest_memory_format
from largekernel.ops.validation import ConvArgs, normalize_conv_args

__all__ = ["set_compile_engine", "compile_engine_enabled", "compile_engine", "use_custom_op", "compiled_conv"]

logger = logging.getLogger(__name__)

_CONV_BY_DIM = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# a one-element list rather than a bare global so that the setter needs no ``global`` statement
_ENABLED = [False]


def set_compile_engine(enabled: bool) -> None:
    """Let ``torch.compile`` keep large-kernel convolutions on the engine (opt-in, default off).

    When on, :func:`largekernel.ops.conv` emits the opaque ``largekernel::conv`` operator while
    ``torch.compile`` traces a model, instead of a plain ``F.conv*d``; inductor then fuses everything
    around it. Models compiled before the switch changes are recompiled on their next call.

    Args:
        enabled: the new state.

    Raises:
        TypeError: ``enabled`` is not a bool.

    Example:
        >>> set_compile_engine(True)
        >>> compile_engine_enabled()
        True
        >>> set_compile_engine(False)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _ENABLED[0] = enabled


def compile_engine_enabled() -> bool:
    """Whether :func:`set_compile_engine` is on.

    Example:
        >>> compile_engine_enabled()
        False
    """
    return _ENABLED[0]


@contextlib.contextmanager
def compile_engine(enabled: bool = True):
    """:func:`set_compile_engine` for the duration of a block (the previous state is restored).

    Example:
        >>> with compile_engine():
        ...     compile_engine_enabled()
        True
    """
    old = _ENABLED[0]
    set_compile_engine(enabled)
    try:
        yield
    finally:
        _ENABLED[0] = old


def _exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


def use_custom_op() -> bool:
    """Whether :func:`largekernel.ops.conv` should emit ``largekernel::conv`` right now.

    True only while ``torch.compile`` traces (not ``torch.export``, ONNX export or jit tracing, which
    must produce standard operators) and the switch is on.

    Example:
        >>> use_custom_op()  # eager
        False
    """
    return (
        _ENABLED[0]
        and torch.compiler.is_compiling()
        and not _exporting()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
    )


# --------------------------------------------------------------------------------------- helpers
def _pairs(flat: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))


def _args(x, weight, stride, padding, dilation, groups) -> ConvArgs:
    return ConvArgs(
        weight.dim() - 2, tuple(weight.shape[2:]), tuple(stride), _pairs(padding), tuple(dilation),
        groups, x.shape[1], weight.shape[0],
    )


def _canonical(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``t`` with exactly the strides a fresh tensor of ``fmt`` has (what the fake kernels promise)."""
    want = torch.empty(t.shape, device="meta", memory_format=fmt).stride()
    if t.stride() == want:
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=fmt).copy_(t)


def _fmt(t: torch.Tensor) -> torch.memory_format:
    return torch.contiguous_format if t.is_contiguous() else suggest_memory_format(t)


def _out_format(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.memory_format:
    # measured with a real probe convolution even when called on fake tensors, so the fake and the
    # real kernels agree with each other (and with PyTorch's convolution on this device)
    unset = getattr(torch._subclasses.fake_tensor, "unset_fake_temporarily", contextlib.nullcontext)
    with unset():
        return expected_output_format(x, weight, groups)


class _Prepared:
    """One call's engine-ready form: cropped weight, symmetric padding, plan (shared by both ops)."""

    def __init__(self, x, weight, bias, stride, padding, dilation, groups, requires_grad: bool, out_format) -> None:
        args = _args(x, weight, stride, padding, dilation, groups)
        if out_format != torch.contiguous_format and x.device.type == "cpu":
            # as in eager ``conv``: PyTorch's own channels-last path is broken for some shapes
            # (tests/ops/test_pytorch_paths.py); compute those in the NC* layout
            pads = tuple(max(lo, hi) for lo, hi in args.padding)
            safe = native.channels_last_forward_safe(x, weight, bias, args.stride, pads, groups) and (
                not requires_grad or native.channels_last_grad_weight_safe(x, weight, args.stride, pads, groups)
            )
            if not safe:
                x = x.contiguous()
        self.full_shape = tuple(weight.shape)
        weight, args = crop_unreachable_taps(x.shape[2:], weight, args)
        # the index of the kept taps, to put the cropped weight's gradient back in place
        self.crop = tuple(
            (lo_full - lo) // d for (lo_full, _), (lo, _), d in zip(_pairs(padding), args.padding, args.dilation)
        )
        # the asymmetric remainder (``padding="same"`` with even kernels) is pre-padded explicitly
        self.extra = tuple((0, hi - lo) if hi >= lo else (lo - hi, 0) for lo, hi in args.padding)
        if any(a or b for a, b in self.extra):
            x = F.pad(x, _pad_arg(self.extra))
            pads = tuple((min(lo, hi), min(lo, hi)) for lo, hi in args.padding)
            args = ConvArgs(args.nd, args.kernel_size, args.stride, pads, args.dilation, args.groups,
                            args.in_channels, args.out_channels)
        self.x, self.weight, self.args = x, weight, args
        self.plan = choose_plan(x, weight, args, requires_grad)


# ------------------------------------------------------------------------------------- forward op
@torch.library.custom_op("largekernel::conv", mutates_args=())
def _conv_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    requires_grad: bool,
) -> torch.Tensor:
    """The engine forward: batched ``x``, ``padding`` as flattened ``(lo, hi)`` pairs."""
    out_format = _out_format(x, weight, groups)
    p = _Prepared(x, weight, bias, stride, padding, dilation, groups, requires_grad, out_format)
    cdt = p.plan.compute_dtype
    # the plan's forward, also when PyTorch's autograd would differentiate it in eager mode (here
    # the backward operator below differentiates it)
    y = run_forward(
        p.plan.forward, p.x.to(cdt), p.weight.to(cdt), bias.to(cdt) if bias is not None else None,
        p.args.stride, p.args.padding, p.args.dilation, groups,
    )
    return _canonical(y.to(x.dtype), out_format)


@_conv_op.register_fake
def _conv_fake(x, weight, bias, stride, padding, dilation, groups, requires_grad):
    out = [
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(x.shape[2:], weight.shape[2:], stride, _pairs(padding), dilation)
    ]
    shape = (x.shape[0], weight.shape[0], *out)
    return x.new_empty(shape).contiguous(memory_format=_out_format(x, weight, groups))


# ------------------------------------------------------------------------------------ backward op
@torch.library.custom_op("largekernel::conv_backward", mutates_args=())
def _conv_backward_op(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias_like: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. (x, weight, bias); an unrequested one comes back as an empty tensor.

    ``bias_like`` is an empty tensor of the bias's dtype (None without bias).
    """
    need_x, need_w, need_b = output_mask
    out_format = _out_format(x, weight, groups)
    p = _Prepared(x, weight, None, stride, padding, dilation, groups, True, out_format)
    plan, args = p.plan, p.args
    cdt = plan.compute_dtype
    g = grad_output.to(cdt)
    xc, wc = p.x.to(cdt), p.weight.to(cdt)
    pad = args.sym_padding
    # PyTorch-differentiated plans (small kernels) map to the same aten backward autograd would run
    gi_impl = "aten" if plan.grad_input == "autograd" else plan.grad_input
    gw_impl = ("aten_cl" if plan.forward == "native_cl" else "aten") if plan.grad_weight == "autograd" else plan.grad_weight
    gi = gw = gb = x.new_empty(0)
    if need_x:
        gi = compute_grad_input(gi_impl, g, xc, wc, args.stride, pad, args.dilation, groups)
        if any(a or b for a, b in p.extra):  # undo the pre-padding: keep the caller's positions
            index = [slice(None), slice(None)]
            index += [slice(a, a + n) for (a, _), n in zip(p.extra, x.shape[2:])]
            gi = gi[tuple(index)]
        gi = _canonical(gi.to(x.dtype), out_format)
    if need_w:
        gw = compute_grad_weight(gw_impl, g, xc, wc, args.stride, pad, args.dilation, groups)
        if tuple(gw.shape) != p.full_shape:  # cropped taps only ever read padding: zero gradient
            pads = []
            for lead, k_kept, k_full in zip(p.crop, gw.shape[2:], p.full_shape[2:]):
                pads.append((lead, k_full - k_kept - lead))
            gw = F.pad(gw, _pad_arg(tuple(pads)))
        gw = _canonical(gw.to(weight.dtype), _fmt(weight))
    if need_b:
        dtype = bias_like.dtype if bias_like is not None else grad_output.dtype
        gb = g.sum(dim=(0, *range(2, g.dim()))).to(dtype).contiguous()
    return gi, gw, gb


@_conv_backward_op.register_fake
def _conv_backward_fake(grad_output, x, weight, bias_like, stride, padding, dilation, groups, output_mask):
    need_x, need_w, need_b = output_mask
    gi = x.new_empty(x.shape).contiguous(memory_format=_out_format(x, weight, groups)) if need_x else x.new_empty(0)
    gw = weight.new_empty(weight.shape).contiguous(memory_format=_fmt(weight)) if need_w else x.new_empty(0)
    if need_b:
        dtype = bias_like.dtype if bias_like is not None else grad_output.dtype
        gb = grad_output.new_empty((weight.shape[0],), dtype=dtype)
    else:
        gb = x.new_empty(0)
    return gi, gw, gb


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, stride, padding, dilation, groups, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.conv = (list(stride), list(padding), list(dilation), groups)
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None  # all its gradient needs of the bias


def _backward(ctx, grad_output):
    x, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = bool(need_b and ctx.has_bias)
    # the bias's dtype travels as an empty tensor: inductor mis-passes ScalarType arguments to
    # custom operators (torch 2.14: "Expected Optional[int] ... found Tensor")
    bias_like = grad_output.new_empty(0, dtype=ctx.bias_dtype) if ctx.has_bias else None
    gi, gw, gb = torch.ops.largekernel.conv_backward(
        grad_output, x, weight, bias_like, stride, padding, dilation, groups, [bool(need_x), bool(need_w), need_b],
    )
    return (gi if need_x else None, gw if need_w else None, gb if need_b else None, None, None, None, None, None)


_conv_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- trace-time entry
def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # devices without autocast support
        return False


def _engine_worthwhile(args: ConvArgs, dtype: torch.dtype) -> bool:
    """Whether the engine can ever plan this call differently from PyTorch (same rule as
    :func:`largekernel.nn.engine_can_help`); otherwise inductor gets the plain aten call."""
    if dtype in (torch.float16, torch.bfloat16):
        return True  # the engine computes CPU half precision in float32, whatever the kernel
    return engine_may_differ(args.nd, args.groups, args.in_per_group, args.max_kernel)


def compiled_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """What :func:`largekernel.ops.conv` traces to under ``torch.compile`` with the switch on.

    Same signature and semantics as ``F.conv1d/2d/3d``. Convolutions the engine can speed up become
    one ``largekernel::conv`` node; the rest (and calls under ``torch.autocast``, whose casting a
    custom operator does not receive) stay plain ``F.conv*d`` calls for inductor.

    Example:
        >>> x, w = torch.randn(1, 4, 16, 16), torch.randn(4, 1, 13, 13)
        >>> compiled_conv(x, w, padding=6, groups=4).shape  # eager: runs the operator directly
        torch.Size([1, 4, 16, 16])
    """
    nd = weight.dim() - 2
    if _autocast_on(x.device.type):
        return _CONV_BY_DIM[nd](x, weight, bias, stride, padding, dilation, groups)
    args = normalize_conv_args(x, weight, bias, stride, padding, dilation, groups)
    if not _engine_worthwhile(args, x.dtype):
        return _CONV_BY_DIM[nd](x, weight, bias, stride, padding, dilation, groups)
    unbatched = args.unbatched
    if unbatched:
        x = x.unsqueeze(0)
    requires_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    flat = [v for pair in args.padding for v in pair]
    y = torch.ops.largekernel.conv(
        x, weight, bias, list(args.stride), flat, list(args.dilation), groups, requires_grad
    )
    return y.squeeze(0) if unbatched else y
