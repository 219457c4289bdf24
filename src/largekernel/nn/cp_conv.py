"""CP-compressed ("a priori" factored, one-way filter) convolutions.

A full conv kernel is kept in a rank-``R`` CP (canonical polyadic) format and trained from scratch:

``W[o, c, i, j] = sum_r A[o, r] * B[c, r] * V[i, r] * H[j, r]``   (2-D; 1-D drops ``H``, 3-D adds a third)

and the forward pass never forms ``W``: a 1x1 conv ``C_in -> R`` (``B``), one depthwise one-way
conv per spatial axis on the ``R`` channels (``V``: ``k_h x 1``, ``H``: ``1 x k_w``, ...), and a 1x1
conv ``R -> C_out`` (``A``) with the bias. Stride, padding and dilation of each axis are applied in
that axis' depthwise conv, which is exact because zero padding and strided sampling factor over
axes. Parameters: ``R * (C_in + k_h + k_w + C_out)`` (+ ``C_out`` bias).

Variants built here (the source paper's exact factor sharing is not public):

* :class:`CPConv1d` / :class:`CPConv2d` / :class:`CPConv3d`: one set of ``R`` rank-one terms shared
  by all (output, input) channel pairs, the 4-way (5-way in 3-D) CP format above.
* :class:`CPDepthwiseConv2d`: a depthwise conv whose per-channel ``k_h x k_w`` kernel is rank ``R``,
  ``W[c, i, j] = sum_r V[c, r, i] * H[c, r, j]`` (per-channel, not shared, factors; the "2-way" variant).

``from_dense`` decomposes a trained ordinary conv: CP-ALS for the full variant, truncated SVD
(optimal) for the depthwise one. The returned module has a float attribute
``approximation_error`` = ``||W - W_cp||_F / ||W||_F``.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import nn

from largekernel.nn.conv import Conv1d, Conv2d, Conv3d
from largekernel.ops.conv import conv

__all__ = ["CPConv1d", "CPConv2d", "CPConv3d", "CPDepthwiseConv2d", "cp_als", "CP_METHODS"]

logger = logging.getLogger(__name__)

CP_METHODS = ("als", "svd")
_LETTERS = "abcdefgh"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _tuple(value, ndim: int, name: str, minimum: int | None = None) -> tuple[int, ...]:
    """``value`` (an int or ``ndim`` ints) as an ``ndim``-tuple; each entry ``>= minimum`` unless it is ``None``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if isinstance(value, int):
        out: tuple = (value,) * ndim
    else:
        try:
            out = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if len(out) != ndim:
        raise ValueError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def _resolve_padding(padding, kernel_size, stride, dilation, ndim) -> tuple[int, ...]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * ndim
        if padding != "same":
            raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' requires stride 1")
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        if any(t % 2 for t in totals):
            raise ValueError(
                f"padding='same' needs dilation*(kernel_size-1) even on every axis, got kernel_size={kernel_size}"
            )
        return tuple(t // 2 for t in totals)
    return _tuple(padding, ndim, "padding", 0)


def _axis_tuple(value: int, axis: int, ndim: int, fill: int) -> tuple[int, ...]:
    out = [fill] * ndim
    out[axis] = value
    return tuple(out)


def cp_als(
    tensor: torch.Tensor,
    rank: int,
    iters: int = 100,
    init: str = "random",
    tol: float = 1e-10,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], float]:
    """Rank-``rank`` CP decomposition by alternating least squares (in float64).

    Args:
        tensor: Any N-way tensor (N <= 8).
        rank: Number of rank-one terms.
        iters: Maximum ALS sweeps (0 returns the initialisation).
        init: ``"random"`` (Gaussian) or ``"svd"`` (leading left singular vectors of each
            unfolding; columns beyond a mode's size are random).
        tol: Stop when the relative error improves by less than this in a sweep.
        generator: RNG for the random parts of the initialisation.

    Returns:
        ``(factors, relative_error)``: ``factors[n]`` is ``(tensor.shape[n], rank)`` in float64 with the
        scale spread evenly over the modes, so ``tensor ~= sum_r prod_n factors[n][:, r]``.
    """
    if init not in ("random", "svd"):
        raise ValueError(f"init must be 'random' or 'svd', got {init!r}")
    _positive_int("rank", rank)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative int, got {iters!r}")
    t = tensor.detach().to(torch.float64)
    n_modes = t.dim()
    if not 1 <= n_modes <= len(_LETTERS):
        raise ValueError(f"tensor must have 1..{len(_LETTERS)} dims, got {n_modes}")
    letters = _LETTERS[:n_modes]
    norm_t = torch.linalg.vector_norm(t)

    def rand(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=generator, dtype=torch.float64).to(t.device)

    factors: list[torch.Tensor] = []
    for n, size in enumerate(t.shape):
        if init == "svd":
            unfolding = torch.movedim(t, n, 0).reshape(size, -1)
            u = torch.linalg.svd(unfolding, full_matrices=False)[0][:, :rank]
            if u.shape[1] < rank:
                u = torch.cat([u, rand(size, rank - u.shape[1])], dim=1)
            factors.append(u)
        else:
            factors.append(rand(size, rank))
    lam = torch.ones(rank, dtype=torch.float64, device=t.device)

    def reconstruct() -> torch.Tensor:
        spec = ",".join(f"{c}z" for c in letters) + ",z->" + letters
        return torch.einsum(spec, *factors, lam)

    def rel_error() -> float:
        if norm_t == 0:
            return 0.0
        return float(torch.linalg.vector_norm(t - reconstruct()) / norm_t)

    err = rel_error()
    for _ in range(iters):
        for n in range(n_modes):
            others = [m for m in range(n_modes) if m != n]
            gram = torch.ones(rank, rank, dtype=torch.float64, device=t.device)
            for m in others:
                gram = gram * (factors[m].T @ factors[m])
            spec = letters + "," + ",".join(f"{letters[m]}z" for m in others) + f"->{letters[n]}z"
            mttkrp = torch.einsum(spec, t, *[factors[m] for m in others])
            # the Gram matrix can be singular (rank > a mode's size): use the pseudo-inverse
            updated = mttkrp @ torch.linalg.pinv(gram, hermitian=True)
            lam = torch.linalg.vector_norm(updated, dim=0)
            factors[n] = updated / torch.where(lam > 0, lam, torch.ones_like(lam))
        new_err = rel_error()
        done = abs(err - new_err) < tol
        err = new_err
        if done:
            break
    # spread the scale over the modes (geometric mean) so no factor is tiny or huge
    share = lam.clamp_min(0).pow(1.0 / n_modes)
    factors = [f * share for f in factors]
    return factors, err


