"""Dice + cross-entropy loss for N-d segmentation, with deep-supervision weighting."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.tasks.segmentation.checks import check_logits_target

__all__ = ["soft_dice_loss", "DiceCELoss", "deep_supervision_weights"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5,
                   include_background: bool = True) -> torch.Tensor:
    """``1 - mean_c Dice_c`` with soft (softmax) predictions, pooled over the batch.

    ``Dice_c = (2 * sum(p_c * t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth)`` where sums run
    over every sample and voxel; a class absent from both prediction and target scores 1.

    Args:
        logits: ``N x C x *spatial`` raw scores.
        target: ``N x *spatial`` class indices in ``[0, C)``.
        smooth: Added to numerator and denominator (keeps empty classes finite).
        include_background: Average over class 0 too.

    Example:
        >>> logits = torch.tensor([[[10.0, -10.0]], [[-10.0, 10.0]]]).reshape(1, 2, 2)
        >>> float(soft_dice_loss(logits, torch.tensor([[0, 1]]))) < 1e-3
        True
    """
    check_logits_target(logits, target)
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target.long(), num_classes).movedim(-1, 1).to(probs.dtype)
    dims = (0,) + tuple(range(2, logits.dim()))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def deep_supervision_weights(n: int) -> list[float]:
    """Weights ``1, 1/2, 1/4, ...`` for the main and auxiliary outputs, normalised to sum to 1."""
    raw = [0.5 ** i for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


class DiceCELoss(nn.Module):
    """``ce_weight * CrossEntropy + dice_weight * SoftDice`` for segmentation logits.

    Accepts one ``N x C x *spatial`` logits tensor or, with deep supervision, a list whose first
    entry is the main output; every entry must have the target's spatial size (the
    segmentation models upsample their auxiliary outputs). The entries are weighted by
    :func:`deep_supervision_weights`.

    Args:
        ce_weight: Weight of the cross-entropy term.
        dice_weight: Weight of the Dice term.
        smooth: Dice smoothing constant.
        include_background: Include class 0 in the Dice average.
        label_smoothing: Cross-entropy label smoothing.

    Example:
        >>> loss = DiceCELoss()
        >>> logits = torch.randn(2, 3, 5, 7, requires_grad=True)
        >>> value = loss(logits, torch.randint(0, 3, (2, 5, 7)))
        >>> value.backward()
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, *, smooth: float = 1e-5,
                 include_background: bool = True, label_smoothing: float = 0.0) -> None:
        super().__init__()
        for name, value in (("ce_weight", ce_weight), ("dice_weight", dice_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if ce_weight == 0 and dice_weight == 0:
            raise ValueError("ce_weight and dice_weight cannot both be 0")
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self.include_background = include_background
        self.label_smoothing = float(label_smoothing)

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), target.long(),
                                                           label_smoothing=self.label_smoothing)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(
                logits, target, smooth=self.smooth, include_background=self.include_background)
        return loss

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self._single(logits, target)
        outputs = list(logits)
        if not outputs:
            raise ValueError("logits is an empty list")
        weights = deep_supervision_weights(len(outputs))
        return sum(w * self._single(o, target) for w, o in zip(weights, outputs))
