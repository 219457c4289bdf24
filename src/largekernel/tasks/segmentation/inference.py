"""Sliding-window inference: overlapping windows, blended, for inputs larger than memory allows.

Only one batch of windows lives on the model's device at a time; the blended sum and the weight
map are accumulated on ``output_device`` (default: the input's device, typically the CPU), so a
volume of any size is segmented with the memory of ``sw_batch_size`` windows.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

__all__ = ["window_starts", "blend_weights", "sliding_window_inference"]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of length ``window`` covering ``[0, size)`` with ``overlap``.

    The step is ``round(window * (1 - overlap))`` (at least 1); the last window is aligned with
    the end, so every position is covered and no window leaves the input.

    Example:
        >>> window_starts(10, 4, 0.5)
        [0, 2, 4, 6]
        >>> window_starts(3, 4, 0.5)
        [0]
    """
    if window >= size:
        return [0]
    step = max(1, int(round(window * (1 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def blend_weights(window: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Per-voxel weight of a window's prediction: ``"constant"`` (1) or ``"gaussian"``.

    The Gaussian (sigma = ``sigma_scale`` x window side) down-weights window borders, where a
    convolutional network sees zero padding instead of context. It is clamped away from 0 so
    that every covered voxel has a positive total weight.
    """
    if mode == "constant":
        return torch.ones(tuple(window), device=device)
    if mode != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {mode!r}")
    weight = torch.ones((), device=device)
    for n in window:
        coords = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
        g = torch.exp(-0.5 * (coords / max(sigma_scale * n, 1e-6)) ** 2)
        weight = weight.unsqueeze(-1) * g
    return weight.clamp_min(1e-3 * float(weight.max()))


def sliding_window_inference(
    inputs: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    window_size: int | Sequence[int],
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    blend: str = "gaussian",
    device: torch.device | str | None = None,
    output_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run ``predictor`` on overlapping windows of ``inputs`` and blend the outputs.

    Args:
        inputs: ``N x C x *spatial`` (1-3 spatial dims); may stay on the CPU.
        predictor: Maps ``B x C x *window`` to ``B x K x *window`` (e.g. a segmentation model in
            eval mode); it must keep the window's spatial size.
        window_size: Window side(s); clipped to the input where the input is smaller.
        overlap: Fraction of a window shared with its neighbour, in ``[0, 1)``.
        sw_batch_size: Windows per ``predictor`` call.
        blend: ``"gaussian"`` or ``"constant"`` weighting of overlapping predictions.
        device: Where windows are computed (default: the input's device).
        output_device: Where the blended output is accumulated (default: the input's device).

    Returns:
        ``N x K x *spatial`` blended outputs (float32) on ``output_device``.

    Example:
        >>> conv = torch.nn.Conv3d(1, 2, 1)
        >>> x = torch.randn(1, 1, 20, 18, 9)
        >>> y = sliding_window_inference(x, conv, 8, overlap=0.5)
        >>> torch.allclose(y, conv(x), atol=1e-5)
        True
    """
    if inputs.dim() < 3:
        raise ValueError(f"inputs must be N x C x spatial..., got shape {tuple(inputs.shape)}")
    spatial = tuple(inputs.shape[2:])
    nd = len(spatial)
    win = (window_size,) * nd if isinstance(window_size, int) else tuple(window_size)
    if len(win) != nd or any((not isinstance(w, int)) or w < 1 for w in win):
        raise ValueError(f"window_size must be a positive int or {nd} positive ints for "
                         f"{nd}-D inputs, got {window_size!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}")
    win = tuple(min(w, s) for w, s in zip(win, spatial))
    device = torch.device(device) if device is not None else inputs.device
    output_device = torch.device(output_device) if output_device is not None else inputs.device
    weight = blend_weights(win, blend, device=device)
    starts = list(itertools.product(*(window_starts(s, w, overlap) for s, w in zip(spatial, win))))
    out: torch.Tensor | None = None
    norm = torch.zeros(spatial, device=output_device)
    for start in starts:  # the weight map is the same for every sample of the batch
        region = tuple(slice(s, s + w) for s, w in zip(start, win))
        norm[region] += weight.to(output_device)
    for n in range(inputs.shape[0]):
        for i in range(0, len(starts), sw_batch_size):
            chunk = starts[i:i + sw_batch_size]
            regions = [tuple(slice(s, s + w) for s, w in zip(start, win)) for start in chunk]
            batch = torch.stack([inputs[(n, slice(None)) + r] for r in regions]).to(device)
            pred = predictor(batch)
            if tuple(pred.shape[2:]) != win or pred.shape[0] != len(chunk):
                raise ValueError(f"predictor returned shape {tuple(pred.shape)} for windows of "
                                 f"shape {tuple(batch.shape)}; it must keep the spatial size")
            if out is None:
                out = torch.zeros((inputs.shape[0], pred.shape[1]) + spatial, device=output_device)
            weighted = (pred.float() * weight).to(output_device)
            for k, r in enumerate(regions):
                out[(n, slice(None)) + r] += weighted[k]
    assert out is not None
    return out / norm
