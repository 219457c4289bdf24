"""Token-mixer factory: swap the depthwise spatial conv of a ConvNet block for another operator.

ConvNeXt, InceptionNeXt and UniRepLKNet build their spatial mixer with
:func:`create_mixer` when given ``mixer=<name>``, so every large-receptive-field operator in
the library can be tried in the same backbone. Every mixer maps ``(N, dim, H, W)`` to
``(N, dim, H, W)``.

The operator modules are imported lazily inside :func:`create_mixer`: importing this module does
not import (or require) any of them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from torch import nn

__all__ = ["create_mixer", "list_mixers", "MIXERS_NEEDING_SIZE"]

#: Mixers whose parameters depend on the feature-map size: they need ``size=(H, W)``.
MIXERS_NEEDING_SIZE = frozenset({"sgconv2d"})


def _check_kernel(kernel_size: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}")


def _load(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"this mixer needs {module}.{name}, which is not available: {exc}") from exc


def _call(cls: Callable[..., nn.Module], mixer: str, *args: Any, **kwargs: Any) -> nn.Module:
    """Call a mixer class; re-raise a bad keyword with the mixer's name and accepted options."""
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"create_mixer({mixer!r}) got bad arguments for {cls.__name__}{inspect.signature(cls)}: {exc}"
        ) from None
    return cls(*args, **kwargs)


def _dwconv(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    from largekernel.nn.conv import Conv2d

    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd for a 'same' depthwise conv, got {kernel_size}")
    kwargs.setdefault("bias", True)
    return _call(Conv2d, "dwconv", dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **kwargs)


def _dilated_reparam(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    cls = _load("largekernel.nn.dilated_reparam", "DilatedReparamConv")
    return _call(cls, "dilated_reparam", dim, kernel_size, **kwargs)


def _inception(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    from largekernel.nn.inception_dw import InceptionDWConv2d

    # kernel_size sets the band length (the long axis); the square stays 3x3 unless overridden
    kwargs.setdefault("band_kernel_size", kernel_size)
    return _call(InceptionDWConv2d, "inception", dim, **kwargs)


def _dcls(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    cls = _load("largekernel.nn.dcls", "DCLSConv2d")
    # kernel_size is DCLS's dense grid D; 2*D learnable elements move inside it (34 in a 17x17
    # grid is the published ConvNeXt-dcls setting)
    kwargs.setdefault("kernel_count", 2 * kernel_size)
    kwargs.setdefault("padding", "same")
    return _call(cls, "dcls", dim, dim, dilated_kernel_size=kernel_size, groups=dim, **kwargs)


def _lsconv(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    cls = _load("largekernel.nn.ls_conv", "LSConv")
    # kernel_size is LS conv's large perception kernel k_L; the aggregation kernel stays k_S = 3
    return _call(cls, "lsconv", dim, large_kernel=kernel_size, **kwargs)


def _cp(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    cls = _load("largekernel.nn.cp_conv", "CPDepthwiseConv2d")
    # per-channel rank-2 kernels by default: 4K weights per channel instead of K^2
    kwargs.setdefault("rank", 2)
    kwargs.setdefault("padding", "same")
    return _call(cls, "cp", dim, kernel_size, **kwargs)


def _hyper(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    cls = _load("largekernel.nn.hyper_kernel", "HyperKernelConv2d")
    kwargs.setdefault("padding", "same")
    return _call(cls, "hyper", dim, dim, kernel_size, groups=dim, **kwargs)


def _sgconv2d(dim: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    cls = _load("largekernel.nn.sgconv", "SGConv2d")
    if kwargs.get("size") is None:
        raise ValueError(
            "mixer 'sgconv2d' needs the feature-map size: pass size=(H, W) (models: pass img_size=..., "
            "from which each stage's size is derived); kernel_size is not used by this mixer"
        )
    return _call(cls, "sgconv2d", dim, **kwargs)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dwconv": _dwconv,
    "dilated_reparam": _dilated_reparam,
    "inception": _inception,
    "dcls": _dcls,
    "lsconv": _lsconv,
    "cp": _cp,
    "hyper": _hyper,
    "sgconv2d": _sgconv2d,
}


# module implementing each mixer (imported lazily)
_MODULES: dict[str, str] = {
    "dwconv": "largekernel.nn.conv",
    "dilated_reparam": "largekernel.nn.dilated_reparam",
    "inception": "largekernel.nn.inception_dw",
    "dcls": "largekernel.nn.dcls",
    "lsconv": "largekernel.nn.ls_conv",
    "cp": "largekernel.nn.cp_conv",
    "hyper": "largekernel.nn.hyper_kernel",
    "sgconv2d": "largekernel.nn.sgconv",
}


def list_mixers(available_only: bool = False) -> list[str]:
    """Names accepted by :func:`create_mixer`, sorted.

    Args:
        available_only: Keep only the mixers whose operator module imports in this installation.

    Example:
        >>> "dwconv" in list_mixers()
        True
    """
    names = sorted(_BUILDERS)
    if not available_only:
        return names
    out = []
    for name in names:
        try:
            importlib.import_module(_MODULES[name])
        except ImportError:
            continue
        out.append(name)
    return out


def create_mixer(name: str, dim: int, kernel_size: int = 7, **kwargs: Any) -> nn.Module:
    """Build a spatial token mixer ``(N, dim, H, W) -> (N, dim, H, W)`` by name.

    Args:
        name: One of :func:`list_mixers` (what ``kernel_size`` means for each is in brackets):

            * ``"dwconv"``: plain depthwise ``K x K`` conv on the engine (``K``).
            * ``"dilated_reparam"``: :class:`~largekernel.nn.dilated_reparam.DilatedReparamConv` (``K``).
            * ``"inception"``: :class:`~largekernel.nn.inception_dw.InceptionDWConv2d` (band length).
            * ``"dcls"``: depthwise :class:`~largekernel.nn.dcls.DCLSConv2d` (grid size; default
              ``kernel_count = 2 * kernel_size``, ``padding="same"``).
            * ``"lsconv"``: :class:`~largekernel.nn.ls_conv.LSConv` (``large_kernel``).
            * ``"cp"``: :class:`~largekernel.nn.cp_conv.CPDepthwiseConv2d` (``K``; default ``rank=2``).
            * ``"hyper"``: depthwise :class:`~largekernel.nn.hyper_kernel.HyperKernelConv2d` (``K``).
            * ``"sgconv2d"``: :class:`~largekernel.nn.sgconv.SGConv2d`, a kernel as large as the map
              (unused; requires ``size=(H, W)``, see :data:`MIXERS_NEEDING_SIZE`).
        dim: Channels.
        kernel_size: Spatial kernel size (its meaning per operator is given above).
        **kwargs: Extra options passed to the operator's constructor (e.g. ``device``, ``dtype``).

    Returns:
        The mixer module.

    Raises:
        ValueError: Unknown ``name`` (the message lists the valid names) or bad ``dim``/``kernel_size``.
        TypeError: An option the chosen operator does not accept.
        ImportError: The operator's module is not available.

    Example:
        >>> import torch
        >>> mixer = create_mixer("dwconv", 32, kernel_size=7)
        >>> mixer(torch.randn(1, 32, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
    """
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"unknown mixer {name!r}; valid names: {', '.join(list_mixers())}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    _check_kernel(kernel_size)
    return _BUILDERS[name](dim, kernel_size, **kwargs)