class _CPConvNd(nn.Module):
    _ndim = 0
    _dense_cls: type = nn.Module

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        rank: int,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        nd = self._ndim
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.rank = _positive_int("rank", rank)
        self.kernel_size = _tuple(kernel_size, nd, "kernel_size", 1)
        self.stride = _tuple(stride, nd, "stride", 1)
        self.dilation = _tuple(dilation, nd, "dilation", 1)
        self._padding_arg = padding
        self.padding = _resolve_padding(padding, self.kernel_size, self.stride, self.dilation, nd)
        factory = {"device": device, "dtype": dtype}
        self.in_factor = nn.Parameter(torch.empty(rank, in_channels, **factory))  # B^T
        self.spatial_factors = nn.ParameterList(
            [nn.Parameter(torch.empty(rank, k, **factory)) for k in self.kernel_size]
        )  # V, H, ...
        self.out_factor = nn.Parameter(torch.empty(out_channels, rank, **factory))  # A
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.approximation_error: float | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian factors scaled so the implied dense kernel has ``nn.ConvNd``'s initial variance."""
        fan_in = self.in_channels * math.prod(self.kernel_size)
        n_factors = self._ndim + 2
        # Var(W) = R * prod_n s^2  ==  1 / (3 fan_in)  (kaiming_uniform(a=sqrt(5)) of nn.ConvNd)
        std = (1.0 / (3.0 * fan_in * self.rank)) ** (1.0 / (2 * n_factors))
        with torch.no_grad():
            for p in [self.in_factor, self.out_factor, *self.spatial_factors]:
                nn.init.normal_(p, 0.0, std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = self._ndim
        if x.dim() != nd + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input (N, {self.in_channels}, {nd} spatial dims), got {tuple(x.shape)}"
            )
        ones = (1,) * nd
        y = conv(x, self.in_factor.view((self.rank, self.in_channels) + ones))
        for axis, factor in enumerate(self.spatial_factors):
            kernel_shape = list(ones)
            kernel_shape[axis] = factor.shape[1]
            y = conv(
                y,
                factor.view((self.rank, 1) + tuple(kernel_shape)),
                None,
                _axis_tuple(self.stride[axis], axis, nd, 1),
                _axis_tuple(self.padding[axis], axis, nd, 0),
                _axis_tuple(self.dilation[axis], axis, nd, 1),
                self.rank,
            )
        return conv(y, self.out_factor.view((self.out_channels, self.rank) + ones), self.bias)

    def dense_weight(self) -> torch.Tensor:
        """The implied kernel ``(C_out, C_in, *kernel_size)`` (differentiable)."""
        letters = "ijk"[: self._ndim]
        spec = "or,rc," + ",".join(f"r{c}" for c in letters) + f"->oc{letters}"
        return torch.einsum(spec, self.out_factor, self.in_factor, *self.spatial_factors)

    @torch.no_grad()
    def to_dense(self) -> nn.Module:
        """The equivalent ordinary engine conv (``largekernel.nn.conv.ConvNd``)."""
        weight = self.dense_weight()
        dense = self._dense_cls(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
            bias=self.bias is not None, device=weight.device, dtype=weight.dtype,
        )
        dense.weight.copy_(weight)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense

    @classmethod
    def from_dense(
        cls,
        conv_module: nn.Module,
        rank: int,
        method: str = "als",
        iters: int = 100,
        generator: torch.Generator | None = None,
    ):
        """Decompose an ordinary conv (``groups=1``, zero padding) into this CP format.

        Args:
            conv_module: An ``nn.ConvNd`` of matching dimensionality.
            rank: CP rank ``R``.
            method: ``"als"`` (random init + CP-ALS) or ``"svd"`` (SVD-of-unfoldings init + CP-ALS;
                with ``iters=0`` just that initialisation).
            iters: Maximum ALS sweeps.
            generator: RNG for random initialisation.

        Returns:
            The module (same dtype/device as the conv); its ``approximation_error`` attribute holds
            the relative Frobenius error of the kernel approximation.

        Example:
            >>> dense = torch.nn.Conv2d(8, 16, 3, padding=1)
            >>> cp = CPConv2d.from_dense(dense, rank=4)
            >>> 0.0 <= cp.approximation_error <= 1.0
            True
        """
        nd = cls._ndim
        if not isinstance(conv_module, nn.modules.conv._ConvNd) or conv_module.weight.dim() != nd + 2:
            raise TypeError(f"conv_module must be an nn.Conv{nd}d, got {type(conv_module).__name__}")
        if conv_module.transposed:
            raise TypeError("conv_module must not be a transposed conv")
        if conv_module.groups != 1:
            raise ValueError(f"conv_module must have groups=1, got {conv_module.groups}")
        if conv_module.padding_mode != "zeros":
            raise ValueError(f"conv_module must use zero padding, got padding_mode={conv_module.padding_mode!r}")
        if method not in CP_METHODS:
            raise ValueError(f"method must be one of {CP_METHODS}, got {method!r}")
        w = conv_module.weight
        module = cls(
            conv_module.in_channels, conv_module.out_channels, tuple(conv_module.kernel_size), rank,
            tuple(conv_module.stride),
            conv_module.padding if isinstance(conv_module.padding, str) else tuple(conv_module.padding),
            tuple(conv_module.dilation), bias=conv_module.bias is not None, device=w.device, dtype=w.dtype,
        )
        factors, err = cp_als(w, rank, iters=iters, init="random" if method == "als" else "svd", generator=generator)
        with torch.no_grad():
            module.out_factor.copy_(factors[0])
            module.in_factor.copy_(factors[1].T)
            for p, f in zip(module.spatial_factors, factors[2:]):
                p.copy_(f.T)
            if conv_module.bias is not None:
                module.bias.copy_(conv_module.bias)
        module.approximation_error = err
        logger.debug("CP rank-%d decomposition of %s: relative error %.4g", rank, tuple(w.shape), err)
        return module

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
             f"stride={self.stride}, padding={self.padding}")
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        return s + (", bias=False" if self.bias is None else "")


