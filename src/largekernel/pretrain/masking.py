"""Random patch masks on the backbone's final-stride grid, and their up-sampling to any feature map.

A mask is a boolean tensor ``(N, 1, h, w)`` on the grid of the deepest feature map (``h = H / s``
for an image of height ``H`` and a backbone whose last stage has stride ``s``); ``True`` marks a
*visible* patch. Every feature map of the backbone has a stride that divides ``s``, so its mask is
the grid mask repeated ``(H_i / h) x (W_i / w)`` times (nearest-neighbour up-sampling).
"""

from __future__ import annotations

import torch

__all__ = ["random_mask", "upsample_mask", "MaskContext", "check_mask_ratio"]


def check_mask_ratio(mask_ratio: float) -> float:
    """Return ``mask_ratio`` as a float after checking it lies in the open interval (0, 1).

    Raises:
        ValueError: If it is not a number in ``(0, 1)``.
    """
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be a number in the open interval (0, 1), got {mask_ratio!r}")
    return float(mask_ratio)


def random_mask(batch: int, grid: tuple[int, int], mask_ratio: float, *, device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one random mask per image hiding ``round(mask_ratio * h * w)`` of the ``h x w`` patches.

    At least one patch stays visible and at least one is hidden, so the loss is always defined.
    The draw uses ``generator`` (default: torch's global RNG, which training checkpoints restore,
    so a resumed run draws the same masks).

    Args:
        batch: Number of images ``N``.
        grid: ``(h, w)``, the final-stride grid.
        mask_ratio: Fraction of patches to hide, in ``(0, 1)``.
        device: Device of the result.
        generator: Optional RNG.

    Returns:
        Boolean ``(N, 1, h, w)``; ``True`` = visible.

    Example:
        >>> m = random_mask(2, (4, 4), 0.75, generator=torch.Generator().manual_seed(0))
        >>> m.shape, int((~m[0]).sum())
        (torch.Size([2, 1, 4, 4]), 12)
    """
    ratio = check_mask_ratio(mask_ratio)
    h, w = int(grid[0]), int(grid[1])
    if h < 1 or w < 1:
        raise ValueError(f"grid must be two positive ints, got {grid!r}")
    n_patches = h * w
    if n_patches < 2:
        raise ValueError(
            f"the final-stride grid is {h}x{w}: masking needs at least 2 patches; use larger images "
            f"or a backbone with a smaller stride (e.g. UniRepLKNet's stem_stride=1)")
    n_hidden = min(max(round(ratio * n_patches), 1), n_patches - 1)
    noise = torch.rand(batch, n_patches, generator=generator, device="cpu" if generator is not None else device)
    order = noise.argsort(dim=1)
    visible = torch.ones(batch, n_patches, dtype=torch.bool, device=order.device)
    visible.scatter_(1, order[:, :n_hidden], False)
    return visible.view(batch, 1, h, w).to(device)


def upsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour up-sampling of a ``(N, 1, h, w)`` grid mask to ``size = (H, W)``.

    Raises:
        ValueError: If ``H`` / ``W`` are not multiples of ``h`` / ``w`` (the feature map does not
            tile the mask grid: the image size is not divisible by the backbone's stride).

    Example:
        >>> upsample_mask(torch.tensor([[[[True, False]]]]), (2, 4)).int().tolist()
        [[[[1, 1, 0, 0], [1, 1, 0, 0]]]]
    """
    h, w = mask.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if H % h or W % w or H < h or W < w:
        raise ValueError(f"a {H}x{W} feature map does not tile the {h}x{w} mask grid; the image size "
                         f"must be divisible by the backbone's final stride")
    if (H, W) == (h, w):
        return mask
    return mask.repeat_interleave(H // h, dim=-2).repeat_interleave(W // w, dim=-1)


class MaskContext:
    """The mask of the current masked forward pass, shared by every sparse layer of an encoder.

    ``mask`` is ``None`` outside a masked forward: the layers then behave exactly like the dense
    originals. Up-sampled masks are cached per map size for the duration of one forward.

    Example:
        >>> ctx = MaskContext()
        >>> with ctx.active(torch.ones(1, 1, 2, 2, dtype=torch.bool)):
        ...     ctx.at((4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def active(self, mask: torch.Tensor) -> "_Active":
        """Context manager installing ``mask`` (boolean ``(N, 1, h, w)``) for one forward pass."""
        return _Active(self, mask)

    def at(self, size: tuple[int, int]) -> torch.Tensor:
        """The current mask at map size ``size`` (boolean ``(N, 1, H, W)``)."""
        assert self.mask is not None, "no masked forward in progress"
        key = (int(size[0]), int(size[1]))
        out = self._cache.get(key)
        if out is None:
            out = self._cache[key] = upsample_mask(self.mask, key)
        return out

    def apply(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Zero the hidden positions of a 4-D map (NCHW, or NHWC with ``channels_last``).

        Tensors that are not 4-D (pooled vectors, 1-D sequences) pass through unchanged.
        """
        if self.mask is None or not isinstance(x, torch.Tensor) or x.dim() != 4:
            return x
        if channels_last:
            m = self.at(x.shape[1:3]).permute(0, 2, 3, 1)
        else:
            m = self.at(x.shape[-2:])
        # masked_fill (not a multiply): an inf/NaN at a hidden position cannot turn into NaN
        return x.masked_fill(~m, 0.0)


class _Active:
    def __init__(self, ctx: MaskContext, mask: torch.Tensor) -> None:
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean (N, 1, h, w) tensor, got {mask.dtype} {tuple(mask.shape)}")
        self.ctx, self.mask = ctx, mask

    def __enter__(self) -> MaskContext:
        if self.ctx.mask is not None:
            raise RuntimeError("a masked forward is already in progress on this encoder")
        self.ctx.mask, self.ctx._cache = self.mask, {}
        return self.ctx

    def __exit__(self, *exc: object) -> None:
        self.ctx.mask, self.ctx._cache = None, {}
