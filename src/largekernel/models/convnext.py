"""ConvNeXt (Liu et al., 2022) in timm's state-dict layout, with engine depthwise convs.

Layout (timm 1.x): ``stem.0`` conv 4x4 s4 + ``stem.1`` LayerNorm2d; ``stages.i.downsample``
(LayerNorm2d + conv 2x2 s2, absent in stage 0); blocks ``stages.i.blocks.j`` with
``conv_dw`` (7x7 depthwise), ``norm`` (LayerNorm, eps 1e-6), ``mlp.fc1``/``mlp.fc2`` and the
layer scale ``gamma``; head ``head.norm`` (LayerNorm2d after global average pooling) and
``head.fc``. The small variants (atto..nano) use ``conv_mlp=True``: the MLP is two 1x1 convs
on NCHW and the block norm is a LayerNorm2d; the others run the MLP channels-last with
``nn.Linear``. timm checkpoints load with ``strict=True`` without key mapping.

With ``mixer=<name>`` the depthwise conv is replaced by :func:`largekernel.nn.mixers.create_mixer`
(still stored as ``conv_dw``). ``largekernel.reparameterize(model)`` folds each layer scale into
``mlp.fc2`` (and reparameterises a swapped-in mixer that supports it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from largekernel.models.base import (
    StemLevel,
    StemStagesMixin,
    apply_channelwise,
    build_stages,
    check_model_args,
    global_pool_nd,
    run_blocks,
    scale_linear_,
    select_indices,  # noqa: F401  (moved to models.base; still importable from here)
)
from largekernel.models.builder import build_model, model_cfg, register_cfg
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.conv import Conv2d
from largekernel.ops.fusion import compute_dtype
from largekernel.nn.layers import DropPath, LayerNorm2d
from largekernel.nn.mixers import MIXERS_NEEDING_SIZE, create_mixer

__all__ = ["ConvNeXt", "ConvNeXtBlock", "ConvNeXtStage"]


_LN_EPS = 1e-6


# ---- helpers shared with largekernel.models.inception_next ---------------------------------
def check_depths_dims(depths: Sequence[int], dims: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate per-stage ``depths`` (>= 0) and ``dims`` (>= 1) of equal, non-zero length."""
    try:
        depths_t, dims_t = tuple(depths), tuple(dims)
    except TypeError:
        raise TypeError(f"depths and dims must be sequences of ints, got {depths!r} and {dims!r}") from None
    if not depths_t or len(depths_t) != len(dims_t):
        raise ValueError(f"depths and dims must be non-empty and of equal length, got {depths_t} and {dims_t}")
    for name, values, low in (("depths", depths_t, 0), ("dims", dims_t, 1)):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
            raise ValueError(f"{name} must hold ints >= {low}, got {values}")
    return depths_t, dims_t


