"""Exponential moving average of model weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma(nn.Module):
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` for parameters; buffers are copied.

    A warm-up ``decay_t = min(decay, (1 + t) / (10 + t))`` lets the average track the fast early
    changes instead of remembering the random init for thousands of steps.

    Args:
        model: The model to track (a DDP wrapper is unwrapped).
        decay: Final decay in [0, 1).
        warmup: Use the warm-up formula above.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> ema = ModelEma(net, decay=0.9)
        >>> ema.update(net)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(getattr(model, "module", model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        model = getattr(model, "module", model)
        d = self.current_decay()
        self.updates += 1
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def ema_state(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_ema_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