class CPConv1d(_CPConvNd):
    """1-D conv with a rank-``R`` CP kernel ``W[o, c, i] = sum_r A[o,r] B[c,r] V[i,r]``.

    Forward: 1x1 (``C_in -> R``) -> depthwise ``k`` on ``R`` channels -> 1x1 (``R -> C_out``, bias).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size.
        rank: CP rank ``R``.
        stride: Stride.
        padding: Int(s), ``"valid"`` or ``"same"`` (stride 1, symmetric only).
        dilation: Dilation.
        bias: Learnable bias.
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> CPConv1d(4, 8, 9, rank=3, padding="same")(torch.randn(2, 4, 30)).shape
        torch.Size([2, 8, 30])
    """

    _ndim = 1
    _dense_cls = Conv1d


class CPConv2d(_CPConvNd):
    """2-D conv with a rank-``R`` CP kernel ``W[o,c,i,j] = sum_r A[o,r] B[c,r] V[i,r] H[j,r]``.

    Forward (``W`` is never formed): 1x1 (``C_in -> R``) -> DW ``k_h x 1`` -> DW ``1 x k_w``
    -> 1x1 (``R -> C_out``, bias). Parameters ``R (C_in + k_h + k_w + C_out)`` (+ ``C_out``).
    Factors: ``in_factor`` (R, C_in), ``spatial_factors[0]`` (R, k_h), ``spatial_factors[1]``
    (R, k_w), ``out_factor`` (C_out, R).

    Args: as :class:`CPConv1d`, with per-axis tuples allowed.

    Example:
        >>> m = CPConv2d(16, 32, kernel_size=7, rank=8, padding=3)
        >>> m(torch.randn(2, 16, 20, 20)).shape
        torch.Size([2, 32, 20, 20])
        >>> dense = m.to_dense()  # the equivalent nn.Conv2d-style layer
    """

    _ndim = 2
    _dense_cls = Conv2d


