"""UniRepLKNet (Ding et al., 2024): large-kernel ConvNet with Dilated Reparam Blocks.

Module names follow the official key layout (``downsample_layers``, ``stages``, ``norm``,
``head``; per block ``dwconv``, ``norm``, ``se``, ``pwconv1.1``, ``act.1``, ``pwconv2.0/.2``,
``gamma``), so official training- and deploy-form checkpoints load without key mapping.

``spatial_dims`` (1, 2 or 3) builds the same network for sequences ``(N, C, L)``, images
``(N, C, H, W)`` or volumes ``(N, C, D, H, W)``: every convolution, BatchNorm and pooling takes the
matching dimensionality, and the state-dict keys are the same in every dimension (only the
kernel shapes differ), so a 1-D or 3-D model reparameterises, saves and loads like a 2-D one.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from largekernel.models.base import (
    IndexedStagesMixin,
    linear_head_like,
    linspace_rates,
    run_blocks,
    scale_linear_,
)
from largekernel.models.base import StemLevel, apply_channelwise, global_pool_nd
from largekernel.models.builder import build_model, model_cfg, register_cfg
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.conv import Conv1d, Conv2d, Conv3d
from largekernel.nn.dilated_reparam import DilatedReparamConv
from largekernel.ops.fusion import compute_dtype, fuse_conv_bn
from largekernel.nn.layers import GRN, DropPath, LayerNorm2d, SqueezeExcite

__all__ = ["UniRepLKNet", "UniRepLKNetBlock", "default_kernel_sizes", "check_spatial_dims", "UNIREPLKNET_CONFIGS"]

logger = logging.getLogger(__name__)


#: name suffix -> (depths, dims)
UNIREPLKNET_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "a": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "f": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "p": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "n": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "t": ((3, 3, 18, 3), (80, 160, 320, 640)),
    "s": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "b": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "l": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xl": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}

_DEFAULT_KERNELS: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3, 3), (13, 13), (13,) * 6, (13, 13)),
    (2, 2, 8, 2): ((3, 3), (13, 13), (13,) * 8, (13, 13)),
    (3, 3, 18, 3): ((3, 3, 3), (13, 13, 13), (13, 3) * 9, (13, 13, 13)),
    (3, 3, 27, 3): ((3, 3, 3), (13, 13, 13), (13, 3, 3) * 9, (13, 13, 13)),
}


def default_kernel_sizes(depths: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The published per-block kernel sizes for ``depths``.

    Raises:
        ValueError: If ``depths`` is not one of the published configurations.
    """
    key = tuple(int(d) for d in depths)
    if key not in _DEFAULT_KERNELS:
        raise ValueError(
            f"no default kernel_sizes for depths={key}; pass kernel_sizes explicitly "
            f"(known depths: {sorted(_DEFAULT_KERNELS)})"
        )
    return _DEFAULT_KERNELS[key]


