"""Drop-in ``Conv1d/2d/3d`` whose forward runs on the engine (stub until the engine lands)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.ops.conv import conv

__all__ = ["Conv1d", "Conv2d", "Conv3d"]


class _EngineConvMixin:
    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return conv(input, weight, bias, self.stride, padding, self.dilation, self.groups)


class Conv1d(_EngineConvMixin, nn.Conv1d):
    """``torch.nn.Conv1d`` running on the largekernel engine."""


class Conv2d(_EngineConvMixin, nn.Conv2d):
    """``torch.nn.Conv2d`` running on the largekernel engine."""


class Conv3d(_EngineConvMixin, nn.Conv3d):
    """``torch.nn.Conv3d`` running on the largekernel engine."""
