"""``accelerate(model)``: run every plain torch convolution of any model on the engine (and back)."""

from __future__ import annotations

import copy
import logging

from torch import nn

from largekernel.nn.conv import ENGINE_CONV_CLASSES, TORCH_TO_ENGINE
from largekernel.nn.layers import GRN, EngineGRN

#: fused engine layers that replace an exact plain class (same state, same values)
_PLAIN_TO_FUSED: dict[type, type] = {GRN: EngineGRN}

__all__ = ["accelerate", "to_torch_convs", "engine_can_help"]

logger = logging.getLogger(__name__)


def engine_can_help(conv: nn.Module) -> bool:
    """Whether the engine can ever run ``conv`` differently from PyTorch (on a CPU or GPU).

    Dense convolutions with small kernels and depthwise convolutions narrower than the engine's
    custom-backward threshold are always planned as PyTorch's own call, so converting them would
    only add dispatch overhead. Half-precision CPU convolutions are the exception (the engine
    computes them in float32), so they are judged by the same kernel rules.

    Args:
        conv: an ``nn.Conv1d/2d/3d``.

    Returns:
        True when some input could take an engine path.

    Example:
        >>> engine_can_help(nn.Conv2d(8, 8, 13, groups=8)), engine_can_help(nn.Conv2d(8, 16, 3))
        (True, False)
    """
    from largekernel.ops.dispatch import engine_may_differ  # noqa: PLC0415

    extent = max(d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation))
    return engine_may_differ(len(conv.kernel_size), conv.groups, conv.in_channels // conv.groups, extent)


def accelerate(
    model: nn.Module, *, inplace: bool = True, min_kernel_size: int = 1, only_helpful: bool = True,
    compile: bool = False,  # noqa: A002 - mirrors torch.compile's name
) -> nn.Module:
    """Make every ``nn.Conv1d/2d/3d`` in ``model`` that the engine can speed up run on the engine.

    Only modules whose class is *exactly* torch's ``Conv1d/Conv2d/Conv3d`` are converted (a subclass
    may override ``forward`` with something the engine does not know about); modules that already
    are engine convs are left alone, so the call is idempotent. Conversion re-classes the module
    object itself, so it is the same module with the same ``Parameter`` objects (optimiser state
    stays valid), buffers, hooks, training mode, device and dtype; shared modules stay shared.
    Outputs are unchanged up to floating-point rounding. Layers with a fused engine form are
    re-classed the same way: every :class:`~largekernel.nn.GRN` becomes an
    :class:`~largekernel.nn.EngineGRN` (one fused operation instead of about ten).

    Args:
        model: any ``nn.Module`` (the model itself may be a conv).
        inplace: convert ``model`` itself (default); if False a deep copy is converted and returned.
        min_kernel_size: only convert convolutions whose largest kernel dimension is at least this
            (e.g. 7 to leave 1x1/3x3 convs to PyTorch).
        only_helpful: leave convolutions the engine would always hand to PyTorch unchanged
            (see :func:`engine_can_help`): 1x1 and small dense convs, 3x3 depthwise. They would
            compute the same values either way; converting them only costs dispatch time.
        compile: opt-in; also return ``torch.compile(model)`` with the engine kept inside the
            compiled graph as the opaque ``largekernel::conv`` operator
            (:func:`largekernel.ops.custom_op.set_compile_engine` is switched on, process-wide),
            so inductor fuses BatchNorm/GELU/LayerNorm/permutes around the engine's convolutions.
            The first call compiles (tens of seconds on a CPU, again for new input shapes);
            ``torch.export``/ONNX of the model still see standard aten convolutions.

    Returns:
        The converted model (``model`` itself when ``inplace``), or its ``torch.compile`` wrapper
        when ``compile`` (the converted module is its ``_orig_mod``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``min_kernel_size`` is not a positive int.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(16, 16, 13, padding=6, groups=16), nn.Conv2d(16, 32, 1))
        >>> net = accelerate(net)
        >>> type(net[0]).__module__
        'largekernel.nn.conv'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(min_kernel_size, bool) or not isinstance(min_kernel_size, int) or min_kernel_size < 1:
        raise ValueError(f"min_kernel_size must be a positive int, got {min_kernel_size!r}")
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be a bool, got {type(compile).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    converted = skipped = fused = 0
    for module in model.modules():  # modules() de-duplicates shared modules
        fused_cls = _PLAIN_TO_FUSED.get(type(module))
        if fused_cls is not None:
            module.__class__ = fused_cls  # same object and parameters, fused forward
            fused += 1
            continue
        target = TORCH_TO_ENGINE.get(type(module))
        if target is None:
            if isinstance(module, ENGINE_CONV_CLASSES):
                continue
            if isinstance(module, tuple(TORCH_TO_ENGINE)):
                skipped += 1  # a foreign subclass: its forward may differ, leave it alone
            continue
        if max(module.kernel_size) < min_kernel_size or (only_helpful and not engine_can_help(module)):
            continue
        # Same object, new class: parameters, buffers, hooks and attributes are untouched. The
        # engine classes add no state, so this is exactly equivalent to building a new module.
        module.__class__ = target
        converted += 1
    logger.info(
        "accelerate: converted %d convolution(s) and %d GRN layer(s), left %d foreign subclass(es)",
        converted, fused, skipped,
    )
    if compile:
        import torch  # noqa: PLC0415

        from largekernel.ops.custom_op import set_compile_engine  # noqa: PLC0415

        set_compile_engine(True)
        return torch.compile(model)
    return model


def to_torch_convs(model: nn.Module, *, inplace: bool = True) -> nn.Module:
    """The inverse of :func:`accelerate`: make every engine conv a plain ``torch.nn.Conv*d`` again.

    Fused engine layers go back to their plain class too (``EngineGRN`` -> ``GRN``).

    largekernel's own models build their convolutions from the engine drop-ins; this turns such a
    model into exactly what the reference implementations run (PyTorch's convolutions), e.g. as the
    baseline of a benchmark. Parameters, buffers and hooks are untouched, as in :func:`accelerate`.

    Args:
        model: any ``nn.Module``.
        inplace: convert ``model`` itself (default); if False a deep copy is converted and returned.

    Returns:
        The converted model.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> from largekernel.nn.conv import Conv2d
        >>> net = to_torch_convs(nn.Sequential(Conv2d(4, 4, 13, padding=6, groups=4)))
        >>> type(net[0]) is nn.Conv2d
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    engine_to_torch = {engine: torch_cls for torch_cls, engine in TORCH_TO_ENGINE.items()}
    engine_to_torch.update({fused: plain for plain, fused in _PLAIN_TO_FUSED.items()})
    converted = 0
    for module in model.modules():
        target = engine_to_torch.get(type(module))
        if target is not None:
            module.__class__ = target
            converted += 1
    logger.info("to_torch_convs: converted %d engine layer(s) back to PyTorch", converted)
    return model
