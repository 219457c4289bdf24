"""RepLKNet's reparameterisable large-kernel conv: large conv+BN plus a parallel small conv+BN.

Both branches use "same" padding (``K//2`` and ``k//2``) and the same stride, so with odd
kernels the small kernel, zero-padded centrally to ``K``, produces the same outputs positions;
folding both BNs gives one ``K``-tap conv with bias (``lkb_reparam``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from largekernel.nn.conv import Conv2d
from largekernel.ops.fusion import compute_dtype, fuse_conv_bn, pad_kernel_to

__all__ = ["ConvBN", "ReparamLargeKernelConv"]

logger = logging.getLogger(__name__)


class ConvBN(nn.Sequential):
    """Conv2d (no bias) followed by BatchNorm2d, with the official submodule names ``conv``/``bn``.

    Example:
        >>> ConvBN(8, 16, 3, padding=1)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 16, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        padding = kernel_size // 2 if padding is None else padding
        self.add_module(
            "conv",
            Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False, **factory),
        )
        self.add_module("bn", nn.BatchNorm2d(out_channels, **factory))


class ReparamLargeKernelConv(nn.Module):
    """Large-kernel conv + BN with an optional parallel small-kernel conv + BN (RepLKNet).

    ``reparameterize()`` merges both into a single conv with bias named ``lkb_reparam`` (the
    official deploy layout). Training-form keys: ``lkb_origin.conv/.bn``, ``small_conv.conv/.bn``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: The large (odd) kernel size.
        stride: Stride of both branches.
        groups: Conv groups; ``None`` means depthwise (``in_channels``).
        small_kernel: Odd kernel of the parallel branch (``<= kernel_size``), or ``None`` for none.
        deploy: Build the fused form directly.
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> m = ReparamLargeKernelConv(8, 8, 31, small_kernel=5).eval()
        >>> x = torch.randn(1, 8, 16, 16)
        >>> y = m(x)
        >>> m.reparameterize()
        >>> torch.allclose(m(x), y, atol=1e-5)
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int | None = None,
        small_kernel: int | None = None,
        deploy: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        groups = in_channels if groups is None else groups
        if not isinstance(groups, int) or groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups must be a positive int dividing in_channels={in_channels} and "
                f"out_channels={out_channels}, got {groups!r}"
            )
        if small_kernel is not None and (
            not isinstance(small_kernel, int)
            or small_kernel <= 0
            or small_kernel % 2 == 0
            or small_kernel > kernel_size
        ):
            raise ValueError(
                f"small_kernel must be None or a positive odd int <= kernel_size={kernel_size}, got {small_kernel!r}"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.small_kernel = small_kernel
        if deploy:
            self.lkb_reparam = Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=True, **factory
            )
        else:
            self.lkb_origin = ConvBN(in_channels, out_channels, kernel_size, stride, groups=groups, **factory)
            if small_kernel is not None:
                self.small_conv = ConvBN(in_channels, out_channels, small_kernel, stride, groups=groups, **factory)

    @property
    def deploy(self) -> bool:
        """Whether the layer is in its fused single-conv form."""
        return hasattr(self, "lkb_reparam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if hasattr(self, "small_conv"):
            out = out + self.small_conv(x)
        return out

    def get_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(kernel, bias)`` of the single conv equal to this layer in eval mode (differentiable)."""
        if self.deploy:
            return self.lkb_reparam.weight, self.lkb_reparam.bias
        w = self.lkb_origin.conv.weight
        kdtype = compute_dtype(w.dtype)
        kernel, bias = fuse_conv_bn(w.to(kdtype), None, self.lkb_origin.bn)
        if hasattr(self, "small_conv"):
            sk, sb = fuse_conv_bn(self.small_conv.conv.weight.to(kdtype), None, self.small_conv.bn)
            kernel = kernel + pad_kernel_to(sk, self.kernel_size)
            bias = bias + sb
        return kernel.to(w.dtype), bias.to(w.dtype)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the branches into ``lkb_reparam`` in place. Idempotent."""
        if self.deploy:
            return
        kernel, bias = self.get_kernel_bias()
        w = self.lkb_origin.conv.weight
        fused = Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.kernel_size // 2,
            groups=self.groups,
            bias=True,
            device=w.device,
            dtype=w.dtype,
        )
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        del self.lkb_origin
        if hasattr(self, "small_conv"):
            del self.small_conv
        self.lkb_reparam = fused
        logger.debug("ReparamLargeKernelConv(K=%d) reparameterised", self.kernel_size)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, small_kernel={self.small_kernel}, deploy={self.deploy}"
        )
