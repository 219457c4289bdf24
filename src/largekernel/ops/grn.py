"""Global Response Normalisation (ConvNeXt V2 / UniRepLKNet) as one fused operation.

``GRN(x) = (gamma * N + 1) * x + beta`` with ``G[n, c] = ||x[n, :, c]||_2`` over every spatial
position and ``N = G / (mean_c G + eps)``, on channels-last ``(N, *S, C)`` input.

Written as separate PyTorch operations (what :class:`largekernel.nn.GRN` does, like the official
code), a training step walks the large ``(N, *S, 4 * dim)`` activation about 17 times: the norm,
two products and a sum forward; autograd's products, reductions and the sum of two input
gradients backward. Its backward has a closed form that needs two per-(sample, channel) sums of
the incoming gradient, so the fused operation reads or writes the activation 8 times:

* forward: ``sum_s x**2`` (1 read), then ``x * scale + beta`` (1 read, 1 write);
* backward: ``P = sum_s dy * x`` and ``sum_s dy`` (2 reads), then
  ``dx = dy * scale + x * coef`` (2 reads, 1 write), with per-(n, c) coefficients
  ``coef = dG / G`` from ``dN = gamma * P`` through ``N = G / (mean_c G + eps)``.

The passes run as compiled kernels (:mod:`largekernel.ops.cpu_kernels.rows`, float32/float64,
CPU) when available, otherwise as the same closed form in PyTorch operations. The small
per-(n, c) arithmetic is done in float64. Which implementation ran is reported to
:func:`largekernel.ops.record_impls` (stages ``"grn_forward"`` / ``"grn_backward"``).

Example:
    >>> x = torch.randn(2, 7, 7, 32)
    >>> gamma, beta = torch.randn(32), torch.randn(32)
    >>> grn(x, gamma, beta).shape
    torch.Size([2, 7, 7, 32])
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from largekernel.ops import record
from largekernel.ops.cpu_kernels import rows

__all__ = ["grn", "grn_reference"]


def grn_reference(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """GRN as separate PyTorch operations, differentiated by autograd (the unfused definition).

    Args:
        x: ``(N, *S, C)`` channels-last input (at least one spatial dim).
        gamma: ``C`` scale parameters, any shape with ``C`` elements.
        beta: ``C`` bias parameters (any shape with ``C`` elements) or ``None``.
        eps: added to the mean norm.

    Returns:
        Tensor shaped like ``x``.

    Example:
        >>> grn_reference(torch.ones(1, 2, 2, 3), torch.ones(3), None).shape
        torch.Size([1, 2, 2, 3])
    """
    xs = x.flatten(1, -2)
    g = torch.linalg.vector_norm(xs, ord=2, dim=1, keepdim=True)
    n = g / (g.mean(dim=-1, keepdim=True) + eps)
    out = (gamma.reshape(1, 1, -1) * n + 1) * xs
    if beta is not None:
        out = out + beta.reshape(1, 1, -1)
    return out.reshape(x.shape)


def _scale(g: torch.Tensor, gamma64: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, mean_c G + eps, gamma * N + 1)`` from ``G`` ``(B, C)``, all float64."""
    denom = g.mean(dim=-1, keepdim=True) + eps
    nrm = g / denom
    return nrm, denom, gamma64 * nrm + 1


