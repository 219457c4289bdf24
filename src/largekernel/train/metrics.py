"""Classification metrics: top-k accuracy, confusion matrix, per-class accuracy."""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["topk_correct", "ClassificationMeter"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-``k`` logits, for each ``k`` (clamped to C)."""
    maxk = min(max(ks), logits.shape[-1])
    top = logits.topk(maxk, dim=-1).indices
    hit = top.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


class ClassificationMeter:
    """Accumulates loss, top-1/top-5 and the confusion matrix over batches.

    Example:
        >>> import torch
        >>> m = ClassificationMeter(3)
        >>> m.update(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 2]))
        >>> m.compute()["top1"]
        0.5
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.loss_sum = 0.0
        self.count = 0
        self.top1 = 0
        self.top5 = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        logits = logits.detach().float().cpu()
        target = target.detach().long().cpu()
        c1, c5 = topk_correct(logits, target, (1, 5))
        self.top1 += c1
        self.top5 += c5
        n = target.numel()
        self.count += n
        if loss is not None:
            self.loss_sum += float(loss) * n
        pred = logits.argmax(dim=-1)
        idx = target * self.num_classes + pred
        self.confusion += torch.bincount(idx, minlength=self.num_classes ** 2).view(
            self.num_classes, self.num_classes)

    def merge_tensor(self) -> torch.Tensor:
        """All counters as one float64 tensor (for an all-reduce across ranks)."""
        head = torch.tensor([self.loss_sum, self.count, self.top1, self.top5], dtype=torch.float64)
        return torch.cat([head, self.confusion.double().flatten()])

    def load_merged(self, t: torch.Tensor) -> None:
        self.loss_sum, count, top1, top5 = (float(v) for v in t[:4])
        self.count, self.top1, self.top5 = int(count), int(top1), int(top5)
        self.confusion = t[4:].round().long().view(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Any]:
        n = max(self.count, 1)
        per_class_total = self.confusion.sum(dim=1)
        per_class = [
            (float(self.confusion[i, i]) / float(per_class_total[i])) if per_class_total[i] > 0 else None
            for i in range(self.num_classes)
        ]
        return {
            "loss": self.loss_sum / n,
            "top1": self.top1 / n,
            "top5": self.top5 / n,
            "count": self.count,
            "per_class_accuracy": per_class,
            "confusion_matrix": self.confusion.tolist(),
        }
