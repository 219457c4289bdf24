"""Structural reparameterisation of whole models (training form -> inference form).

:func:`reparameterize` follows timm's protocol, so it also handles operators written elsewhere:
every submodule that defines ``reparameterize()`` or ``switch_to_deploy()`` (in place) is called,
and every submodule defining ``fuse()`` is replaced by the module it returns. Children are
processed before their parents, so a block sees its sub-layers already fused.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

__all__ = ["reparameterize"]

logger = logging.getLogger(__name__)

_IN_PROGRESS: set[int] = set()


def _apply(module: nn.Module) -> nn.Module:
    """Reparameterise ``module`` in place where possible; return the module to use in its place."""
    for name, child in list(module.named_children()):
        new = _apply(child)
        if new is not child:
            setattr(module, name, new)
    if id(module) in _IN_PROGRESS:  # a module whose own method calls reparameterize(self)
        return module
    _IN_PROGRESS.add(id(module))
    try:
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
    finally:
        _IN_PROGRESS.discard(id(module))


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every reparameterisable part of ``model`` into its inference form.

    For UniRepLKNet this merges the Dilated Reparam Blocks' branches and BNs, folds the
    post-dwconv BN into the dwconv, and folds GRN's beta, the post-FFN BN and the layer scale
    into the second linear, giving the official deploy state-dict layout. For RepLKNet it
    merges each large/small kernel pair into ``lkb_reparam``. Running it twice changes nothing.
    Works for float64/float32/float16/bfloat16 models (fusion arithmetic in >= float32).

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
    result = _apply(model)
    result.eval()
    config = getattr(model, "largekernel_config", None)
    if config is not None and result is not model:
        result.largekernel_config = config
    result.largekernel_form = "deploy"
    logger.debug("reparameterised %s", type(result).__name__)
    return result
