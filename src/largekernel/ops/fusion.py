"""Kernel algebra shared by every structural reparameterisation.

All functions are exact linear-algebra identities on convolution kernels:

* ``fuse_conv_bn``: conv followed by eval-mode BatchNorm == one conv with bias.
* ``dilate_kernel``: a dilated k-tap kernel == a dense ``r(k-1)+1``-tap kernel with zeros between taps.
* ``pad_kernel_to``: a centred smaller "same" kernel == the larger kernel zero-padded around it.
* ``identity_kernel``: the identity map as a depthwise kernel (a centred one-hot).

They work for 1-D, 2-D and 3-D kernels (the spatial dimensions are everything after the first
two) and preserve dtype and device. Arithmetic is done in at least float32 so that fp16/bf16
models fuse without overflow, and in float64 when the inputs are float64 (exactness ≤ 1e-12).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "compute_dtype",
    "fuse_conv_bn",
    "dilate_kernel",
    "pad_kernel_to",
    "identity_kernel",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to do fusion arithmetic in: float64 stays, everything else goes to float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding convolution.

    ``BN(conv(x; W, b)) == conv(x; W * g/s, beta + (b - mu) * g/s)`` with ``s = sqrt(var + eps)``.

    Args:
        weight: Conv weight of shape ``(C_out, C_in/groups, *kernel)``.
        bias: Conv bias ``(C_out,)`` or ``None`` (treated as zero).
        bn: The BatchNorm that follows the conv; its running statistics are used.

    Returns:
        ``(fused_weight, fused_bias)`` in ``weight``'s dtype and device.

    Raises:
        ValueError: If the BN's channel count differs from ``weight.shape[0]`` or it
            tracks no running statistics.
    """
    if bn.num_features != weight.shape[0]:
        raise ValueError(
            f"bn has {bn.num_features} features but the conv weight has {weight.shape[0]} output channels"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn must track running statistics to be fused (track_running_stats=True)")
    out_dtype = weight.dtype
    dtype = compute_dtype(out_dtype)
    std = (bn.running_var.to(dtype) + bn.eps).sqrt()
    gamma = bn.weight.to(dtype) if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.to(dtype) if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    b = bias.to(dtype) if bias is not None else torch.zeros_like(std)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    fused_w = weight.to(dtype) * scale.reshape(shape)
    fused_b = beta + (b - bn.running_mean.to(dtype)) * scale
    return fused_w.to(out_dtype), fused_b.to(out_dtype)


def dilate_kernel(weight: torch.Tensor, dilation: int | Sequence[int]) -> torch.Tensor:
    """Turn a dilated kernel into the equivalent dense kernel by inserting zeros between taps.

    A kernel with ``k`` taps and dilation ``r`` becomes ``r * (k - 1) + 1`` taps along each
    spatial dimension. Works for any number of spatial dimensions and any dtype (the original
    reference code built its zero-insertion helper in float32 only).

    Args:
        weight: ``(C_out, C_in/groups, *kernel)``.
        dilation: One int for all spatial dims or one per dim.

    Returns:
        The dense kernel, same dtype and device.

    Example:
        >>> dilate_kernel(torch.ones(1, 1, 2), 3).flatten().tolist()
        [1.0, 0.0, 0.0, 1.0]
    """
    spatial = weight.shape[2:]
    dil = _per_dim(dilation, len(spatial), "dilation")
    if all(r == 1 for r in dil):
        return weight
    out_shape = weight.shape[:2] + tuple(r * (k - 1) + 1 for k, r in zip(spatial, dil))
    dense = weight.new_zeros(out_shape)
    index = (slice(None), slice(None)) + tuple(slice(None, None, r) for r in dil)
    dense[index] = weight
    return dense


def pad_kernel_to(weight: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Zero-pad an odd kernel centrally to a larger odd size.

    Raises:
        ValueError: If the target is smaller than the kernel or the size difference is odd
            (the kernels would not share a centre).
    """
    spatial = weight.shape[2:]
    target = _per_dim(size, len(spatial), "size")
    pads: list[int] = []
    for k, t in zip(reversed(spatial), reversed(target)):
        if t < k or (t - k) % 2:
            raise ValueError(f"cannot centre a kernel of size {tuple(spatial)} in size {tuple(target)}")
        pads += [(t - k) // 2, (t - k) // 2]
    return F.pad(weight, pads) if any(pads) else weight


def identity_kernel(
    channels: int,
    kernel_size: int | Sequence[int],
    ndim: int = 2,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Depthwise kernel ``(channels, 1, *kernel)`` that maps every channel to itself."""
    ks = _per_dim(kernel_size, ndim, "kernel_size")
    if any(k % 2 == 0 for k in ks):
        raise ValueError(f"kernel_size must be odd for an identity kernel, got {ks}")
    kernel = torch.zeros((channels, 1) + tuple(ks), dtype=dtype, device=device)
    kernel[(slice(None), 0) + tuple(k // 2 for k in ks)] = 1
    return kernel


def _per_dim(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"{name} must be an int or a sequence of {ndim} ints, got {value}")
    return value
