"""Per-class Dice and IoU from an accumulated confusion matrix (exact over a whole data set)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from largekernel.tasks.segmentation.checks import check_logits_target

__all__ = ["confusion_matrix", "dice_iou_from_confusion", "SegmentationMeter"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes x num_classes`` counts, rows = target class, columns = predicted class.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    if pred.shape != target.shape:
        raise ValueError(f"target has shape {tuple(target.shape)} but pred has {tuple(pred.shape)}")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target holds class indices outside [0, {num_classes}): "
                         f"[{int(t.min())}, {int(t.max())}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).cpu()


def dice_iou_from_confusion(cm: torch.Tensor) -> dict[str, list[float | None]]:
    """Per-class ``Dice = 2TP / (2TP + FP + FN)`` and ``IoU = TP / (TP + FP + FN)``.

    A class absent from both targets and predictions gets ``None`` (undefined, not 0 or 1).
    """
    cm = cm.double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    dice: list[float | None] = []
    iou: list[float | None] = []
    for c in range(cm.shape[0]):
        denom = float(tp[c] + fp[c] + fn[c])
        if denom == 0:
            dice.append(None)
            iou.append(None)
        else:
            dice.append(float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])))
            iou.append(float(tp[c] / denom))
    return {"dice": dice, "iou": iou}


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


class SegmentationMeter:
    """Accumulates a confusion matrix and loss over batches; :meth:`compute` gives the metrics.

    Args:
        num_classes: Number of classes.

    Example:
        >>> meter = SegmentationMeter(2)
        >>> meter.update(torch.tensor([[[5.0, -5.0]], [[-5.0, 5.0]]]).reshape(1, 2, 1, 2),
        ...              torch.tensor([[[0, 1]]]))
        >>> meter.compute()["dice"]
        [1.0, 1.0]
    """

    def __init__(self, num_classes: int) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        """Add a batch of ``N x C x *spatial`` logits and ``N x *spatial`` targets."""
        check_logits_target(logits, target)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits has {logits.shape[1]} classes, the meter {self.num_classes}")
        self.cm += confusion_matrix(logits.argmax(1), target, self.num_classes)
        n = target.shape[0]
        if loss is not None:
            self.loss_sum += float(loss) * n
        self.count += n

    def merge_tensor(self) -> torch.Tensor:
        """Counts as one float64 tensor (for an all-reduce over DDP ranks)."""
        return torch.cat([self.cm.reshape(-1).double(),
                          torch.tensor([self.loss_sum, float(self.count)], dtype=torch.float64)])

    def load_merged(self, merged: torch.Tensor) -> None:
        k = self.num_classes ** 2
        self.cm = merged[:k].round().long().reshape(self.num_classes, self.num_classes)
        self.loss_sum = float(merged[k])
        self.count = int(round(float(merged[k + 1])))

    def compute(self) -> dict[str, Any]:
        """``loss``, per-class ``dice``/``iou``, their means (all classes and foreground) and
        ``pixel_accuracy``, ``confusion_matrix`` and ``count`` (samples)."""
        scores = dice_iou_from_confusion(self.cm)
        total = int(self.cm.sum())
        return {
            "loss": self.loss_sum / max(self.count, 1),
            "dice": scores["dice"],
            "iou": scores["iou"],
            "mean_dice": _mean(scores["dice"]),
            "mean_iou": _mean(scores["iou"]),
            "mean_dice_foreground": _mean(scores["dice"][1:]),
            "pixel_accuracy": float(self.cm.diag().sum()) / total if total else None,
            "confusion_matrix": self.cm.tolist(),
            "count": self.count,
        }
