"""Float64 references for the Triton kernel tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# relative (to the reference's max magnitude) error allowed per storage dtype: float32 accumulates
# in float32; half types are rounded once on output (2^-11 fp16, 2^-8 bf16) after fp32 accumulation
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def reference(x, w, gy, stride, padding, dilation):
    """Output and both gradients of the depthwise conv in float64 by torch.nn.functional."""
    nd = x.dim() - 2
    xr = x.detach().double().requires_grad_(True)
    wr = w.detach().double().requires_grad_(True)
    y = CONV[nd](xr, wr, None, stride, padding, dilation, x.shape[1])
    gx, gw = torch.autograd.grad(y, (xr, wr), gy.double()) if gy is not None else (None, None)
    return y.detach(), gx, gw


def assert_close(got, ref, dtype, what):
    assert got.dtype == dtype, f"{what}: dtype {got.dtype} != {dtype}"
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = max(ref.abs().max().item(), 1e-12)
    err = (got.double() - ref).abs().max().item() / scale
    assert err <= TOL[dtype], f"{what}: max relative error {err:.2e} > {TOL[dtype]:.0e} ({dtype})"
