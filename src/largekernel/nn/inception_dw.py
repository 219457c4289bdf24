"""Inception depthwise convolution (the token mixer of InceptionNeXt).

The channels are split into four groups, in this order: identity (``C - 3g``), a square
``k_s x k_s`` depthwise conv (``g``), a ``1 x k_b`` width band (``g``) and a ``k_b x 1`` height
band (``g``), with ``g = floor(C * branch_ratio)``. Every conv keeps the spatial size and has a
bias. Submodule names (``dwconv_hw``, ``dwconv_w``, ``dwconv_h``) follow timm's layout so its
checkpoints load unchanged.

The whole mixer is linear and per-channel, so it equals ONE depthwise conv whose kernel is
the identity one-hot (identity channels), or the branch kernel zero-padded to the common size
(:meth:`InceptionDWConv2d.to_dense`, or in place :meth:`InceptionDWConv2d.densify`). The split
form stays the default forward, and is what whole-model reparameterisation keeps, because it is
cheaper: most channels are copied and the bands touch ``k_b`` taps instead of ``k_b**2``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from largekernel.nn.conv import Conv2d
from largekernel.ops.fusion import dilate_kernel, identity_kernel, pad_kernel_to

__all__ = ["InceptionDWConv2d"]

logger = logging.getLogger(__name__)


def _check_odd_kernel(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1 or value % 2 == 0:
        # an even kernel cannot be centred with symmetric "same" padding
        raise ValueError(f"{name} must be a positive odd int, got {value}")
    return value


class InceptionDWConv2d(nn.Module):
    """Inception depthwise conv: identity / square / width-band / height-band channel groups.

    Args:
        in_channels: Channels ``C`` of the input and output.
        square_kernel_size: Odd size ``k_s`` of the square depthwise kernel.
        band_kernel_size: Odd length ``k_b`` of the two band kernels (``1 x k_b`` and ``k_b x 1``).
        branch_ratio: Fraction of channels per conv branch; ``g = floor(C * branch_ratio)`` must be
            at least 1 and ``3g <= C``.
        dilation: Dilation of the square conv and along the long axis of the bands (timm's option).
        device: Factory kwarg for the parameters.
        dtype: Factory kwarg for the parameters.

    Shape:
        ``(N, C, H, W) -> (N, C, H, W)``.

    Example:
        >>> mixer = InceptionDWConv2d(40, band_kernel_size=9, branch_ratio=0.25)
        >>> mixer(torch.randn(2, 40, 14, 14)).shape
        torch.Size([2, 40, 14, 14])
        >>> dense = mixer.to_dense()  # one equivalent 9x9 depthwise conv
    """

    def __init__(
        self,
        in_channels: int,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        *,
        dilation: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        ks = _check_odd_kernel(square_kernel_size, "square_kernel_size")
        kb = _check_odd_kernel(band_kernel_size, "band_kernel_size")
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"dilation must be a positive int, got {dilation!r}")
        if not isinstance(branch_ratio, (int, float)) or not 0.0 < float(branch_ratio) <= 1.0 / 3.0:
            raise ValueError(f"branch_ratio must be a number in (0, 1/3], got {branch_ratio!r}")
        gc = int(in_channels * branch_ratio)
        if gc < 1:
            raise ValueError(
                f"in_channels * branch_ratio must be >= 1 so every branch has a channel, got "
                f"in_channels={in_channels}, branch_ratio={branch_ratio}"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.square_kernel_size = ks
        self.band_kernel_size = kb
        self.branch_ratio = float(branch_ratio)
        self.dilation = dilation
        self.branch_channels = gc
        self.split_sizes = (in_channels - 3 * gc, gc, gc, gc)
        sq_pad = dilation * (ks - 1) // 2
        band_pad = dilation * (kb - 1) // 2
        self.dwconv_hw = Conv2d(gc, gc, ks, padding=sq_pad, dilation=dilation, groups=gc, **factory)
        self.dwconv_w = Conv2d(
            gc, gc, (1, kb), padding=(0, band_pad), dilation=(1, dilation), groups=gc, **factory
        )
        self.dwconv_h = Conv2d(
            gc, gc, (kb, 1), padding=(band_pad, 0), dilation=(dilation, 1), groups=gc, **factory
        )
        # set by densify(): the single equivalent depthwise conv
        self.dense: Conv2d | None = None

    @property
    def dense_kernel_size(self) -> int:
        """Side of the single equivalent kernel: the larger dilated extent of the branches."""
        d = self.dilation
        return max(d * (self.square_kernel_size - 1) + 1, d * (self.band_kernel_size - 1) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy) and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if self.dense is not None:
            return self.dense(x)
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_sizes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)

    @torch.no_grad()
    def dense_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(C, 1, K, K)`` kernel and ``(C,)`` bias of the equivalent depthwise conv."""
        if self.dense is not None:
            return self.dense.weight.detach().clone(), self.dense.bias.detach().clone()
        k = self.dense_kernel_size
        ref = self.dwconv_hw.weight
        n_id, gc = self.split_sizes[0], self.branch_channels
        d = self.dilation
        parts = [identity_kernel(n_id, k, dtype=ref.dtype, device=ref.device)]
        biases = [torch.zeros(n_id, dtype=ref.dtype, device=ref.device)]
        for conv in (self.dwconv_hw, self.dwconv_w, self.dwconv_h):
            # dilated taps -> dense taps with zeros between (only along axes longer than 1),
            # then centre the kernel in the common K x K grid
            dil = tuple(d if size > 1 else 1 for size in conv.kernel_size)
            parts.append(pad_kernel_to(dilate_kernel(conv.weight.detach(), dil), k))
            bias = conv.bias.detach() if conv.bias is not None else ref.new_zeros(gc)
            biases.append(bias)
        return torch.cat(parts, dim=0), torch.cat(biases)

    def to_dense(self) -> Conv2d:
        """Build one depthwise ``K x K`` conv (``K = dense_kernel_size``) equal to this mixer.

        Exact up to floating-point rounding: identity channels get a centred one-hot kernel and the
        branch kernels are zero-padded around their centre.

        Returns:
            A new :class:`largekernel.nn.conv.Conv2d` on the same device/dtype.
        """
        weight, bias = self.dense_weight_and_bias()
        k = self.dense_kernel_size
        c = self.in_channels
        conv = Conv2d(c, c, k, padding=k // 2, groups=c, bias=True, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        return conv

    def densify(self) -> None:
        """Switch this module in place to the single dense conv and drop the branch convs.

        The state dict then holds ``dense.weight`` / ``dense.bias`` instead of the branch keys.

        Deliberately NOT named ``reparameterize`` / ``fuse``: whole-model reparameterisation
        (``largekernel.reparameterize``, timm's protocol) calls those to get a faster inference form,
        but the dense ``K x K`` kernel is usually slower than the split form (``K^2`` taps on every
        channel instead of ``k_s^2`` or ``k_b`` taps on a quarter of them). Use this for export or when
        the kernel is fused further.
        """
        if self.dense is not None:
            return
        dense = self.to_dense()
        del self.dwconv_hw, self.dwconv_w, self.dwconv_h
        self.dense = dense
        logger.debug(
            "InceptionDWConv2d(%d) densified to a %dx%d depthwise conv",
            self.in_channels, dense.kernel_size[0], dense.kernel_size[1],
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, square_kernel_size={self.square_kernel_size}, "
            f"band_kernel_size={self.band_kernel_size}, branch_ratio={self.branch_ratio:g}, "
            f"split={self.split_sizes}" + (f", dilation={self.dilation}" if self.dilation != 1 else "")
            + (", dense" if self.dense is not None else "")
        )
