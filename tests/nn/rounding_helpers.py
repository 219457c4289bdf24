"""Rounding checks for half-precision fusion tests (imported as ``from rounding_helpers import ...``).

A fused half-precision kernel must be the exact (float64) fusion of the half-precision parameters
rounded *once* to the half dtype, up to float32's own rounding of the terms (fusion arithmetic
runs in float32). Rounding each branch to half before summing them is a second rounding, visible
as errors above half an ulp.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

_SIGNIFICAND_BITS = {torch.float16: 11, torch.bfloat16: 8}
_MIN_EXPONENT = {torch.float16: -14, torch.bfloat16: -126}  # below it: subnormals, fixed spacing


def assert_rounded_once(value: torch.Tensor, ref64: torch.Tensor, magnitude: torch.Tensor) -> None:
    """``value`` is ``ref64`` rounded once to ``value``'s dtype.

    Args:
        value: The half-precision result.
        ref64: The exact result in float64.
        magnitude: Sum of the magnitudes of the terms summed into ``ref64`` (where terms nearly
            cancel, float32's rounding of them exceeds the result's own precision).
    """
    _, exp = torch.frexp(ref64)
    exp = exp.clamp_min(_MIN_EXPONENT[value.dtype] + 1)
    ulp = torch.ldexp(torch.ones_like(ref64), exp - _SIGNIFICAND_BITS[value.dtype])
    err = (value.double() - ref64).abs()
    bound = 0.5 * ulp + 8 * 2.0**-24 * magnitude  # a few float32 operations on terms of this size
    assert bool((err <= bound).all()), f"max error {(err / ulp).max().item():.3f} ulp"


def assert_half_fusion_rounds_once(
    module: nn.Module, fused64: Callable, fused_conv: Callable[[nn.Module], nn.Module]
) -> None:
    """``module.get_kernel_bias()`` is its exact float64 fusion rounded once, and reparameterising
    installs exactly that pair.

    Args:
        module: A reparameterisable block in eval mode, already converted to a half dtype.
        fused64: ``module -> (kernel64, bias64, kernel_magnitude, bias_magnitude)``, the independent
            float64 fold of the test.
        fused_conv: Returns the fused conv of a reparameterised copy of ``module``.
    """
    dtype = next(module.parameters()).dtype
    ref_k, ref_b, mag_k, mag_b = fused64(module)
    with torch.no_grad():
        k, b = module.get_kernel_bias()
    # the same dtype as the block, so the pair can be used with its inputs directly
    assert k.dtype == dtype and b.dtype == dtype
    assert_rounded_once(k, ref_k, mag_k)
    assert_rounded_once(b, ref_b, mag_b)
    fused = copy.deepcopy(module)
    fused.reparameterize()
    conv = fused_conv(fused)
    assert conv.weight.dtype == dtype
    assert torch.equal(conv.weight, k) and torch.equal(conv.bias, b)
