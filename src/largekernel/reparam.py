"""Structural reparameterisation of whole models (training form -> inference form).

:func:`reparameterize` follows timm's protocol, so it also handles operators written elsewhere:
every submodule that defines ``reparameterize()`` or ``switch_to_deploy()`` (in place) is called,
and every submodule defining ``fuse()`` is replaced by the module it returns. Parents are
processed before their children (timm's order), then the children of the result.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

__all__ = ["reparameterize"]

logger = logging.getLogger(__name__)

_IN_PROGRESS: set[int] = set()
_TORCH_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _apply(module: nn.Module) -> nn.Module:
    """Reparameterise ``module`` where possible, then its children; return the module to use in its place.

    Parents come first, as in timm's ``reparameterize_model``: a timm block's ``fuse()`` (e.g.
    RepViT's) expects its sub-layers still unfused. largekernel's own modules give the same
    result in either order.
    """
    key = id(module)
    if key not in _IN_PROGRESS:  # else a module whose own method calls reparameterize(self)
        _IN_PROGRESS.add(key)
        try:
            module = _apply_own(module)
        finally:
            _IN_PROGRESS.discard(key)
    for name, child in list(module.named_children()):
        new = _apply(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _apply_own(module: nn.Module) -> nn.Module:
    """Call ``module``'s own reparameterisation method; return the module to use in its place."""
    for method in ("reparameterize", "switch_to_deploy"):
        fn = getattr(module, method, None)
        if callable(fn):
            fn()
            return module
    fuse = getattr(module, "fuse", None)
    if callable(fuse):
        fused = fuse()
        if isinstance(fused, nn.Module):
            return fused
    return module


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every reparameterisable part of ``model`` into its inference form.

    For UniRepLKNet this merges the Dilated Reparam Blocks' branches and BNs, folds the
    post-dwconv BN into the dwconv, and folds GRN's beta, the post-FFN BN and the layer scale
    into the second linear, giving the official deploy state-dict layout. For RepLKNet it
    merges each large/small kernel pair into ``lkb_reparam``. Running it twice changes nothing.
    Works for float64/float32/float16/bfloat16 models (fusion arithmetic in >= float32). In a model
    that runs on the engine (:func:`largekernel.accelerate` or the library's own models), the
    convolutions that fusion creates run on the engine too.

    Args:
        model: Any module.
        inplace: Modify ``model`` itself; otherwise a deep copy is reparameterised.

    Returns:
        The reparameterised model, in eval mode.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10)
        >>> fused = largekernel.reparameterize(m)
        >>> any("origin_bn" in k for k in fused.state_dict())
        False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()  # BN folding uses running statistics; fused modules must also be in eval mode
    from largekernel.nn.acceleration import accelerate  # noqa: PLC0415 - nn imports this package lazily
    from largekernel.nn.conv import ENGINE_CONV_CLASSES  # noqa: PLC0415

    from largekernel.nn.acceleration import to_torch_convs  # noqa: PLC0415

    accelerated = any(isinstance(m, ENGINE_CONV_CLASSES) for m in model.modules())
    before = {id(m) for m in model.modules()}
    result = _apply(model)
    # convs created by fusion follow the model: inside an accelerated model they run on the engine
    # (a fused 31x31 kernel is exactly what it is for), inside a plain PyTorch model they stay
    # PyTorch's; convs that existed before are left as they were
    for m in result.modules():
        if id(m) in before:
            continue
        if accelerated and type(m) in _TORCH_CONVS:
            accelerate(m)
        elif not accelerated and isinstance(m, ENGINE_CONV_CLASSES):
            to_torch_convs(m)
    result.eval()
    config = getattr(model, "largekernel_config", None)
    if config is not None and result is not model:
        result.largekernel_config = config
    result.largekernel_form = "deploy"
    logger.debug("reparameterised %s", type(result).__name__)
    return result
