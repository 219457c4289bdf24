"""Checks made before a training run allocates anything: will it fit in memory?

The model is built on the meta device (no storage) with the data set's channel and class counts,
and one meta forward pass at the run's batch size and resolution measures the activations (see
:mod:`largekernel.utils.memory`). A run whose estimate exceeds the available memory is refused
with the estimate, unless ``allow_large=true`` (``--allow-large`` / ``--force``).
"""

from __future__ import annotations

import logging

from largekernel.config_schema import TrainConfig
from largekernel.utils.memory import MemoryEstimate, check_memory, estimate_training_memory, meta_model

__all__ = ["check_train_memory", "estimate_train_memory"]

log = logging.getLogger(__name__)


def estimate_train_memory(cfg: TrainConfig) -> tuple[MemoryEstimate, tuple[int, ...]] | None:
    """Estimate the memory of ``cfg``'s training run; ``None`` if it cannot be estimated cheaply.

    Returns:
        ``(estimate, input_shape)``.

    Example:
        >>> from largekernel.train.config import load_config
        >>> est, shape = estimate_train_memory(load_config(None))
        >>> shape
        (64, 1, 32, 32)
    """
    from largekernel.data import dataset_info
    from largekernel.models.registry import create_model, is_model

    if not is_model(cfg.model):
        return None  # the run reports the unknown name itself
    try:
        # the native-size description: asking for cfg.image_size here could itself resize every image
        info = dataset_info(cfg.data, None)
    except Exception as err:  # the real data build reports data problems with their own message
        log.debug("no data-set description for the memory estimate: %s", err)
        return None
    size = int(cfg.image_size or info.image_size)
    spatial_dims = int(cfg.model_kwargs.get("spatial_dims", 2) or 2)
    local_batch = cfg.batch_size
    input_shape = (local_batch, int(info.in_chans), *([size] * spatial_dims))
    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("num_classes", info.num_classes)
    kwargs.setdefault("in_chans", info.in_chans)
    if cfg.drop_path_rate > 0:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    try:
        skeleton = meta_model(lambda: create_model(cfg.model, **kwargs))
    except Exception as err:  # bad kwargs: the real build raises the user-facing error
        log.debug("no meta model for the memory estimate: %s", err)
        return None
    if skeleton is None:
        inputs = 1
        for d in input_shape:
            inputs *= d
        return MemoryEstimate(0, 2 * inputs * 4, inputs * 4, False), input_shape
    estimate = estimate_training_memory(skeleton, input_shape, optimizer=cfg.optimizer, ema=cfg.ema, amp=cfg.amp)
    return estimate, input_shape


def check_train_memory(cfg: TrainConfig) -> MemoryEstimate | None:
    """Refuse (``InsufficientMemoryError``) a run whose estimated memory exceeds what is available.

    Example:
        >>> from largekernel.train.config import load_config
        >>> check_train_memory(load_config(None)).total > 0
        True
    """
    found = estimate_train_memory(cfg)
    if found is None:
        return None
    estimate, shape = found
    from largekernel.train.trainer import resolve_device

    check_memory(estimate, f"training {cfg.model} on batches of {tuple(shape)}",
                 allow_large=cfg.allow_large, override="allow_large=true (or --allow-large)",
                 device=resolve_device(cfg.device))
    return estimate