#: spatial dims -> (engine conv used for the depthwise mixers, torch conv of the stem, BatchNorm)
_ENGINE_CONV = {1: Conv1d, 2: Conv2d, 3: Conv3d}
_TORCH_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INPUT_LAYOUT = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def check_spatial_dims(spatial_dims: int) -> int:
    """Validate ``spatial_dims`` (1, 2 or 3) and return it.

    Raises:
        ValueError: If it is not one of 1, 2, 3.

    Example:
        >>> check_spatial_dims(3)
        3
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
        raise ValueError(
            f"spatial_dims must be 1 (sequences), 2 (images) or 3 (volumes/video), got {spatial_dims!r}"
        )
    return int(spatial_dims)


class _InputDimsCheck:
    """Forward pre-hook of the first stem conv: a clear error for an input of the wrong rank.

    A hook (not code in ``forward``) so the check holds on every entry point (``forward``,
    ``forward_features``, ``forward_intermediates``); it survives ``accelerate()`` (which re-classes
    the conv in place) and, holding only an int, deep copies and pickles.
    """

    def __init__(self, spatial_dims: int):
        self.spatial_dims = spatial_dims

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        if x.dim() != self.spatial_dims + 2:
            hint = (
                f"build the model with spatial_dims={x.dim() - 2} or reshape the input"
                if 1 <= x.dim() - 2 <= 3
                else "reshape the input"
            )
            raise ValueError(
                f"input x must be {_INPUT_LAYOUT[self.spatial_dims]} for a UniRepLKNet with "
                f"spatial_dims={self.spatial_dims}, got shape {tuple(x.shape)}; {hint}"
            )


class _ToChannelsLast(nn.Module):
    """NC* -> N*C. 1-D input gets a singleton axis, ``(N, 1, L, C)``, so that GRN's parameters keep
    their official ``(1, 1, 1, C)`` shape (and broadcast correctly) in every dimension."""

    def __init__(self, spatial_dims: int = 2):
        super().__init__()
        self.spatial_dims = spatial_dims  # a constant, not x.dim(): keeps the block FX-traceable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.movedim(1, -1)
        return y.unsqueeze(1) if self.spatial_dims == 1 else y


class _ToChannelsFirst(nn.Module):
    """Inverse of :class:`_ToChannelsLast` for ``spatial_dims`` dimensions."""

    def __init__(self, spatial_dims: int = 2):
        super().__init__()
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 1:
            x = x.squeeze(1)
        return x.movedim(-1, 1)


class UniRepLKNetBlock(nn.Module):
    """UniRepLKNet block: dwconv -> BN -> SE -> Linear -> GELU -> GRN -> Linear -> BN -> scale, residual.

    Args:
        dim: Channels.
        kernel_size: Mixer kernel: ``>= 7`` Dilated Reparam Block (or ``mixer``), 3/5 plain
            depthwise conv, 0 identity.
        drop_path: Stochastic-depth rate of the residual branch.
        layer_scale_init_value: Initial layer scale; ``None`` or ``<= 0`` disables it.
        deploy: Build the fused (inference) form directly.
        ffn_factor: Hidden width multiplier of the FFN.
        mixer: Name for :func:`largekernel.nn.mixers.create_mixer` used instead of the DRB for
            ``kernel_size >= 7`` (2-D only).
        spatial_dims: 1 (sequences ``(N, C, L)``), 2 (images) or 3 (volumes ``(N, C, D, H, W)``).

    Example:
        >>> UniRepLKNetBlock(16, 13)(torch.randn(1, 16, 9, 9)).shape
        torch.Size([1, 16, 9, 9])
        >>> UniRepLKNetBlock(16, 13, spatial_dims=1)(torch.randn(1, 16, 50)).shape
        torch.Size([1, 16, 50])
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        deploy: bool = False,
        ffn_factor: int = 4,
        mixer: str | None = None,
        spatial_dims: int = 2,
    ):
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        if mixer is not None and spatial_dims != 2:
            raise ValueError(f"mixer={mixer!r} is only available with spatial_dims=2, got spatial_dims={spatial_dims}")
        self.spatial_dims = spatial_dims
        if kernel_size == 0:
            self.dwconv: nn.Module = nn.Identity()
        elif kernel_size >= 7 and mixer is not None:
            from largekernel.nn.mixers import create_mixer  # lazy: optional operator zoo

            self.dwconv = create_mixer(mixer, dim, kernel_size)
        elif kernel_size >= 7:
            self.dwconv = DilatedReparamConv(dim, kernel_size, ndim=spatial_dims, deploy=deploy)
        elif kernel_size in (3, 5):
            self.dwconv = _ENGINE_CONV[spatial_dims](
                dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy
            )
        else:
            raise ValueError(f"kernel_size must be 0, 3, 5 or >= 7 (DRB table), got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.mixer = mixer
        # a foldable BN exists unless deployed into a conv; a foreign mixer keeps it in deploy form
        # too, since there is no conv to fold it into. The official code has no BN after a
        # kernel-0 (identity) mixer, in either form.
        foldable = kernel_size in (3, 5) or (kernel_size >= 7 and mixer is None)
        if kernel_size == 0 or (deploy and foldable):
            self.norm: nn.Module = nn.Identity()
        else:
            self.norm = _BATCH_NORM[spatial_dims](dim)
        self.se = SqueezeExcite(dim, dim // 4)
        ffn_dim = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(_ToChannelsLast(spatial_dims), nn.Linear(dim, ffn_dim))
        self.act = nn.Sequential(nn.GELU(), GRN(ffn_dim, use_bias=not deploy))
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim), _ToChannelsFirst(spatial_dims))
        else:
            self.pwconv2 = nn.Sequential(
                nn.Linear(ffn_dim, dim, bias=False), _ToChannelsFirst(spatial_dims), _BATCH_NORM[spatial_dims](dim)
            )
        use_gamma = not deploy and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value))) if use_gamma else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma.view((1, -1) + (1,) * self.spatial_dims)
        return self.drop_path(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold BNs, GRN beta and the layer scale into convs/linears (official deploy layout). Idempotent."""
        if hasattr(self.dwconv, "reparameterize"):
            self.dwconv.reparameterize()
        # with a foreign mixer the BN stays (deploy=True builds it the same way, so layouts agree)
        is_bn = isinstance(self.norm, nn.modules.batchnorm._BatchNorm)
        if is_bn and (self.mixer is None or self.kernel_size < 7):
            conv = None
            if isinstance(self.dwconv, DilatedReparamConv) and self.dwconv.deploy:
                conv, owner, attr = self.dwconv.lk_origin, self.dwconv, "lk_origin"
            elif isinstance(self.dwconv, _TORCH_CONV[self.spatial_dims]):
                conv, owner, attr = self.dwconv, self, "dwconv"
            if conv is not None:
                w, b = fuse_conv_bn(conv.weight, conv.bias, self.norm)
                fused = _ENGINE_CONV[self.spatial_dims](
                    conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, device=w.device, dtype=w.dtype,
                )
                fused.weight.copy_(w)
                fused.bias.copy_(b)
                setattr(owner, attr, fused)
                self.norm = nn.Identity()
        if len(self.pwconv2) == 3:
            linear, bn = self.pwconv2[0], self.pwconv2[2]
            grn = self.act[1]
            wdtype = linear.weight.dtype
            cd = compute_dtype(wdtype)
            weight = linear.weight.to(cd)
            bias = (
                linear.bias.to(cd)
                if linear.bias is not None
                else torch.zeros(weight.shape[0], dtype=cd, device=weight.device)
            )
            if grn.beta is not None:
                # GRN adds beta after the normalisation; through the linear it is a constant W @ beta
                bias = bias + weight @ grn.beta.reshape(-1).to(cd)
                grn.beta = None
            w2, b2 = fuse_conv_bn(weight, bias, bn)
            if self.gamma is not None:
                scale = self.gamma.to(cd)
                w2, b2 = w2 * scale[:, None], b2 * scale
                self.gamma = None
            new = nn.Linear(linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=wdtype)
            new.weight.copy_(w2.to(wdtype))
            new.bias.copy_(b2.to(wdtype))
            self.pwconv2 = nn.Sequential(new, self.pwconv2[1])


class UniRepLKNet(IndexedStagesMixin, nn.Module):
    """UniRepLKNet classifier / backbone for sequences, images or volumes (official key layout).

    Args:
        in_chans: Input channels.
        num_classes: Classes of the linear head (0 = no head, pooled features).
        depths: Blocks per stage (4 stages).
        dims: Channels per stage.
        kernel_sizes: One sequence per stage with one kernel per block (0 = identity mixer);
            default: the published choice for ``depths``.
        drop_path_rate: Final stochastic-depth rate (linear over blocks).
        layer_scale_init_value: Initial layer scale.
        head_init_scale: Multiplier of the initial head weight and bias.
        deploy: Build the fused inference form directly.
        features_only: Drop the head; ``forward`` returns the stage maps of ``out_indices``.
        out_indices: Stages returned with ``features_only``.
        mixer: Optional name of a spatial mixer (``largekernel.nn.mixers.create_mixer``) used in
            blocks with kernel ``>= 7`` instead of the Dilated Reparam Block.
        stem_stride: Down-sampling of the stem: 4 (the published design), 2 or 1. Smaller strides
            keep more resolution for small images (at 32 px a stride-4 stem leaves 8x8 maps);
            the stage reductions become ``stem_stride * 2**i``. The checkpoint layout is unchanged.
        spatial_dims: 1 for sequences ``(N, in_chans, L)`` (audio features, time series), 2 for
            images (the published network), 3 for volumes or video ``(N, in_chans, D, H, W)``.
            Feature maps, reductions and reparameterisation work the same in every dimension.

    Example:
        >>> m = UniRepLKNet(num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
        ...                 kernel_sizes=((3,), (7,), (7,), (0,)))
        >>> m(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
        >>> seq = UniRepLKNet(in_chans=1, num_classes=2, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
        ...                   kernel_sizes=((13,), (13,), (7,), (3,)), spatial_dims=1)
        >>> seq(torch.randn(4, 1, 150)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        deploy: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        mixer: str | None = None,
        stem_stride: int = 4,
        spatial_dims: int = 2,
    ):
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        self.spatial_dims = spatial_dims = check_spatial_dims(spatial_dims)
        if mixer is not None and spatial_dims != 2:
            raise ValueError(f"mixer={mixer!r} is only available with spatial_dims=2, got spatial_dims={spatial_dims}")
        if stem_stride not in (1, 2, 4) or isinstance(stem_stride, bool):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride!r}")
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims must have 4 entries, got depths={depths}, dims={dims}")
        if any(not isinstance(d, int) or d < 0 for d in depths):
            raise ValueError(f"depths must be non-negative ints, got {depths}")
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise ValueError(f"dims must be positive ints, got {dims}")
        if not isinstance(in_chans, int) or in_chans <= 0:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if kernel_sizes is None:
            kernel_sizes = default_kernel_sizes(depths)
        kernel_sizes = tuple(tuple(int(k) for k in ks) for ks in kernel_sizes)
        if len(kernel_sizes) != 4 or any(len(ks) != d for ks, d in zip(kernel_sizes, depths)):
            raise ValueError(
                f"kernel_sizes must have one entry per block of each stage (depths={depths}), got {kernel_sizes}"
            )
        self.depths, self.dims, self.kernel_sizes = depths, dims, kernel_sizes
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.grad_checkpointing = False

        self.stem_stride = stem_stride
        conv = _TORCH_CONV[spatial_dims]
        stem = nn.Sequential(
            conv(in_chans, dims[0] // 2, 3, 1 if stem_stride == 1 else 2, 1),
            LayerNorm2d(dims[0] // 2, eps=1e-6),
            nn.GELU(),
            conv(dims[0] // 2, dims[0], 3, 2 if stem_stride == 4 else 1, 1),
            LayerNorm2d(dims[0], eps=1e-6),
        )
        stem[0].register_forward_pre_hook(_InputDimsCheck(spatial_dims))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(conv(dims[i], dims[i + 1], 3, 2, 1), LayerNorm2d(dims[i + 1], eps=1e-6))
            )
        rates = linspace_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            blocks = [
                UniRepLKNetBlock(
                    dims[i], kernel_sizes[i][j], rates[cur + j], layer_scale_init_value, deploy, mixer=mixer,
                    spatial_dims=spatial_dims,
                )
                for j in range(depths[i])
            ]
            self.stages.append(nn.Sequential(*blocks))
            cur += depths[i]

        self.features_only = features_only
        self._feature_info = FeatureInfo(
            [dict(num_chs=dims[i], reduction=stem_stride * 2**i, module=f"stages.{i}") for i in range(4)]
        )
        if features_only:
            self.feature_info = self._feature_info.select(out_indices)
            self.out_indices = self.feature_info.out_indices
            self.norm = None
            self.head = None
        else:
            self.feature_info = self._feature_info
            self.out_indices = tuple(range(4))
            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        # operators from the mixer zoo keep their own initialisation
        foreign = set()
        if mixer is not None:
            for stage in self.stages:
                for block in stage:
                    if not isinstance(block.dwconv, (nn.Identity, DilatedReparamConv, nn.Conv2d)):
                        foreign.update(id(m) for m in block.dwconv.modules())
        for m in self.modules():
            if id(m) not in foreign:
                self._init_weights(m)
        scale_linear_(self.head, head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ----- timm contract -------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (torch.utils.checkpoint) to save memory."""
        self.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed (layer scales, GRN, norms, biases)."""
        names = set()
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim <= 1 or leaf in ("gamma", "beta"):
                names.add(name)
        return names

    # hooks of largekernel.models.base.TimmModelMixin (reset_classifier, forward_head, stem levels)
    def _stem(self) -> nn.Sequential:
        return self.downsample_layers[0]

    def _stem_level_specs(self) -> list[StemLevel]:
        stride = 1 if self.stem_stride == 1 else 2
        return [StemLevel(self.dims[0] // 2, stride, "downsample_layers.0.2", 3)]

    def _downsample_convs(self) -> dict[int, nn.Module]:
        return {i: self.downsample_layers[i][0] for i in range(1, 4)}

    def _drop_head(self) -> None:
        self.norm = None
        self.head = None

    def _reset_head(self, num_classes: int) -> None:
        """Replace the head with a fresh ``num_classes`` linear layer (0 = identity)."""
        ref = self.norm.weight
        self.head = linear_head_like(self.num_features, num_classes, ref)
        if isinstance(self.head, nn.Linear):
            self._init_weights(self.head)

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        # the stem (downsample_layers[0]) is run by the mixin, which may expose its stride-2 map
        x = x if i == 0 else self.downsample_layers[i](x)
        return run_blocks(self.stages[i], x, self.grad_checkpointing)

    def _forward_head(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        """Global pool (``global_pool``) -> LayerNorm -> Linear (skipped with ``pre_logits``)."""
        x = apply_channelwise(self.norm, global_pool_nd(x, self.global_pool))
        return x if pre_logits else apply_channelwise(self.head, x)


def _make_entrypoint(variant: str):
    def entrypoint(
        pretrained: bool = False,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] | None = None,
        dims: Sequence[int] | None = None,
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        deploy: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        mixer: str | None = None,
        stem_stride: int = 4,
        spatial_dims: int = 2,
        stem_features: bool | int = False,
        global_pool: str | None = None,
        pretrained_cfg: dict | str | None = None,
    ) -> UniRepLKNet:
        d0, c0 = UNIREPLKNET_CONFIGS[variant]
        # generic options (features_only, stem levels, pooling, configs, weights): models.builder
        return build_model(
            UniRepLKNet, f"unireplknet_{variant}", pretrained=pretrained, pretrained_cfg=pretrained_cfg,
            features_only=features_only, out_indices=out_indices, stem_features=stem_features,
            global_pool=global_pool,
            in_chans=in_chans,
            num_classes=num_classes,
            depths=d0 if depths is None else depths,
            dims=c0 if dims is None else dims,
            kernel_sizes=kernel_sizes,
            drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value,
            head_init_scale=head_init_scale,
            deploy=deploy,
            mixer=mixer,
            stem_stride=stem_stride,
            spatial_dims=spatial_dims,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = f"unireplknet_{variant}"
    depths, dims = UNIREPLKNET_CONFIGS[variant]
    entrypoint.__doc__ = (
        f"UniRepLKNet-{variant.upper()}: depths {depths}, dims {dims}; spatial_dims=1/2/3 for sequences, "
        "images or volumes."
    )
    register_cfg(entrypoint.__name__, model_cfg(first_conv="downsample_layers.0.0", classifier="head",
                                                crop_pct=1.0, license="apache-2.0", paper_ids="arXiv:2311.15599"))
    return register_model(entrypoint)


for _variant in UNIREPLKNET_CONFIGS:
    globals()[f"unireplknet_{_variant}"] = _make_entrypoint(_variant)
del _variant
