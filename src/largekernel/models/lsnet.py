"""LSNet ("See Large, Focus Small", Wang et al., CVPR 2025) as published: ``lsnet_t``, ``lsnet_s``, ``lsnet_b``.

The architecture, parameter counts and state-dict keys match the official model (training form,
1000 classes: 11,409,832 / 16,146,304 / 23,313,608 parameters), so the published weights load
strictly. Layout (the official key names in brackets):

* Stem [``patch_embed.0/2/4``]: three 3x3 stride-2 Conv-BN units ``in -> C1/4 -> C1/2 -> C1``,
  ReLU after the first two: stride 8.
* Stages [``blocks1..blocks4``]: stage ``i > 0`` starts with a downsampling unit stored as its first
  two entries: a 3x3 stride-2 depthwise Conv-BN at the old width, then a 1x1 Conv-BN to the new
  width (no activation, no residual). Stage reductions are 8, 16, 32, 64.
* Block ``d`` of a stage: ``ffn(se(mixer(x)))``. Even ``d``: :class:`RepVGGDW` (``x + DW3x3-BN(x)
  + DW1x1-BN(x)``) then squeeze-excite (C/4 hidden). Odd ``d``: :class:`LSConv` (``BN(SKA(x, LKP(x)))
  + x``), or in the last stage a residual :class:`LSNetAttention` (4 heads, key dim 16, value dim
  C/4 per head, a depthwise 3x3 Conv-BN on q, relative-position biases). ``ffn`` is a residual
  ``1x1 Conv-BN (C -> 2C) -> ReLU -> 1x1 Conv-BN (2C -> C, BN gamma 0)``.
* Head [``head.bn``, ``head.l``]: global average pool -> BatchNorm1d -> Linear.

SKA (small-kernel aggregation) is :func:`largekernel.nn.ls_conv.ska`: plain PyTorch (CPU, ONNX
exportable) with the official interleaved channel sharing (channel ``c`` uses dynamic kernel
``c mod C/8``); the official kernel is Triton/GPU-only.

Differences from the official code, none of which changes parameters or keys: stochastic depth
(``drop_path_rate``, 0 in the published runs) acts on the FFN and attention residuals; at input
sizes other than the one the attention biases were built for (``img_size``, default 224: a 4x4
last-stage map) the bias table is resized bicubically to the actual map, as the official
detection/segmentation copy does (exact at the native size); no distillation head.

``largekernel.reparameterize(model)`` folds every Conv-BN unit, every RepVGGDW (into one 3x3
depthwise conv with bias) and the head's BatchNorm into its Linear, exactly.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.models.base import (
    StemLevel,
    TimmModelMixin,
    check_model_args,
    global_pool_nd,
    linspace_rates,
    run_blocks,
)
from largekernel.models.builder import build_model, model_cfg, register_cfg
from largekernel.models.convnext import check_depths_dims
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.conv import Conv2d
from largekernel.nn.layers import DropPath
from largekernel.nn.ls_conv import SKA_IMPLS, ska
from largekernel.ops.fusion import compute_dtype, fuse_conv_bn, identity_kernel, pad_kernel_to

__all__ = [
    "LSNet",
    "ConvBN",
    "RepVGGDW",
    "RepDW",
    "LSConv",
    "LKP",
    "LSNetAttention",
    "LSNetFFN",
    "LSNetBlock",
    "lsnet_t",
    "lsnet_s",
    "lsnet_b",
]


class ConvBN(nn.Module):
    """Conv2d without bias + BatchNorm2d, the official ``Conv2d_BN`` unit (keys ``c``, ``bn``).

    :meth:`reparameterize` folds the BN into ``c`` in place (``c`` gains a bias, ``bn`` becomes
    ``nn.Identity``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size (padding ``kernel_size // 2``).
        stride: Stride.
        groups: Conv groups.
        bn_weight_init: Initial BN gamma (0 makes a residual branch start as the identity).

    Example:
        >>> m = ConvBN(8, 16, 3).eval()
        >>> m(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 16, 5, 5])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
        bn_weight_init: float = 1.0,
    ):
        super().__init__()
        self.c = Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent (weight, bias) of the unit, fused or not (eval-mode BN statistics)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            return fuse_conv_bn(self.c.weight, self.c.bias, self.bn)
        return self.c.weight, self.c.bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BN into the conv in place (idempotent)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        c = self.c
        weight, bias = self.weight_bias()
        fused = Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                       bias=True, device=weight.device, dtype=c.weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.c, self.bn = fused, nn.Identity()