def per_stage(value: object, n: int, name: str) -> tuple:
    """Broadcast a scalar option to ``n`` stages or check a per-stage sequence's length."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must be a scalar or a sequence of {n} values, got {value!r}")
        return tuple(value)
    return (value,) * n


def resolve_ls_init(ls_init_value: float | None, layer_scale_init_value: float | None, default: float) -> float | None:
    """Merge the ``ls_init_value`` (timm) and ``layer_scale_init_value`` (official) aliases.

    ``None`` for both gives ``default``; a value <= 0 disables the layer scale.
    """
    if ls_init_value is not None and layer_scale_init_value is not None and ls_init_value != layer_scale_init_value:
        raise ValueError(
            f"ls_init_value={ls_init_value} and layer_scale_init_value={layer_scale_init_value} are aliases; give one"
        )
    value = ls_init_value if ls_init_value is not None else layer_scale_init_value
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"ls_init_value must be a number >= 0 (0 disables the layer scale), got {value!r}")
    return float(value) if value > 0 else None


def init_weights(model: nn.Module, mixer_attr: str | None = None) -> None:
    """Apply :func:`trunc_normal_init` to ``model``, leaving custom token mixers' own init alone.

    Args:
        model: The network.
        mixer_attr: Attribute name of the blocks' token mixer built by ``create_mixer`` (its
            submodules, e.g. a hyper-kernel MLP, keep their specialised init), or ``None``.
    """
    skip: set[int] = set()
    if mixer_attr is not None:
        for module in model.modules():
            mixer = getattr(module, mixer_attr, None)
            if isinstance(mixer, nn.Module):
                skip.update(id(m) for m in mixer.modules())
    for module in model.modules():
        if id(module) not in skip:
            trunc_normal_init(module)


def stage_mixer_kwargs(
    mixer: str | None,
    mixer_kwargs: dict | None,
    img_size: int | Sequence[int] | None,
    num_stages: int,
) -> list[dict]:
    """Per-stage keyword arguments for ``create_mixer``.

    Mixers in :data:`~largekernel.nn.mixers.MIXERS_NEEDING_SIZE` get ``size=(H_i, W_i)``, the map
    size of stage ``i`` for ``img_size`` inputs (stem /4, then /2 per stage, floored as the convs do).
    """
    if mixer_kwargs is not None and not isinstance(mixer_kwargs, dict):
        raise TypeError(f"mixer_kwargs must be a dict or None, got {type(mixer_kwargs).__name__}")
    if mixer is None:
        if mixer_kwargs:
            raise ValueError("mixer_kwargs given without mixer=")
        return [{} for _ in range(num_stages)]
    base = dict(mixer_kwargs or {})
    if mixer not in MIXERS_NEEDING_SIZE or "size" in base:
        return [dict(base) for _ in range(num_stages)]
    if img_size is None:
        raise ValueError(f"mixer={mixer!r} needs the input size: pass img_size=(H, W) or mixer_kwargs={{'size': ...}}")
    h, w = per_stage(tuple(img_size) if isinstance(img_size, (list, tuple)) else img_size, 2, "img_size")
    h, w = h // 4, w // 4
    out = []
    for i in range(num_stages):
        if i > 0:
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"img_size={img_size} is too small for {num_stages} stages")
        out.append(dict(base, size=(h, w)))
    return out


@torch.no_grad()
def fold_output_scale(layer: nn.Module, scale: torch.Tensor) -> None:
    """``scale * layer(x) == layer'(x)``: scale the output rows of a Linear / 1x1 conv in place."""
    w = layer.weight
    dtype = compute_dtype(w.dtype)
    s = scale.detach().to(dtype)
    w.copy_(w.to(dtype) * s.reshape((-1,) + (1,) * (w.dim() - 1)))
    if layer.bias is not None:
        layer.bias.copy_(layer.bias.to(dtype) * s)


@torch.no_grad()
def fold_bn_into_next(bn: nn.BatchNorm2d, layer: nn.Conv2d) -> None:
    """``layer(BN(x)) == layer'(x)`` for an eval-mode BN followed by a 1x1 conv; edits ``layer`` in place."""
    w = layer.weight
    dtype = compute_dtype(w.dtype)
    std = (bn.running_var.to(dtype) + bn.eps).sqrt()
    gamma = bn.weight.to(dtype) if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.to(dtype) if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    shift = beta - bn.running_mean.to(dtype) * scale
    w_c = w.to(dtype)
    bias = layer.bias.to(dtype) if layer.bias is not None else torch.zeros(w.shape[0], dtype=dtype, device=w.device)
    new_bias = bias + w_c.flatten(1) @ shift
    w.copy_(w_c * scale.reshape(1, -1, 1, 1))
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias.to(w.dtype))
    else:
        layer.bias.copy_(new_bias)


