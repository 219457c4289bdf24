"""Shared pieces of the model zoo: argument checks, index selection and timm's model contract.

:class:`TimmModelMixin` implements timm's whole classifier/backbone contract once
(``forward_features``, ``forward_head(pre_logits=)``, ``forward_intermediates`` with timm's
signature, ``prune_intermediate_layers``, ``reset_classifier(num_classes, global_pool)``,
``set_grad_checkpointing``, ``no_weight_decay``, ``features_only``). A family only says how to run
its feature *levels* through a few hooks:

* ``_stem()`` -- the stem as an ``nn.Sequential`` (sliced to expose stem levels),
* ``_stem_level_specs()`` -- the stem's intermediate maps that can be exposed as extra levels,
* ``_run_stage(i, x)`` -- stage ``i`` after the stem (its downsampling included),
* ``_forward_head(x, pre_logits)``, ``_classifier()``, ``_reset_head(num_classes)`` -- the head,
* ``_drop_head()`` -- remove the head for ``features_only``; ``_prune_stages(n)`` -- keep ``n`` stages.

:class:`StemStagesMixin` adds the hooks for the common ``stem -> stages -> head`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from largekernel.models.features import FeatureInfo

__all__ = [
    "IndexedStagesMixin",
    "POOL_TYPES",
    "StagesCheckpointMixin",
    "StemLevel",
    "StemStagesMixin",
    "TimmModelMixin",
    "apply_channelwise",
    "global_pool_nd",
    "take_indices",
    "build_stages",
    "check_model_args",
    "linear_head_like",
    "linspace_rates",
    "reject_pretrained",
    "run_blocks",
    "scale_linear_",
    "select_indices",
]


def check_model_args(in_chans: int, num_classes: int, drop_path_rate: float) -> None:
    """Validate the constructor arguments every image classifier shares.

    Raises:
        ValueError: If ``in_chans`` is not a positive int, ``num_classes`` not a non-negative int or
            ``drop_path_rate`` not in ``[0, 1)``.
    """
    # bool is an int subclass; True/False as a channel count is always a caller's mistake
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")


def linspace_rates(end: float, n: int) -> list[float]:
    """``torch.linspace(0, end, n)`` in plain Python (works under a ``meta`` default device)."""
    if n <= 1:
        return [0.0] * n
    return [end * i / (n - 1) for i in range(n)]


def run_blocks(blocks: nn.Module, x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """Apply ``blocks`` (an ``nn.Sequential`` or ``nn.ModuleList``) in order.

    With ``grad_checkpointing`` (and autograd on) each block is recomputed in backward
    (non-reentrant ``torch.utils.checkpoint``) instead of keeping its activations.
    """
    if grad_checkpointing and torch.is_grad_enabled():
        for block in blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x
    if isinstance(blocks, nn.Sequential):
        return blocks(x)
    for block in blocks:
        x = block(x)
    return x


def linear_head_like(in_features: int, num_classes: int, like: torch.Tensor) -> nn.Module:
    """A fresh ``nn.Linear(in_features, num_classes)`` on ``like``'s device and dtype (``nn.Identity`` for 0)."""
    if num_classes > 0:
        return nn.Linear(in_features, num_classes, device=like.device, dtype=like.dtype)
    return nn.Identity()


def reject_pretrained(pretrained: bool) -> None:
    """Entry points accept timm's ``pretrained`` flag but never download (no network at run time).

    Raises:
        ValueError: If ``pretrained`` is true.
    """
    if pretrained:
        raise ValueError(
            "pretrained=True is not supported offline; build the model and use "
            "largekernel.load_checkpoint(model, path) with a downloaded checkpoint"
        )


def scale_linear_(layer: nn.Module, scale: float) -> None:
    """Multiply a classifier's initial weight and bias by ``scale`` in place (no-op unless ``nn.Linear``)."""
    if isinstance(layer, nn.Linear):
        with torch.no_grad():
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)


