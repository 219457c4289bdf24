"""PNG of masked input / reconstruction / target for a few images."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from largekernel.pretrain.loss import normalize_patches, patchify, unpatchify
from largekernel.pretrain.masking import upsample_mask

__all__ = ["reconstruction_panels", "save_reconstruction_png"]


def reconstruction_panels(images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, *,
                          norm_pix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked input, reconstruction)`` in the images' pixel space.

    The reconstruction shows the visible patches as they are and the hidden ones as predicted; with
    ``norm_pix`` the prediction is mapped back with each true patch's mean and standard deviation
    (the model regresses normalised patches), as MAE/SparK visualisations do.
    """
    images, pred = images.float(), pred.float()
    patch = images.shape[-2] // mask.shape[-2]
    grid = tuple(mask.shape[-2:])
    if norm_pix:
        _, mean, std = normalize_patches(patchify(images, patch))
        pred = unpatchify(patchify(pred, patch) * std + mean, patch, images.shape[1], grid)
    visible = upsample_mask(mask, images.shape[-2:]).to(images.device)
    masked = images.masked_fill(~visible, float("nan"))  # NaN -> drawn as the background colour
    return masked, torch.where(visible, images, pred)


def save_reconstruction_png(path: str | Path, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, *,
                            mean: Sequence[float], std: Sequence[float], norm_pix: bool = True,
                            title: str = "") -> Path:
    """Write a grid with one row per image: masked input | reconstruction | target.

    Args:
        path: Destination PNG.
        images: Normalised input images ``(N, C, H, W)``.
        pred: The decoder's output for ``images`` under ``mask``.
        mask: Boolean ``(N, 1, h, w)``, ``True`` = visible.
        mean, std: The data set's normalisation (to show pixels in ``[0, 1]``).
        norm_pix: Whether ``pred`` is in per-patch normalised space.
        title: Figure title.
    """
    from largekernel.train.plots import _pyplot

    masked, recon = reconstruction_panels(images, pred, mask, norm_pix=norm_pix)
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    panels = [(t.detach().cpu() * s + m).clamp(0, 1) for t in (masked, recon, images.float())]
    plt = _pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(4.5, 1.5 * n + 0.4), squeeze=False)
    for row in range(n):
        for col, (panel, label) in enumerate(zip(panels, ("masked input", "reconstruction", "target"))):
            img = panel[row]
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            ax = axes[row][col]
            ax.imshow(img.numpy(), cmap="gray" if panel.shape[1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