def trunc_normal_init(module: nn.Module) -> None:
    """timm's ConvNeXt/MetaNeXt init: conv and linear weights ~ truncated N(0, 0.02), zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ConvMlp(nn.Module):
    """MLP of two 1x1 convs on NCHW: ``fc1 -> GELU -> drop -> fc2``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1, bias=True)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Mlp(nn.Module):
    """Channels-last MLP: ``Linear -> GELU -> drop -> Linear``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class ConvNeXtBlock(nn.Module):
    """``x + DropPath(gamma * MLP(LN(DWConv(x))))``.

    Args:
        dim: Channels.
        kernel_size: Depthwise kernel size (odd).
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        conv_mlp: Run norm + MLP on NCHW with 1x1 convs (timm's atto..nano) instead of channels-last.
        ls_init_value: Initial layer scale, or ``None`` for no layer scale.
        drop_path: Stochastic-depth probability.
        mixer: Optional :func:`~largekernel.nn.mixers.create_mixer` name replacing the depthwise conv.
        mixer_kwargs: Extra options for ``create_mixer``.

    Example:
        >>> ConvNeXtBlock(32)(torch.randn(1, 32, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        mixer: str | None = None,
        mixer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        if mixer is None:
            if kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be odd, got {kernel_size}")
            self.conv_dw = Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True)
        else:
            self.conv_dw = create_mixer(mixer, dim, kernel_size, **(mixer_kwargs or {}))
        hidden = int(mlp_ratio * dim)
        if conv_mlp:
            self.norm = LayerNorm2d(dim, eps=_LN_EPS)
            self.mlp = ConvMlp(dim, hidden)
        else:
            self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
            self.mlp = Mlp(dim, hidden)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = x.permute(0, 2, 3, 1)
            x = self.mlp(self.norm(x))
            x = x.permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(x) + shortcut

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Inference form: fold the layer scale ``gamma`` into ``mlp.fc2`` (exact; idempotent).

        The state dict then has no ``gamma``. Training afterwards trains the merged weights.
        """
        if self.gamma is not None:
            fold_output_scale(self.mlp.fc2, self.gamma)
            self.gamma = None


class ConvNeXtStage(nn.Module):
    """Optional downsample (LayerNorm2d + conv 2x2 s2) followed by ``depth`` blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        depth: int,
        drop_path_rates: Sequence[float],
        kernel_size: int,
        mlp_ratio: float,
        conv_mlp: bool,
        ls_init_value: float | None,
        mixer: str | None,
        mixer_kwargs: dict,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if in_chs != out_chs or stride > 1:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_chs, eps=_LN_EPS),
                nn.Conv2d(in_chs, out_chs, kernel_size=stride, stride=stride, bias=True),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                ConvNeXtBlock(
                    out_chs, kernel_size, mlp_ratio, conv_mlp, ls_init_value, drop_path_rates[j], mixer, mixer_kwargs
                )
                for j in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, self.downsample(x), self.grad_checkpointing)


class ConvNeXtHead(nn.Module):
    """Global pool -> LayerNorm2d -> flatten -> dropout -> Linear (timm's NormMlpClassifierHead)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.norm = LayerNorm2d(in_features, eps=_LN_EPS)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, global_pool: str = "avg", pre_logits: bool = False) -> torch.Tensor:
        if global_pool:
            x = self.norm(global_pool_nd(x, global_pool)[:, :, None, None]).flatten(1)
        else:  # unpooled: the norm and the classifier act at every position
            x = self.norm(x)
        x = self.drop(x)
        return x if pre_logits else apply_channelwise(self.fc, x)


class ConvNeXt(StemStagesMixin, nn.Module):
    """ConvNeXt backbone and classifier with timm's key layout and model API.

    Args:
        in_chans: Input channels.
        num_classes: Classifier outputs (``0`` = no classifier, ``forward`` returns pooled features).
        depths: Blocks per stage.
        dims: Channels per stage.
        kernel_sizes: Depthwise kernel size, one int or one per stage.
        mlp_ratio: MLP expansion.
        conv_mlp: 1x1-conv MLP on NCHW (timm's atto..nano) instead of channels-last ``nn.Linear``.
        ls_init_value: Initial layer scale (``None`` disables it).
        head_init_scale: Factor applied to the initial classifier weight and bias.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth, linearly increasing over blocks up to this value.
        features_only: Drop the head; ``forward`` returns the stage maps of ``out_indices``.
        out_indices: Stages returned when ``features_only``.
        mixer: Optional :func:`~largekernel.nn.mixers.create_mixer` name replacing every depthwise conv.
        mixer_kwargs: Extra options for ``create_mixer``.
        img_size: Input size; only used to give size-dependent mixers (``"sgconv2d"``) each stage's map size.

    Example:
        >>> model = ConvNeXt(num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        ls_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        mixer: str | None = None,
        mixer_kwargs: dict | None = None,
        img_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        depths, dims = check_depths_dims(depths, dims)
        check_model_args(in_chans, num_classes, drop_path_rate)
        kernel_sizes = per_stage(kernel_sizes, len(depths), "kernel_sizes")
        stage_kwargs = stage_mixer_kwargs(mixer, mixer_kwargs, img_size, len(depths))
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4, bias=True),
            LayerNorm2d(dims[0], eps=_LN_EPS),
        )
        self.stages, entries = build_stages(
            depths, dims, drop_path_rate,
            lambda i, cin, cout, stride, depth, rates: ConvNeXtStage(
                cin, cout, stride, depth, rates, kernel_sizes[i], mlp_ratio, conv_mlp, ls_init_value, mixer,
                stage_kwargs[i],
            ),
        )
        prev = dims[-1]
        self.num_features = self.head_hidden_size = prev
        self.in_chans = in_chans
        self.feature_info = FeatureInfo(entries)
        self.head = ConvNeXtHead(prev, num_classes, drop_rate)

        # custom mixers keep their own init; the plain depthwise conv gets timm's
        init_weights(self, mixer_attr="conv_dw" if mixer not in (None, "dwconv") else None)
        scale_linear_(self.head.fc, head_init_scale)
        if features_only:
            self.as_features(out_indices)

    def _stem_level_specs(self) -> list[StemLevel]:
        # the 4x4 patchify stem has no stride-2 map: the stride-2 level is the pooled input
        return [StemLevel(self.in_chans, 2, "stem", 0, pool_input=True)]


