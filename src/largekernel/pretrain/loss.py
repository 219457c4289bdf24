"""Reconstruction target and loss: per-patch normalised pixels, mean squared error on hidden patches."""

from __future__ import annotations

import torch

__all__ = ["patchify", "unpatchify", "normalize_patches", "masked_patch_loss"]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, L, patch * patch * C)`` with patches in raster order of the grid.

    Example:
        >>> patchify(torch.zeros(2, 3, 8, 8), 4).shape
        torch.Size([2, 4, 48])
    """
    n, c, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {patch}")
    h, w = H // patch, W // patch
    x = images.reshape(n, c, h, patch, w, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, h * w, patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    n = patches.shape[0]
    h, w = grid
    x = patches.reshape(n, h, w, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, channels, h * patch, w * patch)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise each patch to zero mean and unit variance; returns ``(normalised, mean, std)``."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, unbiased=False, keepdim=True)
    std = (var + eps).sqrt()
    return (patches - mean) / std, mean, std


def masked_patch_loss(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, *,
                      norm_pix: bool = True) -> torch.Tensor:
    """MSE between ``pred`` and the (per-patch normalised) ``images`` over the hidden patches only.

    Args:
        pred: Reconstruction ``(N, C, H, W)`` in the target's space (normalised pixels).
        images: Original images ``(N, C, H, W)``.
        mask: Boolean ``(N, 1, h, w)`` on the patch grid, ``True`` = visible; the patch size is
            ``H / h``.
        norm_pix: Normalise every target patch by its own mean and standard deviation.

    Returns:
        The scalar loss: the mean over hidden patches of the per-patch mean squared error.

    Example:
        >>> img = torch.randn(1, 1, 4, 4); m = torch.tensor([[[[True, False], [True, True]]]])
        >>> float(masked_patch_loss(img, img, m, norm_pix=False))
        0.0
    """
    if pred.shape != images.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and images {tuple(images.shape)} must have one shape")
    h = mask.shape[-2]
    patch = images.shape[-2] // h
    target = patchify(images.float(), patch)
    if norm_pix:
        target = normalize_patches(target)[0]
    per_patch = ((patchify(pred.float(), patch) - target) ** 2).mean(dim=-1)  # (N, L)
    hidden = (~mask).reshape(mask.shape[0], -1).to(per_patch.dtype)
    return (per_patch * hidden).sum() / hidden.sum().clamp_min(1.0)
