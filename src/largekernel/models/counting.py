"""Parameter and multiply-accumulate counting.

MACs are measured, not tabulated: forward hooks on every convolution and linear layer read the
actual output shapes of one forward pass. Run it on the ``"meta"`` device to count huge models
without allocating memory or doing arithmetic::

    with torch.device("meta"):
        model = create_model("unireplknet_xl", deploy=True)
    count_macs(model, (1, 3, 224, 224))

Counted: convolutions (``out.numel() * C_in/groups * prod(kernel)``), linear layers
(``out.numel() * in_features``). Not counted (as in the published figures, which count the
multiply-adds of conv/linear layers): normalisations, activations, pooling, residual adds.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once; works on meta tensors).

    Example:
        >>> count_params(torch.nn.Linear(10, 5))
        55
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(module: nn.modules.conv._ConvNd, out: torch.Tensor) -> int:
    per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return out.numel() * per_output


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_size``.

    The input is created on the device and dtype of the model's first parameter (so a model on
    the ``meta`` device is counted without computing anything). The model is run in eval mode
    and restored to its previous mode.

    Args:
        model: The model (a conv/linear network).
        input_size: Full input shape including the batch dimension.

    Returns:
        Total MACs (an int).

    Raises:
        ValueError: If ``input_size`` is not a sequence of positive ints.

    Example:
        >>> count_macs(torch.nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10))
        21600
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    size = tuple(input_size)
    if not size or any(not isinstance(s, int) or s <= 0 for s in size):
        raise ValueError(f"input_size must be a sequence of positive ints, got {input_size!r}")
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    total = [0]

    def hook(module: nn.Module, inputs, output) -> None:
        if not isinstance(output, torch.Tensor):
            return
        if isinstance(module, nn.modules.conv._ConvNd):
            total[0] += _conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0]
