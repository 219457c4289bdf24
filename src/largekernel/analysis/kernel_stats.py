"""Per-layer statistics of convolution kernels, in the spirit of "CNN Filter DB" (Gavrikov & Keuper, CVPR 2022).

A *filter* is one 2-D (or 1-D/3-D) spatial slice ``weight[o, i]`` of a convolution. Per layer:

* **near-zero share** -- filters whose largest ``|w|`` is below ``zero_tol`` times the layer's
  largest ``|w|`` (they contribute nothing);
* **near-duplicate share** -- non-zero filters whose absolute cosine similarity with another
  filter of the layer is at least ``dup_tol`` (a negated copy is as redundant as a copy);
* **degenerate share** -- filters that are either (counted once);
* **sparsity** -- share of individual weights below ``zero_tol`` times the layer's largest ``|w|``;
* **variance entropy** -- Shannon entropy of the explained-variance ratios ``s_i^2 / sum s^2`` of
  the singular values of the (filters x taps) matrix, divided by its maximum ``log(min(n, taps))``:
  about 1 for white-noise filters, 0 when every filter is a multiple of one pattern;
* **energy profile** (kernels larger than 1) -- the share of a filter's energy ``sum w^2`` on each
  square ring ``r = max(|dy|, |dx|)`` around the centre, averaged over filters, with the radii
  holding 50 % and 90 % of it.

Any model works: every ``nn.Conv1d/2d/3d`` (training form with its branches, or the fused deploy
form) is a layer, named by its module path.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["LayerStats", "filter_stats", "kernel_stats", "compare_kernel_stats", "plot_kernels",
           "plot_energy_profiles", "plot_comparison", "conv_layers"]

log = logging.getLogger(__name__)


@dataclass
class LayerStats:
    """Statistics of one convolution's kernel (see the module docstring for the definitions).

    Example:
        >>> conv = torch.nn.Conv2d(4, 4, 5, groups=4)
        >>> s = kernel_stats(torch.nn.Sequential(conv))[0]
        >>> s.name, s.kind, s.num_filters
        ('0', 'depthwise', 4)
    """

    name: str
    kind: str  # "depthwise", "grouped" or "dense"
    kernel_size: tuple[int, ...]
    shape: tuple[int, ...]
    num_filters: int
    near_zero_share: float
    near_duplicate_share: float
    degenerate_share: float
    sparsity: float
    variance_entropy: float
    energy_profile: list[float] = field(default_factory=list)
    energy_radius_50: int | None = None
    energy_radius_90: int | None = None
    sampled: bool = False  # near-duplicates were searched among a sample of the filters

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kernel_size"] = list(self.kernel_size)
        out["shape"] = list(self.shape)
        return out


def conv_layers(model: nn.Module, min_kernel: int = 1) -> list[tuple[str, nn.modules.conv._ConvNd]]:
    """``(name, conv)`` for every convolution whose largest kernel side is at least ``min_kernel``."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd) and max(m.kernel_size) >= min_kernel]


def _ring_index(kernel_size: Sequence[int]) -> torch.Tensor:
    """Chebyshev distance of every tap from the kernel centre (flattened)."""
    axes = [torch.arange(k) - (k - 1) / 2 for k in kernel_size]
    grids = torch.meshgrid(*axes, indexing="ij")
    dist = torch.stack([g.abs() for g in grids]).amax(dim=0)
    # even kernels have half-integer distances: ring r holds taps with distance in (r-1, r]
    return torch.ceil(dist - 1e-9).long().reshape(-1) if any(k % 2 == 0 for k in kernel_size) \
        else dist.long().reshape(-1)


