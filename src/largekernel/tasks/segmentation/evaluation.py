"""Evaluating a segmentation model on a data loader: loss, per-class Dice/IoU, exact over ranks."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from largekernel.tasks.segmentation.inference import sliding_window_inference
from largekernel.tasks.segmentation.metrics import SegmentationMeter

__all__ = ["predict_logits", "evaluate_segmentation"]


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, window: int | None = None, overlap: float = 0.25,
                   device: torch.device | str = "cpu", amp: str = "none") -> torch.Tensor:
    """Logits of ``model`` (eval mode) for ``x``; sliding windows when ``x`` exceeds ``window``.

    The result stays on ``x``'s device; only windows visit ``device``.
    """
    device = torch.device(device)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with _autocast(device, amp):
            return model(batch.to(device)).float()

    if window is not None and any(s > window for s in x.shape[2:]):
        return sliding_window_inference(x, run, window, overlap=overlap, device=device, output_device=x.device)
    return run(x).to(x.device)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device, *,
                          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                          amp: str = "none", window: int | None = None, overlap: float = 0.25,
                          distributed: bool = False) -> dict[str, Any]:
    """Loss, per-class Dice/IoU and their means, pixel accuracy and confusion matrix.

    Counts are accumulated over the whole loader (and summed over DDP ranks with
    ``distributed=True``), so Dice is that of the whole evaluation set, not a mean of per-image
    scores.
    """
    from largekernel.train.distributed import all_reduce_sum

    was_training = model.training
    model.eval()
    meter = SegmentationMeter(num_classes)
    for x, y in loader:
        y = torch.as_tensor(y)
        logits = predict_logits(model, x, window=window, overlap=overlap, device=device, amp=amp)
        loss = float(loss_fn(logits, y)) if loss_fn is not None else None
        meter.update(logits, y, loss)
    if distributed:
        meter.load_merged(all_reduce_sum(meter.merge_tensor()))
    model.train(was_training)
    return meter.compute()
