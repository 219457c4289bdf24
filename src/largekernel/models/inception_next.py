"""InceptionNeXt (Yu et al., 2024; MetaNeXt blocks) in timm's state-dict layout.

Layout (timm 1.x): ``stem.0`` conv 4x4 s4 + ``stem.1`` BatchNorm; ``stages.i.downsample``
(BatchNorm + conv 2x2 s2, absent in stage 0); blocks ``stages.i.blocks.j`` with
``token_mixer`` (:class:`~largekernel.nn.inception_dw.InceptionDWConv2d`: ``dwconv_hw``,
``dwconv_w``, ``dwconv_h``), ``norm`` (BatchNorm), ``mlp.fc1``/``mlp.fc2`` (1x1 convs) and
``gamma``; the MLP head ``head.fc1`` (C -> 3C) -> GELU -> ``head.norm`` (LayerNorm, eps 1e-6)
-> ``head.fc2``. timm checkpoints load with ``strict=True`` without key mapping.

With ``mixer=<name>`` every token mixer is built by :func:`largekernel.nn.mixers.create_mixer`
(still stored as ``token_mixer``) with ``kernel_size = band_kernel_size``.
``largekernel.reparameterize(model)`` folds each block's BatchNorm into ``mlp.fc1`` and its layer
scale into ``mlp.fc2``; the Inception mixers keep their split form, which is faster than one dense
kernel.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from largekernel.models.convnext import (
    ConvMlp,
    check_depths_dims,
    fold_bn_into_next,
    fold_output_scale,
    init_weights,
    per_stage,
    resolve_ls_init,
    stage_mixer_kwargs,
)
from largekernel.models.base import (
    StemLevel,
    StemStagesMixin,
    apply_channelwise,
    build_stages,
    check_model_args,
    global_pool_nd,
    run_blocks,
    scale_linear_,
)
from largekernel.models.builder import build_model, model_cfg, register_cfg
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.inception_dw import InceptionDWConv2d
from largekernel.nn.layers import DropPath
from largekernel.nn.mixers import create_mixer

__all__ = ["MetaNeXt", "MetaNeXtBlock", "MetaNeXtStage"]


class MetaNeXtBlock(nn.Module):
    """``x + DropPath(gamma * MLP(BN(mixer(x))))`` with an Inception depthwise mixer by default.

    Args:
        dim: Channels.
        mlp_ratio: MLP expansion.
        ls_init_value: Initial layer scale, ``None`` for none.
        drop_path: Stochastic-depth probability.
        square_kernel_size: Square kernel of the Inception mixer.
        band_kernel_size: Band length of the Inception mixer (also the ``kernel_size`` of ``mixer``).
        branch_ratio: Channel fraction per Inception branch.
        mixer: Optional :func:`~largekernel.nn.mixers.create_mixer` name replacing the Inception mixer.
        mixer_kwargs: Extra options for ``create_mixer``.

    Example:
        >>> MetaNeXtBlock(32)(torch.randn(1, 32, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        mixer: str | None = None,
        mixer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if mixer is None:
            self.token_mixer = InceptionDWConv2d(dim, square_kernel_size, band_kernel_size, branch_ratio)
        else:
            self.token_mixer = create_mixer(mixer, dim, band_kernel_size, **(mixer_kwargs or {}))
        self.norm = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(x) + shortcut

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Inference form: fold the BN into ``mlp.fc1`` and ``gamma`` into ``mlp.fc2`` (idempotent).

        Exact for the eval-mode block (the BN's running statistics are used). The state dict then
        has no ``norm.*`` / ``gamma``. The Inception mixer keeps its split form (faster than dense).
        """
        if isinstance(self.norm, nn.BatchNorm2d):
            fold_bn_into_next(self.norm, self.mlp.fc1)
            self.norm = nn.Identity()
        if self.gamma is not None:
            fold_output_scale(self.mlp.fc2, self.gamma)
            self.gamma = None


class MetaNeXtStage(nn.Module):
    """Optional downsample (BatchNorm + conv 2x2 s2) followed by ``depth`` MetaNeXt blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        depth: int,
        drop_path_rates: Sequence[float],
        mlp_ratio: float,
        ls_init_value: float | None,
        block_kwargs: dict,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if stride > 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, kernel_size=stride, stride=stride, bias=True),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(out_chs, mlp_ratio, ls_init_value, drop_path_rates[j], **block_kwargs)
                for j in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, self.downsample(x), self.grad_checkpointing)


class MlpHead(nn.Module):
    """GAP -> ``fc1`` (C -> rC) -> GELU -> ``norm`` (LayerNorm) -> dropout -> ``fc2``."""

    def __init__(self, in_features: int, num_classes: int, mlp_ratio: float = 3.0, drop_rate: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * in_features)
        self.hidden_size = hidden
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc2 = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, global_pool: str = "avg", pre_logits: bool = False) -> torch.Tensor:
        # with global_pool="" the MLP head runs at every position (its layers are channels-last)
        x = global_pool_nd(x, global_pool)
        x = apply_channelwise(lambda t: self.drop(self.norm(self.act(self.fc1(t)))), x)
        return x if pre_logits else apply_channelwise(self.fc2, x)


