"""SGConv: structured global convolution for long sequences (1-D) and images (2-D).

The kernel of an SGConv is as long as the sequence but has only ``d * log2(L / d)`` parameters
per channel: it is built from ``S = 1 + ceil(log2(L / d))`` sub-kernels of ``d`` taps each;
sub-kernel ``i`` is linearly upsampled by ``2 ** max(0, i - 1)`` and scaled by
``alpha ** (S - 1 - i)``, so farther lags are smoother and (relatively) smaller. The
concatenation is divided by its per-channel L2 norm (computed once at construction and stored as
a buffer, so the scale does not drift during training) and cut to the sequence length.

Split between operator and block (a deliberate choice):

* :class:`SGConv` is the *pure linear operator* ``y = k * u + D * u`` (per-channel long
  convolution plus skip). Being linear, it supports :meth:`SGConv.reparameterize`, which
  materialises the kernel into a buffer for inference.
* :class:`SGConvBlock` is the usual token mixer built around it: ``SGConv -> GELU -> Dropout ->
  Linear`` (the Linear mixes channels). Sequence models stack blocks, not bare operators.

Two numerically equivalent execution paths are provided for every operator here:
``mode="fft"`` (``rfft`` with a transform length of at least ``T + K - 1``, chosen with small
prime factors) and ``mode="direct"`` (a depthwise conv through the largekernel engine,
:func:`largekernel.ops.conv.conv`). ``mode="auto"`` picks FFT for long kernels.

This module also hosts the small FFT helpers (:func:`fft_correlate`, :func:`next_fast_len`)
shared by :mod:`largekernel.nn.long_conv` and :mod:`largekernel.nn.hyper_kernel`.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.ops.conv import conv

__all__ = [
    "SGConv",
    "SGConv2d",
    "SGConvBlock",
    "fft_correlate",
    "next_fast_len",
    "long_conv1d",
    "sgconv_num_scales",
]

log = logging.getLogger(__name__)

_MODES = ("auto", "fft", "direct")
# Above this many taps the FFT path is cheaper than a direct depthwise conv on CPU.
_AUTO_FFT_TAPS = 64


def next_fast_len(n: int) -> int:
    """Smallest integer ``>= n`` whose only prime factors are 2, 3 and 5 (fast FFT sizes).

    Example:
        >>> next_fast_len(97)
        100
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    best = 1 << (n - 1).bit_length()  # power of two is always a valid candidate
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two times p35 that reaches n
            quotient = -(-n // p35)
            p2 = 1 << (quotient - 1).bit_length()
            candidate = p2 * p35
            if candidate < best:
                best = candidate
            p35 *= 3
        p5 *= 5
    return best


def fft_correlate(x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """"Valid" cross-correlation (what ``F.conv1d/2d`` computes with ``padding=0``) via the FFT.

    Pad ``x`` beforehand for any other padding. Uses the correlation theorem: the result is
    ``irfft(rfft(x) * conj(rfft(w)))``; a transform length ``n >= x``'s length suffices because
    only the wrap-free outputs ``[0, n_x - K + 1)`` are kept.

    Args:
        x: Input ``(N, C_in, *spatial)`` with 1 or 2 spatial dims.
        weight: Either ``(C_out, C_in / groups, *K)`` shared by the batch, or
            ``(N, C_out, C_in / groups, *K)`` with one kernel per sample.
        groups: Number of channel groups, as in ``F.conv``.

    Returns:
        ``(N, C_out, *(spatial - K + 1))``.

    Example:
        >>> x, w = torch.randn(2, 4, 50), torch.randn(4, 1, 9)
        >>> torch.allclose(fft_correlate(x, w, groups=4), F.conv1d(x, w, groups=4), atol=1e-5)
        True
    """
    nd = x.dim() - 2
    if nd not in (1, 2):
        raise ValueError(f"x must be (N, C, L) or (N, C, H, W), got shape {tuple(x.shape)}")
    per_sample = weight.dim() == x.dim() + 1
    if weight.dim() not in (x.dim(), x.dim() + 1):
        raise ValueError(f"weight must have {x.dim()} or {x.dim() + 1} dims, got {tuple(weight.shape)}")
    n_batch, c_in = x.shape[:2]
    spatial = tuple(x.shape[2:])
    ksize = tuple(weight.shape[-nd:])
    if any(k > s for k, s in zip(ksize, spatial)):
        raise ValueError(f"kernel {ksize} larger than the (padded) input {spatial}")
    c_out = weight.shape[-nd - 2]
    cin_g = c_in // groups
    cout_g = c_out // groups
    sizes = [next_fast_len(s) for s in spatial]
    dims = tuple(range(-nd, 0))
    # the FFT runs in at least float32 (complex32 is not supported for most ops)
    work = torch.promote_types(x.dtype, torch.float32)
    xf = torch.fft.rfftn(x.to(work), s=sizes, dim=dims)
    wf = torch.fft.rfftn(weight.to(work), s=sizes, dim=dims).conj()
    freq = tuple(xf.shape[-nd:])
    xf = xf.reshape(n_batch, groups, cin_g, *freq)
    if per_sample:
        wf = wf.reshape(n_batch, groups, cout_g, cin_g, *freq)
    else:
        wf = wf.reshape(1, groups, cout_g, cin_g, *freq)
    if cin_g == 1:
        # depthwise / one input per group: a broadcast product, no reduction needed
        yf = xf * wf[:, :, :, 0]
    else:
        # channel mixing per frequency as a batched complex matmul: no (N, C_out, C_in, F) temporary
        n_freq = math.prod(freq)
        xm = xf.reshape(n_batch, groups, cin_g, n_freq).permute(1, 3, 0, 2)  # (G, F, N, Cin_g)
        if per_sample:
            wm = wf.reshape(n_batch, groups, cout_g, cin_g, n_freq).permute(1, 4, 0, 3, 2)  # (G, F, N, Cin_g, Cout_g)
            ym = (xm.unsqueeze(-2) @ wm).squeeze(-2)  # (G, F, N, Cout_g)
        else:
            wm = wf.reshape(groups, cout_g, cin_g, n_freq).permute(0, 3, 2, 1)  # (G, F, Cin_g, Cout_g)
            ym = xm @ wm
        yf = ym.permute(2, 0, 3, 1)  # (N, G, Cout_g, F)
    yf = yf.reshape(n_batch, c_out, *freq)
    y = torch.fft.irfftn(yf, s=sizes, dim=dims)
    index = tuple(slice(0, s - k + 1) for s, k in zip(spatial, ksize))
    return y[(Ellipsis, *index)].to(x.dtype)


def long_conv1d(
    u: torch.Tensor,
    k_fwd: torch.Tensor,
    k_bwd: torch.Tensor | None = None,
    mode: str = "auto",
) -> torch.Tensor:
    """Per-channel long convolution with a causal and an optional anti-causal kernel.

    ``y[c, t] = sum_{j >= 0} k_fwd[c, j] u[c, t - j] + sum_{j >= 0} k_bwd[c, j] u[c, t + 1 + j]``
    (zero outside the sequence). Output length equals input length.

    Args:
        u: ``(N, C, T)``.
        k_fwd: ``(C, K_f)``, ``k_fwd[:, j]`` is the weight of lag ``j`` (past input).
        k_bwd: ``(C, K_b)`` or ``None``; ``k_bwd[:, j]`` weighs the input ``j + 1`` steps ahead.
        mode: ``"fft"``, ``"direct"`` (engine conv) or ``"auto"``.

    Example:
        >>> y = long_conv1d(torch.randn(2, 3, 100), torch.randn(3, 100))
        >>> y.shape
        torch.Size([2, 3, 100])
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    channels = u.shape[1]
    # lag-ordered taps from the most future (-K_b) to the most past (K_f - 1);
    # correlation weight = that array reversed
    if k_bwd is not None:
        taps = torch.cat([k_bwd.flip(-1), k_fwd], dim=-1)
        right = k_bwd.shape[-1]
    else:
        taps = k_fwd
        right = 0
    weight = taps.flip(-1).reshape(channels, 1, -1)
    left = k_fwd.shape[-1] - 1
    up = F.pad(u, (left, right))
    if mode == "auto":
        mode = "fft" if weight.shape[-1] > _AUTO_FFT_TAPS else "direct"
    if mode == "fft":
        return fft_correlate(up, weight, groups=channels)
    return conv(up, weight.to(u.dtype), None, 1, 0, 1, channels)


def sgconv_num_scales(length: int, kernel_dim: int) -> int:
    """``S = 1 + ceil(log2(length / kernel_dim))`` (at least 1): sub-kernels needed to cover ``length``.

    Example:
        >>> sgconv_num_scales(1024, 64)
        5
    """
    if length <= kernel_dim:
        return 1
    return 1 + math.ceil(math.log2(length / kernel_dim))


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    return mode


def _check_alpha(alpha) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    return float(alpha)


@torch.no_grad()
def _materialise_kernel(module: nn.Module) -> None:
    """Store ``module.kernel()`` as the buffer ``kernel_deploy`` and drop its ``sub_kernels`` (idempotent)."""
    if module.deployed:
        return
    kernel = module.kernel().detach().clone()
    del module.sub_kernels
    module.register_buffer("kernel_deploy", kernel)
    module.deployed = True


class SGConv(nn.Module):
    """Structured global convolution over ``(N, C, L)`` sequences (pure linear operator).

    ``y = k * u + D * u`` with a per-channel kernel ``k`` as long as the sequence, built from
    ``S = 1 + ceil(log2(seq_len / kernel_dim))`` sub-kernels (see the module docstring).
    Causal by default (``y[t]`` depends on ``u[<= t]``); ``bidirectional=True`` adds a second
    kernel over future inputs. Inputs shorter than ``seq_len`` use the kernel's first taps;
    longer inputs are allowed (the kernel is zero beyond ``seq_len`` lags).

    Parameters: ``(1 + bidirectional) * S * C * kernel_dim + C`` (the ``+ C`` is ``D``).

    Args:
        channels: Number of channels ``C``.
        seq_len: Maximal sequence length ``L`` the kernel covers.
        kernel_dim: Taps per sub-kernel ``d``.
        alpha: Decay base; sub-kernel ``i`` is scaled by ``alpha ** (S - 1 - i)``.
        bidirectional: Add an anti-causal kernel.
        mode: ``"auto"``, ``"fft"`` or ``"direct"`` (engine conv).
        device: Parameter device.
        dtype: Parameter dtype.

    Example:
        >>> op = SGConv(16, seq_len=1024, kernel_dim=32)
        >>> op(torch.randn(2, 16, 1024)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(
        self,
        channels: int,
        seq_len: int,
        kernel_dim: int = 64,
        alpha: float = 2.0,
        bidirectional: bool = False,
        mode: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = _check_positive_int(channels, "channels")
        self.seq_len = _check_positive_int(seq_len, "seq_len")
        self.kernel_dim = _check_positive_int(kernel_dim, "kernel_dim")
        self.alpha = _check_alpha(alpha)
        self.bidirectional = bool(bidirectional)
        self.mode = _check_mode(mode)
        self.num_scales = sgconv_num_scales(self.seq_len, self.kernel_dim)
        factory = {"device": device, "dtype": dtype}
        directions = 2 if self.bidirectional else 1
        # one (directions, C, d) parameter per scale
        self.sub_kernels = nn.ParameterList(
            nn.Parameter(torch.randn(directions, channels, kernel_dim, **factory))
            for _ in range(self.num_scales)
        )
        self.D = nn.Parameter(torch.randn(channels, **factory))
        with torch.no_grad():
            norm = self._concat_kernel().norm(dim=-1, keepdim=True)
        # frozen at init on purpose: a kernel norm recomputed every step would undo the decay
        self.register_buffer("kernel_norm", norm.clamp_min(1e-12))
        self.deployed = False

    def _concat_kernel(self) -> torch.Tensor:
        """Scaled, upsampled sub-kernels concatenated: ``(directions, C, d * 2**(S-1))``."""
        pieces = []
        for i, sub in enumerate(self.sub_kernels):
            factor = 2 ** max(0, i - 1)
            piece = sub
            if factor > 1:
                piece = F.interpolate(sub, scale_factor=factor, mode="linear", align_corners=False)
            pieces.append(piece * self.alpha ** (self.num_scales - 1 - i))
        return torch.cat(pieces, dim=-1)

    def kernel(self) -> torch.Tensor:
        """The normalised kernel ``(directions, C, seq_len)``; ``[0]`` causal, ``[1]`` anti-causal."""
        if self.deployed:
            return self.kernel_deploy
        return (self._concat_kernel() / self.kernel_norm)[..., : self.seq_len]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[1] != self.channels:
            raise ValueError(f"input must be (N, {self.channels}, T), got {tuple(u.shape)}")
        length = u.shape[-1]
        k = self.kernel()[..., : min(length, self.seq_len)].to(u.dtype)
        k_bwd = k[1] if self.bidirectional else None
        y = long_conv1d(u, k[0], k_bwd, self.mode)
        return y + self.D.to(u.dtype)[:, None] * u

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Materialise the kernel into the buffer ``kernel_deploy`` and drop the sub-kernels."""
        _materialise_kernel(self)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, seq_len={self.seq_len}, kernel_dim={self.kernel_dim}, "
            f"scales={self.num_scales}, alpha={self.alpha}, bidirectional={self.bidirectional}, "
            f"mode={self.mode!r}"
        )


class SGConvBlock(nn.Module):
    """``SGConv -> GELU -> Dropout -> Linear`` token mixer on ``(N, C, L)`` inputs.

    Args:
        channels: Channels ``C`` (input and output).
        seq_len: Maximal sequence length.
        kernel_dim: Taps per sub-kernel.
        alpha: Decay base of the kernel scales.
        bidirectional: Use past and future context.
        dropout: Dropout probability after the GELU.
        mode: SGConv execution path.
        device: Parameter device.
        dtype: Parameter dtype.

    Example:
        >>> block = SGConvBlock(8, seq_len=256, kernel_dim=16, dropout=0.1)
        >>> block(torch.randn(2, 8, 256)).shape
        torch.Size([2, 8, 256])
    """

    def __init__(
        self,
        channels: int,
        seq_len: int,
        kernel_dim: int = 64,
        alpha: float = 2.0,
        bidirectional: bool = False,
        dropout: float = 0.0,
        mode: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        factory = {"device": device, "dtype": dtype}
        self.conv = SGConv(channels, seq_len, kernel_dim, alpha, bidirectional, mode, **factory)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(channels, channels, **factory)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.conv(u)))
        return self.proj(y.transpose(1, 2)).transpose(1, 2)


def _as_pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(value[0]), int(value[1])


def _center_fit(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad or crop the last two dims of ``kernel`` around its centre to ``size``."""
    out = kernel
    for dim, target in zip((-2, -1), size):
        current = out.shape[dim]
        if current < target:
            before = (target - current) // 2
            pad = [0, 0, 0, 0]
            idx = 0 if dim == -1 else 2
            pad[idx], pad[idx + 1] = before, target - current - before
            out = F.pad(out, pad)
        elif current > target:
            start = (current - target) // 2
            out = out.narrow(dim, start, target)
    return out


class SGConv2d(nn.Module):
    """2-D SGConv for images: a depthwise kernel as large as the feature map, "same" output.

    The 2-D variant sums nested scales instead of concatenating segments: sub-kernel ``i``
    (``d x d``) is bilinearly upsampled by ``2 ** i``, scaled by ``alpha ** (S - 1 - i)``,
    zero-padded (or cropped) around the centre to the kernel size, and all scales are added;
    ``S = 1 + ceil(log2(K / d))`` for the larger kernel side ``K``. Coarse scales reach far
    with few parameters, fine scales add detail near the centre. The sum is normalised by the
    per-channel L2 norm computed at construction (buffer). The kernel size is ``size`` made
    odd (``n | 1``), so with "same" padding the centre pixel sees the whole map.

    ``y = depthwise_conv(x, k, padding="same") + D * x``.
    Parameters: ``S * C * d * d + C``.

    Args:
        channels: Channels ``C``.
        size: Feature-map size ``(H, W)`` (or an int) the kernel covers.
        kernel_dim: Side ``d`` of each sub-kernel.
        alpha: Decay base.
        mode: ``"auto"``, ``"fft"`` or ``"direct"`` (engine conv).
        device: Parameter device.
        dtype: Parameter dtype.

    Example:
        >>> op = SGConv2d(8, size=(14, 14), kernel_dim=4)
        >>> op(torch.randn(2, 8, 14, 14)).shape
        torch.Size([2, 8, 14, 14])
    """

    def __init__(
        self,
        channels: int,
        size: int | tuple[int, int],
        kernel_dim: int = 8,
        alpha: float = 2.0,
        mode: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = _check_positive_int(channels, "channels")
        self.size = _as_pair(size, "size")
        self.kernel_dim = _check_positive_int(kernel_dim, "kernel_dim")
        self.alpha = _check_alpha(alpha)
        self.mode = _check_mode(mode)
        self.kernel_size = (self.size[0] | 1, self.size[1] | 1)
        self.num_scales = sgconv_num_scales(max(self.kernel_size), self.kernel_dim)
        factory = {"device": device, "dtype": dtype}
        self.sub_kernels = nn.ParameterList(
            nn.Parameter(torch.randn(channels, 1, kernel_dim, kernel_dim, **factory))
            for _ in range(self.num_scales)
        )
        self.D = nn.Parameter(torch.randn(channels, **factory))
        with torch.no_grad():
            norm = self._raw_kernel().flatten(1).norm(dim=1)
        self.register_buffer("kernel_norm", norm.clamp_min(1e-12).reshape(channels, 1, 1, 1))
        self.deployed = False

    def _raw_kernel(self) -> torch.Tensor:
        total = None
        for i, sub in enumerate(self.sub_kernels):
            factor = 2**i
            piece = sub
            if factor > 1:
                piece = F.interpolate(sub, scale_factor=factor, mode="bilinear", align_corners=False)
            piece = _center_fit(piece, self.kernel_size) * self.alpha ** (self.num_scales - 1 - i)
            total = piece if total is None else total + piece
        return total

    def kernel(self) -> torch.Tensor:
        """The depthwise kernel ``(C, 1, K_h, K_w)`` (correlation layout, as ``F.conv2d``)."""
        if self.deployed:
            return self.kernel_deploy
        return self._raw_kernel() / self.kernel_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"input must be (N, {self.channels}, H, W), got {tuple(x.shape)}")
        k = self.kernel().to(x.dtype)
        kh, kw = k.shape[-2:]
        # odd kernel: symmetric "same" padding
        xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
        mode = self.mode
        if mode == "auto":
            mode = "fft" if kh * kw > _AUTO_FFT_TAPS * 16 else "direct"
        if mode == "fft":
            y = fft_correlate(xp, k, groups=self.channels)
        else:
            y = conv(xp, k, None, 1, 0, 1, self.channels)
        return y + self.D.to(x.dtype)[:, None, None] * x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Materialise the kernel into the buffer ``kernel_deploy`` and drop the sub-kernels."""
        _materialise_kernel(self)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, size={self.size}, kernel_size={self.kernel_size}, "
            f"kernel_dim={self.kernel_dim}, scales={self.num_scales}, alpha={self.alpha}, mode={self.mode!r}"
        )
