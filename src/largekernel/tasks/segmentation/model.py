"""``SegmentationModel``: any ``features_only`` backbone + a U-Net / UNet++ decoder + class heads."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from largekernel.tasks.segmentation.backbone import (
    ENCODER_NAME,
    backbone_channels_reductions,
    backbone_spatial_dims,
    build_backbone,
)
from largekernel.tasks.segmentation.decoders import UNetDecoder, UNetPlusPlusDecoder, upsample_to
from largekernel.tasks.segmentation.layers import ConvNormAct, conv_nd
from largekernel.tasks.segmentation.padding import crop_to, pad_to_multiple

__all__ = ["SEGMENTATION_MODEL_NAME", "DECODERS", "SegmentationModel", "build_segmentation_model"]

log = logging.getLogger(__name__)

#: ``largekernel_config["name"]`` of segmentation models (how checkpoints recognise them).
SEGMENTATION_MODEL_NAME = "segmentation"
DECODERS = {"unet": UNetDecoder, "unetpp": UNetPlusPlusDecoder}


class SegmentationModel(nn.Module):
    """Dense prediction on any ``features_only`` backbone, in 1-D, 2-D or 3-D, at any input size.

    The input is padded at its end (edge replication) to a multiple of the backbone's largest
    reduction and the logits are cropped back, so odd sizes work. When the backbone's finest
    feature map is coarser than the input, a small full-resolution stem (``stem_channels``) adds
    a skip connection at reduction 1 so the masks keep fine detail.

    Args:
        backbone: A module returning a list of feature maps, with ``feature_info``.
        num_classes: Output classes.
        decoder: ``"unet"`` or ``"unetpp"``.
        decoder_channels: Channels of the decoder nodes per level, finest first (including the
            stem level when present).
        deep_supervision: In training mode also return auxiliary logits (upsampled to the input
            size) after the main ones, as a list; eval mode always returns one tensor.
        spatial_dims: Spatial dims of the inputs (default: the backbone's).
        in_chans: Input channels (for the stem; default: read from the backbone's first conv).
        stem_channels: Channels of the full-resolution skip (0: none).

    Example:
        >>> from largekernel.tasks.segmentation.encoder import LKEncoder
        >>> model = SegmentationModel(LKEncoder(2, 1, depths=(1, 1, 1, 1)), num_classes=3).eval()
        >>> model(torch.randn(2, 1, 45, 37)).shape
        torch.Size([2, 3, 45, 37])
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, decoder: str = "unet",
                 decoder_channels: Sequence[int] | None = None, deep_supervision: bool = False,
                 spatial_dims: int | None = None, in_chans: int | None = None,
                 stem_channels: int = 16) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"deep_supervision must be true or false, got {deep_supervision!r}")
        if not isinstance(stem_channels, int) or stem_channels < 0:
            raise ValueError(f"stem_channels must be a non-negative int, got {stem_channels!r}")
        channels, reductions = backbone_channels_reductions(backbone)
        inferred = backbone_spatial_dims(backbone)
        if spatial_dims is None:
            if inferred is None:
                raise ValueError("cannot tell the backbone's spatial dims; pass spatial_dims")
            spatial_dims = inferred
        if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        if inferred is not None and inferred != spatial_dims:
            raise ValueError(f"backbone is {inferred}-D but the decoder has spatial_dims={spatial_dims}: "
                             f"the backbone's convolutions must have {spatial_dims} spatial dims")
        self.backbone = backbone
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.stride = max(reductions)
        if in_chans is None:
            in_chans = _first_conv_in_channels(backbone)
        self.stem: nn.Module | None = None
        if stem_channels and reductions[0] > 1:
            self.stem = nn.Sequential(ConvNormAct(spatial_dims, in_chans, stem_channels),
                                      ConvNormAct(spatial_dims, stem_channels, stem_channels))
            channels = [stem_channels] + channels
        self.decoder = DECODERS[decoder](spatial_dims, channels, decoder_channels)
        out_ch = self.decoder.out_channels
        self.head = conv_nd(spatial_dims, out_ch[0], num_classes, 1)
        self.aux_heads = nn.ModuleList(
            [conv_nd(spatial_dims, c, num_classes, 1) for c in out_ch[1:]] if deep_supervision else [])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Forward to the backbone (the decoder is shallow)."""
        setter = getattr(self.backbone, "set_grad_checkpointing", None)
        if setter is None:
            raise ValueError(f"backbone {type(self.backbone).__name__} does not support grad_checkpointing")
        setter(enable)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"x must be N x C x {self.spatial_dims} spatial dims for this "
                             f"{self.spatial_dims}-D model, got shape {tuple(x.shape)}")
        padded, size = pad_to_multiple(x, self.stride)
        features = list(self.backbone(padded))
        levels = ([self.stem(padded)] if self.stem is not None else []) + features
        nodes = self.decoder(levels)
        full = padded.shape[2:]
        main = crop_to(upsample_to(self.head(nodes[0]), full), size)
        if not (self.training and self.deep_supervision):
            return main
        aux = [crop_to(upsample_to(head(node), full), size) for head, node in zip(self.aux_heads, nodes[1:])]
        return [main] + aux


def _first_conv_in_channels(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    raise ValueError("cannot read the backbone's input channels; pass in_chans")


def build_segmentation_model(backbone: str = ENCODER_NAME, *, num_classes: int, in_chans: int = 1,
                             spatial_dims: int = 2, out_indices: Sequence[int] | None = None,
                             backbone_kwargs: dict[str, Any] | None = None, decoder: str = "unet",
                             decoder_channels: Sequence[int] | None = None, deep_supervision: bool = False,
                             stem_channels: int = 16) -> SegmentationModel:
    """Build a backbone by name and wrap it in a :class:`SegmentationModel`.

    The returned model carries ``largekernel_config`` (name ``"segmentation"`` and these
    arguments), so checkpoints record how to rebuild it.

    Args:
        backbone: ``"lk_encoder"`` or a largekernel model name supporting ``features_only``.
        num_classes, in_chans, spatial_dims: Task shape.
        out_indices: Backbone stages fed to the decoder (default: all).
        backbone_kwargs: Backbone options (``dims``, ``kernel_sizes``, ``stem_stride``, ...).
        decoder, decoder_channels, deep_supervision, stem_channels: See :class:`SegmentationModel`.

    Example:
        >>> m = build_segmentation_model(num_classes=3, spatial_dims=3, decoder="unetpp",
        ...                              backbone_kwargs=dict(depths=[1, 1, 1, 1]))
        >>> m.eval()(torch.randn(1, 1, 17, 20, 9)).shape
        torch.Size([1, 3, 17, 20, 9])
    """
    kwargs = dict(backbone=backbone, num_classes=num_classes, in_chans=in_chans, spatial_dims=spatial_dims,
                  out_indices=list(out_indices) if out_indices is not None else None,
                  backbone_kwargs=dict(backbone_kwargs or {}), decoder=decoder,
                  decoder_channels=list(decoder_channels) if decoder_channels is not None else None,
                  deep_supervision=deep_supervision, stem_channels=stem_channels)
    net = build_backbone(backbone, spatial_dims=spatial_dims, in_chans=in_chans, out_indices=out_indices,
                         kwargs=backbone_kwargs)
    model = SegmentationModel(net, num_classes, decoder=decoder, decoder_channels=decoder_channels,
                              deep_supervision=deep_supervision, spatial_dims=spatial_dims,
                              in_chans=in_chans, stem_channels=stem_channels)
    model.largekernel_config = {"name": SEGMENTATION_MODEL_NAME, "kwargs": kwargs}
    return model