class MetaNeXt(StemStagesMixin, nn.Module):
    """MetaNeXt / InceptionNeXt backbone and classifier with timm's key layout and model API.

    Args:
        in_chans: Input channels.
        num_classes: Classifier outputs (``0`` = forward returns the head's pre-logits).
        depths: Blocks per stage.
        dims: Channels per stage.
        mlp_ratios: MLP expansion, one number or one per stage.
        head_mlp_ratio: Hidden width of the MLP head relative to the last stage's channels.
        ls_init_value: Initial layer scale (``None`` disables it).
        head_init_scale: Factor applied to the initial final classifier weight and bias.
        drop_rate: Dropout in the head.
        drop_path_rate: Stochastic depth, linearly increasing over blocks up to this value.
        square_kernel_size: Inception square kernel.
        band_kernel_size: Inception band length.
        branch_ratio: Inception channel fraction per branch.
        features_only: Drop the head; ``forward`` returns the stage maps of ``out_indices``.
        out_indices: Stages returned when ``features_only``.
        mixer: Optional :func:`~largekernel.nn.mixers.create_mixer` name replacing every Inception mixer.
        mixer_kwargs: Extra options for ``create_mixer``.
        img_size: Input size; only used to give size-dependent mixers (``"sgconv2d"``) each stage's map size.

    Example:
        >>> model = MetaNeXt(num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        mlp_ratios: float | Sequence[float] = (4, 4, 4, 3),
        head_mlp_ratio: float = 3.0,
        ls_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        mixer: str | None = None,
        mixer_kwargs: dict | None = None,
        img_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        depths, dims = check_depths_dims(depths, dims)
        check_model_args(in_chans, num_classes, drop_path_rate)
        mlp_ratios = per_stage(mlp_ratios, len(depths), "mlp_ratios")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        block_kwargs = [
            dict(
                square_kernel_size=square_kernel_size,
                band_kernel_size=band_kernel_size,
                branch_ratio=branch_ratio,
                mixer=mixer,
                mixer_kwargs=kw,
            )
            for kw in stage_mixer_kwargs(mixer, mixer_kwargs, img_size, len(depths))
        ]

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4, bias=True), nn.BatchNorm2d(dims[0])
        )
        self.stages, entries = build_stages(
            depths, dims, drop_path_rate,
            lambda i, cin, cout, stride, depth, rates: MetaNeXtStage(
                cin, cout, stride, depth, rates, mlp_ratios[i], ls_init_value, block_kwargs[i]
            ),
        )
        prev = dims[-1]
        self.num_features = prev
        self.in_chans = in_chans
        self.feature_info = FeatureInfo(entries)
        self.head = MlpHead(prev, num_classes, head_mlp_ratio, drop_rate)
        self.head_hidden_size = self.head.hidden_size

        # custom mixers keep their own init; the Inception and plain depthwise convs get timm's
        init_weights(self, mixer_attr="token_mixer" if mixer not in (None, "dwconv", "inception") else None)
        scale_linear_(self.head.fc2, head_init_scale)
        if features_only:
            self.as_features(out_indices)

    # ---- hooks of the timm model API (StemStagesMixin) -------------------------------------
    def _classifier(self) -> nn.Module:
        return self.head.fc2

    def _stem_level_specs(self) -> list[StemLevel]:
        # the 4x4 patchify stem has no stride-2 map: the stride-2 level is the pooled input
        return [StemLevel(self.in_chans, 2, "stem", 0, pool_input=True)]


def _variant(
    name: str,
    default_depths: tuple[int, ...],
    default_dims: tuple[int, ...],
    default_band: int = 11,
    default_ratio: float = 0.125,
):
    """Create a registered entry point with explicit keyword arguments (no ``**kwargs``)."""

    def entry(
        pretrained: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float | None = None,
        layer_scale_init_value: float | None = None,
        head_init_scale: float = 1.0,
        depths: Sequence[int] = default_depths,
        dims: Sequence[int] = default_dims,
        mlp_ratios: float | Sequence[float] = (4, 4, 4, 3),
        square_kernel_size: int = 3,
        band_kernel_size: int = default_band,
        branch_ratio: float = default_ratio,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        stem_features: bool | int = False,
        global_pool: str | None = None,
        pretrained_cfg: dict | str | None = None,
        mixer: str | None = None,
        mixer_kwargs: dict | None = None,
        img_size: int | Sequence[int] | None = None,
    ) -> MetaNeXt:
        return build_model(
            MetaNeXt, name, pretrained=pretrained, pretrained_cfg=pretrained_cfg, features_only=features_only,
            out_indices=out_indices, stem_features=stem_features, global_pool=global_pool,
            in_chans=in_chans,
            num_classes=num_classes,
            depths=depths,
            dims=dims,
            mlp_ratios=mlp_ratios,
            ls_init_value=resolve_ls_init(ls_init_value, layer_scale_init_value, default=1e-6),
            head_init_scale=head_init_scale,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            square_kernel_size=square_kernel_size,
            band_kernel_size=band_kernel_size,
            branch_ratio=branch_ratio,
            mixer=mixer,
            mixer_kwargs=mixer_kwargs,
            img_size=img_size,
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"InceptionNeXt {name.rsplit('_', 1)[1]}: depths {default_depths}, dims {default_dims}, "
        f"band kernel {default_band}, branch ratio {default_ratio:g} (timm layout).\n\n"
        "``ls_init_value`` and ``layer_scale_init_value`` are aliases (default 1e-6)."
    )
    register_cfg(name, model_cfg(first_conv="stem.0", classifier="head.fc2", license="apache-2.0",
                                 paper_ids="arXiv:2303.16900"))
    return register_model(entry)


inception_next_atto = _variant("inception_next_atto", (2, 2, 6, 2), (40, 80, 160, 320), 9, 0.25)
inception_next_tiny = _variant("inception_next_tiny", (3, 3, 9, 3), (96, 192, 384, 768))
inception_next_small = _variant("inception_next_small", (3, 3, 27, 3), (96, 192, 384, 768))
inception_next_base = _variant("inception_next_base", (3, 3, 27, 3), (128, 256, 512, 1024))
