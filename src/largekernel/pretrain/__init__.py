"""Masked image pre-training (SparK-style) for every ``features_only`` backbone.

``largekernel pretrain`` / :func:`pretrain` hides random patches of the final-stride grid, runs
the backbone as a sparse network on the visible patches (:class:`SparseEncoder`), densifies every
scale with a learned mask token, decodes with a light U-Net and regresses the per-patch normalised
pixels of the hidden patches. The encoder is exported as an ordinary checkpoint that
``largekernel train --init-from`` fine-tunes.

Example:
    >>> import torch, largekernel
    >>> from largekernel.pretrain import MaskedImageModel
    >>> backbone = largekernel.create_model("convnext_atto", features_only=True, in_chans=1)
    >>> loss = MaskedImageModel(backbone, in_chans=1, mask_ratio=0.6)(torch.randn(2, 1, 64, 64))
"""

from largekernel.pretrain.config import PretrainConfig, apply_pretrain_overrides, load_pretrain_config
from largekernel.pretrain.loss import masked_patch_loss, patchify
from largekernel.pretrain.masking import MaskContext, random_mask, upsample_mask
from largekernel.pretrain.model import MaskedImageModel, build_masked_image_model, create_backbone
from largekernel.pretrain.sparse import SparseEncoder, sparsify
from largekernel.pretrain.trainer import ENCODER_NAME, PretrainTrainer, pretrain
from largekernel.pretrain.transfer import load_pretrained_encoder

__all__ = [
    "ENCODER_NAME",
    "MaskContext",
    "MaskedImageModel",
    "PretrainConfig",
    "PretrainTrainer",
    "SparseEncoder",
    "apply_pretrain_overrides",
    "build_masked_image_model",
    "create_backbone",
    "load_pretrain_config",
    "load_pretrained_encoder",
    "masked_patch_loss",
    "patchify",
    "pretrain",
    "random_mask",
    "sparsify",
    "upsample_mask",
]
