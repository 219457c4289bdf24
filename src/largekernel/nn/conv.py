"""Drop-in ``Conv1d/2d/3d`` whose forward runs on the largekernel convolution engine.

They subclass torch's modules without adding parameters, buffers or constructor arguments, so
state dicts, ``padding_mode``, ``reset_parameters`` and every other behaviour are torch's; only the
convolution itself goes through :func:`largekernel.ops.conv`.

Every mode PyTorch offers keeps working:

* ``torch.fx.symbolic_trace`` (and timm's FX feature extraction) records the engine call as one
  leaf function node, so the traced graph still runs on the engine;
* ``torch.jit.script`` compiles these modules to PyTorch's own convolution (TorchScript cannot call
  the engine's Python dispatcher), so a scripted model computes the same values, unaccelerated;
* ``torch.jit.trace``, ``torch.compile``, ``torch.export`` and ONNX export see a plain aten
  convolution (the engine steps aside while tracing or compiling).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from largekernel.ops.conv import conv

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ENGINE_CONV_CLASSES", "TORCH_TO_ENGINE"]

# FX: record ``conv`` as a leaf call (its argument checks and dispatch are Python control flow that
# a symbolic tracer cannot follow); the traced GraphModule calls the engine at run time.
torch.fx.wrap("conv")


@torch.jit.unused
def _engine_conv_forward(module: nn.Module, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    if module.padding_mode != "zeros":
        # same as torch: explicit non-zero padding first, then an unpadded convolution
        input = F.pad(input, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return conv(input, weight, bias, module.stride, 0, module.dilation, module.groups)
    return conv(input, weight, bias, module.stride, module.padding, module.dilation, module.groups)


class Conv1d(nn.Conv1d):
    """``torch.nn.Conv1d`` running on the largekernel engine (same constructor and state dict).

    Example:
        >>> m = Conv1d(64, 64, 127, padding="same", groups=64)
        >>> m(torch.randn(2, 64, 1024)).shape
        torch.Size([2, 64, 1024])
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript: PyTorch's own convolution (same values)
            if self.padding_mode != "zeros":
                padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                return F.conv1d(padded, weight, bias, self.stride, [0], self.dilation, self.groups)
            return F.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return _engine_conv_forward(self, input, weight, bias)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` running on the largekernel engine (same constructor and state dict).

    Example:
        >>> m = Conv2d(32, 32, 17, padding=8, groups=32, bias=False)
        >>> m(torch.randn(1, 32, 40, 40)).shape
        torch.Size([1, 32, 40, 40])
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript: PyTorch's own convolution (same values)
            if self.padding_mode != "zeros":
                padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                return F.conv2d(padded, weight, bias, self.stride, [0, 0], self.dilation, self.groups)
            return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return _engine_conv_forward(self, input, weight, bias)


class Conv3d(nn.Conv3d):
    """``torch.nn.Conv3d`` running on the largekernel engine (same constructor and state dict).

    Example:
        >>> m = Conv3d(8, 8, 7, padding=3, groups=8)
        >>> m(torch.randn(1, 8, 12, 12, 12)).shape
        torch.Size([1, 8, 12, 12, 12])
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript: PyTorch's own convolution (same values)
            if self.padding_mode != "zeros":
                padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                return F.conv3d(padded, weight, bias, self.stride, [0, 0, 0], self.dilation, self.groups)
            return F.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return _engine_conv_forward(self, input, weight, bias)


ENGINE_CONV_CLASSES = (Conv1d, Conv2d, Conv3d)
TORCH_TO_ENGINE: dict[type, type] = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Conv3d: Conv3d}
