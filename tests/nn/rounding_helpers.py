"""Rounding checks for half-precision fusion tests (imported as ``from rounding_helpers import ...``).

A fused half-precision kernel must be the exact (float64) fusion of the half-precision parameters
rounded *once* to the half dtype, up to float32's own rounding of the terms (fusion arithmetic
runs in float32). Rounding each branch to half before summing them is a second rounding, visible
as errors above half an ulp.
"""

from __future__ import annotations

import torch

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