def filter_stats(weight: torch.Tensor, *, name: str = "", groups: int = 1, zero_tol: float = 1e-2,
                 dup_tol: float = 0.99, max_filters: int = 4096, seed: int = 0) -> LayerStats:
    """Statistics of one convolution weight ``(C_out, C_in / groups, *kernel)``.

    Args:
        weight: The kernel.
        name: Layer name stored in the result.
        groups: The convolution's groups (only used to name the kind of layer).
        zero_tol: Relative threshold (to the layer's largest ``|w|``) for "near zero".
        dup_tol: Absolute cosine similarity from which two filters count as near-duplicates.
        max_filters: Search near-duplicates among at most this many filters (a fixed random
            sample beyond; the pairwise similarity matrix is quadratic in the count).
        seed: Seed of that sample.

    Example:
        >>> w = torch.zeros(3, 1, 3, 3); w[0, 0, 1, 1] = 1; w[1] = 2 * w[0]
        >>> s = filter_stats(w, groups=3)
        >>> s.near_zero_share, s.near_duplicate_share, s.degenerate_share
        (0.3333333333333333, 0.6666666666666666, 1.0)
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim < 3:
        raise ValueError(f"weight must be a conv kernel (C_out, C_in/groups, *kernel), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    for arg, value, lo, hi in (("zero_tol", zero_tol, 0.0, 1.0), ("dup_tol", dup_tol, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ValueError(f"{arg} must be in [{lo}, {hi}], got {value!r}")
    w = weight.detach().to("cpu", torch.float64)
    c_out, c_in = w.shape[:2]
    kernel = tuple(w.shape[2:])
    taps = math.prod(kernel)
    filters = w.reshape(c_out * c_in, taps)
    n = filters.shape[0]
    kind = "depthwise" if c_in == 1 and groups == c_out and groups > 1 else ("grouped" if groups > 1 else "dense")
    peak = float(filters.abs().max()) if filters.numel() else 0.0
    threshold = zero_tol * peak
    zero = filters.abs().amax(dim=1) <= threshold if peak > 0 else torch.ones(n, dtype=torch.bool)
    sparsity = float((filters.abs() <= threshold).double().mean()) if peak > 0 else 1.0

    # near-duplicates among the non-zero filters
    live = torch.nonzero(~zero).flatten()
    sampled = live.numel() > max_filters
    if sampled:
        g = torch.Generator().manual_seed(seed)
        live = live[torch.randperm(live.numel(), generator=g)[:max_filters]]
    dup = torch.zeros(n, dtype=torch.bool)
    if live.numel() > 1:
        unit = filters[live] / filters[live].norm(dim=1, keepdim=True)
        cos = (unit @ unit.T).abs()
        cos.fill_diagonal_(0.0)
        dup[live] = cos.amax(dim=1) >= dup_tol
    if sampled:  # shares over the sample, scaled back to the live filters
        live_share = dup[live].double().mean() * (~zero).double().mean()
        dup_share = float(live_share)
        degenerate = float(zero.double().mean()) + dup_share
    else:
        dup_share = float(dup.double().mean())
        degenerate = float((zero | dup).double().mean())

    # variance entropy of the singular values
    entropy = 0.0
    rank_cap = min(n, taps)
    if peak > 0 and rank_cap > 1:
        s = torch.linalg.svdvals(filters)
        ratio = s**2 / (s**2).sum()
        ratio = ratio[ratio > 0]
        entropy = float(-(ratio * ratio.log()).sum() / math.log(rank_cap))

    profile: list[float] = []
    r50 = r90 = None
    if taps > 1:
        rings = _ring_index(kernel)
        num_rings = int(rings.max()) + 1
        energy = filters**2
        per_filter = torch.zeros(n, num_rings, dtype=torch.float64).index_add_(1, rings, energy)
        total = per_filter.sum(dim=1, keepdim=True)
        keep = total.flatten() > 0
        if keep.any():
            share = (per_filter[keep] / total[keep]).mean(dim=0)
            profile = [float(v) for v in share]
            cumulative = share.cumsum(0)
            r50 = int(torch.searchsorted(cumulative, torch.tensor(0.5 - 1e-12, dtype=torch.float64)))
            r90 = int(torch.searchsorted(cumulative, torch.tensor(0.9 - 1e-12, dtype=torch.float64)))
    return LayerStats(name, kind, kernel, tuple(w.shape), n, float(zero.double().mean()), dup_share,
                      min(degenerate, 1.0), sparsity, entropy, profile, r50, r90, sampled)


def kernel_stats(model: nn.Module, *, min_kernel: int = 2, layers: Sequence[str] | None = None,
                 progress: bool = False, **options: Any) -> list[LayerStats]:
    """:func:`filter_stats` of every convolution in ``model`` (module order).

    Args:
        model: Any model, in training or deploy form.
        min_kernel: Skip convolutions whose largest kernel side is smaller (default 2: no 1x1).
        layers: Only these module names (raises if one is not a convolution of the model).
        progress: Show a progress bar over the layers (large models take seconds).
        **options: ``zero_tol``, ``dup_tol``, ``max_filters``, ``seed`` for :func:`filter_stats`.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=0, depths=(1, 1, 1, 1),
        ...     dims=(8, 16, 32, 64), kernel_sizes=((3,), (13,), (13,), (3,)))
        >>> [s.kernel_size for s in kernel_stats(m) if s.kind == "depthwise"][:2]
        [(3, 3), (13, 13)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found = conv_layers(model, 1 if layers is not None else min_kernel)
    if layers is not None:
        by_name = dict(found)
        missing = [name for name in layers if name not in by_name]
        if missing:
            raise ValueError(f"layers: {missing} are not convolutions of the model (e.g. "
                             f"{', '.join(list(by_name)[:5])})")
        found = [(name, by_name[name]) for name in layers]
    if progress:
        from largekernel.analysis.plotting import progress_bar

        found = progress_bar(found, total=len(found), desc="kernel stats")
    return [filter_stats(conv.weight, name=name, groups=conv.groups, **options) for name, conv in found]


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    norm = a.norm()
    return float((a - b).norm() / norm) if norm > 0 else float("inf") if b.norm() > 0 else 0.0


def compare_kernel_stats(model_a: nn.Module, model_b: nn.Module, **options: Any) -> list[dict[str, Any]]:
    """Layer-by-layer comparison of two models' kernels (matched by module name).

    Each row holds the layer name, both :class:`LayerStats` (``None`` where a model lacks the
    layer) and, when the kernels have the same shape, the relative change ``|b - a| / |a|``
    and the cosine similarity of the flattened kernels.

    Example:
        >>> a = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3))
        >>> b = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3))
        >>> rows = compare_kernel_stats(a, b)
        >>> rows[0]["name"], rows[0]["relative_change"] > 0
        ('0', True)
    """
    stats_a = {s.name: s for s in kernel_stats(model_a, **options)}
    stats_b = {s.name: s for s in kernel_stats(model_b, **options)}
    weights_a = dict(conv_layers(model_a))
    weights_b = dict(conv_layers(model_b))
    names = list(stats_a) + [n for n in stats_b if n not in stats_a]
    rows = []
    for name in names:
        row: dict[str, Any] = {"name": name, "a": stats_a.get(name), "b": stats_b.get(name),
                               "relative_change": None, "cosine": None}
        if name in weights_a and name in weights_b:
            wa, wb = weights_a[name].weight, weights_b[name].weight
            if wa.shape == wb.shape:
                row["relative_change"] = _relative_change(wa, wb)
                fa, fb = wa.detach().double().flatten().cpu(), wb.detach().double().flatten().cpu()
                denom = fa.norm() * fb.norm()
                row["cosine"] = float(fa @ fb / denom) if denom > 0 else None
        rows.append(row)
    return rows


def plot_kernels(model: nn.Module, path: str | Path, layers: Sequence[str] | None = None, *,
                 max_filters: int = 16, max_layers: int = 6) -> list[str]:
    """Images of the first ``max_filters`` 2-D filters of chosen layers (one row per layer).

    Args:
        model: The model.
        path: Output PNG.
        layers: Module names; default the ``max_layers`` largest-kernel convolutions.
        max_filters: Filters drawn per layer (each with its own symmetric colour scale).
        max_layers: Layers drawn when ``layers`` is not given.

    Returns:
        The names of the layers drawn.

    Example:
        >>> # plot_kernels(model, "kernels.png", ["stages.1.0.dwconv.lk_origin"])
    """
    from largekernel.analysis.plotting import pyplot

    convs = dict(conv_layers(model, 1))
    if layers is None:
        spatial = [(n, c) for n, c in convs.items() if len(c.kernel_size) == 2 and max(c.kernel_size) > 1]
        spatial.sort(key=lambda item: -max(item[1].kernel_size))
        layers = [n for n, _ in spatial[:max_layers]]
    else:
        bad = [n for n in layers if n not in convs or len(convs[n].kernel_size) != 2]
        if bad:
            raise ValueError(f"layers: {bad} are not 2-D convolutions of the model")
    if not layers:
        raise ValueError("the model has no 2-D convolution with a kernel larger than 1x1 to draw")
    plt = pyplot()
    cols = max_filters
    fig, axes = plt.subplots(len(layers), cols, figsize=(cols * 0.9 + 1.5, len(layers) * 1.0 + 0.4),
                             squeeze=False)
    for row, name in enumerate(layers):
        w = convs[name].weight.detach().float().cpu()
        flat = w.reshape(-1, *w.shape[2:])
        for col in range(cols):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < flat.shape[0]:
                f = flat[col]
                lim = float(f.abs().max()) or 1.0
                ax.imshow(f.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            else:
                ax.axis("off")
        k = "x".join(map(str, convs[name].kernel_size))
        axes[row][0].set_ylabel(f"{name}\n{k}", fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)
    return list(layers)


def plot_energy_profiles(stats: Sequence[LayerStats], path: str | Path, title: str = "") -> None:
    """Energy share per ring radius for every layer with a kernel larger than 1 (one line each)."""
    from largekernel.analysis.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = 0
    for s in stats:
        if len(s.energy_profile) > 1:
            ax.plot(range(len(s.energy_profile)), s.energy_profile, marker=".", lw=1,
                    label=f"{s.name} {'x'.join(map(str, s.kernel_size))}")
            drawn += 1
    ax.set_xlabel("ring radius r = max(|dy|, |dx|)")
    ax.set_ylabel("share of kernel energy")
    ax.set_title(title or "spatial energy profile")
    if 0 < drawn <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)


def plot_comparison(rows: Sequence[dict[str, Any]], path: str | Path, labels: Sequence[str] = ("A", "B")) -> None:
    """Per-layer degenerate share, variance entropy and 90 % energy radius of two models."""
    from largekernel.analysis.plotting import pyplot

    plt = pyplot()
    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.25 * len(names) + 2), 7.5), sharex=True)
    keys = (("degenerate_share", "degenerate share"), ("variance_entropy", "variance entropy"),
            ("energy_radius_90", "90 % energy radius"))
    x = list(range(len(names)))
    for ax, (key, title) in zip(axes, keys):
        for side, label, marker in (("a", labels[0], "o"), ("b", labels[1], "x")):
            ys = [getattr(r[side], key) if r[side] is not None and getattr(r[side], key) is not None
                  else float("nan") for r in rows]
            ax.plot(x, ys, marker, label=label, ms=4)
        ax.set_ylabel(title, fontsize=8)
    axes[0].legend(fontsize=7)
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels(names, rotation=90, fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)
