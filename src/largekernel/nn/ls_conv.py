"""LS convolution (LSNet, "See Large, Focus Small"): large-kernel perception + small-kernel aggregation.

``LSConv(x) = BN(SKA(x, LKP(x))) + x``

* **LKP** (large-kernel perception) looks at a large neighbourhood with a cheap depthwise
  ``k_L x k_L`` conv and predicts, for every pixel, a small ``k_S x k_S`` kernel per weight group.
* **SKA** (small-kernel aggregation) applies those per-pixel kernels to the input. Channel ``c``
  uses weight group ``c mod (C/G)`` (interleaved sharing, as in the published model).

Two SKA implementations are provided and give the same result up to floating-point summation
order:

* ``"unfold"``: the reference; unfolds ``x`` to ``(N, C, k^2, H, W)`` and reduces over taps.
* ``"taps"``: loops over the ``k^2`` taps with shifted views of the padded input and accumulates,
  so peak extra memory is one ``(N, C, H, W)`` tensor instead of ``k^2`` of them. It exports to
  ONNX with plain Slice/Mul/Add ops.

``"auto"`` (default) uses ``"taps"`` when the unfolded tensor would be large or while
tracing/exporting, ``"unfold"`` otherwise. The published model's kernel is Triton-only; this
module needs only PyTorch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.nn.conv import Conv2d
from largekernel.nn.replk_conv import ConvBN as _ConvBNBase
from largekernel.ops.fusion import fuse_conv_bn

__all__ = ["ConvBN", "LSConv", "LKP", "ska", "ska_unfold", "ska_taps", "SKA_IMPLS"]

SKA_IMPLS = ("auto", "unfold", "taps")

# Above this many bytes for the unfolded (N, C, k^2, H, W) tensor, "auto" switches to the tap loop.
_UNFOLD_BYTES_LIMIT = 32 * 1024 * 1024


class ConvBN(_ConvBNBase):
    """``Conv2d`` (no bias) followed by ``BatchNorm2d``; :meth:`reparameterize` folds the BN in place.

    After reparameterisation ``conv`` carries the fused weight and bias and ``bn`` is an
    ``nn.Identity``, so the module keeps its attribute names and call signature.

    It is RepLKNet's :class:`largekernel.nn.replk_conv.ConvBN` (same ``conv``/``bn`` keys and
    forward) plus ``bn_weight_init`` and the in-place fold. The fold lives only here on purpose:
    :func:`largekernel.reparameterize` calls every submodule's ``reparameterize()``, and RepLKNet's
    deploy checkpoints keep their ConvBN pairs unfused.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Stride.
        padding: Zero padding (default ``kernel_size // 2``, i.e. "same" for odd kernels at stride 1).
        groups: Conv groups.
        bn_weight_init: Initial BN ``gamma`` (0 makes a residual branch start as the identity).
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> m = ConvBN(8, 16, 3).eval()
        >>> x = torch.randn(1, 8, 5, 5)
        >>> y = m(x); m.reparameterize()
        >>> torch.allclose(m(x), y, atol=1e-5)
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bn_weight_init: float = 1.0,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups, device=device, dtype=dtype)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BatchNorm into the conv, in place (idempotent; uses the BN running statistics)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        c = self.conv
        weight, bias = fuse_conv_bn(c.weight, c.bias, self.bn)
        fused = Conv2d(
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
            bias=True, device=weight.device, dtype=weight.dtype,
        )
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.conv = fused
        self.bn = nn.Identity()


def _check_ska_inputs(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int]:
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 5:
        raise ValueError(f"weight must be (N, C/G, k*k, H, W), got shape {tuple(weight.shape)}")
    # int(): under tracing the sizes may be 0-d tensors
    n, c, h, w = (int(s) for s in x.shape)
    wn, m, kk, wh, ww = (int(s) for s in weight.shape)
    if (wn, wh, ww) != (n, h, w):
        raise ValueError(
            f"weight must match x in batch and spatial size: x {tuple(x.shape)}, weight {tuple(weight.shape)}"
        )
    k = math.isqrt(kk)
    if k * k != kk or k % 2 == 0:
        raise ValueError(f"weight.shape[2] must be k*k for an odd k, got {kk}")
    if m == 0 or c % m:
        raise ValueError(f"x channels ({c}) must be a multiple of the weight groups weight.shape[1] ({m})")
    return k, m


