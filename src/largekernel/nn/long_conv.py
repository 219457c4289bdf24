"""LongConv: a plain long convolution (one weight per lag) with soft-threshold "squash".

The simplest global-convolution baseline for SGConv: every channel owns ``seq_len`` free
weights, one per lag. To keep such a kernel smooth and sparse, the weights go through a
soft-threshold in every forward pass, ``k <- sign(k) * relu(|k| - lambda)`` (weights smaller
than ``lambda`` are exactly zero, larger ones shrink by ``lambda``). The convolution runs via the
FFT for long kernels (see :func:`largekernel.nn.sgconv.long_conv1d`) or directly on the engine.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.nn.sgconv import _check_mode, _check_positive_int, long_conv1d

__all__ = ["LongConv", "squash"]


def squash(kernel: torch.Tensor, lam: float) -> torch.Tensor:
    """Soft-threshold ``sign(k) * relu(|k| - lam)``.

    Example:
        >>> squash(torch.tensor([-0.5, 0.05, 0.3]), 0.1)
        tensor([-0.4000,  0.0000,  0.2000])
    """
    return torch.sign(kernel) * F.relu(kernel.abs() - lam)


class LongConv(nn.Module):
    """Per-channel long convolution over ``(N, C, L)`` with one weight per lag and squash.

    ``y = squash(k) * u + D * u``. Causal by default; ``causal=False`` adds a second weight per
    lag for future inputs (``y[t]`` sees ``u[t + 1 .. t + L]``), as SGConv's bidirectional mode.
    Inputs shorter than ``seq_len`` use the first taps; longer inputs see at most ``seq_len`` lags.
    Parameters: ``(1 + (not causal)) * C * seq_len + C``.

    Args:
        channels: Channels ``C``.
        seq_len: Kernel length ``L`` (lags).
        causal: Only past and present inputs contribute.
        squash_lambda: Soft-threshold ``lambda`` (``0`` disables the squash).
        dropout: Dropout probability on the *kernel weights* during training (a regulariser for
            the many free weights); identity in eval mode, so the operator stays linear.
        mode: ``"auto"``, ``"fft"`` or ``"direct"`` (engine conv).
        device: Parameter device.
        dtype: Parameter dtype.

    Example:
        >>> op = LongConv(16, seq_len=512)
        >>> op(torch.randn(2, 16, 512)).shape
        torch.Size([2, 16, 512])
    """

    def __init__(
        self,
        channels: int,
        seq_len: int,
        causal: bool = True,
        squash_lambda: float = 0.003,
        dropout: float = 0.0,
        mode: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int(channels, "channels")
        _check_positive_int(seq_len, "seq_len")
        if isinstance(squash_lambda, bool) or not isinstance(squash_lambda, (int, float)) or squash_lambda < 0:
            raise ValueError(f"squash_lambda must be a number >= 0, got {squash_lambda!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        _check_mode(mode)
        self.channels = channels
        self.seq_len = seq_len
        self.causal = bool(causal)
        self.squash_lambda = float(squash_lambda)
        self.dropout = float(dropout)
        self.mode = mode
        directions = 1 if self.causal else 2
        # std 1/sqrt(L) keeps the output variance ~ input variance, and most weights well
        # above the default lambda so the squash does not zero the kernel at init
        std = 1.0 / math.sqrt(seq_len)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.randn(directions, channels, seq_len, **factory) * std)
        self.D = nn.Parameter(torch.randn(channels, **factory))
        self.deployed = False

    def kernel(self) -> torch.Tensor:
        """Squashed kernel ``(directions, C, seq_len)`` (``[0]`` causal, ``[1]`` anti-causal)."""
        if self.deployed:
            return self.kernel_deploy
        k = squash(self.weight, self.squash_lambda) if self.squash_lambda > 0 else self.weight
        if self.training and self.dropout > 0:
            k = F.dropout(k, self.dropout, training=True)
        return k

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[1] != self.channels:
            raise ValueError(f"input must be (N, {self.channels}, T), got {tuple(u.shape)}")
        k = self.kernel()[..., : min(u.shape[-1], self.seq_len)].to(u.dtype)
        y = long_conv1d(u, k[0], None if self.causal else k[1], self.mode)
        return y + self.D.to(u.dtype)[:, None] * u

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Store the squashed kernel as the buffer ``kernel_deploy`` (inference; no squash per call)."""
        if self.deployed:
            return
        was_training = self.training
        self.training = False  # no kernel dropout in the materialised kernel
        kernel = self.kernel().detach().clone()
        self.training = was_training
        del self.weight
        self.register_buffer("kernel_deploy", kernel)
        self.deployed = True

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, seq_len={self.seq_len}, causal={self.causal}, "
            f"squash_lambda={self.squash_lambda}, dropout={self.dropout}, mode={self.mode!r}"
        )
