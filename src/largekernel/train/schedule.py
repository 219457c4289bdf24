"""Per-step learning-rate schedule: linear warm-up followed by cosine decay."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["WarmupCosineSchedule", "warmup_cosine_lr"]


def warmup_cosine_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
                     min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step`` (0-based: the rate used for the ``step``-th update).

    Warm-up rises linearly from ``base_lr / (warmup_steps + 1)`` at step 0 to ``base_lr`` at
    ``step == warmup_steps``; then a half cosine decays to ``min_lr`` at ``step == total_steps``.

    Raises:
        ValueError: Negative steps, or ``total_steps`` not positive.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0 or step < 0:
        raise ValueError(f"step and warmup_steps must be >= 0, got {step} and {warmup_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule:
    """Sets every param group's ``lr`` from the step count (``base_lr * group['lr_scale']``).

    Call :meth:`apply` with the 0-based update index before each ``optimizer.step()``; the
    schedule is a pure function of that index, so resuming from a checkpoint is exact.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = WarmupCosineSchedule(opt, base_lr=0.1, total_steps=10, warmup_steps=2)
        >>> round(sched.apply(0), 4)
        0.0333
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, base_lr: float, total_steps: int,
                 warmup_steps: int = 0, min_lr: float = 0.0) -> None:
        if base_lr <= 0:
            raise ValueError(f"base_lr must be positive, got {base_lr}")
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.min_lr = float(min_lr)
        self.last_step = -1

    def lr_at(self, step: int) -> float:
        return warmup_cosine_lr(step, base_lr=self.base_lr, total_steps=self.total_steps,
                                warmup_steps=self.warmup_steps, min_lr=self.min_lr)

    def apply(self, step: int) -> float:
        """Set the learning rate for update number ``step``; returns it."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_step = step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr, "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr = float(state["base_lr"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.min_lr = float(state["min_lr"])
        self.last_step = int(state["last_step"])
