"""Mixup / CutMix on batches, and soft-target cross entropy with label smoothing."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["one_hot_smooth", "soft_target_cross_entropy", "Mixup"]


def one_hot_smooth(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: ``1 - s + s/K`` on the true class, ``s/K`` elsewhere."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, dtype=torch.float32, device=target.device)
    out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)
    return out


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k target_k * log_softmax(logits)_k``."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class Mixup:
    """Mixes a batch with its reversal (Mixup) or pastes a box from it (CutMix).

    For each call: with probability ``prob`` the batch is mixed; if both ``mixup_alpha`` and
    ``cutmix_alpha`` are > 0, each is chosen with probability 1/2. The returned targets are the
    smoothed one-hot targets mixed with the same ``lam`` (for CutMix, ``lam`` is corrected to the
    exact pasted area). Uses the global torch RNG so that training checkpoints can restore it.

    Example:
        >>> import torch
        >>> mix = Mixup(mixup_alpha=0.8, num_classes=3)
        >>> x, y = mix(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> y.shape
        torch.Size([4, 3])
    """

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 label_smoothing: float = 0.0, num_classes: int = 1000) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    @staticmethod
    def _beta(alpha: float) -> float:
        dist = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))
        return float(dist.sample()[0])

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = one_hot_smooth(target, self.num_classes, self.label_smoothing).to(x.device)
        if not self.active or float(torch.rand(())) >= self.prob:
            return x, y
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or float(torch.rand(())) < 0.5)
        if use_cutmix:
            lam = self._beta(self.cutmix_alpha)
            h, w = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy = int(torch.randint(h, ()))
            cx = int(torch.randint(w, ()))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            lam = self._beta(self.mixup_alpha)
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, y * lam + y.flip(0) * (1.0 - lam)
