"""Argument validation and normalisation for the convolution engine.

Every implementation behind the dispatcher works on the same normalised description of a
convolution (:class:`ConvArgs`): per-dimension tuples for stride/dilation/kernel size and an
explicit ``(left, right)`` padding pair per spatial dimension, so that ``padding="same"`` with even
kernels (which PyTorch pads asymmetrically, extra element on the right) is exact everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["ConvArgs", "normalize_conv_args", "expand_tuple"]


@dataclass(frozen=True)
class ConvArgs:
    """Normalised convolution hyper-parameters.

    Attributes:
        nd: number of spatial dimensions (1, 2 or 3).
        kernel_size: spatial kernel size per dimension.
        stride: stride per dimension (>= 1).
        padding: ``(left, right)`` zero padding per dimension (>= 0).
        dilation: dilation per dimension (>= 1).
        groups: number of groups.
        in_channels: input channels ``C``.
        out_channels: output channels.
        unbatched: True when the caller passed an input without batch dimension.
    """

    nd: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    in_channels: int
    out_channels: int
    unbatched: bool = False

    @property
    def symmetric(self) -> bool:
        """Whether every dimension is padded equally on both sides."""
        return all(lo == hi for lo, hi in self.padding)

    @property
    def sym_padding(self) -> tuple[int, ...]:
        """Per-dimension symmetric padding (only meaningful when :attr:`symmetric`)."""
        return tuple(lo for lo, _ in self.padding)

    @property
    def is_depthwise(self) -> bool:
        """One input channel per group (channel multiplier may be > 1)."""
        return self.groups == self.in_channels and self.groups > 1

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def max_kernel(self) -> int:
        """Largest *effective* (dilated) kernel extent."""
        return max(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    def output_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for an input of spatial size ``spatial``."""
        out = []
        for n, k, s, (lo, hi), d in zip(spatial, self.kernel_size, self.stride, self.padding, self.dilation):
            out.append((n + lo + hi - d * (k - 1) - 1) // s + 1)
        return tuple(out)


def expand_tuple(value: int | Sequence[int], nd: int, name: str) -> tuple[int, ...]:
    """Expand an int or a sequence into an ``nd``-tuple of ints, with a clear error."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of {nd} ints, got bool")
    if isinstance(value, int):
        return (int(value),) * nd
    if isinstance(value, torch.Size | tuple | list):
        vals = tuple(value)
        if len(vals) == 1 and nd > 1:
            vals = vals * nd
        if len(vals) != nd or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            raise ValueError(f"{name} must be an int or a sequence of {nd} ints, got {value!r}")
        return tuple(int(v) for v in vals)
    raise TypeError(f"{name} must be an int or a sequence of {nd} ints, got {type(value).__name__}")


def _same_padding(kernel_size, dilation) -> tuple[tuple[int, int], ...]:
    # PyTorch's rule: total = d*(k-1); left = total // 2, the odd element goes to the right.
    pads = []
    for k, d in zip(kernel_size, dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def normalize_conv_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> ConvArgs:
    """Validate the arguments of a convolution and return their normalised form.

    Args:
        x: input ``(B, C, *spatial)`` or unbatched ``(C, *spatial)``.
        weight: ``(C_out, C_in / groups, *kernel)``; its rank selects 1-D/2-D/3-D.
        bias: optional ``(C_out,)``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d``.

    Returns:
        The :class:`ConvArgs` describing the convolution.

    Raises:
        TypeError: non-tensor arguments or wrong argument types.
        ValueError: shapes, dtypes, devices or hyper-parameters that PyTorch would reject.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if weight.dim() not in (3, 4, 5):
        raise ValueError(
            f"weight must have 3, 4 or 5 dimensions (C_out, C_in/groups, *kernel) for 1-D/2-D/3-D "
            f"convolution, got shape {tuple(weight.shape)}"
        )
    nd = weight.dim() - 2
    if x.dim() == nd + 2:
        unbatched = False
    elif x.dim() == nd + 1:
        unbatched = True
    else:
        raise ValueError(
            f"input must have {nd + 2} dimensions (batched) or {nd + 1} (unbatched) for a {nd}-D "
            f"convolution with weight of shape {tuple(weight.shape)}, got input of shape {tuple(x.shape)}"
        )
    if not (x.is_floating_point() and weight.is_floating_point()):
        raise TypeError(f"input and weight must be floating point, got {x.dtype} and {weight.dtype}")
    if x.dtype != weight.dtype:
        raise TypeError(
            f"Input type ({x.dtype}) and weight type ({weight.dtype}) should be the same"
        )
    if x.device != weight.device:
        raise ValueError(f"input is on {x.device} but weight is on {weight.device}; they must match")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")

    c_in = x.shape[0] if unbatched else x.shape[1]
    c_out = weight.shape[0]
    if c_out % groups != 0:
        raise ValueError(f"out_channels (weight.shape[0] = {c_out}) must be divisible by groups ({groups})")
    if c_in % groups != 0:
        raise ValueError(f"in_channels ({c_in}) must be divisible by groups ({groups})")
    if weight.shape[1] * groups != c_in:
        raise ValueError(
            f"expected input with {weight.shape[1] * groups} channels (weight.shape[1]={weight.shape[1]} "
            f"x groups={groups}), got input of shape {tuple(x.shape)} with {c_in} channels"
        )
    if bias is not None:
        if bias.shape != (c_out,):
            raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias dtype ({bias.dtype}) must match input dtype ({x.dtype})")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but input is on {x.device}; they must match")

    kernel_size = tuple(int(k) for k in weight.shape[2:])
    if any(k < 1 for k in kernel_size):
        raise ValueError(f"weight has an empty kernel: shape {tuple(weight.shape)}")
    stride_t = expand_tuple(stride, nd, "stride")
    if any(s < 1 for s in stride_t):
        raise ValueError(f"stride must be positive, got {stride!r}")
    dilation_t = expand_tuple(dilation, nd, "dilation")
    if any(d < 1 for d in dilation_t):
        raise ValueError(f"dilation must be positive, got {dilation!r}")

    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in stride_t):
                raise ValueError("padding='same' is not supported for strided convolutions (stride must be 1)")
            pads = _same_padding(kernel_size, dilation_t)
        else:
            raise ValueError(f"padding must be 'same', 'valid', an int or a sequence of ints, got {padding!r}")
    else:
        pad_t = expand_tuple(padding, nd, "padding")
        if any(p < 0 for p in pad_t):
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        pads = tuple((p, p) for p in pad_t)

    spatial = x.shape[1:] if unbatched else x.shape[2:]
    for i, (n, k, d, (lo, hi)) in enumerate(zip(spatial, kernel_size, dilation_t, pads)):
        if n + lo + hi < d * (k - 1) + 1:
            raise ValueError(
                f"kernel size can't be greater than the padded input: spatial dim {i} has padded size "
                f"{n + lo + hi} (input {n} + padding {lo}+{hi}) but the dilated kernel spans {d * (k - 1) + 1}"
            )
    return ConvArgs(
        nd=nd,
        kernel_size=kernel_size,
        stride=stride_t,
        padding=pads,
        dilation=dilation_t,
        groups=groups,
        in_channels=int(c_in),
        out_channels=int(c_out),
        unbatched=unbatched,
    )
