"""``features_only`` support: multi-scale feature maps for dense prediction without mmseg/mmdet.

A backbone that supports ``features_only`` provides

* ``feature_info``: a :class:`FeatureInfo` describing every stage output (channels, reduction,
  module name), and
* ``forward_intermediates(x, indices, intermediates_only=True) -> list[Tensor]``: the NCHW maps of
  the requested levels (timm's signature; without ``intermediates_only`` it returns
  ``(final, intermediates)``).

With ``features_only=True`` the model itself drops its head and ``forward`` returns that list
(as ``timm.create_model(..., features_only=True)`` does), so state-dict keys stay unchanged.

Levels are the stage outputs, optionally preceded by *stem levels* (``stem_features=True``): the
stem's stride-2 (and, for LSNet's stride-8 stem, stride-4) maps, so that decoders which expect five
levels at strides 2..32 (smp's UNet++, MONAI's FlexibleUNet) get a real map there.
"""

from __future__ import annotations

from typing import Sequence


__all__ = ["FeatureInfo"]


class FeatureInfo:
    """Metadata of a backbone's feature maps, queried like timm's ``feature_info``.

    Args:
        entries: One dict per stage with keys ``num_chs``, ``reduction`` and ``module``.
        out_indices: The stages selected (default: all).

    Example:
        >>> info = FeatureInfo([dict(num_chs=8, reduction=4, module="stages.0")])
        >>> info.channels(), info.reduction()
        ([8], [4])
    """

    def __init__(self, entries: Sequence[dict], out_indices: Sequence[int] | None = None):
        self.entries = [dict(e) for e in entries]
        n = len(self.entries)
        indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        normalised = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
                raise ValueError(
                    f"out_indices entry {i!r} is out of range: expected an int in [{-n}, {n - 1}] "
                    f"({n} feature levels: {[e['reduction'] for e in self.entries]} reductions)"
                )
            normalised.append(i % n)
        self.out_indices = tuple(normalised)

    def select(self, out_indices: Sequence[int] | None) -> "FeatureInfo":
        """The same levels with another selection (``None``: all levels)."""
        return FeatureInfo(self.entries, out_indices)

    def get_dicts(self) -> list[dict]:
        """The selected levels' dicts (copies), like timm's ``FeatureInfo.get_dicts``."""
        return [dict(self.entries[i]) for i in self.out_indices]

    def _get(self, key: str) -> list:
        return [self.entries[i][key] for i in self.out_indices]

    def channels(self) -> list[int]:
        return self._get("num_chs")

    def reduction(self) -> list[int]:
        return self._get("reduction")

    def module_name(self) -> list[str]:
        return self._get("module")

    def __len__(self) -> int:
        return len(self.out_indices)

    def __getitem__(self, i: int) -> dict:
        return self.entries[self.out_indices[i]]

    def __iter__(self):
        # timm's generic code iterates a model's ``feature_info`` as a list of dicts
        return iter([self.entries[i] for i in self.out_indices])

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"
