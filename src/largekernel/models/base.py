"""Shared pieces of the image-model zoo: argument checks, index selection and the timm model API.

:class:`StemStagesMixin` implements timm's classifier/backbone contract once for models laid out as
``self.stem`` -> ``self.stages`` (an ``nn.Sequential`` of stages) -> ``self.head`` (``None`` when
built with ``features_only``). Families customise it through small hooks instead of re-writing
the whole API: ``_classifier`` (the module :meth:`get_classifier` returns), ``_reset_head``
(builds the new classifier) and ``_intermediate_indices`` (how ``forward_intermediates`` reads
its ``indices``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from largekernel.models.features import FeatureInfo

__all__ = [
    "IndexedStagesMixin",
    "StagesCheckpointMixin",
    "StemStagesMixin",
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


class StemStagesMixin:
    """timm model API for ``stem -> stages -> head`` models (mix into an ``nn.Module``).

    The host sets ``self.stem``, ``self.stages`` (``nn.Sequential``), ``self.head`` (``None`` with
    ``features_only``), ``self.features_only``, ``self.feature_info`` and ``self.num_classes``.
    The default head is called as ``self.head(x, pre_logits=...)`` and reset with
    ``self.head.reset(num_classes)``; override the hooks where a family differs.

    Example:
        >>> class Tiny(StemStagesMixin, nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.stem, self.stages, self.head = nn.Identity(), nn.Sequential(nn.Identity()), None
        ...         self.features_only, self.num_classes = True, 0
        >>> len(Tiny().forward_intermediates(torch.zeros(1, 1, 2, 2)))
        1
    """

    # ---- hooks ----------------------------------------------------------------------------
    def _classifier(self) -> nn.Module:
        """The final classifier module (``self.head`` is not ``None`` here)."""
        return self.head.fc

    def _reset_head(self, num_classes: int) -> None:
        """Install a fresh classifier with ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def _intermediate_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """Normalised stage indices, in the order ``forward_intermediates`` returns them."""
        return select_indices(indices, len(self.stages))

    # ---- timm model API -------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exclude from weight decay: norms, biases and layer scales."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no classifier")
        return self._classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0 = none)."""
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no classifier")
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool must be 'avg' or None, got {global_pool!r}")
        self._reset_head(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("model was built with features_only=True and has no head")
        return self.head(x, pre_logits=pre_logits)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage outputs (NCHW) for ``indices``.

        Args:
            x: Input images ``(N, in_chans, H, W)``.
            indices: Stage indices (negatives count from the end), an int ``n`` for the last ``n``
                stages, or ``None`` for all.
        """
        wanted = self._intermediate_indices(indices)
        last = max(wanted)
        maps: dict[int, torch.Tensor] = {}
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in wanted:
                maps[i] = x
            if i >= last:
                break  # later stages are not needed
        return [maps[i] for i in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, self.feature_info.out_indices)
        return self.forward_head(self.forward_features(x))


class StagesCheckpointMixin(StemStagesMixin):
    """:class:`StemStagesMixin` plus ``set_grad_checkpointing`` for stages with a ``grad_checkpointing`` flag.

    Example:
        >>> class Tiny(StagesCheckpointMixin, nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.stages = nn.Sequential(nn.Identity())
        >>> m = Tiny(); m.set_grad_checkpointing(); m.stages[0].grad_checkpointing
        True
    """

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward to save activation memory."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable


class IndexedStagesMixin:
    """Feature/intermediate API for models whose stage ``i`` is run by ``self._run_stage(i, x)``.

    Used by the official-layout RepLKNet family, where stem, downsampling and stage ``i`` are kept
    in separate module lists. The host sets ``self.stages`` (one entry per stage),
    ``self._feature_info`` (all stages), ``self.out_indices`` and ``self.features_only``, and
    implements ``_run_stage`` and ``forward_head``.

    Example:
        >>> class Tiny(IndexedStagesMixin, nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.stages = nn.ModuleList([nn.Identity(), nn.Identity()])
        ...     def _run_stage(self, i, x):
        ...         return self.stages[i](x) + 1
        >>> Tiny().forward_features(torch.zeros(1)).item()
        2.0
    """

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all stages (NCHW in, last stage map out)."""
        for i in range(len(self.stages)):
            x = self._run_stage(i, x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage outputs (NCHW) for ``indices`` (stage ids, or an int = the last n stages)."""
        n = len(self.stages)
        if indices is None:
            indices = self.out_indices
        elif isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f"indices as an int must be in 1..{n} (last n stages), got {indices}")
            indices = tuple(range(n - indices, n))
        wanted = FeatureInfo(self._feature_info.entries, indices).out_indices
        feats = []
        for i in range(max(wanted) + 1):
            x = self._run_stage(i, x)
            if i in wanted:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices)
        return self.forward_head(self.forward_features(x))