def _ls(ls_init_value: float | None, layer_scale_init_value: float | None) -> float | None:
    return resolve_ls_init(ls_init_value, layer_scale_init_value, default=1e-6)


def _variant(name: str, default_depths: tuple[int, ...], default_dims: tuple[int, ...], default_conv_mlp: bool):
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
        conv_mlp: bool = default_conv_mlp,
        kernel_sizes: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        stem_features: bool | int = False,
        global_pool: str | None = None,
        pretrained_cfg: dict | str | None = None,
        mixer: str | None = None,
        mixer_kwargs: dict | None = None,
        img_size: int | Sequence[int] | None = None,
    ) -> ConvNeXt:
        return build_model(
            ConvNeXt, name, pretrained=pretrained, pretrained_cfg=pretrained_cfg, features_only=features_only,
            out_indices=out_indices, stem_features=stem_features, global_pool=global_pool,
            in_chans=in_chans, num_classes=num_classes, depths=depths, dims=dims, kernel_sizes=kernel_sizes,
            mlp_ratio=mlp_ratio, conv_mlp=conv_mlp, ls_init_value=_ls(ls_init_value, layer_scale_init_value),
            head_init_scale=head_init_scale, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            mixer=mixer, mixer_kwargs=mixer_kwargs, img_size=img_size,
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"ConvNeXt {name.split('_', 1)[1]}: depths {default_depths}, dims {default_dims}"
        f"{', 1x1-conv MLP' if default_conv_mlp else ''} (timm layout).\n\n"
        "``ls_init_value`` and ``layer_scale_init_value`` are aliases (default 1e-6). The generic options "
        "(``features_only``, ``stem_features``, ``global_pool``, ``pretrained_cfg``) are those of "
        ":func:`largekernel.models.builder.build_model`."
    )
    register_cfg(name, model_cfg(first_conv="stem.0", classifier="head.fc", crop_pct=0.95 if default_conv_mlp else 0.875,
                                 license="apache-2.0", paper_ids="arXiv:2201.03545"))
    return register_model(entry)


convnext_atto = _variant("convnext_atto", (2, 2, 6, 2), (40, 80, 160, 320), True)
convnext_femto = _variant("convnext_femto", (2, 2, 6, 2), (48, 96, 192, 384), True)
convnext_pico = _variant("convnext_pico", (2, 2, 6, 2), (64, 128, 256, 512), True)
convnext_nano = _variant("convnext_nano", (2, 2, 8, 2), (80, 160, 320, 640), True)
convnext_tiny = _variant("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768), False)
convnext_small = _variant("convnext_small", (3, 3, 27, 3), (96, 192, 384, 768), False)
convnext_base = _variant("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024), False)
