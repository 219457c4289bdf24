"""Drop-in ``Conv1d/2d/3d`` whose forward runs on the largekernel convolution engine.

They subclass torch's modules without adding parameters, buffers or constructor arguments, so
state dicts, ``padding_mode``, ``reset_parameters`` and every other behaviour are torch's; only the
convolution itself goes through :func:`largekernel.ops.conv`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.ops.conv import conv

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ENGINE_CONV_CLASSES", "TORCH_TO_ENGINE"]


class _EngineConvMixin:
    """Overrides torch's ``_conv_forward`` hook (used by ``forward``) to call the engine."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self.padding_mode != "zeros":
            # same as torch: explicit non-zero padding first, then an unpadded convolution
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return conv(input, weight, bias, self.stride, padding, self.dilation, self.groups)


class Conv1d(_EngineConvMixin, nn.Conv1d):
    """``torch.nn.Conv1d`` running on the largekernel engine (same constructor and state dict).

    Example:
        >>> m = Conv1d(64, 64, 127, padding="same", groups=64)
        >>> m(torch.randn(2, 64, 1024)).shape
        torch.Size([2, 64, 1024])
    """


class Conv2d(_EngineConvMixin, nn.Conv2d):
    """``torch.nn.Conv2d`` running on the largekernel engine (same constructor and state dict).

    Example:
        >>> m = Conv2d(32, 32, 17, padding=8, groups=32, bias=False)
        >>> m(torch.randn(1, 32, 40, 40)).shape
        torch.Size([1, 32, 40, 40])
    """


class Conv3d(_EngineConvMixin, nn.Conv3d):
    """``torch.nn.Conv3d`` running on the largekernel engine (same constructor and state dict).

    Example:
        >>> m = Conv3d(8, 8, 7, padding=3, groups=8)
        >>> m(torch.randn(1, 8, 12, 12, 12)).shape
        torch.Size([1, 8, 12, 12, 12])
    """


ENGINE_CONV_CLASSES = (Conv1d, Conv2d, Conv3d)
TORCH_TO_ENGINE: dict[type, type] = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Conv3d: Conv3d}
