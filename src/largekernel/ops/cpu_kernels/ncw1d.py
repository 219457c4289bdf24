"""Compiled 1-D depthwise kernels on NCW rows (the length axis contiguous), without packing.

The channel-blocked kernels transpose a 1-D ``(N, C, L)`` tensor into ``(N, C/VL, L, VL)``
blocks and back, and for a 1-D tensor those copies cost more than the convolution itself up to
K ~ 100 (measured: 84 of 117 ms of a K = 13 forward + backward at ``(8, 256, 4096)``). These
kernels read each ``(n, c)`` row where it is, copy it into a zero-padded scratch row and
vectorise along the length (``ncw1d_impl.c``). :func:`largekernel.ops.cpu_kernels.depthwise_forward`
and :func:`~largekernel.ops.cpu_kernels.depthwise_grad_weight` route stride-1 1-D problems here
when the input's length axis is contiguous and its channels are not (channels-last 1-D input,
whose packing is a plain copy, keeps the blocked kernels).

Example:
    >>> import torch
    >>> from largekernel.ops import cpu_kernels
    >>> x, w = torch.randn(2, 3, 50), torch.randn(3, 1, 7)
    >>> y = cpu_kernels.depthwise_forward(x, w, 1, 3, 1)  # takes this path
    >>> torch.testing.assert_close(y, torch.nn.functional.conv1d(x, w, padding=3, groups=3))
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from largekernel.ops.cpu_kernels import _LANES, _SUFFIX, _i64, _library, _parallel

__all__ = ["applies", "forward", "grad_weight"]


def applies(x: torch.Tensor, geo: Any, *others: torch.Tensor) -> bool:
    """Whether this path serves the (already validated, kernel-supported) problem ``geo``.

    1-D, stride 1, and ``x`` (and ``others``) with a contiguous length axis; not when ``x`` is
    channels-last with whole channel vectors (the blocked kernels read that in place).
    """
    if geo.dims != 1 or geo.stride != (1,) or geo.n == 0 or geo.c == 0:
        return False
    if any(t.stride(-1) != 1 and t.shape[-1] > 1 for t in (x, *others)):
        return False
    return not (x.stride(1) == 1 and geo.c % _LANES[x.dtype] == 0 and x.shape[-1] > 1)


def _checked(fn: Callable[..., int]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        if fn(*args) != 0:
            raise MemoryError("the 1-D depthwise kernel could not allocate its scratch rows")

    return run


def _row_params(x: torch.Tensor, geo: Any, other: torch.Tensor) -> list[int]:
    (lo, _), = geo.pairs
    return [geo.n, geo.c, geo.spatial[0], x.stride(0), x.stride(1), geo.kernel[0], lo, geo.dilation[0],
            geo.out_spatial[0], other.stride(0), other.stride(1)]


def forward(x: torch.Tensor, weight: torch.Tensor, geo: Any) -> torch.Tensor:
    """``F.conv1d(x, weight, stride=1, padding=geo.pairs, dilation=geo.dilation, groups=C)``.

    Args:
        x: ``(N, C, L)`` float32/float64 CPU tensor with ``x.stride(-1) == 1``.
        weight: ``(C, 1, K)`` (any layout; copied contiguous in ``x``'s dtype).
        geo: the problem's ``_Geometry``.

    Returns:
        Contiguous ``(N, C, L_out)``.
    """
    lib = _library()
    w = weight.detach().to(x.dtype).contiguous()
    out = torch.empty((geo.n, geo.c, geo.out_spatial[0]), dtype=x.dtype, device="cpu")
    params = _i64(_row_params(x, geo, out))
    fn = _checked(getattr(lib, "ncw_fwd_" + _SUFFIX[x.dtype]))
    cost = 2.0 * geo.out_spatial[0] * geo.kernel[0]
    _parallel(fn, (x.data_ptr(), w.data_ptr(), out.data_ptr(), params), geo.n * geo.c, cost)
    return out


def grad_weight(x: torch.Tensor, grad_output: torch.Tensor, geo: Any) -> torch.Tensor:
    """The weight gradient ``(C, 1, K)`` of :func:`forward` for output gradient ``grad_output``.

    Args:
        x: ``(N, C, L)`` with ``x.stride(-1) == 1``.
        grad_output: ``(N, C, L_out)`` in ``x``'s dtype with a contiguous last axis.
        geo: the problem's ``_Geometry``.
    """
    lib = _library()
    out = torch.empty((geo.c, 1, geo.kernel[0]), dtype=x.dtype, device="cpu")
    params = _i64(_row_params(x, geo, grad_output))
    fn = _checked(getattr(lib, "ncw_gw_" + _SUFFIX[x.dtype]))
    cost = 2.0 * geo.n * geo.out_spatial[0] * geo.kernel[0]
    _parallel(fn, (x.data_ptr(), grad_output.data_ptr(), out.data_ptr(), params), geo.c, cost)
    return out
