"""N-d building blocks (1-D/2-D/3-D picked by ``spatial_dims``) for encoders and decoders."""

from __future__ import annotations

from torch import nn

__all__ = ["conv_nd", "batch_norm_nd", "ConvNormAct"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in _CONV or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv_nd(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv{1,2,3}d(*args, **kwargs)`` for ``spatial_dims``."""
    return _CONV[_check_dims(spatial_dims)](*args, **kwargs)


def batch_norm_nd(spatial_dims: int, channels: int) -> nn.Module:
    """``nn.BatchNorm{1,2,3}d(channels)`` for ``spatial_dims``."""
    return _BN[_check_dims(spatial_dims)](channels)


class ConvNormAct(nn.Sequential):
    """Convolution (no bias) -> BatchNorm -> ReLU, "same" padding for odd kernels.

    Example:
        >>> import torch
        >>> ConvNormAct(3, 4, 8)(torch.randn(1, 4, 5, 6, 7)).shape
        torch.Size([1, 8, 5, 6, 7])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__(
            conv_nd(spatial_dims, in_channels, out_channels, kernel_size, stride=stride,
                    padding=kernel_size // 2, bias=False),
            batch_norm_nd(spatial_dims, out_channels),
            nn.ReLU(inplace=True),
        )