def build_stages(
    depths: Sequence[int],
    dims: Sequence[int],
    drop_path_rate: float,
    make_stage: Callable[[int, int, int, int, int, list[float]], nn.Module],
    stem_reduction: int = 4,
) -> tuple[nn.Sequential, list[dict]]:
    """Build ``stages.i`` (stride 1 for the first stage, 2 after) and their ``FeatureInfo`` entries.

    Args:
        depths: Blocks per stage.
        dims: Output channels per stage.
        drop_path_rate: Stochastic depth, linearly increasing over all blocks up to this value.
        make_stage: ``make_stage(i, in_chs, out_chs, stride, depth, drop_path_rates)`` -> stage ``i``.
        stem_reduction: Downsampling of the stem (the first stage's input).

    Returns:
        The stages as ``nn.Sequential`` and one ``dict(num_chs, reduction, module)`` per stage.
    """
    # device="cpu" so that construction also works under a `with torch.device("meta")` context
    dp_rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
    stages, entries = [], []
    prev, cursor, reduction = dims[0], 0, stem_reduction
    for i, (depth, dim) in enumerate(zip(depths, dims)):
        stride = 1 if i == 0 else 2
        reduction *= stride
        stages.append(make_stage(i, prev, dim, stride, depth, dp_rates[cursor : cursor + depth]))
        entries.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))
        prev, cursor = dim, cursor + depth
    return nn.Sequential(*stages), entries


def select_indices(indices: int | Sequence[int] | None, n: int) -> list[int]:
    """timm's ``forward_intermediates`` index rule: an int k = the last k stages; negatives wrap.

    Returns the normalised indices in the order given.
    """
    if indices is None:
        return list(range(n))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= n:
            raise ValueError(f"indices as an int must be in [1, {n}], got {indices}")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"indices entries must be ints in [{-n}, {n}), got {i!r}")
        out.append(i % n)
    if not out:
        raise ValueError("indices must not be empty")
    return out


POOL_TYPES = ("avg", "max", "")


def take_indices(indices: int | Sequence[int] | None, n: int) -> list[int]:
    """timm's ``feature_take_indices`` rule, as sorted unique level indices.

    ``None`` = all ``n`` levels, an int ``k`` = the last ``k`` levels, a sequence = those levels
    (negatives count from the end). Intermediates come back in level order, as timm returns them.

    Raises:
        ValueError: naming ``indices`` and the valid range.

    Example:
        >>> take_indices(2, 5), take_indices([-1, 0], 5)
        ([3, 4], [0, 4])
    """
    return sorted(set(select_indices(indices, n)))


