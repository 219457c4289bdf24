"""Compiled channels-last row kernels: per-(sample, channel) reductions and rescalings.

The memory-bound parts of Global Response Normalisation (:mod:`largekernel.ops.grn`) as one pass
each over a contiguous ``(N, S, C)`` tensor, parallel over the same thread pool as the
convolution kernels. Callers check :func:`largekernel.ops.cpu_kernels.is_available` and
:func:`supports` first; there is no fallback here (the caller has the PyTorch formulation).

Example:
    >>> import torch
    >>> from largekernel.ops import cpu_kernels
    >>> from largekernel.ops.cpu_kernels import rows
    >>> a = torch.randn(2, 9, 20)
    >>> if cpu_kernels.is_available():
    ...     sum_ab, sum_a = rows.reduce(a, a, with_sum=True)
    ...     torch.testing.assert_close(sum_ab, (a.double() ** 2).sum(1))
"""

from __future__ import annotations

import ctypes

import torch

from largekernel.ops.cpu_kernels import _LANES, _SUFFIX, _i64, _library, _parallel, is_available

__all__ = ["supports", "reduce", "combine"]


def supports(*tensors: torch.Tensor | None) -> bool:
    """Whether the row kernels handle these tensors: contiguous, same CPU float32/float64 dtype."""
    present = [t for t in tensors if t is not None]
    if not present:
        return False
    dtype = present[0].dtype
    if dtype not in _SUFFIX:
        return False
    for t in present:
        if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous():
            return False
    return is_available()


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def reduce(
    a: torch.Tensor, b: torch.Tensor | None = None, *, with_sum: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-(sample, channel) sums over positions of ``(N, S, C)`` tensors, in float64.

    Args:
        a: ``(N, S, C)`` contiguous.
        b: same shape as ``a``, or ``None`` for ``b = a``.
        with_sum: also return ``sum_s a``.

    Returns:
        ``(sum_s a * b, sum_s a or None)``, each ``(N, C)`` float64.
    """
    lib = _library()
    n, s, c = a.shape
    out_ab = torch.empty((n, c), dtype=torch.float64, device="cpu")
    out_a = torch.empty((n, c), dtype=torch.float64, device="cpu") if with_sum else None
    lanes = _LANES[a.dtype]
    blocks = -(-c // lanes)
    fn = getattr(lib, "rows_reduce_" + _SUFFIX[a.dtype])
    _parallel(fn, (_ptr(a), _ptr(b), _ptr(out_ab), _ptr(out_a), _i64([n, s, c])), n * blocks, s * lanes * 2)
    return out_ab, out_a


def combine(
    a: torch.Tensor,
    scale_a: torch.Tensor,
    b: torch.Tensor | None = None,
    scale_b: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``a * scale_a[n, c] (+ b * scale_b[n, c]) (+ bias[c])`` over ``(N, S, C)`` in one pass.

    Args:
        a: ``(N, S, C)`` contiguous.
        scale_a: ``(N, C)`` contiguous, ``a``'s dtype.
        b, scale_b: optional second term, shapes as ``a`` / ``scale_a``.
        bias: optional ``(C,)``, ``a``'s dtype.
        out: optional destination (may be ``a`` or ``b``); a new tensor by default.

    Returns:
        The ``(N, S, C)`` result.
    """
    lib = _library()
    n, s, c = a.shape
    if out is None:
        out = torch.empty_like(a, memory_format=torch.contiguous_format)
    fn = getattr(lib, "rows_combine_" + _SUFFIX[a.dtype])
    args = (_ptr(a), _ptr(scale_a), _ptr(b), _ptr(scale_b), _ptr(bias), _ptr(out), _i64([n, s, c]))
    _parallel(fn, args, n * s, c * (3 if b is None else 5))
    return out
