"""Effective receptive fields, as measured in RepLKNet (Ding et al., CVPR 2022, Sec. 4.1 / App. C).

For every input image, the central unit of the chosen stage's feature map is ReLU'd and summed
over channels; its gradient with respect to the input is ReLU'd and summed over the colour
channels, giving one ``H x W`` contribution map per image. The maps are averaged over the images.

To summarise a map, RepLKNet rescales it with ``log10(1 + x)`` (so that the few very large
central contributions do not hide everything else) and divides by its maximum; the
*high-contribution area ratio* for a threshold ``t`` is then the area of the smallest centred
square that holds at least ``t`` of the rescaled map's total, divided by the image area.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.analysis._models import stage_index, stage_output, stage_reduction

__all__ = ["ERFResult", "AreaRatio", "erf", "rescale", "area_ratio", "DEFAULT_THRESHOLDS",
           "plot_erf_comparison"]

log = logging.getLogger(__name__)

#: The thresholds RepLKNet reports (Table 4 of the paper uses 20 %, 30 %, 50 % and 99 %).
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.5, 0.99)


@dataclass(frozen=True)
class AreaRatio:
    """The smallest centred square holding ``threshold`` of the rescaled contribution.

    Attributes:
        threshold: The fraction ``t`` asked for.
        side: Side of the square in pixels (odd; capped by the map's smaller side).
        side_ratio: ``side / min(H, W)``.
        area_ratio: ``side**2 / (H * W)`` (RepLKNet's "high-contribution area ratio").
    """

    threshold: float
    side: int
    side_ratio: float
    area_ratio: float


def rescale(scores: torch.Tensor) -> torch.Tensor:
    """RepLKNet's display/measurement rescaling: ``log10(1 + x)`` divided by its maximum.

    Example:
        >>> rescale(torch.tensor([[0.0, 9.0], [99.0, 0.0]]))
        tensor([[0.0000, 0.5000],
                [1.0000, 0.0000]])
    """
    scaled = torch.log10(1 + scores.clamp_min(0))
    peak = scaled.max()
    return scaled / peak if peak > 0 else scaled


def area_ratio(scores: torch.Tensor, threshold: float, *, rescaled: bool = False) -> AreaRatio:
    """Smallest centred square with at least ``threshold`` of the (rescaled) total score.

    Args:
        scores: ``H x W`` contribution map (raw, unless ``rescaled``).
        threshold: Fraction in ``(0, 1]``.
        rescaled: ``scores`` has already been passed through :func:`rescale`.

    Returns:
        An :class:`AreaRatio`. Squares are centred on pixel ``(H // 2, W // 2)`` and grow by one
        pixel on every side (sides 1, 3, 5, ...) until they hold the fraction or reach the border.

    Example:
        >>> m = torch.zeros(5, 5); m[2, 2] = 1.0
        >>> area_ratio(m, 0.5).side
        1
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if scores.ndim != 2 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty H x W map, got shape {tuple(scores.shape)}")
    data = (scores if rescaled else rescale(scores)).to(torch.float64)
    h, w = data.shape
    total = float(data.sum())
    ch, cw = h // 2, w // 2
    max_radius = min(ch, cw, h - 1 - ch, w - 1 - cw)
    radius = 0
    if total > 0:
        # cumulative sums over growing squares; a tiny tolerance absorbs float round-off at t = 1
        for radius in range(max_radius + 1):
            inside = float(data[ch - radius: ch + radius + 1, cw - radius: cw + radius + 1].sum())
            if inside >= threshold * total * (1 - 1e-12):
                break
    side = 2 * radius + 1
    return AreaRatio(float(threshold), side, side / min(h, w), side * side / (h * w))


@dataclass
class ERFResult:
    """An effective receptive field: the averaged contribution map and its summaries.

    Attributes:
        scores: ``H x W`` float64 tensor, the mean over images of the ReLU'd input gradient of
            the ReLU'd central unit, summed over input channels (RepLKNet's raw map).
        num_images: Images averaged.
        stage: The (non-negative) stage index whose central unit was used.
        label: Name shown in plots.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=0, depths=(1, 1, 1, 1),
        ...     dims=(8, 16, 32, 64), kernel_sizes=((3,), (3,), (3,), (3,)))
        >>> result = erf(m, torch.randn(2, 3, 32, 32))
        >>> result.scores.shape, result.area_ratio(0.5).side <= 32
        (torch.Size([32, 32]), True)
    """

    scores: torch.Tensor
    num_images: int
    stage: int
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def rescaled(self) -> torch.Tensor:
        """The map after ``log10(1 + x)`` and division by its maximum (values in ``[0, 1]``)."""
        return rescale(self.scores)

    def area_ratio(self, threshold: float = 0.2) -> AreaRatio:
        """:func:`area_ratio` of this map at ``threshold``."""
        return area_ratio(self.scores, threshold)

    def area_ratios(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[float, AreaRatio]:
        """``{t: AreaRatio}`` for every threshold."""
        return {float(t): self.area_ratio(t) for t in thresholds}

    def to_dict(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
        """JSON-ready summary (the map itself is left out; it is in ``scores``)."""
        return {
            "label": self.label,
            "stage": self.stage,
            "num_images": self.num_images,
            "image_size": list(self.scores.shape),
            "area_ratios": {f"{t:g}": {"side": a.side, "side_ratio": a.side_ratio, "area_ratio": a.area_ratio}
                            for t, a in self.area_ratios(thresholds).items()},
            **self.meta,
        }

    def plot(self, path: str | Path | None = None, *, ax: Any = None, title: str | None = None,
             colorbar: bool = True) -> Any:
        """Heatmap of the rescaled map (RepLKNet's figure); returns the matplotlib image.

        Args:
            path: Write a PNG here (when ``ax`` is not given).
            ax: Draw into this matplotlib axes instead of a new figure.
            title: Axes title (default: the label and the 20 % area ratio).
            colorbar: Add a colour bar (new figures only).
        """
        from largekernel.analysis.plotting import pyplot

        plt = pyplot()
        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(4.2, 3.6))
        image = ax.imshow(self.rescaled().numpy(), cmap="RdYlGn", vmin=0.0, vmax=1.0, interpolation="nearest")
        ratio = self.area_ratio(0.2).area_ratio
        ax.set_title(title if title is not None else f"{self.label}\nt=20%: area ratio {ratio:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if own:
            if colorbar:
                fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            fig.tight_layout()
            if path is not None:
                fig.savefig(path, dpi=110)
                log.info("wrote %s", path)
            plt.close(fig)
        return image


def plot_erf_comparison(results: Sequence[ERFResult], path: str | Path) -> None:
    """Several ERFs side by side on one colour scale ([0, 1] after RepLKNet's rescaling).

    Example:
        >>> # plot_erf_comparison([erf(m3, x), erf(m13, x)], "erf_compare.png")
    """
    from largekernel.analysis.plotting import pyplot

    if not results:
        raise ValueError("results must not be empty")
    plt = pyplot()
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.6), squeeze=False)
    image = None
    for ax, result in zip(axes[0], results):
        image = result.plot(ax=ax)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.02, label="log10(1+x), rescaled")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    log.info("wrote %s", path)


def _batches(images: torch.Tensor | Iterable, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        yield from images.split(batch_size)
        return
    for item in images:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images must yield tensors or (tensor, label) pairs, got {type(x).__name__}")
        yield x.unsqueeze(0) if x.ndim == 3 else x


def erf(model: nn.Module, images: torch.Tensor | Iterable, stage: int = -1, *, batch_size: int = 8,
        label: str | None = None, progress: bool = False, total: int | None = None) -> ERFResult:
    """Effective receptive field of ``model``'s stage ``stage`` (RepLKNet's definition).

    The model is run in eval mode (restored afterwards), so images are independent and are
    processed ``batch_size`` at a time; the result equals the one-image-at-a-time procedure.

    Args:
        model: An image model with stages (any registered model, training or deploy form).
        images: ``(N, C, H, W)`` tensor, or an iterable of image tensors / ``(image, label)``
            pairs / batches (e.g. a ``DataLoader``), already normalised as the model expects.
        stage: Stage whose feature map's central unit is used (negatives count from the end).
        batch_size: Images per forward/backward when ``images`` is a tensor.
        label: Name stored in the result (default: the model's class name).
        progress: Show a progress bar.
        total: Number of batches, for the progress bar of an iterable without ``len``.

    Returns:
        An :class:`ERFResult`.

    Raises:
        ValueError: ``stage`` out of range, images smaller than the stage's stride, no images.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("convnext_atto", num_classes=0, depths=(1, 1, 1, 1),
        ...                              dims=(8, 16, 24, 32))
        >>> erf(m, torch.randn(3, 3, 64, 64), stage=1).scores.shape
        torch.Size([64, 64])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    index = stage_index(model, stage)
    reduction = stage_reduction(model, index)
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    total_map: torch.Tensor | None = None
    count = 0
    batches = _batches(images, batch_size)
    if progress:
        from largekernel.analysis.plotting import progress_bar

        if total is None and isinstance(images, torch.Tensor):
            total = -(-(images.shape[0] if images.ndim == 4 else 1) // batch_size)
        batches = progress_bar(batches, total=total, desc="ERF")
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            if x.ndim != 4:
                raise ValueError(f"images must be N x C x H x W, got shape {tuple(x.shape)}")
            if min(x.shape[-2:]) < reduction:
                raise ValueError(f"image size {tuple(x.shape[-2:])} is smaller than the stride {reduction} "
                                 f"of stage {index}; use images of at least {reduction} px (image_size)")
            x = x.detach().to(device=device, dtype=dtype).requires_grad_(True)
            out = stage_output(model, x, index)
            centre = F.relu(out[:, :, out.shape[-2] // 2, out.shape[-1] // 2]).sum()
            (grad,) = torch.autograd.grad(centre, x, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(x)
            contribution = F.relu(grad).to(torch.float64).sum(dim=(0, 1)).cpu()
            if total_map is None:
                total_map = contribution
            elif total_map.shape != contribution.shape:
                raise ValueError(f"all images must have the same size, got {tuple(total_map.shape)} "
                                 f"and {tuple(contribution.shape)}")
            else:
                total_map += contribution
            count += x.shape[0]
    finally:
        model.train(was_training)
    if total_map is None or count == 0:
        raise ValueError("images is empty: need at least one image")
    return ERFResult(total_map / count, count, index, label or type(model).__name__)