def global_pool_nd(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool every dimension after the channels: ``"avg"``, ``"max"``, or ``""`` (no pooling).

    Example:
        >>> global_pool_nd(torch.ones(2, 3, 4, 4), "avg").shape
        torch.Size([2, 3])
    """
    if pool_type == "":
        return x
    # flatten the spatial dims instead of range(2, x.dim()): no Python arithmetic on the rank, so
    # torch.fx can trace it
    if pool_type == "avg":
        return x.flatten(2).mean(dim=-1)
    if pool_type == "max":
        return x.flatten(2).amax(dim=-1)
    raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")


def apply_channelwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a channels-last layer (``nn.Linear``, ``nn.LayerNorm``) to ``(N, C)`` or ``(N, C, *spatial)``.

    With ``global_pool=''`` the head runs at every position, so the classifier acts as a 1x1 conv.
    """
    # for (N, C) both moves are the identity, so one expression serves every rank (and torch.fx)
    return fn(x.movedim(1, -1)).movedim(-1, 1)


def check_global_pool(global_pool: str, allowed: Sequence[str] = POOL_TYPES) -> str:
    """Validate a ``global_pool`` argument (``"avg"``, ``"max"`` or ``""`` unless ``allowed`` says otherwise)."""
    if global_pool not in allowed:
        raise ValueError(f"global_pool must be one of {tuple(allowed)}, got {global_pool!r}")
    return global_pool


@dataclass(frozen=True)
class StemLevel:
    """An intermediate map of a stem that can be exposed as an extra feature level.

    Args:
        num_chs: Channels of the map.
        reduction: Its stride relative to the input.
        module: Name of the module producing it (for ``feature_info``).
        end: The map is the output of ``stem[:end]`` (``stem[prev_end:end]`` applied to the previous one).
        pool_input: Patchify stems have no stride-2 map: the level is then the input itself,
            2x2 average-pooled (no parameters), and ``end`` is 0.
    """

    num_chs: int
    reduction: int
    module: str
    end: int
    pool_input: bool = False


class TimmModelMixin:
    """timm's model contract on top of a few per-family hooks (mix into an ``nn.Module``).

    The host sets ``self.feature_info`` (a :class:`FeatureInfo` over the stage levels),
    ``self.num_classes``, ``self.num_features``, ``self.head_hidden_size`` and ``self.head``
    (``None`` once the head is dropped) and implements the hooks listed in the module docstring.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
        >>> final, feats = m.forward_intermediates(torch.zeros(1, 3, 64, 64))
        >>> [f.shape[1] for f in feats], final.shape
        ([8, 16, 24, 32], torch.Size([1, 32, 2, 2]))
    """

    features_only: bool = False
    grad_checkpointing: bool = False
    global_pool: str = "avg"
    pool_types: tuple[str, ...] = POOL_TYPES
    num_stem_levels: int = 0
    _level_limit: int | None = None

    @property
    def head_hidden_size(self) -> int:
        """Width of the head's pre-logits (``num_features`` unless the head has a hidden layer)."""
        return self.__dict__.get("_head_hidden_size") or self.num_features

    @head_hidden_size.setter
    def head_hidden_size(self, value: int) -> None:
        self.__dict__["_head_hidden_size"] = value

    # ---- hooks (families override) -------------------------------------------------------
    def _stem(self) -> nn.Sequential:
        """The stem as a Sequential (a view sharing the modules is fine)."""
        return self.stem

    def _stem_level_specs(self) -> list[StemLevel]:
        """Stem maps that may be exposed as extra levels (stride 2 first)."""
        return []

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward_head(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        raise NotImplementedError

    def _classifier(self) -> nn.Module:
        return self.head

    def _reset_head(self, num_classes: int) -> None:
        raise NotImplementedError

    def _drop_head(self) -> None:
        """Remove every head module (``features_only``); state-dict keys of the trunk stay the same."""
        self.head = None

    def _prune_stages(self, n: int) -> None:
        """Delete the modules of the stages after the first ``n`` (``prune_intermediate_layers``)."""
        self.stages = self.stages[:n]

    def _downsample_convs(self) -> dict[int, nn.Module]:
        """``{stage index: the stride-2 conv starting that stage}`` (for :meth:`set_output_stride`)."""
        return {}

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """Map the trunk output to ``forward_features``' output (e.g. a final norm); identity here."""
        return x

    def _norm_last(self, feat: torch.Tensor) -> torch.Tensor:
        """``forward_intermediates(norm=True)``: the final norm applied to the last level (none here)."""
        return feat

    def _level_output(self, x: torch.Tensor) -> torch.Tensor:
        """Map the trunk to the feature returned for a level (identity for NCHW trunks)."""
        return x

    # ---- levels ----------------------------------------------------------------------------
    def set_stem_features(self, num_levels: int = 1) -> None:
        """Expose the first ``num_levels`` stem maps (stride 2 first) as extra feature levels 0..k-1.

        The stage levels move up by ``num_levels``. Used for decoders that want a stride-2 level
        (smp's UNet++, MONAI's FlexibleUNet); ``create_model(..., stem_features=True)`` calls it.

        Raises:
            ValueError: if the stem has fewer intermediate maps.
        """
        specs = self._stem_level_specs()
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or not 0 <= num_levels <= len(specs):
            raise ValueError(
                f"stem_features: {type(self).__name__} exposes at most {len(specs)} stem level(s), "
                f"got {num_levels!r}"
            )
        stage_entries = self.feature_info.entries[self.num_stem_levels:]
        stem_entries = [dict(num_chs=s.num_chs, reduction=s.reduction, module=s.module) for s in specs[:num_levels]]
        self.num_stem_levels = num_levels
        self.feature_info = FeatureInfo(stem_entries + stage_entries)

    def set_output_stride(self, output_stride: int) -> None:
        """Cap the network's stride at ``output_stride`` (8, 16 or 32), as DeepLab-style decoders want.

        The stride-2 convs of the stages beyond it get stride 1 (an even kernel gets "same"
        padding); weights and state-dict keys are unchanged. Unlike timm, the following kernels
        are not dilated: the large kernels already see wide. ``feature_info`` is updated.

        Raises:
            ValueError: ``output_stride`` not in (8, 16, 32), or the family cannot change its strides.
        """
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        entries = [dict(e) for e in self.feature_info.entries]
        convs = self._downsample_convs()
        k = self.num_stem_levels
        for i, entry in enumerate(entries[k:]):
            if entry["reduction"] <= output_stride:
                continue
            conv = convs.get(i)
            if conv is None:
                raise ValueError(f"output_stride={output_stride}: {type(self).__name__} stage {i} cannot be undilated")
            conv.stride = (1,) * len(conv.stride)
            if all(p == 0 for p in conv.padding) and any(s % 2 == 0 for s in conv.kernel_size):
                conv.padding = "same"
            entry["reduction"] = output_stride
        self.feature_info = FeatureInfo(entries, self.feature_info.out_indices)

    def _num_levels(self) -> int:
        n = len(self.feature_info.entries)
        return n if self._level_limit is None else min(n, self._level_limit)

    def _run_level(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level ``i``: returns (the trunk to continue from, the level's feature map)."""
        k = self.num_stem_levels
        if i < k:
            specs = self._stem_level_specs()
            spec = specs[i]
            start = specs[i - 1].end if i else 0
            for layer in list(self._stem())[start : spec.end]:  # registered children: FX-traceable
                x = layer(x)
            if spec.pool_input:
                return x, F.avg_pool2d(x, 2)
            return x, x
        if i == k:
            start = self._stem_level_specs()[k - 1].end if k else 0
            stem = self._stem()
            if isinstance(stem, nn.Sequential):
                # run the registered children (stem[start:] or a Sequential "view" of them would be a
                # new, unregistered module, which torch.fx cannot trace)
                for layer in list(stem)[start:]:
                    x = layer(x)
            else:
                x = stem(x)
        x = self._run_stage(i - k, x)
        return x, self._level_output(x)

    # ---- timm model API --------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all stages; returns the last stage's map."""
        for i in range(self._num_levels()):
            x, _ = self._run_level(i, x)
        return self._final(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps of the selected levels, with timm's signature and return convention.

        Args:
            x: Input batch.
            indices: Levels to return: ``None`` = all, an int ``k`` = the last ``k``, or a sequence
                of level indices (negatives count from the end). Returned in level order.
            norm: Apply the model's final pre-pooling norm to the last level's map, as timm does.
                The image models have none (their norms sit in the head, after pooling), so it
                changes nothing there, as for timm's ConvNeXt; the sequence models apply theirs.
            stop_early: Stop after the last requested level (``final`` is then that level's map).
            output_fmt: Only ``"NCHW"`` (channels first) is supported.
            intermediates_only: Return only the list of maps.

        Returns:
            ``(final, intermediates)`` where ``final`` equals ``forward_features(x)`` unless
            ``stop_early``; or just ``intermediates``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        n = self._num_levels()
        take = take_indices(indices, n)
        stop = take[-1] + 1 if (stop_early or intermediates_only) else n
        feats = []
        for i in range(stop):
            x, feat = self._run_level(i, x)
            if i in take:
                feats.append(self._norm_last(feat) if norm and i == n - 1 else feat)
        if intermediates_only:
            return feats
        return self._final(x), feats

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Delete the stages after the last of ``indices`` (and the head); returns the level indices.

        As in timm, this is for feature extraction: the pruned model's ``forward_features`` ends at
        the last kept level.
        """
        take = take_indices(indices, self._num_levels())
        stages_kept = max(0, take[-1] + 1 - self.num_stem_levels)
        self._prune_stages(stages_kept)
        self._level_limit = take[-1] + 1
        if prune_head and self.head is not None:
            self.reset_classifier(0, "")
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (``global_pool``), head norm / MLP, classifier (skipped with ``pre_logits``)."""
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no head")
        return self._forward_head(x, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            order = self.feature_info.out_indices
            take = sorted(set(order))
            maps = dict(zip(take, self.forward_intermediates(x, take, intermediates_only=True)))
            return [maps[i] for i in order]  # in out_indices order, as feature_info lists them
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no classifier")
        return self._classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0 = none).

        Args:
            num_classes: New number of classes; 0 makes ``forward`` return the pre-logits.
            global_pool: ``"avg"``, ``"max"`` or ``""`` (no pooling: ``forward`` returns maps, and a
                classifier, if any, acts at every position). ``None`` keeps the current one.
        """
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no classifier")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool, self.pool_types)
        self.num_classes = num_classes
        self._reset_head(num_classes)

    def as_features(self, out_indices: Sequence[int] | None = None) -> None:
        """Turn the model into a ``features_only`` backbone in place (head removed).

        ``forward`` then returns the maps of ``out_indices`` (level indices; ``None`` = all levels).
        """
        self.feature_info = self.feature_info.select(out_indices)
        self.features_only = True
        self.num_classes = 0
        self._drop_head()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward (``torch.utils.checkpoint``) to save activation memory."""
        self.grad_checkpointing = bool(enable)
        for module in self.modules():
            if module is not self and hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exclude from weight decay: norms, biases, layer scales, tables."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}


class StemStagesMixin(TimmModelMixin):
    """:class:`TimmModelMixin` hooks for ``self.stem`` -> ``self.stages`` (``nn.Sequential``) -> ``self.head``.

    The default head is called as ``self.head(x, self.global_pool, pre_logits)`` and reset with
    ``self.head.reset(num_classes)``.

    Example:
        >>> class Tiny(StemStagesMixin, nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.stem, self.stages, self.head = nn.Identity(), nn.Sequential(nn.Identity()), None
        ...         self.feature_info = FeatureInfo([dict(num_chs=1, reduction=1, module="stages.0")])
        >>> len(Tiny().forward_intermediates(torch.zeros(1, 1, 2, 2), intermediates_only=True))
        1
    """

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.stages[i](x)

    def _downsample_convs(self) -> dict[int, nn.Module]:
        out = {}
        for i, stage in enumerate(self.stages):
            convs = [m for m in stage.downsample.modules() if isinstance(m, nn.modules.conv._ConvNd)] \
                if hasattr(stage, "downsample") else []
            if convs:
                out[i] = convs[0]
        return out

    def _classifier(self) -> nn.Module:
        return self.head.fc

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def _forward_head(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        return self.head(x, self.global_pool, pre_logits)


# kept as a name: every StemStagesMixin model has set_grad_checkpointing now
StagesCheckpointMixin = StemStagesMixin


class IndexedStagesMixin(TimmModelMixin):
    """:class:`TimmModelMixin` for official layouts whose stem and stages live in module lists.

    The host implements ``_stem`` and ``_run_stage(i, x)`` (stage ``i`` after the stem) and sets
    ``self.feature_info``; ``self.out_indices`` mirrors ``feature_info.out_indices``.
    """

    @property
    def _feature_info(self) -> FeatureInfo:
        """All levels (legacy name; ``feature_info`` holds the selection)."""
        return self.feature_info.select(None)

    @_feature_info.setter
    def _feature_info(self, value: FeatureInfo) -> None:
        self.feature_info = value

    @property
    def out_indices(self) -> tuple[int, ...]:
        return self.feature_info.out_indices

    @out_indices.setter
    def out_indices(self, value) -> None:  # legacy hosts assign it; feature_info is the source of truth
        pass
