"""A masked ("sparse") forward for any ``features_only`` backbone, SparK-style, without sparse kernels.

Sparse convolution is emulated on dense tensors: the input is zeroed at hidden patches, and every
layer that could put something non-zero there (a conv's bias or its reach into visible
neighbours, a norm's bias, a linear's bias) has its output re-masked. Layers that pool over space
are made to pool over visible positions only:

* ``BatchNorm`` uses the batch statistics (and updates its running statistics) of the visible
  positions only, as if the hidden positions did not exist;
* ``GroupNorm`` and squeeze-excitation use per-image statistics of the visible positions.

Self-attention (LSNet's last stage) is not re-written: its hidden keys and values are zero, so
hidden patches add nothing to the attended values, but they still take a share of the softmax
(through the position bias) - no leakage, only a slightly different normalisation than a truly
sparse attention.

So the visible outputs are those of a submanifold sparse network on the visible patches, and they
cannot depend on what is under the hidden patches. The conversion is in place and keeps every
parameter, buffer and state-dict key; without an active mask the layers are the dense originals.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.nn.layers import GRN, LayerNorm2d, SqueezeExcite
from largekernel.pretrain.masking import MaskContext

__all__ = ["SparseEncoder", "sparsify", "check_backbone", "backbone_stride"]

log = logging.getLogger(__name__)

_CTX_ATTR = "_lk_mask_ctx"


def _ctx(module: nn.Module) -> MaskContext | None:
    ctx = getattr(module, _CTX_ATTR, None)
    return ctx if ctx is not None and ctx.mask is not None else None


class _SparseBatchNorm:
    """BatchNorm over the visible positions only (statistics, running averages and output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = _ctx(self)
        if ctx is None or x.dim() != 4:
            return super().forward(x)
        keep = ctx.at(x.shape[-2:])[:, 0]  # (N, H, W)
        nhwc = x.permute(0, 2, 3, 1)
        visible = nhwc[keep]  # (V, C): one "sample" per visible position
        # the original BN on (V, C, 1, 1): its statistics are exactly over the visible positions,
        # and momentum / num_batches_tracked / eval mode behave as in the dense layer
        y = super().forward(visible[:, :, None, None])[:, :, 0, 0]
        out = nhwc.new_zeros(nhwc.shape)
        out[keep] = y
        return out.permute(0, 3, 1, 2)


class _SparseGroupNorm:
    """GroupNorm whose per-image, per-group statistics cover the visible positions only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = _ctx(self)
        if ctx is None or x.dim() != 4:
            return super().forward(x)
        n, c, h, w = x.shape
        g = self.num_groups
        m = ctx.at((h, w)).to(x.dtype).view(n, 1, 1, h, w)
        xg = x.view(n, g, c // g, h, w)
        count = m.sum(dim=(2, 3, 4), keepdim=True) * (c // g)
        mean = (xg * m).sum(dim=(2, 3, 4), keepdim=True) / count
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3, 4), keepdim=True) / count
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).view(n, c, h, w)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return ctx.apply(y)


class _SparseSqueezeExcite:
    """Squeeze-excitation whose squeeze is the mean over the visible positions.

    Works for the two layouts in the zoo: ``down``/``up`` (UniRepLKNet) and ``fc1``/``fc2`` (LSNet).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = _ctx(self)
        if ctx is None or x.dim() != 4:
            return super().forward(x)
        m = ctx.at(x.shape[-2:]).to(x.dtype)
        s = (x * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True)
        first, second = (self.down, self.up) if hasattr(self, "down") else (self.fc1, self.fc2)
        return ctx.apply(x * torch.sigmoid(second(F.relu(first(s)))))


def _is_squeeze_excite(module: nn.Module) -> bool:
    if isinstance(module, SqueezeExcite):
        return True
    # LSNet's own SE (official key layout fc1/fc2), recognised by name and structure
    return type(module).__name__ == "SqueezeExcite" and all(
        isinstance(getattr(module, a, None), nn.Conv2d) for a in ("fc1", "fc2"))


_SPARSE_CLASSES: dict[type, type] = {}


def _swap_class(module: nn.Module, mixin: type) -> None:
    """Re-class ``module`` to a sparse subclass of its own class (parameters and keys unchanged)."""
    cls = type(module)
    if issubclass(cls, mixin):
        return
    sparse = _SPARSE_CLASSES.get(cls)
    if sparse is None:
        sparse = _SPARSE_CLASSES[cls] = type(f"Sparse{cls.__name__}", (mixin, cls), {"__module__": __name__})
    module.__class__ = sparse


def _remask_hook(channels_last: bool):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        ctx = _ctx(module)
        return output if ctx is None else ctx.apply(output, channels_last)

    return hook


def _check_2d(backbone: nn.Module, name: str) -> None:
    if not any(isinstance(m, nn.Conv2d) for m in backbone.modules()):
        raise ValueError(f"backbone {name!r} is not a 2-D image backbone (it has no Conv2d); masked "
                         f"pre-training supports image backbones (UniRepLKNet, ConvNeXt, InceptionNeXt, "
                         f"RepLKNet, LSNet)")


def sparsify(backbone: nn.Module, ctx: MaskContext) -> list:
    """Convert ``backbone`` in place for masked forwards driven by ``ctx``; returns the hook handles.

    Convs, linears, LayerNorms and GRNs get a forward hook that re-masks their output; BatchNorm,
    GroupNorm and squeeze-excitation are re-classed to the visible-only versions.
    Modules inside a squeeze-excitation act on pooled vectors and are left alone.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
        >>> ctx = MaskContext(); _ = sparsify(net, ctx)
        >>> type(net[1]).__name__
        'SparseBatchNorm2d'
    """
    pooled: set[int] = set()
    for module in backbone.modules():
        if _is_squeeze_excite(module):
            pooled.update(id(m) for m in module.modules() if m is not module)
    handles = []
    for module in backbone.modules():
        if id(module) in pooled:
            continue
        setattr(module, _CTX_ATTR, ctx)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            _swap_class(module, _SparseBatchNorm)
        elif isinstance(module, nn.GroupNorm):
            _swap_class(module, _SparseGroupNorm)
        elif _is_squeeze_excite(module):
            _swap_class(module, _SparseSqueezeExcite)
        elif isinstance(module, (nn.modules.conv._ConvNd, LayerNorm2d)):
            handles.append(module.register_forward_hook(_remask_hook(channels_last=False)))
        elif isinstance(module, (nn.Linear, nn.LayerNorm, GRN)):
            # 4-D inputs of these are channels-last (N, H, W, C) inside ConvNeXt/UniRepLKNet blocks
            handles.append(module.register_forward_hook(_remask_hook(channels_last=True)))
    return handles


def check_backbone(backbone: nn.Module) -> None:
    """Raise a ``ValueError`` unless ``backbone`` is a ``features_only`` model with ``feature_info``."""
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
    name = (getattr(backbone, "largekernel_config", None) or {}).get("name", type(backbone).__name__)
    if not getattr(backbone, "features_only", False) or getattr(backbone, "feature_info", None) is None:
        raise ValueError(
            f"backbone {name!r} was not built with features_only=True: masked pre-training needs the "
            f"multi-scale feature maps; build it with largekernel.create_model({name!r}, features_only=True)")
    _check_2d(backbone, name)


def backbone_stride(backbone: nn.Module) -> int:
    """The stride of the deepest selected feature map (the mask grid's cell size in pixels)."""
    return int(max(backbone.feature_info.reduction()))


class SparseEncoder(nn.Module):
    """Wraps a ``features_only`` backbone so that ``forward(x, mask)`` is a masked (sparse) forward.

    Args:
        backbone: A model built with ``features_only=True`` (any family in the registry). It is
            converted in place by :func:`sparsify`; ``encoder.backbone.state_dict()`` keeps the
            backbone's keys, so the weights load into an ordinary model.

    Example:
        >>> import largekernel
        >>> bb = largekernel.create_model("convnext_atto", features_only=True, in_chans=1)
        >>> enc = SparseEncoder(bb)
        >>> x = torch.randn(2, 1, 64, 64)
        >>> mask = torch.rand(2, 1, 2, 2) > 0.5
        >>> [f.shape[-1] for f in enc(x, mask)]
        [16, 8, 4, 2]
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        check_backbone(backbone)
        self.backbone = backbone
        self.channels: list[int] = list(backbone.feature_info.channels())
        self.strides: list[int] = [int(r) for r in backbone.feature_info.reduction()]
        if self.strides != sorted(self.strides):
            raise ValueError(f"feature maps must be ordered shallow to deep, got strides {self.strides}")
        self.stride = self.strides[-1]
        self._ctx = MaskContext()
        self._handles = sparsify(backbone, self._ctx)

    def grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """The ``(h, w)`` mask grid for ``(H, W)`` images.

        Raises:
            ValueError: If ``H`` or ``W`` is not divisible by the backbone's final stride.
        """
        H, W = int(image_size[0]), int(image_size[1])
        if H % self.stride or W % self.stride:
            raise ValueError(f"image size {H}x{W} is not divisible by the backbone's final stride "
                             f"{self.stride} (feature strides {self.strides}); resize or crop the images")
        return H // self.stride, W // self.stride

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Feature maps (shallow to deep) of ``x`` seen through ``mask``.

        Args:
            x: Images ``(N, C, H, W)``; ``H`` and ``W`` divisible by :attr:`stride`.
            mask: Boolean ``(N, 1, H / stride, W / stride)``, ``True`` = visible; ``None`` runs the
                ordinary dense forward.

        Returns:
            One map per stage, zero at hidden positions.
        """
        if x.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        grid = self.grid(x.shape[-2:])
        if mask is None:
            return list(self.backbone(x))
        if tuple(mask.shape) != (x.shape[0], 1, *grid):
            raise ValueError(f"mask must have shape {(x.shape[0], 1, *grid)} for images of shape "
                             f"{tuple(x.shape)}, got {tuple(mask.shape)}")
        with self._ctx.active(mask.to(x.device)) as ctx:
            feats = self.backbone(ctx.apply(x))
            # the last op of a stage may be pointwise with a bias-free path; mask once more for safety
            return [ctx.apply(f) for f in feats]
