"""Optimiser construction with weight-decay / no-weight-decay parameter groups."""

from __future__ import annotations

import logging
from typing import Iterable

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer"]

log = logging.getLogger(__name__)

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def param_groups(model: nn.Module, weight_decay: float,
                 skip: Iterable[str] | None = None) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    No decay for: parameters with ``ndim <= 1`` (biases, norm scales, layer-scale ``gamma``,
    GRN gamma/beta of shape (1,1,1,C) count as they have a single non-unit dim), names ending
    in ``.bias``, parameters of normalisation layers, and names returned by
    ``model.no_weight_decay()`` (exact names or suffixes like ``"gamma"``).

    Returns:
        ``[{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]``
        (empty groups dropped).

    Example:
        >>> import torch
        >>> groups = param_groups(torch.nn.Linear(4, 2), 0.05)
        >>> [len(g["params"]) for g in groups]
        [1, 1]
    """
    model = _unwrap(model)
    names = set(skip or ())
    hook = getattr(model, "no_weight_decay", None)
    if callable(hook):
        names |= set(hook())
    norm_params: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES) or type(module).__name__ in ("LayerNorm2d", "GRN", "EngineGRN"):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        effective_ndim = sum(1 for s in param.shape if s != 1)
        if (effective_ndim <= 1 or name.endswith(".bias") or name == "bias"
                or id(param) in norm_params or name in names or leaf in names
                or any(name.endswith("." + n) for n in names)):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": float(weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, name: str = "adamw", *, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)
                    ) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum) over :func:`param_groups`.

    Raises:
        ValueError: Unknown optimiser name, or a model without trainable parameters.
    """
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    name = name.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")
