"""LSNet ("See Large, Focus Small") classifiers and backbones: ``lsnet_t``, ``lsnet_s``, ``lsnet_b``.

Architecture (re-implemented from the paper's description and ``specs/operators.md``):

* Stem: three 3x3 stride-2 ConvBN layers (``C/4 -> C/2 -> C``, ReLU between): stride 8.
* Stage ``i > 0`` starts with a downsampling unit: residual DW 3x3 ConvBN + residual FFN at the
  old width, 1x1 ConvBN to the new width, DW 3x3 stride-2 ConvBN, then residual DW 3x3 ConvBN +
  residual FFN at the new width. Stage reductions are 8, 16, 32, 64.
* Blocks alternate: even block index -> :class:`RepDW` (3x3 DW-BN + 1x1 DW-BN + identity, fusable
  into one 3x3 DW conv) followed by squeeze-excite (ratio 0.25); odd index -> :class:`LSConv`
  (``BN(SKA(x, LKP(x))) + x``), or in the last stage a multi-head self-attention block. Every
  block ends with a residual FFN (1x1 ConvBN ``C -> 2C``, ReLU, 1x1 ConvBN ``2C -> C``).
* Head: global average pool -> BatchNorm1d -> dropout -> Linear.

Sizes: t dims 64,128,256,384 depths 0,2,8,10; s 96,192,320,448 / 1,2,8,10;
b 128,256,384,512 / 4,6,8,10.

Deviations from the published model (its exact details are not in the spec): the downsampling
unit above is an approximation; the attention is plain MHSA (``num_heads`` heads of width
``C / num_heads``, BN-ed 1x1 qkv projection, a DW 3x3 positional term on ``v``, ReLU + 1x1 ConvBN
output projection) without resolution-dependent attention biases, so any input size works; no
distillation head. Drop path applies to the residual branches built here (not to the identity
inside LSConv / RepDW). ``reparameterize()`` folds every ConvBN and every RepDW in place.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from largekernel.models.base import StemStagesMixin, check_model_args, select_indices
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.conv import Conv2d
from largekernel.ops.fusion import fuse_conv_bn, identity_kernel, pad_kernel_to
from largekernel.nn.layers import DropPath, SqueezeExcite
from largekernel.nn.ls_conv import SKA_IMPLS, ConvBN, LSConv

__all__ = ["LSNet", "RepDW", "LSNetAttention", "LSNetFFN", "LSNetBlock", "lsnet_t", "lsnet_s", "lsnet_b"]


def _branch(m: ConvBN) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a ConvBN, whether or not it has been fused already."""
    if isinstance(m.bn, nn.BatchNorm2d):
        return fuse_conv_bn(m.conv.weight, m.conv.bias, m.bn)
    bias = m.conv.bias if m.conv.bias is not None else m.conv.weight.new_zeros(m.conv.out_channels)
    return m.conv.weight, bias


class RepDW(nn.Module):
    """RepVGG-style depthwise block: ``DW3x3-BN(x) + DW1x1-BN(x) + x``, fusable into one DW 3x3 conv.

    Args:
        dim: Channels.

    Example:
        >>> m = RepDW(8).eval()
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
        return self.conv(x) + self.conv1(x) + x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the three branches by one DW 3x3 conv with bias, in place (idempotent)."""
        if self.fused is not None:
            return
        w3, b3 = _branch(self.conv)
        w1, b1 = _branch(self.conv1)
        ident = identity_kernel(self.dim, 3, dtype=w3.dtype, device=w3.device)
        fused = Conv2d(self.dim, self.dim, 3, padding=1, groups=self.dim, bias=True, device=w3.device, dtype=w3.dtype)
        fused.weight.copy_(w3 + pad_kernel_to(w1, 3) + ident)
        fused.bias.copy_(b3 + b1)
        del self.conv, self.conv1
        self.fused = fused


class Residual(nn.Module):
    """``x + DropPath(fn(x))``."""

    def __init__(self, fn: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.fn = fn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fn(x))