class RepVGGDW(nn.Module):
    """``x + DW3x3-BN(x) + DW1x1-BN(x)`` (keys ``conv``, ``conv1``); fuses into one DW 3x3 conv with bias.

    Example:
        >>> m = RepVGGDW(8).eval()
        >>> x = torch.randn(1, 8, 6, 6)
        >>> y = m(x); m.reparameterize()
        >>> torch.allclose(m(x), y, atol=1e-5)
        True
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.conv = ConvBN(dim, dim, 3, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, groups=dim)
        self.fused: Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return x + self.conv(x) + self.conv1(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the three branches by one DW 3x3 conv with bias, in place (idempotent)."""
        if self.fused is not None:
            return
        w3, b3 = self.conv.weight_bias()
        w1, b1 = self.conv1.weight_bias()
        ident = identity_kernel(self.dim, 3, dtype=w3.dtype, device=w3.device)
        fused = Conv2d(self.dim, self.dim, 3, padding=1, groups=self.dim, bias=True, device=w3.device,
                       dtype=self.conv.c.weight.dtype)
        fused.weight.copy_(w3 + pad_kernel_to(w1, 3) + ident)
        fused.bias.copy_(b3 + b1)
        del self.conv, self.conv1
        self.fused = fused


#: Former name of :class:`RepVGGDW`.
RepDW = RepVGGDW


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` (at least ``divisor``, never below 90 % of ``value``).

    The squeeze-excite width rule of the official model (``C/4`` for every published width).

    Example:
        >>> make_divisible(96 * 0.25), make_divisible(16 * 0.25)
        (24, 8)
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class SqueezeExcite(nn.Module):
    """GAP -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid -> scale (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class LKP(nn.Module):
    """Large-kernel perception: per-pixel ``k_S x k_S`` kernels for ``C/G`` weight groups.

    ``cv1`` 1x1 Conv-BN (C -> C/2) -> ReLU -> ``cv2`` DW ``k_L`` Conv-BN -> ``cv3`` 1x1 Conv-BN ->
    ReLU -> ``cv4`` 1x1 conv with bias (C/2 -> ``k_S^2 C/G``) -> ``norm`` GroupNorm(C/G groups),
    viewed as ``(N, C/G, k_S^2, H, W)``.

    Example:
        >>> LKP(16)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 2, 9, 8, 8])
    """

    def __init__(self, dim: int, large_kernel: int = 7, small_kernel: int = 3, groups: int = 8):
        super().__init__()
        hidden = dim // 2
        self.small_kernel = small_kernel
        self.weight_groups = dim // groups
        self.cv1 = ConvBN(dim, hidden, 1)
        self.act = nn.ReLU()
        self.cv2 = ConvBN(hidden, hidden, large_kernel, groups=hidden)
        self.cv3 = ConvBN(hidden, hidden, 1)
        self.cv4 = nn.Conv2d(hidden, small_kernel**2 * self.weight_groups, 1, bias=True)
        self.norm = nn.GroupNorm(self.weight_groups, small_kernel**2 * self.weight_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.cv3(self.cv2(self.act(self.cv1(x)))))
        y = self.norm(self.cv4(y))
        n, _, h, w = y.shape
        return y.view(n, self.weight_groups, self.small_kernel**2, h, w)


class LSConv(nn.Module):
    """LS convolution ``BN(SKA(x, LKP(x))) + x`` (keys ``lkp``, ``bn``).

    Args:
        dim: Channels (even, divisible by ``groups``).
        large_kernel: Perception kernel ``k_L``.
        small_kernel: Aggregation kernel ``k_S``.
        groups: Channels sharing one dynamic kernel, interleaved (channel ``c`` uses ``c mod C/G``).
        ska_impl: ``"auto"``, ``"unfold"`` or ``"taps"`` (see :func:`largekernel.nn.ls_conv.ska`).

    Example:
        >>> LSConv(16)(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(self, dim: int, large_kernel: int = 7, small_kernel: int = 3, groups: int = 8, ska_impl: str = "auto"):
        super().__init__()
        self.ska_impl = ska_impl
        self.lkp = LKP(dim, large_kernel, small_kernel, groups)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(ska(x, self.lkp(x), self.ska_impl)) + x


class Residual(nn.Module):
    """``x + DropPath(m(x))`` (key ``m``)."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.m(x))


class LSNetFFN(nn.Module):
    """``pw1`` 1x1 Conv-BN (C -> hidden) -> ReLU -> ``pw2`` 1x1 Conv-BN (hidden -> C, BN gamma 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden, 1)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


def _bias_index(h: int, w: int, table_w: int, device=None) -> torch.Tensor:
    """``idx[i, j] = |dy| * table_w + |dx|`` for all pairs of the ``h x w`` positions (row-major)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * table_w + (xs[:, None] - xs[None, :]).abs()


class LSNetAttention(nn.Module):
    """Multi-head self-attention with relative-position biases (LeViT / EfficientViT style).

    ``qkv`` 1x1 Conv-BN (C -> 2 nh kd + nh d) splits into q, k, v in that order; ``dw`` (3x3 DW
    Conv-BN) is applied to q; logits ``q^T k / sqrt(kd)`` plus ``attention_biases[head, |dy| r + |dx|]``;
    softmax over keys; ``proj`` = ReLU -> 1x1 Conv-BN (nh d -> C, BN gamma 0).

    Args:
        dim: Channels C.
        key_dim: Query/key width per head.
        num_heads: Heads.
        attn_ratio: Value width per head / ``key_dim``.
        resolution: Side of the map the bias table is built for.

    Example:
        >>> LSNetAttention(64, resolution=4)(torch.randn(1, 64, 4, 4)).shape
        torch.Size([1, 64, 4, 4])
    """

    def __init__(self, dim: int, key_dim: int = 16, num_heads: int = 4, attn_ratio: float = 4.0, resolution: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.resolution = resolution
        nh_kd = key_dim * num_heads
        self.qkv = ConvBN(dim, self.dh + 2 * nh_kd, 1)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(self.dh, dim, 1, bn_weight_init=0.0))
        self.dw = ConvBN(nh_kd, nh_kd, 3, groups=nh_kd)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # persistent, as in the official state dict; built with plain Python so it works on "meta"
        idx = [
            abs(p[0] - q[0]) * resolution + abs(p[1] - q[1])
            for p in itertools.product(range(resolution), repeat=2)
            for q in itertools.product(range(resolution), repeat=2)
        ]
        n = resolution * resolution
        self.register_buffer("attention_bias_idxs", torch.tensor(idx, dtype=torch.long).view(n, n))

    def _biases(self, h: int, w: int) -> torch.Tensor:
        """``(heads, hw, hw)`` position biases for an ``h x w`` map."""
        r = self.resolution
        if (h, w) == (r, r):
            return self.attention_biases[:, self.attention_bias_idxs]
        # other sizes: resize the (|dy|, |dx|) table to the map (official dense-prediction variant)
        table = self.attention_biases.view(1, self.num_heads, r, r)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)[0].flatten(1)
        return table[:, _bias_index(h, w, w, device=table.device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        nh_kd = self.key_dim * self.num_heads
        q, k, v = self.qkv(x).split([nh_kd, nh_kd, self.dh], dim=1)
        q = self.dw(q)
        q = q.reshape(n, self.num_heads, self.key_dim, h * w)
        k = k.reshape(n, self.num_heads, self.key_dim, h * w)
        v = v.reshape(n, self.num_heads, self.d, h * w)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self._biases(h, w)
        attn = attn.softmax(dim=-1)
        out = (v @ attn.transpose(-2, -1)).reshape(n, self.dh, h, w)
        return self.proj(out)


class LSNetBlock(nn.Module):
    """``ffn(se(mixer(x)))`` with the mixer chosen by ``kind`` (keys ``mixer``, ``se``, ``ffn``).

    Args:
        dim: Channels.
        kind: ``"repdw"`` (RepVGGDW + SE), ``"lsconv"`` or ``"attention"``.
        drop_path: Stochastic depth of the FFN / attention residuals.
        resolution: Attention bias table side.
        ska_impl: SKA implementation of LSConv.
    """

    def __init__(self, dim: int, kind: str, drop_path: float = 0.0, key_dim: int = 16, num_heads: int = 4,
                 resolution: int = 4, ska_impl: str = "auto"):
        super().__init__()
        self.kind = kind
        if kind == "repdw":
            self.mixer: nn.Module = RepVGGDW(dim)
            self.se: nn.Module = SqueezeExcite(dim, make_divisible(dim * 0.25))
        elif kind == "lsconv":
            self.mixer = LSConv(dim, ska_impl=ska_impl)
            self.se = nn.Identity()
        elif kind == "attention":
            ratio = dim / (key_dim * num_heads)
            self.mixer = Residual(LSNetAttention(dim, key_dim, num_heads, ratio, resolution), drop_path)
            self.se = nn.Identity()
        else:
            raise ValueError(f"kind must be 'repdw', 'lsconv' or 'attention', got {kind!r}")
        self.ffn = Residual(LSNetFFN(dim, 2 * dim), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.se(self.mixer(x)))


class LSNetHead(nn.Module):
    """BatchNorm1d (``bn``) -> Linear (``l``, trunc-normal std 0.02, zero bias); folds into one Linear."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.l = self._linear(dim, num_classes)  # noqa: E741  (the official key)

    @staticmethod
    def _linear(dim: int, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(fc.weight, std=0.02)
        nn.init.zeros_(fc.bias)
        return fc

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """The BN on ``(N, C)`` or, unpooled, on ``(N, C, H, W)`` (same per-channel statistics)."""
        if x.dim() == 2:
            return self.bn(x)
        return self.bn(x.flatten(2)).view_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l(self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BN into the Linear (``l(bn(x)) == l'(x)``), in place; idempotent."""
        if not isinstance(self.bn, nn.BatchNorm1d) or not isinstance(self.l, nn.Linear):
            return
        bn, lin = self.bn, self.l
        cd = compute_dtype(lin.weight.dtype)
        # bn(x) = s * x + t  ->  l(bn(x)) = (W diag(s)) x + (W t + b)
        scale = bn.weight.to(cd) / (bn.running_var.to(cd) + bn.eps).sqrt()
        shift = bn.bias.to(cd) - bn.running_mean.to(cd) * scale
        weight = lin.weight.to(cd)
        lin.bias.copy_(lin.bias.to(cd) + weight @ shift)
        lin.weight.copy_(weight * scale)
        self.bn = nn.Identity()


class LSNet(TimmModelMixin, nn.Module):
    """LSNet classifier / backbone with the official key layout and timm's model contract.

    Args:
        in_chans: Input channels.
        num_classes: Classifier outputs. 0 builds no head at all (as the official code), and
            ``forward`` returns the pooled features.
        dims: Widths of the four stages (``dims[0]`` divisible by 4; LSConv stages divisible by 8,
            the attention stage by ``num_heads``).
        depths: Blocks per stage (0 allowed).
        key_dim: Attention key width per head.
        num_heads: Attention heads (the value width per head is ``dims[-1] / num_heads``).
        img_size: Input size the attention biases are laid out for (224: a 4x4 last-stage map).
        ska_impl: SKA implementation (``"auto"``, ``"unfold"``, ``"taps"``).
        drop_rate: Dropout before the classifier (0 in the published model).
        drop_path_rate: Stochastic depth of the residual branches, linear over blocks.
        features_only: Drop the head; ``forward`` returns the maps of ``out_indices``.
        out_indices: Levels returned with ``features_only``.

    Example:
        >>> model = LSNet(num_classes=10, dims=(16, 32, 48, 64), depths=(1, 2, 2, 2)).eval()
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        dims: Sequence[int] = (64, 128, 256, 384),
        depths: Sequence[int] = (0, 2, 8, 10),
        key_dim: int = 16,
        num_heads: int = 4,
        img_size: int = 224,
        ska_impl: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
    ):
        super().__init__()
        depths, dims = check_depths_dims(depths, dims)
        if dims[0] % 4:
            raise ValueError(f"dims[0] must be divisible by 4 (stem widths dims[0]/4, dims[0]/2), got {dims[0]}")
        check_model_args(in_chans, num_classes, drop_path_rate)
        if ska_impl not in SKA_IMPLS:
            raise ValueError(f"ska_impl must be one of {SKA_IMPLS}, got {ska_impl!r}")
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"img_size must be a positive int, got {img_size!r}")
        n = len(dims)
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i == n - 1 and depth > 1 and dim % num_heads:
                raise ValueError(f"dims[{i}]={dim} must be divisible by num_heads={num_heads}")
            if i < n - 1 and depth > 1 and dim % 8:
                raise ValueError(f"dims[{i}]={dim} must be divisible by 8 (LSConv shares kernels over 8 channels)")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.in_chans = in_chans
        self.dims = dims

        d0 = dims[0]
        self.patch_embed = nn.Sequential(
            ConvBN(in_chans, d0 // 4, 3, 2), nn.ReLU(),
            ConvBN(d0 // 4, d0 // 2, 3, 2), nn.ReLU(),
            ConvBN(d0 // 2, d0, 3, 2),
        )
        # the last stage's map side at img_size: stem /8, then a stride-2 pad-1 conv per stage
        resolution = math.ceil(img_size / 8)
        for _ in range(n - 1):
            resolution = (resolution - 1) // 2 + 1
        rates = linspace_rates(drop_path_rate, sum(depths))
        entries, cursor, reduction = [], 0, 8
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [ConvBN(dims[i - 1], dims[i - 1], 3, 2, groups=dims[i - 1]), ConvBN(dims[i - 1], dim, 1)]
                reduction *= 2
            for d in range(depth):
                kind = "repdw" if d % 2 == 0 else ("attention" if i == n - 1 else "lsconv")
                layers.append(LSNetBlock(dim, kind, rates[cursor + d], key_dim, num_heads, resolution, ska_impl))
            cursor += depth
            stage = nn.Sequential(*layers)
            stage.grad_checkpointing = False
            self.add_module(f"blocks{i + 1}", stage)
            entries.append(dict(num_chs=dim, reduction=reduction, module=f"blocks{i + 1}"))
        self.num_stages = n
        self.num_features = self.head_hidden_size = dims[-1]
        self.feature_info = FeatureInfo(entries)
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module | None = LSNetHead(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        if features_only:
            self.as_features(out_indices)

    # ---- hooks of the timm contract (TimmModelMixin) ---------------------------------------
    def _stem(self) -> nn.Sequential:
        return self.patch_embed

    def _stem_level_specs(self) -> list[StemLevel]:
        d0 = self.dims[0]
        return [StemLevel(d0 // 4, 2, "patch_embed.1", 2), StemLevel(d0 // 2, 4, "patch_embed.3", 4)]

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        stage = getattr(self, f"blocks{i + 1}")
        return run_blocks(stage, x, stage.grad_checkpointing)

    def _downsample_convs(self) -> dict[int, nn.Module]:
        return {i: getattr(self, f"blocks{i + 1}")[0].c for i in range(1, self.num_stages)}

    def _prune_stages(self, n: int) -> None:
        for i in range(n, self.num_stages):
            setattr(self, f"blocks{i + 1}", nn.Sequential())

    def _classifier(self) -> nn.Module:
        return self.head.l if isinstance(self.head, LSNetHead) else self.head

    def _reset_head(self, num_classes: int) -> None:
        if isinstance(self.head, LSNetHead):
            # keep the trained BN: pre-logits stay BN(pool(x)) as in the official head
            self.head.l = LSNetHead._linear(self.num_features, num_classes).to(self.head.bn.weight)
        elif num_classes > 0:
            ref = self.patch_embed[0].c.weight
            self.head = LSNetHead(self.num_features, num_classes).to(device=ref.device, dtype=ref.dtype)

    def _forward_head(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        x = global_pool_nd(x, self.global_pool)
        if not isinstance(self.head, LSNetHead):
            return x
        x = self.head_drop(self.head.norm(x))
        if pre_logits:
            return x
        return self.head.l(x) if x.dim() == 2 else self.head.l(x.movedim(1, -1)).movedim(-1, 1)

    def reparameterize(self) -> None:
        """Fold every Conv-BN / RepVGGDW and the head BN in place (eval-mode equivalence; idempotent)."""
        for m in list(self.modules()):
            if m is not self and hasattr(m, "reparameterize"):
                m.reparameterize()


_CONFIGS = {
    "lsnet_t": ((64, 128, 256, 384), (0, 2, 8, 10)),
    "lsnet_s": ((96, 192, 320, 448), (1, 2, 8, 10)),
    "lsnet_b": ((128, 256, 384, 512), (4, 6, 8, 10)),
}


def _variant(name: str):
    default_dims, default_depths = _CONFIGS[name]

    def entry(
        pretrained: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        dims: Sequence[int] = default_dims,
        depths: Sequence[int] = default_depths,
        key_dim: int = 16,
        num_heads: int = 4,
        img_size: int = 224,
        ska_impl: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        stem_features: bool | int = False,
        global_pool: str | None = None,
        pretrained_cfg: dict | str | None = None,
    ) -> LSNet:
        return build_model(
            LSNet, name, pretrained=pretrained, pretrained_cfg=pretrained_cfg, features_only=features_only,
            out_indices=out_indices, stem_features=stem_features, global_pool=global_pool,
            in_chans=in_chans, num_classes=num_classes, dims=dims, depths=depths, key_dim=key_dim,
            num_heads=num_heads, img_size=img_size, ska_impl=ska_impl, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"LSNet-{name.split('_')[1].upper()} as published: dims {default_dims}, depths {default_depths}. "
        "``stem_features=True`` adds the stem's stride-2 map as level 0; ``stem_features=2`` also its stride-4 map."
    )
    register_cfg(name, model_cfg(first_conv="patch_embed.0.c", classifier="head.l", pool_size=(4, 4),
                                 license="mit", paper_ids="arXiv:2503.23135"))
    return register_model(entry)


lsnet_t = _variant("lsnet_t")
lsnet_s = _variant("lsnet_s")
lsnet_b = _variant("lsnet_b")
