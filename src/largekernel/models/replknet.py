"""RepLKNet (Ding et al., CVPR 2022): very large depthwise kernels (31x31) with a parallel small kernel.

Module names follow the official key layout (``stem``, ``stages.i.blocks.j``, ``transitions``,
``norm``, ``head``; ``lkb_origin``/``small_conv``/``lkb_reparam`` inside the large-kernel conv),
so official training- and deploy-form checkpoints load without key mapping.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from largekernel.models.base import (
    IndexedStagesMixin,
    StemLevel,
    apply_channelwise,
    global_pool_nd,
    linear_head_like,
    linspace_rates,
    run_blocks,
)
from largekernel.models.builder import build_model, model_cfg, register_cfg
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.layers import DropPath
from largekernel.nn.replk_conv import ConvBN, ReparamLargeKernelConv

__all__ = ["RepLKNet", "RepLKBlock", "ConvFFN", "REPLKNET_CONFIGS"]

logger = logging.getLogger(__name__)


#: Published configurations.
REPLKNET_CONFIGS: dict[str, dict] = {
    "31b": dict(large_kernel_sizes=(31, 29, 27, 13), layers=(2, 2, 18, 2), channels=(128, 256, 512, 1024),
                small_kernel=5, dw_ratio=1.0),
    "31l": dict(large_kernel_sizes=(31, 29, 27, 13), layers=(2, 2, 18, 2), channels=(192, 384, 768, 1536),
                small_kernel=5, dw_ratio=1.0),
    "xl": dict(large_kernel_sizes=(27, 27, 27, 13), layers=(2, 2, 18, 2), channels=(256, 512, 1024, 2048),
               small_kernel=None, dw_ratio=1.5),
}


class ConvBNReLU(ConvBN):
    """:class:`ConvBN` followed by ReLU (submodule ``nonlinear``, as in the official layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.add_module("nonlinear", nn.ReLU())


class RepLKBlock(nn.Module):
    """``x + DropPath(1x1-BN-ReLU -> large-kernel DW conv -> ReLU -> 1x1-BN)(BN(x))``.

    Example:
        >>> RepLKBlock(8, 8, 13, 0.0, small_kernel=5)(torch.randn(1, 8, 10, 10)).shape
        torch.Size([1, 8, 10, 10])
    """

    def __init__(self, in_channels: int, dw_channels: int, block_lk_size: int, drop_path: float,
                 small_kernel: int | None, deploy: bool = False):
        super().__init__()
        self.pw1 = ConvBNReLU(in_channels, dw_channels, 1, 1, 0)
        self.pw2 = ConvBN(dw_channels, in_channels, 1, 1, 0)
        self.large_kernel = ReparamLargeKernelConv(
            dw_channels, dw_channels, block_lk_size, stride=1, groups=dw_channels, small_kernel=small_kernel,
            deploy=deploy,
        )
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = nn.BatchNorm2d(in_channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.lk_nonlinear(self.large_kernel(self.pw1(self.prelkb_bn(x)))))
        return x + self.drop_path(out)


class ConvFFN(nn.Module):
    """``x + DropPath(1x1-BN -> GELU -> 1x1-BN)(BN(x))``.

    Example:
        >>> ConvFFN(8, 32, 8, 0.0)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, in_channels: int, internal_channels: int, out_channels: int, drop_path: float):
        super().__init__()
        self.preffn_bn = nn.BatchNorm2d(in_channels)
        self.pw1 = ConvBN(in_channels, internal_channels, 1, 1, 0)
        self.pw2 = ConvBN(internal_channels, out_channels, 1, 1, 0)
        self.nonlinear = nn.GELU()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x))))
        return x + self.drop_path(out)


class RepLKNetStage(nn.Module):
    """Alternating :class:`RepLKBlock` / :class:`ConvFFN` (key ``blocks``)."""

    def __init__(self, channels: int, num_blocks: int, stage_lk_size: int, drop_path: Sequence[float],
                 small_kernel: int | None, dw_ratio: float, ffn_ratio: float, deploy: bool):
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(num_blocks):
            blocks.append(RepLKBlock(channels, int(channels * dw_ratio), stage_lk_size, drop_path[i],
                                     small_kernel, deploy))
            blocks.append(ConvFFN(channels, int(channels * ffn_ratio), channels, drop_path[i]))
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, x, self.grad_checkpointing)


class RepLKNet(IndexedStagesMixin, nn.Module):
    """RepLKNet classifier / backbone (official key layout).

    Args:
        large_kernel_sizes: Large kernel per stage (odd).
        layers: RepLK blocks per stage (each paired with a ConvFFN).
        channels: Channels per stage.
        small_kernel: Kernel of the parallel small branch (``None``: no branch).
        dw_ratio: Width multiplier of the large-kernel conv inside a block.
        ffn_ratio: Hidden width multiplier of the ConvFFN.
        in_chans: Input channels.
        num_classes: Classes (0 = no head).
        drop_path_rate: Final stochastic-depth rate (linear over blocks).
        deploy: Build the fused large-kernel convs directly.
        features_only: Drop the head; ``forward`` returns the stage maps of ``out_indices``.
        out_indices: Stages returned with ``features_only``.

    Example:
        >>> m = RepLKNet((13, 11, 9, 7), (1, 1, 1, 1), (8, 16, 24, 32), num_classes=5)
        >>> m(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 5])
    """

    def __init__(
        self,
        large_kernel_sizes: Sequence[int] = (31, 29, 27, 13),
        layers: Sequence[int] = (2, 2, 18, 2),
        channels: Sequence[int] = (128, 256, 512, 1024),
        small_kernel: int | None = 5,
        dw_ratio: float = 1.0,
        ffn_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        deploy: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
    ):
        super().__init__()
        large_kernel_sizes, layers, channels = tuple(large_kernel_sizes), tuple(layers), tuple(channels)
        n = len(layers)
        if n == 0 or len(large_kernel_sizes) != n or len(channels) != n:
            raise ValueError(
                "large_kernel_sizes, layers and channels must be non-empty and of equal length, got "
                f"{large_kernel_sizes}, {layers}, {channels}"
            )
        if any(not isinstance(c, int) or c <= 0 for c in channels):
            raise ValueError(f"channels must be positive ints, got {channels}")
        if any(not isinstance(d, int) or d < 0 for d in layers):
            raise ValueError(f"layers must be non-negative ints, got {layers}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.num_stages = n
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = channels[-1]
        base = channels[0]
        self.stem = nn.ModuleList([
            ConvBNReLU(in_chans, base, 3, 2, 1),
            ConvBNReLU(base, base, 3, 1, 1, groups=base),
            ConvBNReLU(base, base, 1, 1, 0),
            ConvBNReLU(base, base, 3, 2, 1, groups=base),
        ])
        rates = linspace_rates(drop_path_rate, sum(layers))
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        cur = 0
        for i in range(n):
            self.stages.append(RepLKNetStage(channels[i], layers[i], large_kernel_sizes[i],
                                             rates[cur:cur + layers[i]], small_kernel, dw_ratio, ffn_ratio, deploy))
            cur += layers[i]
            if i < n - 1:
                self.transitions.append(nn.Sequential(
                    ConvBNReLU(channels[i], channels[i + 1], 1, 1, 0),
                    ConvBNReLU(channels[i + 1], channels[i + 1], 3, 2, 1, groups=channels[i + 1]),
                ))
        self.feature_info = FeatureInfo(
            [dict(num_chs=channels[i], reduction=4 * 2**i, module=f"stages.{i}") for i in range(n)]
        )
        self.norm = nn.BatchNorm2d(channels[-1])
        self.head = nn.Linear(channels[-1], num_classes) if num_classes > 0 else nn.Identity()
        if features_only:
            self.as_features(out_indices)

    # ----- hooks of the timm contract (largekernel.models.base.TimmModelMixin) ---------------
    def _stem(self) -> nn.Sequential:
        return nn.Sequential(*self.stem)  # a view: the official keys stay stem.0..3

    def _stem_level_specs(self) -> list[StemLevel]:
        return [StemLevel(self.stem[0].conv.out_channels, 2, "stem.0", 1)]

    def _downsample_convs(self) -> dict[int, nn.Module]:
        return {i + 1: t[1].conv for i, t in enumerate(self.transitions)}

    def _drop_head(self) -> None:
        self.norm = None
        self.head = None

    def _prune_stages(self, n: int) -> None:
        self.stages = self.stages[:n]
        self.transitions = self.transitions[: max(0, n - 1)]

    def _reset_head(self, num_classes: int) -> None:
        self.head = linear_head_like(self.num_features, num_classes, self.norm.weight)

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i > 0:
            x = self.transitions[i - 1](x)
        return self.stages[i](x)

    def _forward_head(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        """BN -> global pool (``global_pool``) -> Linear (skipped with ``pre_logits``)."""
        x = global_pool_nd(self.norm(x), self.global_pool)
        return x if pre_logits else apply_channelwise(self.head, x)


def _make_entrypoint(variant: str):
    cfg = REPLKNET_CONFIGS[variant]

    def entrypoint(
        pretrained: bool = False,
        in_chans: int = 3,
        num_classes: int = 1000,
        large_kernel_sizes: Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        small_kernel: int | None | str = "default",
        dw_ratio: float | None = None,
        ffn_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        deploy: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        stem_features: bool | int = False,
        global_pool: str | None = None,
        pretrained_cfg: dict | str | None = None,
    ) -> RepLKNet:
        return build_model(
            RepLKNet, f"replknet_{variant}", pretrained=pretrained, pretrained_cfg=pretrained_cfg,
            features_only=features_only, out_indices=out_indices, stem_features=stem_features,
            global_pool=global_pool,
            large_kernel_sizes=cfg["large_kernel_sizes"] if large_kernel_sizes is None else large_kernel_sizes,
            layers=cfg["layers"] if layers is None else layers,
            channels=cfg["channels"] if channels is None else channels,
            small_kernel=cfg["small_kernel"] if small_kernel == "default" else small_kernel,
            dw_ratio=cfg["dw_ratio"] if dw_ratio is None else dw_ratio,
            ffn_ratio=ffn_ratio,
            in_chans=in_chans,
            num_classes=num_classes,
            drop_path_rate=drop_path_rate,
            deploy=deploy,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = f"replknet_{variant}"
    entrypoint.__doc__ = f"RepLKNet-{variant.upper()}: {cfg}."
    register_cfg(entrypoint.__name__, model_cfg(first_conv="stem.0.conv", classifier="head", license="mit",
                                                paper_ids="arXiv:2203.06717"))
    return register_model(entrypoint)


for _variant in REPLKNET_CONFIGS:
    globals()[f"replknet_{_variant}"] = _make_entrypoint(_variant)
del _variant
