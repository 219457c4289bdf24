"""Drop kernel taps that can only ever read zero padding.

A large kernel on a small feature map wastes most of its work: a 13x13 "same" convolution on a
2x2 map (stage 3 of a UniRepLKNet at 32 px) has only its central 3x3 taps ever touching the
input, and on a 1x1 map only the centre tap. Every other tap multiplies padding. Removing those
taps (and the padding they would have read) gives *exactly* the same output, and slicing the
weight is differentiable, so the dropped taps receive the zero gradient they would have received
anyway. Only taps at the ends of each kernel axis are dropped, and never more than the padding on
that side, so the cropped convolution keeps non-negative padding and the same output size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from largekernel.ops.validation import ConvArgs

__all__ = ["unreachable_taps", "crop_unreachable_taps"]


def unreachable_taps(
    length: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int
) -> tuple[int, int]:
    """How many taps at the start and at the end of one kernel axis never read the input.

    Tap ``t`` of output ``o`` reads input position ``o * stride + t * dilation - pad_lo``. A leading
    tap is unreachable when even the last output reads it left of the input; a trailing tap when
    even the first output reads it right of the input.

    Args:
        length: input size along the axis.
        kernel: kernel size along the axis.
        stride, pad_lo, pad_hi, dilation: the convolution's values along the axis.

    Returns:
        ``(lead, trail)``: taps that can be dropped from each end; ``lead * dilation <= pad_lo``,
        ``trail * dilation <= pad_hi`` and at least one tap is kept.
    """
    out = (length + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1
    last_start = (out - 1) * stride - pad_lo  # input position read by tap 0 of the last output
    lead = 0
    while lead < kernel - 1 and last_start + lead * dilation < 0 and (lead + 1) * dilation <= pad_lo:
        lead += 1
    trail = 0
    while (
        trail < kernel - 1 - lead
        and (kernel - 1 - trail) * dilation - pad_lo >= length
        and (trail + 1) * dilation <= pad_hi
    ):
        trail += 1
    return lead, trail


def crop_unreachable_taps(
    spatial: Sequence[int], weight: torch.Tensor, args: ConvArgs
) -> tuple[torch.Tensor, ConvArgs]:
    """Remove the taps of ``weight`` that only read padding, and the padding they read.

    Args:
        spatial: the input's spatial size.
        weight: ``(C_out, C_in / groups, *kernel)``.
        args: the convolution's normalised arguments.

    Returns:
        ``(weight, args)`` unchanged when nothing can be dropped; otherwise a sliced view of the
        weight and arguments with the smaller kernel and padding (same output, same gradients).
    """
    cuts = [
        unreachable_taps(n, k, s, lo, hi, d)
        for n, k, s, (lo, hi), d in zip(spatial, args.kernel_size, args.stride, args.padding, args.dilation)
    ]
    if not any(lead or trail for lead, trail in cuts):
        return weight, args
    index = [slice(None), slice(None)]
    kernel, padding = [], []
    for (lead, trail), k, (lo, hi), d in zip(cuts, args.kernel_size, args.padding, args.dilation):
        index.append(slice(lead, k - trail))
        kernel.append(k - lead - trail)
        padding.append((lo - lead * d, hi - trail * d))
    return weight[tuple(index)], replace(args, kernel_size=tuple(kernel), padding=tuple(padding))
