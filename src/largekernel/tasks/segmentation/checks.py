"""Argument checks shared by the segmentation losses, metrics and inference."""

from __future__ import annotations

import torch

__all__ = ["check_logits_target"]


def check_logits_target(logits: torch.Tensor, target: torch.Tensor, *, name: str = "target") -> None:
    """Check that ``target`` (``N x *spatial`` class indices) fits ``logits`` (``N x C x *spatial``).

    Raises:
        ValueError: ``target`` has another batch or spatial size than ``logits`` (e.g. a mask
            whose size differs from its image), or is not an integer tensor.
    """
    if logits.dim() < 3:
        raise ValueError(f"logits must be N x C x spatial..., got shape {tuple(logits.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {target.dtype}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{name} has shape {tuple(target.shape)} but the prediction needs {expected} "
            f"(batch x spatial size of the image): the mask size differs from its image")
