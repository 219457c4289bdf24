"""The engine's ``torch.autograd.Function``: any forward implementation plus a fast backward.

Backward maths (per spatial dimension, kernel extent ``E = d*(K-1)+1``, symmetric padding ``p``):

* ``grad_input`` is a *forward* convolution of the output gradient with the kernel flipped in
  space and transposed per group (``(C_out, C_in/g, K) -> (C_in, C_out/g, K)``), padded by
  ``E-1-p`` on the left and ``E-1-p+r`` on the right, where ``r`` is the tail of the padded input
  that no output touched. Stride > 1 is handled by zero-inserting the gradient first. Negative
  pads crop. This lets grad_input use whichever forward path is fastest (e.g. channels-last oneDNN).
* ``grad_weight`` is the batch-summed correlation of the padded input with the gradient: compiled
  kernel, FFT, or PyTorch's own ``convolution_backward``.
* ``grad_bias`` is the sum of the gradient over batch and space.

When a graph of the backward is requested (``create_graph=True``), backward switches to fully
differentiable PyTorch ops so double-backward keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from largekernel.ops.fusion import dilate_kernel
from largekernel.ops import native, triton_dispatch
from largekernel.ops.fft import _pad_arg, fft_conv, fft_conv_grad_weight
from largekernel.ops.memory_format import to_memory_format
from largekernel.ops.record import ForcedImplementationError, note
from largekernel.ops.validation import ConvArgs

__all__ = ["EngineConvFunction", "run_forward", "compute_grad_input", "compute_grad_weight"]

logger = logging.getLogger(__name__)


_WARNED: set[str] = set()


def _forced(stage: str) -> str | None:
    from largekernel.ops.dispatch import forced_impl  # noqa: PLC0415 - dispatch imports this module

    return forced_impl(stage)


def _fallback(stage: str, impl: str, why: str, exc: Exception | None = None) -> None:
    """A planned implementation cannot serve this call: fall back, unless it was forced."""
    if _forced(stage) == impl:
        raise ForcedImplementationError(
            f"force_impl({stage}={impl!r}) cannot serve this convolution: {why}"
        ) from exc
    if exc is not None:
        _warn_once(f"{stage} {impl}", exc)


def _warn_once(what: str, exc: Exception) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        logger.warning("compiled %s failed (%s: %s); using the PyTorch fallback", what, type(exc).__name__, exc)


def run_forward(
    impl: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
    stage: str = "forward",
) -> torch.Tensor:
    """Run one forward implementation. ``padding`` holds (left, right) pairs; negative values crop.

    ``stage`` names what the convolution is for (``"forward"`` or ``"grad_input"``, which reuses
    forward implementations); it is what :func:`~largekernel.ops.record_impls` records.
    """
    nd = weight.dim() - 2
    symmetric = all(lo == hi and lo >= 0 for lo, hi in padding)
    if impl == "fft":
        note(stage, "fft", nd)
        return fft_conv(x, weight, bias, stride, padding, dilation, groups)
    if not symmetric:
        x = F.pad(x, _pad_arg(padding))
        padding = tuple((0, 0) for _ in padding)
    sym = tuple(lo for lo, _ in padding)
    if impl == "triton":
        if not (weight.shape[1] == 1 and x.shape[1] == groups):
            _fallback(stage, impl, f"weight {tuple(weight.shape)} with groups={groups} is not depthwise")
        else:
            try:
                y = triton_dispatch.triton_forward(x, weight, bias, stride, sym, dilation)
            except Exception as exc:  # noqa: BLE001 - unsupported input or a launch failure: fall back
                _fallback(stage, impl, f"{type(exc).__name__}: {exc}", exc)
            else:
                note(stage, "triton", nd)
                return y
        impl = "native_cl" if x.device.type == "cpu" else "native"
    if impl == "kernels":
        mod = native.kernels_module()
        if mod is None or not callable(getattr(mod, "depthwise_forward", None)):
            _fallback(stage, impl, "the compiled kernels are not available")
        elif not (weight.shape[1] == 1 and weight.shape[0] == x.shape[1] == groups):
            # e.g. the flipped kernel of a channel multiplier is not depthwise
            _fallback(stage, impl, f"weight {tuple(weight.shape)} with groups={groups} is not depthwise")
        else:
            try:
                y = mod.depthwise_forward(x, weight, tuple(stride), sym, tuple(dilation))
            except Exception as exc:  # noqa: BLE001 - a compiled-kernel failure must not break training
                _fallback(stage, impl, f"{type(exc).__name__}: {exc}", exc)
            else:
                note(stage, "kernels", nd)
                if bias is not None:
                    y = y + bias.view(1, -1, *([1] * nd))
                return y
        impl = "native_cl"
    if impl in ("native", "native_cl"):
        channels_last = impl == "native_cl" and native.channels_last_forward_safe(x, weight, bias, stride, sym, groups)
        if channels_last and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            # PyTorch's autograd will differentiate this conv: its channels-last weight gradient
            # must be trustworthy too
            channels_last = native.channels_last_grad_weight_safe(x, weight, stride, sym, groups)
        note(stage, "native_cl" if channels_last else "native", nd)
        return native.native_conv(x, weight, bias, stride, sym, dilation, groups, channels_last=channels_last)
    raise ValueError(f"unknown forward implementation {impl!r}")


def _flip_transpose(weight: torch.Tensor, groups: int) -> torch.Tensor:
    c_out, ipg = weight.shape[:2]
    ks = weight.shape[2:]
    opg = c_out // groups
    wt = weight.reshape(groups, opg, ipg, *ks).transpose(1, 2).reshape(groups * ipg, opg, *ks)
    return wt.flip(tuple(range(2, weight.dim())))


def compute_grad_input(
    impl: str,
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Input gradient; ``impl`` is a forward implementation name, ``"triton"`` or ``"aten"``."""
    if impl == "triton":
        if not (weight.shape[1] == 1 and x.shape[1] == groups):
            _fallback("grad_input", impl, f"weight {tuple(weight.shape)} with groups={groups} is not depthwise")
        else:
            try:
                gi = triton_dispatch.triton_grad_input(grad_output, x, weight, stride, padding, dilation)
            except Exception as exc:  # noqa: BLE001
                _fallback("grad_input", impl, f"{type(exc).__name__}: {exc}", exc)
            else:
                note("grad_input", "triton", weight.dim() - 2)
                return gi
        impl = "aten"
    if impl == "aten":
        note("grad_input", "aten", weight.dim() - 2)
        return native.aten_grad_input(grad_output, x, weight, stride, padding, dilation, groups)
    g = grad_output
    if any(s > 1 for s in stride):
        g = dilate_kernel(g, tuple(stride))  # zero insertion between output positions
    pads = []
    for n_in, k, s, p, d, n_out in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, grad_output.shape[2:]):
        e = d * (k - 1) + 1
        tail = n_in + 2 * p - ((n_out - 1) * s + e)
        pads.append((e - 1 - p, e - 1 - p + tail))
    wt = _flip_transpose(weight, groups)
    return run_forward(impl, g, wt, None, (1,) * len(pads), tuple(pads), dilation, groups, stage="grad_input")