class _FusedGRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x3: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor | None, eps: float, native: bool):
        gamma64 = gamma.detach().reshape(-1).double()
        if native:
            sumsq, _ = rows.reduce(x3)
        else:  # large tensors stay in x's dtype (and device); only (N, C) statistics are float64
            sumsq = torch.linalg.vector_norm(x3, ord=2, dim=1).double().square()
        g = sumsq.sqrt()
        nrm, denom, scale = _scale(g, gamma64, eps)
        scale_t = scale.to(x3.dtype)
        if native:
            bias = beta.detach().reshape(-1).contiguous() if beta is not None else None
            out = rows.combine(x3, scale_t, bias=bias)
        else:
            out = x3 * scale_t[:, None, :]
            if beta is not None:
                out = out + beta.detach().reshape(1, 1, -1)
        # nd: the flattened (N, S, C) view always has one spatial axis
        record.note("grn_forward", "kernels" if native else "torch", x3.dim() - 2)
        ctx.save_for_backward(x3, gamma)
        ctx.stats = (g, nrm, denom, scale_t)
        ctx.eps, ctx.native, ctx.has_beta = eps, native, beta is not None
        ctx.beta_shape = beta.shape if beta is not None else None
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x3, gamma = ctx.saved_tensors
        beta_shape = ctx.beta_shape
        if torch.is_grad_enabled():
            return _FusedGRN._differentiable_backward(ctx, grad_out, x3, gamma)
        return _FusedGRN._fused_backward(ctx, grad_out, x3, gamma, beta_shape)

    @staticmethod
    def _differentiable_backward(ctx, grad_out, x3, gamma):
        """``create_graph=True``: the unfused definition's backward, itself differentiable."""
        with torch.enable_grad():
            x_in = x3 if x3.requires_grad else x3.detach().requires_grad_()
            g_in = gamma if gamma.requires_grad else gamma.detach().requires_grad_()
            out = grn_reference(x_in, g_in, None, ctx.eps)
            grad_x, grad_gamma = torch.autograd.grad(out, (x_in, g_in), grad_out, create_graph=True)
        grad_beta = grad_out.sum(dim=(0, 1)).reshape(ctx.beta_shape) if ctx.has_beta else None
        record.note("grn_backward", "torch", x3.dim() - 2)
        return grad_x, grad_gamma, grad_beta, None, None

    @staticmethod
    @once_differentiable
    def _fused_backward(ctx, grad_out, x3, gamma, beta_shape):
        g, nrm, denom, scale_t = ctx.stats
        grad_out = grad_out.contiguous()
        native = ctx.native and rows.supports(grad_out, x3)
        if native:
            p, sum_dy = rows.reduce(grad_out, x3, with_sum=True)
        else:
            p = (grad_out * x3).sum(dim=1).double()
            sum_dy = grad_out.sum(dim=1).double()
        gamma64 = gamma.detach().reshape(-1).double()
        channels = g.shape[-1]
        # N = G / D with D = mean_c G + eps:  dG_k = dN_k / D - sum_c(dN_c G_c) / (D^2 C)
        d_nrm = gamma64 * p
        d_g = d_nrm / denom - (d_nrm * g).sum(dim=-1, keepdim=True) / (denom * denom * channels)
        # G = ||x||: dx = dG * x / G (zero where G == 0, as torch.linalg.vector_norm's gradient)
        coef = torch.where(g > 0, d_g / torch.where(g > 0, g, torch.ones_like(g)), torch.zeros_like(g))
        grad_x = None
        if ctx.needs_input_grad[0]:
            coef_t = coef.to(x3.dtype)
            if native:
                grad_x = rows.combine(grad_out, scale_t, x3, coef_t)
            else:
                grad_x = grad_out * scale_t[:, None, :] + x3 * coef_t[:, None, :]
        grad_gamma = (nrm * p).sum(dim=0).to(gamma.dtype).reshape(gamma.shape) if ctx.needs_input_grad[1] else None
        grad_beta = None
        if ctx.has_beta and ctx.needs_input_grad[2]:
            grad_beta = sum_dy.sum(dim=0).to(gamma.dtype).reshape(beta_shape)
        record.note("grn_backward", "kernels" if native else "torch", x3.dim() - 2)
        return grad_x, grad_gamma, grad_beta, None, None


def grn(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Fused Global Response Normalisation of channels-last ``x`` (see the module docstring).

    Same values and gradients as :func:`grn_reference` (up to floating-point rounding; the
    per-channel norms are accumulated in float64). With ``create_graph=True`` (double backward)
    the backward is the unfused definition's, so higher derivatives are exact too.

    Args:
        x: ``(N, *S, C)`` with at least one spatial dim, floating point.
        gamma: ``C`` elements (e.g. the official ``(1, 1, 1, C)`` parameter).
        beta: ``C`` elements or ``None``.
        eps: added to the mean norm.

    Returns:
        Tensor shaped like ``x``, contiguous.

    Raises:
        ValueError: ``x`` has fewer than 3 dims, or ``gamma``/``beta`` do not have ``C`` elements.

    Example:
        >>> grn(torch.randn(2, 5, 16), torch.zeros(16), torch.zeros(16)).shape
        torch.Size([2, 5, 16])
    """
    if x.dim() < 3:
        raise ValueError(f"x must be channels-last (N, *spatial, C) with a spatial dim, got shape {tuple(x.shape)}")
    channels = x.shape[-1]
    if gamma.numel() != channels:
        raise ValueError(f"gamma must have {channels} elements (x's last dim), got shape {tuple(gamma.shape)}")
    if beta is not None and beta.numel() != channels:
        raise ValueError(f"beta must have {channels} elements (x's last dim), got shape {tuple(beta.shape)}")
    params = [t for t in (gamma, beta) if t is not None]
    if not x.is_floating_point() or any(t.dtype != x.dtype or t.device != x.device for t in params):
        return grn_reference(x, gamma, beta, eps)  # mixed precision: PyTorch's type promotion
    x3 = x.reshape(x.shape[0], -1, channels).contiguous()
    native = rows.supports(x3)
    return _FusedGRN.apply(x3, gamma, beta, float(eps), native).reshape(x.shape)
