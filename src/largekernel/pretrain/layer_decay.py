"""Layer-wise learning-rate decay for fine-tuning a pre-trained encoder.

A pre-trained early layer needs smaller steps than the freshly initialised head: with
``layer_decay = d`` the head keeps the peak learning rate and a parameter ``k`` blocks below
the head gets ``lr * d**k`` (BEiT/ConvNeXt-style). Blocks are counted in forward order: the stem
is block 0, the down-sampling layer in front of a stage shares the depth of the block before
it... more precisely it gets the number of blocks of all earlier stages, and block ``j`` of stage
``i`` gets ``(blocks of stages < i) + j + 1``. The schedule (:class:`~largekernel.train.schedule.
WarmupCosineSchedule`) multiplies every group's learning rate by its ``lr_scale``.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

__all__ = ["layer_depths", "apply_layer_decay"]

# stage i, block j: UniRepLKNet/RepLKNet (stages.i.j), ConvNeXt/InceptionNeXt (stages.i.blocks.j)
_BLOCK = re.compile(r"^stages\.(\d+)\.(?:blocks\.)?(\d+)\.")
# what runs in front of stage i: UniRepLKNet (downsample_layers.i), ConvNeXt (stages.i.downsample)
_TRANSITION = re.compile(r"^(?:downsample_layers\.(\d+)|stages\.(\d+)\.downsample)\.")
# what runs after stage i: RepLKNet (transitions.i)
_AFTER = re.compile(r"^transitions\.(\d+)\.")
_STEM = re.compile(r"^stem\.")


def layer_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of every trainable parameter of ``model`` and the depth of its head.

    Returns:
        ``({name: depth}, head_depth)``: the stem has depth 0, the last block ``head_depth - 1``;
        parameters outside the stem, the stages and their down-sampling layers (final norm,
        classifier) get ``head_depth``.

    Raises:
        ValueError: ``model`` has no ``stages.<i>.<j>`` blocks (layer decay does not know its layout).

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10, depths=[1, 1, 1, 1],
        ...                              dims=[8, 16, 16, 16], kernel_sizes=[[3], [13], [7], [3]])
        >>> depths, head = layer_depths(m)
        >>> depths["downsample_layers.0.0.weight"], depths["stages.3.0.dwconv.weight"], head
        (0, 4, 5)
    """
    blocks: dict[int, int] = defaultdict(int)  # stage -> number of blocks
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for name in names:
        match = _BLOCK.match(name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks[stage], block + 1)
    if not blocks:
        raise ValueError(f"layer_decay: {type(model).__name__} has no stages.<i>.<j> blocks; layer-wise "
                         f"learning-rate decay supports UniRepLKNet, RepLKNet, ConvNeXt and InceptionNeXt "
                         f"layouts (set layer_decay to null for other models)")
    before = {s: sum(blocks.get(t, 0) for t in range(s)) for s in range(max(blocks) + 2)}
    head = before[max(blocks) + 1] + 1
    depths: dict[str, int] = {}
    for name in names:
        block, transition = _BLOCK.match(name), _TRANSITION.match(name)
        if block:
            depths[name] = before[int(block.group(1))] + int(block.group(2)) + 1
        elif transition:
            depths[name] = before[int(transition.group(1) or transition.group(2))]
        elif _AFTER.match(name):
            depths[name] = before[int(_AFTER.match(name).group(1)) + 1]
        elif _STEM.match(name):
            depths[name] = 0
        else:
            depths[name] = head
    return depths, head


def apply_layer_decay(optimizer: torch.optim.Optimizer, model: nn.Module, decay: float) -> torch.optim.Optimizer:
    """Split ``optimizer``'s parameter groups by depth and give each an ``lr_scale`` of ``decay**(head - depth)``.

    Must be called before the first step (the optimiser may hold no state yet). Each existing group
    (e.g. with and without weight decay) is split; its other options are kept. The groups are
    ordered head first, so ``param_groups[0]["lr"]`` is the peak (logged) learning rate.

    Args:
        optimizer: A fresh optimiser over ``model``'s parameters.
        model: The model (DDP wrappers are unwrapped).
        decay: In ``(0, 1]``; 1 leaves every scale at 1.

    Returns:
        ``optimizer``, modified in place.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10, depths=[1, 1, 1, 1],
        ...                              dims=[8, 16, 16, 16], kernel_sizes=[[3], [13], [7], [3]])
        >>> opt = apply_layer_decay(torch.optim.AdamW(m.parameters(), lr=1e-3), m, 0.5)
        >>> [g["lr_scale"] for g in opt.param_groups]
        [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"layer_decay must be a number in (0, 1], got {decay!r}")
    if optimizer.state:
        raise ValueError("apply_layer_decay must be called before the first optimiser step")
    model = getattr(model, "module", model)
    depths, head = layer_depths(model)
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        by_depth: dict[int, list[torch.nn.Parameter]] = defaultdict(list)
        for param in group["params"]:
            name = name_of.get(id(param))
            if name is None:
                raise ValueError("apply_layer_decay: the optimiser holds a parameter that is not in the model")
            by_depth[depths.get(name, head)].append(param)
        options = {k: v for k, v in group.items() if k != "params"}
        for depth, params in by_depth.items():
            scale = float(decay) ** (head - depth)
            groups.append({**options, "params": params, "lr_scale": scale, "lr": options["lr"] * scale,
                           "initial_lr_depth": depth})
    groups.sort(key=lambda g: -g["initial_lr_depth"])  # head first; stable: decayed group before no-decay
    optimizer.param_groups.clear()
    for group in groups:
        group.pop("initial_lr_depth")
        optimizer.add_param_group(group)
    return optimizer