class LSNetFFN(nn.Module):
    """1x1 ConvBN (C -> hidden) -> ReLU -> 1x1 ConvBN (hidden -> C, BN gamma 0 so a residual FFN starts as identity)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden, 1)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class LSNetAttention(nn.Module):
    """Multi-head self-attention over all positions of an NCHW map (no residual; wrap it).

    Args:
        dim: Channels (divisible by ``num_heads``).
        num_heads: Heads; each has ``dim // num_heads`` channels.
    """

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = ConvBN(dim, 3 * dim, 1)
        self.pe = ConvBN(dim, dim, 3, groups=dim)  # local positional term on v
        self.act = nn.ReLU()
        self.proj = ConvBN(dim, dim, 1, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=1)
        shape = (n, self.num_heads, self.head_dim, h * w)
        attn = (q.reshape(shape).transpose(-2, -1) @ k.reshape(shape)) * self.scale  # (n, heads, hw, hw)
        attn = attn.softmax(dim=-1)
        out = (v.reshape(shape) @ attn.transpose(-2, -1)).reshape(n, c, h, w)
        out = out + self.pe(v)
        return self.proj(self.act(out))


class LSNetBlock(nn.Module):
    """One LSNet block: token mixer (RepDW + SE, LSConv, or attention) then a residual FFN.

    Args:
        dim: Channels.
        kind: ``"repdw"``, ``"lsconv"`` or ``"attention"``.
        drop_path: Stochastic depth of the residual branches.
        large_kernel: LSConv ``k_L``.
        small_kernel: LSConv ``k_S``.
        ls_groups: LSConv ``G``.
        num_heads: Attention heads.
        ska_impl: LSConv SKA implementation.
    """

    def __init__(
        self,
        dim: int,
        kind: str,
        drop_path: float = 0.0,
        large_kernel: int = 7,
        small_kernel: int = 3,
        ls_groups: int = 8,
        num_heads: int = 8,
        ska_impl: str = "auto",
    ):
        super().__init__()
        self.kind = kind
        if kind == "repdw":
            self.mixer: nn.Module = RepDW(dim)
            self.se: nn.Module = SqueezeExcite(dim, max(1, round(dim * 0.25)))
        elif kind == "lsconv":
            self.mixer = LSConv(dim, large_kernel, small_kernel, ls_groups, ska_impl)
            self.se = nn.Identity()
        elif kind == "attention":
            self.mixer = Residual(LSNetAttention(dim, num_heads), drop_path)
            self.se = nn.Identity()
        else:
            raise ValueError(f"kind must be 'repdw', 'lsconv' or 'attention', got {kind!r}")
        self.ffn = Residual(LSNetFFN(dim, 2 * dim), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.se(self.mixer(x)))


def _downsample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        Residual(ConvBN(cin, cin, 3, groups=cin)),
        Residual(LSNetFFN(cin, 2 * cin)),
        ConvBN(cin, cout, 1),
        ConvBN(cout, cout, 3, stride=2, groups=cout),
        Residual(ConvBN(cout, cout, 3, groups=cout)),
        Residual(LSNetFFN(cout, 2 * cout)),
    )


class LSNet(StemStagesMixin, nn.Module):
    """LSNet classifier / backbone with the timm model API.

    Args:
        in_chans: Input channels.
        num_classes: Classifier outputs (0 = none: ``forward`` returns the normalised pooled features).
        dims: Channels of the four stages (each divisible by ``ls_groups``, even; the attention
            stages' by ``num_heads``; ``dims[0]`` divisible by 4).
        depths: Blocks per stage (0 allowed).
        attn_stages: Stages whose odd blocks use attention instead of LSConv (default: the last).
        large_kernel: LSConv perception kernel ``k_L``.
        small_kernel: LSConv aggregation kernel ``k_S``.
        ls_groups: LSConv ``G``.
        num_heads: Attention heads.
        ska_impl: LSConv SKA implementation (``"auto"``, ``"unfold"``, ``"taps"``).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth, linearly increasing over blocks.
        features_only: Drop the head; ``forward`` returns the stage maps of ``out_indices``.
        out_indices: Stages returned when ``features_only``.

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
        attn_stages: Sequence[int] = (3,),
        large_kernel: int = 7,
        small_kernel: int = 3,
        ls_groups: int = 8,
        num_heads: int = 8,
        ska_impl: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
    ):
        super().__init__()
        dims, depths = tuple(dims), tuple(depths)
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"dims and depths must be non-empty and of equal length, got {dims} and {depths}")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"dims must be positive ints, got {dims}")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
            raise ValueError(f"depths must be non-negative ints, got {depths}")
        if dims[0] % 4:
            raise ValueError(f"dims[0] must be divisible by 4 (stem widths dims[0]/4, dims[0]/2), got {dims[0]}")
        check_model_args(in_chans, num_classes, drop_path_rate)
        if ska_impl not in SKA_IMPLS:
            raise ValueError(f"ska_impl must be one of {SKA_IMPLS}, got {ska_impl!r}")
        n = len(dims)
        attn = {i % n for i in attn_stages}
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if depth > 1 and i not in attn and (dim % ls_groups or dim % 2):
                raise ValueError(f"dims[{i}]={dim} must be even and divisible by ls_groups={ls_groups}")
            if depth > 1 and i in attn and dim % num_heads:
                raise ValueError(f"dims[{i}]={dim} must be divisible by num_heads={num_heads}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.features_only = features_only

        d0 = dims[0]
        self.stem = nn.Sequential(
            ConvBN(in_chans, d0 // 4, 3, 2), nn.ReLU(),
            ConvBN(d0 // 4, d0 // 2, 3, 2), nn.ReLU(),
            ConvBN(d0 // 2, d0, 3, 2),
        )
        dp = torch.linspace(0, drop_path_rate, max(1, sum(depths))).tolist()
        stages, entries, cursor, reduction = [], [], 0, 8
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(_downsample(dims[i - 1], dim))
                reduction *= 2
            for j in range(depth):
                kind = "repdw" if j % 2 == 0 else ("attention" if i in attn else "lsconv")
                layers.append(
                    LSNetBlock(dim, kind, dp[cursor + j], large_kernel, small_kernel, ls_groups, num_heads, ska_impl)
                )
            cursor += depth
            stages.append(nn.Sequential(*layers))
            entries.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.feature_info = FeatureInfo(entries, out_indices if features_only else None)
        if features_only:
            self.head_norm = None
            self.head_drop = None
            self.head = None
        else:
            self.head_norm = nn.BatchNorm1d(dims[-1])
            self.head_drop = nn.Dropout(drop_rate)
            self.head = self._make_classifier(num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        fc = nn.Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(fc.weight, std=0.02)
        nn.init.zeros_(fc.bias)
        return fc

    # ---- hooks of the timm model API (StemStagesMixin) -------------------------------------
    def _classifier(self) -> nn.Module:
        return self.head

    def _reset_head(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        self.num_classes = num_classes
        ref = self.head_norm.weight
        self.head = self._make_classifier(num_classes).to(device=ref.device, dtype=ref.dtype)

    def _intermediate_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        # LSNet returns each selected stage once, in stage order
        return sorted(set(select_indices(indices, len(self.stages))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no head")
        x = self.head_drop(self.head_norm(x.mean(dim=(2, 3))))
        return x if pre_logits else self.head(x)

    def reparameterize(self) -> None:
        """Fold every ConvBN / RepDW / LSConv in place (eval-mode equivalence; idempotent)."""
        targets = [m for m in self.modules() if m is not self and hasattr(m, "reparameterize")]
        for m in targets:
            m.reparameterize()


_CONFIGS = {
    "lsnet_t": ((64, 128, 256, 384), (0, 2, 8, 10)),
    "lsnet_s": ((96, 192, 320, 448), (1, 2, 8, 10)),
    "lsnet_b": ((128, 256, 384, 512), (4, 6, 8, 10)),
}


def _variant(name: str):
    default_dims, default_depths = _CONFIGS[name]

    def entry(
        num_classes: int = 1000,
        in_chans: int = 3,
        dims: Sequence[int] = default_dims,
        depths: Sequence[int] = default_depths,
        attn_stages: Sequence[int] = (3,),
        large_kernel: int = 7,
        small_kernel: int = 3,
        ls_groups: int = 8,
        num_heads: int = 8,
        ska_impl: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
    ) -> LSNet:
        return LSNet(
            in_chans=in_chans, num_classes=num_classes, dims=dims, depths=depths, attn_stages=attn_stages,
            large_kernel=large_kernel, small_kernel=small_kernel, ls_groups=ls_groups, num_heads=num_heads,
            ska_impl=ska_impl, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            features_only=features_only, out_indices=out_indices,
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"LSNet {name.split('_')[1].upper()}: dims {default_dims}, depths {default_depths}."
    return register_model(entry)


lsnet_t = _variant("lsnet_t")
lsnet_s = _variant("lsnet_s")
lsnet_b = _variant("lsnet_b")
