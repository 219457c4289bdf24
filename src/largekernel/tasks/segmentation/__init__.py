"""Semantic segmentation on largekernel backbones, 1-D/2-D/3-D.

U-Net / UNet++ decoders on any ``features_only`` backbone (:class:`SegmentationModel`), Dice +
cross-entropy loss, per-class Dice/IoU, sliding-window inference for large volumes, and the
``largekernel train --task segment`` training recipe.

Example:
    >>> import torch
    >>> from largekernel.tasks.segmentation import build_segmentation_model
    >>> model = build_segmentation_model("unireplknet_a", num_classes=3, in_chans=1,
    ...                                  backbone_kwargs=dict(dims=[8, 16, 32, 64]))
    >>> model.eval()(torch.randn(1, 1, 61, 50)).shape
    torch.Size([1, 3, 61, 50])
"""

from largekernel.tasks.segmentation.backbone import build_backbone
from largekernel.tasks.segmentation.decoders import UNetDecoder, UNetPlusPlusDecoder
from largekernel.tasks.segmentation.encoder import LKEncoder
from largekernel.tasks.segmentation.inference import sliding_window_inference
from largekernel.tasks.segmentation.losses import DiceCELoss, soft_dice_loss
from largekernel.tasks.segmentation.metrics import SegmentationMeter, confusion_matrix, dice_iou_from_confusion
from largekernel.tasks.segmentation.model import SegmentationModel, build_segmentation_model

__all__ = [
    "DiceCELoss",
    "LKEncoder",
    "SegmentationMeter",
    "SegmentationModel",
    "UNetDecoder",
    "UNetPlusPlusDecoder",
    "build_backbone",
    "build_segmentation_model",
    "confusion_matrix",
    "dice_iou_from_confusion",
    "sliding_window_inference",
    "soft_dice_loss",
]
