"""Small building blocks shared by the model families (ConvNeXt, UniRepLKNet, InceptionNeXt, LSNet)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DropPath", "drop_path", "LayerNorm2d", "GRN", "SqueezeExcite"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``.

    Survivors are scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth per sample, for residual branches.

    Args:
        drop_prob: Probability of dropping a sample's branch, in ``[0, 1)``.

    Example:
        >>> DropPath(0.1)(torch.ones(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:g}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW (or NC*) tensor.

    Normalises with the mean and biased variance over channels, ``(x - u) / sqrt(s + eps)``,
    then applies a per-channel affine. Parameter names match ``nn.LayerNorm`` (``weight``,
    ``bias``) so state dicts are interchangeable with timm's and the official code's.

    Example:
        >>> LayerNorm2d(8)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, *, device=None, dtype=None):
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(
                f"LayerNorm2d expects input (N, {self.normalized_shape[0]}, ...), got {tuple(x.shape)}"
            )
        # move channels last, use the fused layer_norm kernel, move back
        x = torch.movedim(x, 1, -1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return torch.movedim(x, x.dim() - 1, 1)  # explicit dim: the TorchScript ONNX exporter mis-writes -1


class GRN(nn.Module):
    """Global Response Normalisation (ConvNeXt V2) on channels-last input ``(N, H, W, C)``.

    ``G = ||x||_2`` over the spatial dims per channel, ``N = G / (mean_c G + eps)``,
    ``out = (gamma * N + 1) * x + beta``. ``gamma`` and ``beta`` have shape ``(1, 1, 1, C)``
    (the official UniRepLKNet layout) and start at zero, so the layer starts as the identity.
    With ``use_bias=False`` there is no ``beta`` (after reparameterisation it is folded away).

    Example:
        >>> GRN(16)(torch.randn(2, 4, 4, 16)).shape
        torch.Size([2, 4, 4, 16])
    """

    def __init__(self, dim: int, eps: float = 1e-6, use_bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim, **factory))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim, **factory)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(1, x.dim() - 1))
        g = torch.linalg.vector_norm(x, ord=2, dim=spatial, keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        out = (self.gamma * n + 1) * x
        return out + self.beta if self.beta is not None else out


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: GAP -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid -> scale.

    Submodule names ``down`` / ``up`` follow the official UniRepLKNet layout.

    Args:
        channels: Input and output channels.
        reduced_channels: Hidden width (e.g. ``channels // 4``).

    Example:
        >>> SqueezeExcite(16, 4)(torch.randn(2, 16, 7, 7)).shape
        torch.Size([2, 16, 7, 7])
    """

    def __init__(self, channels: int, reduced_channels: int, *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.down = nn.Conv2d(channels, reduced_channels, 1, bias=True, **factory)
        self.up = nn.Conv2d(reduced_channels, channels, 1, bias=True, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        if x.dim() != 4:  # 1-D / 3-D inputs: apply the 1x1 convs as linear maps over channels
            s2 = s.reshape(s.shape[0], s.shape[1], 1, 1)
            s2 = torch.sigmoid(self.up(F.relu(self.down(s2))))
            return x * s2.reshape(s.shape)
        return x * torch.sigmoid(self.up(F.relu(self.down(s))))