class CPConv3d(_CPConvNd):
    """3-D conv with a rank-``R`` CP kernel (one-way DW convs along depth, height, width).

    Args: as :class:`CPConv1d`, with per-axis tuples allowed.

    Example:
        >>> CPConv3d(2, 4, 3, rank=2, padding=1)(torch.randn(1, 2, 5, 6, 7)).shape
        torch.Size([1, 4, 5, 6, 7])
    """

    _ndim = 3
    _dense_cls = Conv3d


class CPDepthwiseConv2d(nn.Module):
    """Depthwise 2-D conv whose per-channel kernel has rank ``R``: ``W[c,i,j] = sum_r V[c,r,i] H[c,r,j]``.

    Forward: grouped ``k_h x 1`` conv ``C -> C*R`` (each channel feeds its own ``R`` maps) ->
    depthwise ``1 x k_w`` on ``C*R`` -> sum over the ``R`` maps of each channel (+ bias).
    Parameters ``C * R * (k_h + k_w)`` (+ ``C``).

    Args:
        channels: Input = output channels.
        kernel_size: Int or ``(k_h, k_w)``.
        rank: Per-channel rank ``R``.
        stride: Stride.
        padding: Int(s), ``"valid"`` or ``"same"``.
        dilation: Dilation.
        bias: Learnable bias.
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> m = CPDepthwiseConv2d(8, 13, rank=2, padding="same")
        >>> m(torch.randn(2, 8, 20, 20)).shape
        torch.Size([2, 8, 20, 20])
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | Sequence[int],
        rank: int,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.channels = _positive_int("channels", channels)
        self.rank = _positive_int("rank", rank)
        self.kernel_size = _tuple(kernel_size, 2, "kernel_size", 1)
        self.stride = _tuple(stride, 2, "stride", 1)
        self.dilation = _tuple(dilation, 2, "dilation", 1)
        self.padding = _resolve_padding(padding, self.kernel_size, self.stride, self.dilation, 2)
        factory = {"device": device, "dtype": dtype}
        kh, kw = self.kernel_size
        self.vertical = nn.Parameter(torch.empty(channels, rank, kh, **factory))
        self.horizontal = nn.Parameter(torch.empty(channels, rank, kw, **factory))
        self.bias = nn.Parameter(torch.empty(channels, **factory)) if bias else None
        self.approximation_error: float | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Factors scaled so the implied depthwise kernel has ``nn.Conv2d``'s initial variance."""
        fan_in = math.prod(self.kernel_size)
        std = (1.0 / (3.0 * fan_in * self.rank)) ** 0.25
        with torch.no_grad():
            nn.init.normal_(self.vertical, 0.0, std)
            nn.init.normal_(self.horizontal, 0.0, std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"CPDepthwiseConv2d expects input (N, {self.channels}, H, W), got {tuple(x.shape)}")
        c, r = self.channels, self.rank
        kh, kw = self.kernel_size
        y = conv(x, self.vertical.reshape(c * r, 1, kh, 1), None, (self.stride[0], 1), (self.padding[0], 0),
                 (self.dilation[0], 1), c)
        y = conv(y, self.horizontal.reshape(c * r, 1, 1, kw), None, (1, self.stride[1]), (0, self.padding[1]),
                 (1, self.dilation[1]), c * r)
        n, _, h, w = y.shape
        y = y.view(n, c, r, h, w).sum(dim=2)
        return y if self.bias is None else y + self.bias.view(1, c, 1, 1)

    def dense_weight(self) -> torch.Tensor:
        """The implied depthwise kernel ``(C, 1, k_h, k_w)`` (differentiable)."""
        return torch.einsum("cri,crj->cij", self.vertical, self.horizontal).unsqueeze(1)

    @torch.no_grad()
    def to_dense(self) -> nn.Module:
        """The equivalent ordinary depthwise engine ``Conv2d``."""
        weight = self.dense_weight()
        dense = Conv2d(self.channels, self.channels, self.kernel_size, self.stride, self.padding, self.dilation,
                       groups=self.channels, bias=self.bias is not None, device=weight.device, dtype=weight.dtype)
        dense.weight.copy_(weight)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense

    @classmethod
    def from_dense(cls, conv_module: nn.Module, rank: int) -> "CPDepthwiseConv2d":
        """Best rank-``R`` approximation (truncated SVD per channel) of a depthwise ``nn.Conv2d``.

        Returns:
            The module; ``approximation_error`` holds the relative Frobenius error over all channels.
        """
        if not isinstance(conv_module, nn.Conv2d):
            raise TypeError(f"conv_module must be an nn.Conv2d, got {type(conv_module).__name__}")
        c = conv_module.in_channels
        if conv_module.groups != c or conv_module.out_channels != c:
            raise ValueError("conv_module must be depthwise (groups == in_channels == out_channels)")
        if conv_module.padding_mode != "zeros":
            raise ValueError(f"conv_module must use zero padding, got padding_mode={conv_module.padding_mode!r}")
        w = conv_module.weight
        module = cls(
            c, tuple(conv_module.kernel_size), rank, tuple(conv_module.stride),
            conv_module.padding if isinstance(conv_module.padding, str) else tuple(conv_module.padding),
            tuple(conv_module.dilation), bias=conv_module.bias is not None, device=w.device, dtype=w.dtype,
        )
        mats = w.detach().to(torch.float64)[:, 0]  # (C, kh, kw)
        u, s, vh = torch.linalg.svd(mats, full_matrices=False)
        k = min(rank, s.shape[1])
        root = s[:, :k].sqrt()
        vertical = torch.zeros(c, rank, mats.shape[1], dtype=torch.float64, device=w.device)
        horizontal = torch.zeros(c, rank, mats.shape[2], dtype=torch.float64, device=w.device)
        vertical[:, :k] = (u[:, :, :k] * root.unsqueeze(1)).transpose(1, 2)
        horizontal[:, :k] = vh[:, :k, :] * root.unsqueeze(2)
        with torch.no_grad():
            module.vertical.copy_(vertical)
            module.horizontal.copy_(horizontal)
            if conv_module.bias is not None:
                module.bias.copy_(conv_module.bias)
        approx = torch.einsum("cri,crj->cij", vertical, horizontal)
        norm = torch.linalg.vector_norm(mats)
        module.approximation_error = float(torch.linalg.vector_norm(mats - approx) / norm) if norm > 0 else 0.0
        return module

    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel_size={self.kernel_size}, rank={self.rank}, stride={self.stride}, "
                f"padding={self.padding}" + (", bias=False" if self.bias is None else ""))
