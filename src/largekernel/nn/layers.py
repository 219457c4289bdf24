"""Small building blocks shared by the model families (ConvNeXt, UniRepLKNet, InceptionNeXt, LSNet)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.ops.grn import grn as fused_grn

__all__ = ["DropPath", "drop_path", "LayerNorm2d", "GRN", "EngineGRN", "SqueezeExcite"]


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
        if not torch.jit.is_scripting():
            _check_channels_first(x, self.normalized_shape[0])
        # move channels last, use the fused layer_norm kernel, move back
        x = torch.movedim(x, 1, -1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return torch.movedim(x, x.dim() - 1, 1)  # explicit dim: the TorchScript ONNX exporter mis-writes -1


@torch.jit.unused
def _check_channels_first(x: torch.Tensor, channels: int) -> None:
    if isinstance(x, torch.fx.Proxy):  # symbolic tracing: shapes are not known yet
        return
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(f"LayerNorm2d expects input (N, {channels}, ...), got {tuple(x.shape)}")


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
        return _grn_unfused(x, self.gamma, self.beta, self.eps)


def _grn_unfused(x: torch.Tensor, gamma: torch.Tensor, beta: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """GRN as separate PyTorch operations (the official formulation; scriptable and FX-traceable)."""
    # (N, *spatial, C) flattened to (N, S, C): any number of spatial dims, and no Python
    # arithmetic on x.dim(), so torch.fx can trace it
    xs = x.flatten(1, -2)
    g = torch.linalg.vector_norm(xs, ord=2, dim=1, keepdim=True)
    n = g / (g.mean(dim=-1, keepdim=True) + eps)
    out = (gamma.flatten(1, -2) * n + 1) * xs
    if beta is not None:
        out = out + beta.flatten(1, -2)
    return out.reshape(x.shape)


@torch.jit.unused
def _grn_engine(x: torch.Tensor, gamma: torch.Tensor, beta: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        # tracing/export/torch.compile need plain aten operations (inductor fuses them itself)
        return _grn_unfused(x, gamma, beta, eps)
    return fused_grn(x, gamma, beta, eps)


# FX: one leaf call node (the fused operation is an autograd.Function a symbolic tracer cannot enter)
torch.fx.wrap("_grn_engine")


class EngineGRN(GRN):
    """:class:`GRN` computed by the fused operation :func:`largekernel.ops.grn.grn`.

    Same parameters, state dict and values as :class:`GRN`; a training step reads and writes the
    activation 8 times instead of about 17 (compiled kernels on CPU, the same closed form in
    PyTorch elsewhere). :func:`largekernel.accelerate` turns every ``GRN`` of a model into this
    class and :func:`largekernel.to_torch_convs` turns it back. TorchScript, tracing, export and
    ``torch.compile`` see the unfused operations.

    Example:
        >>> m = EngineGRN(16)
        >>> x = torch.randn(2, 4, 4, 16)
        >>> torch.equal(m(x), GRN(16)(x))  # gamma = beta = 0 at initialisation: the identity
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _grn_unfused(x, self.gamma, self.beta, self.eps)
        return _grn_engine(x, self.gamma, self.beta, self.eps)


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
        # rank-agnostic (1-D/2-D/3-D inputs) without Python control flow on shapes, so that
        # torch.fx can trace it: pool to (N, C, 1, 1), gate, then scale the (N, C, S) view.
        # (Not an einsum with "...": OpenVINO's Einsum conversion mis-broadcasts it when the
        # spatial sizes are dynamic.)
        flat = x.flatten(2)
        s = flat.mean(-1)[:, :, None, None]
        gate = torch.sigmoid(self.up(F.relu(self.down(s))))
        return (flat * gate.flatten(1).unsqueeze(-1)).view_as(x)
