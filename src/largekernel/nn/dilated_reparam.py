"""Dilated Reparam Block (UniRepLKNet): a large depthwise conv plus parallel dilated small convs.

At training time the block is a sum of depthwise branches, each followed by its own BatchNorm:
one dense ``K``-tap conv (``lk_origin``) and several small ``k``-tap convs with dilation ``r``.
Every branch is "same"-padded and its dense equivalent size ``r(k-1)+1`` is odd and ``<= K``, so
after folding each BN into its conv and inserting zeros between the dilated taps, all branches
are one ``K``-tap depthwise conv with bias. ``reparameterize()`` does that in place.
"""

from __future__ import annotations

import logging
import torch
from torch import nn

from largekernel.nn.conv import Conv1d, Conv2d, Conv3d
from largekernel.ops.fusion import compute_dtype, dilate_kernel, fuse_conv_bn, pad_kernel_to

__all__ = ["DilatedReparamConv", "DILATED_BRANCHES"]

logger = logging.getLogger(__name__)

#: Published branch table: large kernel K -> (small kernels, dilations).
DILATED_BRANCHES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}

_CONV = {1: Conv1d, 2: Conv2d, 3: Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class DilatedReparamConv(nn.Module):
    """Depthwise large-kernel conv with parallel dilated branches that fold into one conv.

    Output = ``BN(lk_origin(x)) + sum_{k,r} BN_{k,r}(dil_conv_{k,r}(x))`` in training form, or
    ``lk_origin(x)`` (with bias) in deploy form. Submodule names follow the official
    UniRepLKNet layout so official checkpoints load unchanged.

    Args:
        channels: Number of input and output channels (the convs are depthwise).
        kernel_size: The large kernel ``K``; one of ``5, 7, 9, 11, 13, 15, 17``.
        ndim: Spatial dimensions: 1, 2 or 3.
        deploy: Build the fused single-conv form directly.
        device: Factory kwarg for the parameters.
        dtype: Factory kwarg for the parameters.

    Example:
        >>> m = DilatedReparamConv(8, 13).eval()
        >>> x = torch.randn(2, 8, 20, 20)
        >>> y = m(x)
        >>> m.reparameterize()
        >>> torch.allclose(m(x), y, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        ndim: int = 2,
        deploy: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(kernel_size, int) or kernel_size not in DILATED_BRANCHES:
            raise ValueError(
                f"kernel_size must be one of {sorted(DILATED_BRANCHES)} (the published Dilated Reparam "
                f"Block table), got {kernel_size!r}"
            )
        if ndim not in _CONV:
            raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
        factory = {"device": device, "dtype": dtype}
        self.channels = channels
        self.kernel_size = kernel_size
        self.ndim = ndim
        conv_cls, bn_cls = _CONV[ndim], _BN[ndim]
        self.lk_origin = conv_cls(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=deploy, **factory
        )
        self.branches: tuple[tuple[int, int], ...] = tuple(zip(*DILATED_BRANCHES[kernel_size]))
        if not deploy:
            self.origin_bn = bn_cls(channels, **factory)
            for k, r in self.branches:
                conv = conv_cls(
                    channels,
                    channels,
                    k,
                    padding=(r * (k - 1) + 1) // 2,
                    dilation=r,
                    groups=channels,
                    bias=False,
                    **factory,
                )
                self.add_module(f"dil_conv_k{k}_{r}", conv)
                self.add_module(f"dil_bn_k{k}_{r}", bn_cls(channels, **factory))

    @property
    def deploy(self) -> bool:
        """Whether the block is in its fused single-conv form."""
        return not hasattr(self, "origin_bn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in self.branches:
            conv = getattr(self, f"dil_conv_k{k}_{r}")
            bn = getattr(self, f"dil_bn_k{k}_{r}")
            out = out + bn(conv(x))
        return out

    def get_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(kernel, bias)`` of the single depthwise conv equal to this block in eval mode.

        Differentiable with respect to all parameters (BN running statistics are constants).
        """
        if self.deploy:
            bias = self.lk_origin.bias
            if bias is None:
                w = self.lk_origin.weight
                bias = torch.zeros(self.channels, dtype=w.dtype, device=w.device)
            return self.lk_origin.weight, bias
        w = self.lk_origin.weight
        kdtype = compute_dtype(w.dtype)
        kernel, bias = fuse_conv_bn(w.to(kdtype), None, self.origin_bn)
        for k, r in self.branches:
            conv = getattr(self, f"dil_conv_k{k}_{r}")
            bn = getattr(self, f"dil_bn_k{k}_{r}")
            bw, bb = fuse_conv_bn(conv.weight.to(kdtype), None, bn)
            kernel = kernel + pad_kernel_to(dilate_kernel(bw, r), self.kernel_size)
            bias = bias + bb
        return kernel.to(w.dtype), bias.to(w.dtype)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every branch and BN into ``lk_origin`` (which gains a bias), in place. Idempotent."""
        if self.deploy:
            return
        kernel, bias = self.get_kernel_bias()
        old = self.lk_origin
        fused = _CONV[self.ndim](
            self.channels,
            self.channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            groups=self.channels,
            bias=True,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.lk_origin = fused
        del self.origin_bn
        for k, r in self.branches:
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        logger.debug("DilatedReparamConv(%d, K=%d) reparameterised", self.channels, self.kernel_size)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, ndim={self.ndim}, deploy={self.deploy}"

