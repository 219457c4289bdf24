"""DCLS: dilated convolution with learnable spacings (1-D, 2-D, 3-D).

Each output/input channel pair owns ``K`` kernel elements with a weight ``W_k`` and a continuous
position ``P_k`` inside a ``D_0 x D_1 x ...`` grid (the *dilated kernel size*). The dense kernel is

``kernel(u) = sum_k W_k * g_k(u)``

where ``g_k`` spreads element ``k`` over the grid cells around its position:

* ``version="gauss"``: ``g_k(u) = exp(-1/2 sum_d ((u_d - c_{k,d}) / s_{k,d})^2)`` normalised to sum
  one over the grid (``+1e-7``), ``s = |SIG| + 0.27``;
* ``version="bilinear"``: ``g_k(u) = prod_d relu(1 - |u_d - c_{k,d}|)`` (linear interpolation; it
  already sums to one for positions inside the grid, so no normalisation is applied).

Conventions (fixing two problems of the pip ``dcls`` 0.1.1 reference):

* **Axes**: position axis ``d`` (``P[d]``) moves an element along spatial axis ``d`` of the kernel,
  i.e. kernel dimension ``2 + d`` (height for ``d = 0`` and width for ``d = 1`` in 2-D), and is
  centred with that same axis' size: ``c_{k,d} = P_{k,d} + D_d // 2``. ``P = 0`` is the grid cell
  ``D_d // 2`` (the centre for odd ``D_d``).
* **Clamping**: positions are kept inside the grid, ``P_d in [-(D_d // 2), D_d - 1 - D_d // 2]``,
  in three ways: (1) ``forward`` always uses clamped positions (functionally, so autograd sees the
  clamp); (2) :meth:`clamp_positions_` clamps the stored parameter in place; (3)
  :func:`register_position_clamp` adds an optimiser step post-hook that calls (2) on every DCLS
  module of a model after each ``optimizer.step()``, which is what the reference leaves to users.
* **Devices**: index grids are built in ``forward`` on the input's device; nothing is cached, so
  ``.to(device)`` / ``.to(dtype)`` just work.

Parameter names (``weight``, ``bias``, ``P``, ``SIG``) follow the reference so state dicts look
familiar; note the different axis convention when importing reference checkpoints with
non-square grids.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.nn.conv import Conv1d, Conv2d, Conv3d
from largekernel.nn.cp_conv import _tuple
from largekernel.ops.conv import conv

__all__ = [
    "DCLSConv1d",
    "DCLSConv2d",
    "DCLSConv3d",
    "dcls_dense_kernel",
    "register_position_clamp",
    "clamp_positions_",
    "DCLS_VERSIONS",
]

DCLS_VERSIONS = ("gauss", "bilinear")
_SIGMA_OFFSET = 0.27
_NORM_EPS = 1e-7
_LETTERS = "abc"


def _position_bounds(dilated_kernel_size: Sequence[int]) -> list[tuple[int, int]]:
    return [(-(d // 2), d - 1 - d // 2) for d in dilated_kernel_size]


def dcls_dense_kernel(
    weight: torch.Tensor,
    positions: torch.Tensor,
    sigmas: torch.Tensor | None,
    dilated_kernel_size: Sequence[int],
    version: str = "gauss",
) -> torch.Tensor:
    """Build the dense DCLS kernel (differentiable in ``weight``, ``positions`` and ``sigmas``).

    Positions are used as given (clamp them first if needed).

    Args:
        weight: ``(C_out, C_in/groups, K)``.
        positions: ``(ndim, C_out, C_in/groups, K)``; 0 = grid cell ``D_d // 2``.
        sigmas: Same shape as ``positions`` for ``"gauss"``; ignored (may be ``None``) for ``"bilinear"``.
        dilated_kernel_size: Grid size ``(D_0, ..., D_{ndim-1})``.
        version: ``"gauss"`` or ``"bilinear"``.

    Returns:
        ``(C_out, C_in/groups, D_0, ..., D_{ndim-1})``.
    """
    ndim = len(dilated_kernel_size)
    if version not in DCLS_VERSIONS:
        raise ValueError(f"version must be one of {DCLS_VERSIONS}, got {version!r}")
    if positions.shape != (ndim,) + tuple(weight.shape):
        raise ValueError(
            f"positions must have shape {(ndim,) + tuple(weight.shape)}, got {tuple(positions.shape)}"
        )
    if version == "gauss" and (sigmas is None or sigmas.shape != positions.shape):
        raise ValueError("sigmas must be given with the same shape as positions for version='gauss'")
    profiles = []
    for d, size in enumerate(dilated_kernel_size):
        grid = torch.arange(size, device=weight.device, dtype=weight.dtype)
        diff = grid - (positions[d] + size // 2).unsqueeze(-1)  # (C_out, C_in/g, K, D_d)
        if version == "gauss":
            sigma = sigmas[d].abs().unsqueeze(-1) + _SIGMA_OFFSET
            profiles.append(torch.exp(-0.5 * (diff / sigma) ** 2))
        else:
            profiles.append(F.relu(1 - diff.abs()))
    scaled = weight
    if version == "gauss":
        # the Gaussian is separable, so its sum over the grid is the product of per-axis sums
        total = profiles[0].sum(-1)
        for p in profiles[1:]:
            total = total * p.sum(-1)
        scaled = weight / (total + _NORM_EPS)
    letters = _LETTERS[:ndim]
    spec = "oik," + ",".join(f"oik{c}" for c in letters) + f"->oi{letters}"
    return torch.einsum(spec, scaled, *profiles)


class _DCLSConvNd(nn.Module):
    _ndim = 0
    _dense_cls: type = nn.Module

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_count: int,
        dilated_kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        version: str = "gauss",
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        nd = self._ndim
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_count", kernel_count), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        if version not in DCLS_VERSIONS:
            raise ValueError(f"version must be one of {DCLS_VERSIONS}, got {version!r}")
        self.dilated_kernel_size = _tuple(dilated_kernel_size, nd, "dilated_kernel_size")
        self.stride = _tuple(stride, nd, "stride")
        self.dilation = _tuple(dilation, nd, "dilation")
        for name, vals in (("dilated_kernel_size", self.dilated_kernel_size), ("stride", self.stride),
                           ("dilation", self.dilation)):
            if any(v < 1 for v in vals):
                raise ValueError(f"{name} must be positive, got {vals}")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' requires stride 1 (as in torch.nn.Conv)")
            self.padding: tuple[int, ...] | str = padding if padding == "same" else (0,) * nd
        else:
            self.padding = _tuple(padding, nd, "padding")
            if any(p < 0 for p in self.padding):
                raise ValueError(f"padding must be non-negative, got {self.padding}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_count = kernel_count
        self.groups = groups
        self.version = version
        self.deployed = False
        factory = {"device": device, "dtype": dtype}
        shape = (out_channels, in_channels // groups, kernel_count)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.P = nn.Parameter(torch.empty((nd,) + shape, **factory))
        if version == "gauss":
            self.SIG = nn.Parameter(torch.empty((nd,) + shape, **factory))
        else:
            self.register_parameter("SIG", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight and bias like ``nn.ConvNd`` (fan-in = ``C_in/groups * K``), ``P ~ N(0, 0.5)``, ``SIG = 0.23``."""
        if self.deployed:
            raise RuntimeError("reset_parameters() is not available after reparameterize()")
        fan_in = self.weight.shape[1] * self.kernel_count
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            nn.init.uniform_(self.weight, -bound, bound)
            if self.bias is not None:
                nn.init.uniform_(self.bias, -bound, bound)
            nn.init.normal_(self.P, 0.0, 0.5)
            if self.SIG is not None:
                nn.init.constant_(self.SIG, 0.23)
        self.clamp_positions_()

    def _bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bounds = _position_bounds(self.dilated_kernel_size)
        shape = (self._ndim,) + (1,) * (like.dim() - 1)
        lo = torch.tensor([b[0] for b in bounds], dtype=like.dtype, device=like.device).view(shape)
        hi = torch.tensor([b[1] for b in bounds], dtype=like.dtype, device=like.device).view(shape)
        return lo, hi

    @torch.no_grad()
    def clamp_positions_(self) -> None:
        """Clamp the stored positions into the grid, in place (no-op after :meth:`reparameterize`)."""
        if self.deployed:
            return
        lo, hi = self._bounds(self.P)
        self.P.copy_(torch.clamp(self.P, lo, hi))

    def dense_kernel(self) -> torch.Tensor:
        """The dense ``(C_out, C_in/groups, *dilated_kernel_size)`` kernel (differentiable)."""
        if self.deployed:
            return self.weight
        lo, hi = self._bounds(self.P)
        # full gradient inside the bounds *including* the bounds themselves, zero outside: the
        # clamp's own gradient at a bound differs between PyTorch versions (1, 0.5 or 0)
        inside = (self.P >= lo) & (self.P <= hi)
        positions = torch.where(inside, self.P, torch.clamp(self.P, lo, hi).detach())
        return dcls_dense_kernel(self.weight, positions, self.SIG, self.dilated_kernel_size, self.version)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self._ndim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input (N, {self.in_channels}, {self._ndim} spatial dims), "
                f"got {tuple(x.shape)}"
            )
        kernel = self.dense_kernel()
        padding = self.padding
        if padding == "same":
            # explicit "same" padding, the extra cell on the far side like torch.nn.Conv
            pads: list[int] = []
            sym: list[int] = []
            for size, dil in zip(reversed(self.dilated_kernel_size), reversed(self.dilation)):
                total = dil * (size - 1)
                pads += [total // 2, total - total // 2]
                sym.insert(0, total // 2)
            if any(pads[i] != pads[i + 1] for i in range(0, len(pads), 2)):
                x = F.pad(x, pads)
                padding = (0,) * self._ndim
            else:
                padding = tuple(sym)
        return conv(x, kernel, self.bias, self.stride, padding, self.dilation, self.groups)

    @torch.no_grad()
    def to_dense(self) -> nn.Module:
        """An ordinary engine conv (``largekernel.nn.conv.ConvNd``) computing the same function."""
        kernel = self.dense_kernel().detach()
        dense = self._dense_cls(
            self.in_channels, self.out_channels, self.dilated_kernel_size, self.stride, self.padding,
            self.dilation, self.groups, bias=self.bias is not None, device=kernel.device, dtype=kernel.dtype,
        )
        dense.weight.copy_(kernel)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense

    @torch.no_grad()
    def reparameterize(self) -> None:
        """In place: replace ``weight``/``P``/``SIG`` by the dense kernel (``weight`` becomes
        ``(C_out, C_in/groups, *dilated_kernel_size)``) and run as an ordinary conv. Idempotent."""
        if self.deployed:
            return
        kernel = self.dense_kernel().detach().clone()
        for name in ("weight", "P", "SIG"):
            self._parameters.pop(name, None)
        self.weight = nn.Parameter(kernel)
        self.register_parameter("P", None)
        self.register_parameter("SIG", None)
        self.deployed = True

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_count={self.kernel_count}, "
             f"dilated_kernel_size={self.dilated_kernel_size}, stride={self.stride}, padding={self.padding}")
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", version={self.version!r}" + (", deployed" if self.deployed else "")


class DCLSConv1d(_DCLSConvNd):
    """1-D DCLS convolution. See the module docstring for the maths and conventions.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_count: ``K``, learnable kernel elements per (output, input) channel pair.
        dilated_kernel_size: Grid size ``D`` the elements move in (the dense kernel size).
        stride: Conv stride.
        padding: Int(s), ``"valid"`` or ``"same"`` (stride 1 only).
        dilation: Dilation of the dense conv.
        groups: Conv groups.
        bias: Learnable bias.
        version: ``"gauss"`` (learnable widths ``SIG``) or ``"bilinear"``.
        device: Factory kwarg.
        dtype: Factory kwarg.

    Example:
        >>> m = DCLSConv1d(4, 8, kernel_count=3, dilated_kernel_size=9, padding="same")
        >>> m(torch.randn(2, 4, 20)).shape
        torch.Size([2, 8, 20])
    """

    _ndim = 1
    _dense_cls = Conv1d


class DCLSConv2d(_DCLSConvNd):
    """2-D DCLS convolution. ``P[0]`` moves elements along the height, ``P[1]`` along the width.

    Args: as :class:`DCLSConv1d`, with per-axis tuples allowed.

    Example:
        >>> m = DCLSConv2d(4, 8, kernel_count=5, dilated_kernel_size=(7, 11), padding="same")
        >>> m(torch.randn(2, 4, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
        >>> dense = m.to_dense()  # an ordinary conv with a 7x11 kernel, same outputs
    """

    _ndim = 2
    _dense_cls = Conv2d


class DCLSConv3d(_DCLSConvNd):
    """3-D DCLS convolution (``P[0..2]`` move along depth, height, width).

    Args: as :class:`DCLSConv1d`, with per-axis tuples allowed.

    Example:
        >>> m = DCLSConv3d(2, 4, kernel_count=3, dilated_kernel_size=5, padding=2)
        >>> m(torch.randn(1, 2, 6, 6, 6)).shape
        torch.Size([1, 4, 6, 6, 6])
    """

    _ndim = 3
    _dense_cls = Conv3d


def clamp_positions_(modules: nn.Module | Iterable[nn.Module]) -> None:
    """Clamp the positions of every DCLS module in ``modules`` (a model or an iterable), in place."""
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    for root in roots:
        for m in root.modules():
            if isinstance(m, _DCLSConvNd):
                m.clamp_positions_()


def register_position_clamp(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Clamp DCLS positions of ``model`` into their grids after every ``optimizer.step()``.

    Returns:
        The hook handle (``handle.remove()`` detaches it).

    Example:
        >>> model = nn.Sequential(DCLSConv2d(2, 2, 3, 5, padding=2))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> handle = register_position_clamp(opt, model)
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")

    def _hook(opt, args, kwargs) -> None:
        clamp_positions_(model)

    return optimizer.register_step_post_hook(_hook)
