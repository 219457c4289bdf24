"""FFT convolution (1-D/2-D/3-D, any groups) and the FFT weight-gradient correlation.

The maths: a convolution layer computes the cross-correlation
``y[o] = sum_k w[k] x_pad[o*s + d*k]``. With ``W_d`` the zero-inserted (dilated) kernel of extent
``E = d*(K-1)+1`` and a transform length ``n >= len(x_pad)``, the circular correlation
``irfft(rfft(x_pad) * conj(rfft(W_d)))`` equals the linear one on the ``len(x_pad) - E + 1`` valid
outputs (no index ``o + e`` reaches ``n``), so ``n`` only has to cover the padded input, not
``L + K - 1``. Stride is applied by subsampling the stride-1 result. Groups are handled by
broadcasting (depthwise, channel multiplier) or a complex einsum over the in-group channels.

The weight gradient is the correlation of the padded input with the (zero-inserted, for stride > 1)
output gradient, summed over the batch — the batch sum is done in the frequency domain so one
inverse transform per (out, in) channel pair suffices.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from largekernel.ops.fusion import dilate_kernel

__all__ = ["fast_fft_size", "fft_conv", "fft_conv_grad_weight"]


@functools.lru_cache(maxsize=4096)
def fast_fft_size(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are all in {2, 3, 5, 7} (fast for pocketFFT/cuFFT).

    Example:
        >>> fast_fft_size(97)
        98
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _pad_arg(padding: Sequence[tuple[int, int]]) -> list[int]:
    # F.pad wants the last dimension first.
    out: list[int] = []
    for lo, hi in reversed(tuple(padding)):
        out += [lo, hi]
    return out


def _combine_forward(xf: torch.Tensor, wf: torch.Tensor, groups: int) -> torch.Tensor:
    """``Y[b, g*og+o] = sum_i X[b, g*ig+i] * conj(W[g*og+o, i])`` over flattened frequencies."""
    b, c_in, f = xf.shape
    c_out, ipg, _ = wf.shape
    opg = c_out // groups
    wc = wf.conj()
    if ipg == 1:
        # depthwise (optionally with a channel multiplier): pure broadcasting, no reduction
        y = xf.view(b, groups, 1, f) * wc.view(1, groups, opg, f)
        return y.reshape(b, c_out, f)
    y = torch.einsum("bgif,goif->bgof", xf.view(b, groups, ipg, f), wc.view(groups, opg, ipg, f))
    return y.reshape(b, c_out, f)


def fft_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Convolution layer (cross-correlation) computed with real FFTs.

    Args:
        x: ``(B, C_in, *spatial)``.
        weight: ``(C_out, C_in/groups, *kernel)``.
        bias: optional ``(C_out,)``.
        stride, dilation: per-dimension tuples.
        padding: per-dimension ``(left, right)`` pairs (negative values crop).
        groups: number of groups.

    Returns:
        ``(B, C_out, *out)``, same dtype as ``x`` (transforms run in at least float32).
    """
    nd = weight.dim() - 2
    dims = tuple(range(-nd, 0))
    out_dtype = x.dtype
    if x.numel() == 0:  # empty batch: FFT libraries reject zero-sized transforms
        out = [
            (n + lo + hi - d * (k - 1) - 1) // s + 1
            for n, k, s, (lo, hi), d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)
        ]
        # keep the graph connected to x and weight so autograd yields (zero) gradients for both
        anchor = x.sum() + weight.sum() + (bias.sum() if bias is not None else 0)
        return x.new_zeros((x.shape[0], weight.shape[0], *out)) + anchor * 0
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xp = F.pad(x.to(cdt), _pad_arg(padding))
    wd = dilate_kernel(weight.to(cdt), tuple(dilation))
    in_sz = xp.shape[2:]
    ext = wd.shape[2:]
    n = tuple(fast_fft_size(int(s)) for s in in_sz)
    xf = torch.fft.rfftn(xp, s=n, dim=dims)
    wf = torch.fft.rfftn(wd, s=n, dim=dims)
    fshape = xf.shape[2:]
    yf = _combine_forward(xf.flatten(2), wf.flatten(2), groups).view(xf.shape[0], weight.shape[0], *fshape)
    y = torch.fft.irfftn(yf, s=n, dim=dims)
    index = (slice(None), slice(None)) + tuple(
        slice(0, int(i) - int(e) + 1, s) for i, e, s in zip(in_sz, ext, stride)
    )
    y = y[index]
    if bias is not None:
        y = y + bias.to(cdt).view(1, -1, *([1] * nd))
    return y.to(out_dtype).contiguous()


def fft_conv_grad_weight(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Gradient of a convolution layer w.r.t. its weight, by FFT correlation.

    ``gw[o, i, k] = sum_b sum_t g[b, o, t] * x_pad[b, g(o)*ig + i, t*s + d*k]``.

    Args:
        x: the layer input ``(B, C_in, *spatial)``.
        grad_output: ``(B, C_out, *out)``.
        kernel_size, stride, dilation: per-dimension tuples.
        padding: per-dimension ``(left, right)`` pairs.
        groups: number of groups.

    Returns:
        ``(C_out, C_in/groups, *kernel_size)`` in ``x``'s dtype.
    """
    nd = x.dim() - 2
    dims = tuple(range(-nd, 0))
    if x.numel() == 0 or grad_output.numel() == 0:
        return x.new_zeros((grad_output.shape[1], x.shape[1] // groups, *kernel_size))
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xp = F.pad(x.to(cdt), _pad_arg(padding))
    g = grad_output.to(cdt)
    if any(s > 1 for s in stride):
        g = dilate_kernel(g, tuple(stride))  # zero insertion: same operation as kernel dilation
    in_sz = xp.shape[2:]
    n = tuple(fast_fft_size(int(s)) for s in in_sz)
    xf = torch.fft.rfftn(xp, s=n, dim=dims)
    gf = torch.fft.rfftn(g, s=n, dim=dims)
    b, c_in = xf.shape[:2]
    c_out = gf.shape[1]
    fshape = xf.shape[2:]
    ipg, opg = c_in // groups, c_out // groups
    xf = xf.flatten(2)
    gf = gf.flatten(2).conj()
    f = xf.shape[-1]
    if ipg == 1 and opg == 1:
        cf = (gf * xf).sum(0).unsqueeze(1)
    elif ipg == 1:
        cf = (gf.view(b, groups, opg, f) * xf.view(b, groups, 1, f)).sum(0).reshape(c_out, 1, f)
    else:
        cf = torch.einsum("bgof,bgif->goif", gf.view(b, groups, opg, f), xf.view(b, groups, ipg, f))
        cf = cf.reshape(c_out, ipg, f)
    c = torch.fft.irfftn(cf.view(c_out, ipg, *fshape), s=n, dim=dims)
    index = (slice(None), slice(None)) + tuple(
        slice(0, d * (k - 1) + 1, d) for k, d in zip(kernel_size, dilation)
    )
    return c[index].to(x.dtype).contiguous()