def compute_grad_weight(
    impl: str,
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Weight gradient with implementation ``impl`` in {kernels, fft, aten, aten_cl}."""
    nd = weight.dim() - 2
    if impl == "triton":
        if not (weight.shape[1] == 1 and x.shape[1] == groups):
            _fallback("grad_weight", impl, f"weight {tuple(weight.shape)} with groups={groups} is not depthwise")
        else:
            try:
                gw = triton_dispatch.triton_grad_weight(
                    grad_output, x, weight, stride, padding, dilation,
                    deterministic=torch.are_deterministic_algorithms_enabled(),
                )
            except Exception as exc:  # noqa: BLE001
                _fallback("grad_weight", impl, f"{type(exc).__name__}: {exc}", exc)
            else:
                note("grad_weight", "triton", nd)
                return gw
        impl = "aten"
    if impl == "kernels":
        mod = native.kernels_module()
        if mod is None:
            _fallback("grad_weight", impl, "the compiled kernels are not available")
        elif not (weight.shape[1] == 1 and weight.shape[0] == x.shape[1] == groups):
            _fallback("grad_weight", impl, f"weight {tuple(weight.shape)} with groups={groups} is not depthwise")
        else:
            try:
                gw = mod.depthwise_grad_weight(
                    x, grad_output, tuple(weight.shape[2:]), tuple(stride), tuple(padding), tuple(dilation)
                )
            except Exception as exc:  # noqa: BLE001 - fall back to FFT rather than fail a backward pass
                _fallback("grad_weight", impl, f"{type(exc).__name__}: {exc}", exc)
            else:
                note("grad_weight", "kernels", nd)
                return gw
        impl = "fft"
    if impl == "fft":
        note("grad_weight", "fft", nd)
        return fft_conv_grad_weight(
            x, grad_output, tuple(weight.shape[2:]), stride, tuple((p, p) for p in padding), dilation, groups
        )
    if impl in ("aten", "aten_cl"):
        channels_last = impl == "aten_cl" and native.channels_last_grad_weight_safe(x, weight, stride, padding, groups)
        note("grad_weight", "aten_cl" if channels_last else "aten", nd)
        return native.aten_grad_weight(
            grad_output, x, weight, stride, padding, dilation, groups, channels_last=channels_last
        )
    raise ValueError(f"unknown grad_weight implementation {impl!r}")


class EngineConvFunction(torch.autograd.Function):
    """Convolution with a pluggable forward and the fast backward described in the module docstring.

    Inputs are batched and padding is symmetric (the public ``conv`` guarantees both). Computation
    happens in ``plan.compute_dtype`` (float32 for half types on CPU); outputs and gradients come back
    in the dtypes of the corresponding inputs.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, args: ConvArgs, plan, out_format=torch.contiguous_format):  # type: ignore[override]
        cdt = plan.compute_dtype
        pads = args.padding
        y = run_forward(
            plan.forward,
            x.to(cdt),
            weight.to(cdt),
            bias.to(cdt) if bias is not None else None,
            args.stride,
            pads,
            args.dilation,
            args.groups,
        )
        ctx.save_for_backward(x, weight)
        ctx.args = args
        ctx.plan = plan
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.out_format = out_format
        return to_memory_format(y.to(x.dtype), out_format)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        args: ConvArgs = ctx.args
        plan = ctx.plan
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        cdt = plan.compute_dtype
        g = grad_output.to(cdt)
        xc, wc = x.to(cdt), weight.to(cdt)
        pad = args.sym_padding
        gi = gw = gb = None
        if torch.is_grad_enabled():
            # create_graph=True: stay on differentiable PyTorch ops (the compiled kernels are not)
            gi_impl, gw_impl = "aten", "aten"
        else:
            gi_impl, gw_impl = plan.grad_input, plan.grad_weight
        if need_x:
            gi = compute_grad_input(gi_impl, g, xc, wc, args.stride, pad, args.dilation, args.groups).to(x.dtype)
            gi = to_memory_format(gi, ctx.out_format)  # PyTorch returns grad_input in the output's format
        if need_w:
            gw = compute_grad_weight(gw_impl, g, xc, wc, args.stride, pad, args.dilation, args.groups)
            gw = gw.to(weight.dtype)
            if weight.is_contiguous() and not gw.is_contiguous():
                # DDP's gradient buckets (and optimisers' fused paths) expect the weight's strides
                gw = gw.contiguous()
        if need_b:
            gb = g.sum(dim=(0, *range(2, g.dim()))).to(ctx.bias_dtype)
        return gi, gw, gb, None, None, None