def ska_unfold(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Small-kernel aggregation, reference form (materialises the unfolded input).

    ``y[n, c, i, j] = sum_{a,b} x[n, c, i-p+a, j-p+b] * weight[n, c mod M, a*k+b, i, j]``
    with ``M = weight.shape[1]``, ``p = (k-1)/2`` and zero padding.

    Args:
        x: ``(N, C, H, W)``.
        weight: Per-pixel kernels ``(N, M, k*k, H, W)``, ``C`` a multiple of ``M``.

    Returns:
        ``(N, C, H, W)``.
    """
    k, m = _check_ska_inputs(x, weight)
    n, c, h, w = x.shape
    cols = F.unfold(x, k, padding=(k - 1) // 2).view(n, c, k * k, h, w)
    # channel c <- group c mod M is exactly what tiling along dim 1 gives
    tiled = weight.repeat(1, c // m, 1, 1, 1)
    return (cols * tiled).sum(dim=2)


def ska_taps(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Small-kernel aggregation without the ``(N, C, k^2, H, W)`` intermediate.

    Same maths as :func:`ska_unfold`; accumulates one shifted view of the padded input per tap.
    Viewing the channels as ``(C/M, M)`` makes channel ``c = g*M + j`` meet weight group ``j``,
    which is the interleaved sharing, by broadcasting instead of tiling.
    """
    k, m = _check_ska_inputs(x, weight)
    n, c, h, w = x.shape
    p = (k - 1) // 2
    xp = F.pad(x, (p, p, p, p)).view(n, c // m, m, h + 2 * p, w + 2 * p)
    wv = weight.unsqueeze(1)  # (N, 1, M, k*k, H, W)
    out = None
    for a in range(k):
        for b in range(k):
            term = xp[..., a : a + h, b : b + w] * wv[:, :, :, a * k + b]
            out = term if out is None else out + term
    assert out is not None
    return out.reshape(n, c, h, w)


def ska(x: torch.Tensor, weight: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Small-kernel aggregation dispatcher (see :func:`ska_unfold` for the maths).

    Args:
        x: ``(N, C, H, W)``.
        weight: ``(N, M, k*k, H, W)``.
        impl: ``"unfold"``, ``"taps"`` or ``"auto"``.
    """
    if impl not in SKA_IMPLS:
        raise ValueError(f"impl must be one of {SKA_IMPLS}, got {impl!r}")
    if impl == "auto":
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or isinstance(x, torch.fx.Proxy)
        unfolded_bytes = x.numel() * weight.shape[2] * x.element_size()
        impl = "taps" if exporting or unfolded_bytes > _UNFOLD_BYTES_LIMIT else "unfold"
    return ska_unfold(x, weight) if impl == "unfold" else ska_taps(x, weight)


class LKP(nn.Module):
    """Large-kernel perception: predicts per-pixel small kernels from a large neighbourhood.

    1x1 ConvBN (C -> C/2) -> ReLU -> DW ``k_L x k_L`` ConvBN -> 1x1 ConvBN (C/2 -> C/2) -> ReLU
    -> 1x1 conv with bias (C/2 -> ``k_S^2 * C/G``) -> GroupNorm(C/G groups) -> ``(N, C/G, k_S^2, H, W)``.

    Args:
        dim: Channels ``C`` (even, divisible by ``groups``).
        large_kernel: ``k_L`` (odd).
        small_kernel: ``k_S`` (odd).
        groups: ``G``, the number of channels sharing one predicted kernel.
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> LKP(16)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 2, 9, 8, 8])
    """

    def __init__(
        self, dim: int, large_kernel: int = 7, small_kernel: int = 3, groups: int = 8, *, device=None, dtype=None
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        hidden = dim // 2
        self.small_kernel = small_kernel
        self.weight_groups = dim // groups
        self.cv1 = ConvBN(dim, hidden, 1, **factory)
        self.act = nn.ReLU()
        self.cv2 = ConvBN(hidden, hidden, large_kernel, groups=hidden, **factory)
        self.cv3 = ConvBN(hidden, hidden, 1, **factory)
        self.cv4 = Conv2d(hidden, small_kernel**2 * self.weight_groups, 1, bias=True, **factory)
        self.norm = nn.GroupNorm(self.weight_groups, small_kernel**2 * self.weight_groups, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.cv1(x))
        y = self.act(self.cv3(self.cv2(y)))
        y = self.norm(self.cv4(y))
        n, _, h, w = y.shape
        return y.view(n, self.weight_groups, self.small_kernel**2, h, w)

    def reparameterize(self) -> None:
        """Fold the three conv+BN pairs, in place."""
        for m in (self.cv1, self.cv2, self.cv3):
            m.reparameterize()


class LSConv(nn.Module):
    """LS convolution: ``BN(SKA(x, LKP(x))) + x``.

    Args:
        dim: Channels ``C``; must be even and divisible by ``groups``.
        large_kernel: Kernel size ``k_L`` of the depthwise perception conv (odd, default 7).
        small_kernel: Size ``k_S`` of the per-pixel aggregation kernels (odd, default 3).
        groups: ``G``: the predicted kernels come in ``C/G`` weight groups; channel ``c`` uses
            group ``c mod (C/G)``.
        ska_impl: ``"auto"``, ``"unfold"`` (reference) or ``"taps"`` (no unfolded intermediate).
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> m = LSConv(32)
        >>> m(torch.randn(2, 32, 14, 14)).shape
        torch.Size([2, 32, 14, 14])
        >>> m.eval().reparameterize()  # folds LKP's conv+BN pairs in place
    """

    def __init__(
        self,
        dim: int,
        large_kernel: int = 7,
        small_kernel: int = 3,
        groups: int = 8,
        ska_impl: str = "auto",
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        checks = (("dim", dim), ("large_kernel", large_kernel), ("small_kernel", small_kernel), ("groups", groups))
        for name, value in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if large_kernel % 2 == 0:
            raise ValueError(f"large_kernel must be odd, got {large_kernel}")
        if small_kernel % 2 == 0:
            raise ValueError(f"small_kernel must be odd, got {small_kernel}")
        if dim % 2:
            raise ValueError(f"dim must be even (LKP works on dim/2 channels), got {dim}")
        if dim % groups:
            raise ValueError(f"dim ({dim}) must be divisible by groups ({groups})")
        if ska_impl not in SKA_IMPLS:
            raise ValueError(f"ska_impl must be one of {SKA_IMPLS}, got {ska_impl!r}")
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.ska_impl = ska_impl
        self.lkp = LKP(dim, large_kernel, small_kernel, groups, **factory)
        self.bn = nn.BatchNorm2d(dim, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"LSConv expects input (N, {self.dim}, H, W), got {tuple(x.shape)}")
        return self.bn(ska(x, self.lkp(x), self.ska_impl)) + x

    def reparameterize(self) -> None:
        """Fold LKP's conv+BN pairs in place. The output BN cannot be folded: the per-pixel kernels
        are shared across channels with different BN scales."""
        self.lkp.reparameterize()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, ska_impl={self.ska_impl!r}"
