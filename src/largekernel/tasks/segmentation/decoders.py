"""U-Net and UNet++ decoders over a list of feature maps (finest first), N-d.

Both take ``levels``: feature maps ordered from the finest (smallest reduction) to the coarsest,
each level's spatial size a (near) integer fraction of the previous one, and return the decoder
nodes that may carry a prediction head: the final, finest node first, then the auxiliary nodes
used for deep supervision. Upsampling interpolates to the exact size of the finer level, so
odd sizes and any reduction ratio between levels work.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.tasks.segmentation.layers import ConvNormAct

__all__ = ["UNetDecoder", "UNetPlusPlusDecoder", "upsample_to"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear interpolation of ``x`` to spatial ``size`` (no-op if it already has it)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=_MODES[x.dim() - 2], align_corners=False)


def _double_conv(spatial_dims: int, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(spatial_dims, cin, cout), ConvNormAct(spatial_dims, cout, cout))


def _check_channels(encoder_channels: Sequence[int], decoder_channels: Sequence[int] | None
                    ) -> tuple[list[int], list[int]]:
    enc = [int(c) for c in encoder_channels]
    if len(enc) < 2:
        raise ValueError(f"a decoder needs at least 2 feature levels, got encoder_channels={enc}")
    dec = [max(c, 8) for c in enc[:-1]] if decoder_channels is None else [int(c) for c in decoder_channels]
    if len(dec) != len(enc) - 1 or any(c < 1 for c in dec):
        raise ValueError(f"decoder_channels must be {len(enc) - 1} positive ints (one per level but the "
                         f"coarsest, finest first), got {decoder_channels!r}")
    return enc, dec


class UNetDecoder(nn.Module):
    """U-Net decoder: upsample, concatenate the skip connection, two conv-BN-ReLU, level by level.

    Args:
        spatial_dims: 1, 2 or 3.
        encoder_channels: Channels of the levels, finest first.
        decoder_channels: Channels of the decoder node at each level but the coarsest, finest
            first (default: the encoder's channels at that level, at least 8).

    Returns (forward):
        ``[finest node, next-coarser node, ...]`` (the first is the output; the others can feed
        deep-supervision heads).

    Example:
        >>> dec = UNetDecoder(2, [8, 16, 32])
        >>> feats = [torch.randn(1, 8, 9, 11), torch.randn(1, 16, 5, 6), torch.randn(1, 32, 3, 3)]
        >>> [tuple(o.shape) for o in dec(feats)]
        [(1, 8, 9, 11), (1, 16, 5, 6)]
    """

    def __init__(self, spatial_dims: int, encoder_channels: Sequence[int],
                 decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        enc, dec = _check_channels(encoder_channels, decoder_channels)
        self.spatial_dims = spatial_dims
        self.out_channels = dec
        blocks = []
        for i in range(len(enc) - 1):
            below = enc[-1] if i == len(enc) - 2 else dec[i + 1]
            blocks.append(_double_conv(spatial_dims, enc[i] + below, dec[i]))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(levels) != len(self.blocks) + 1:
            raise ValueError(f"expected {len(self.blocks) + 1} feature levels, got {len(levels)}")
        x = levels[-1]
        outputs = []
        for i in range(len(self.blocks) - 1, -1, -1):
            skip = levels[i]
            x = self.blocks[i](torch.cat([skip, upsample_to(x, skip.shape[2:])], dim=1))
            outputs.append(x)
        return outputs[::-1]


class UNetPlusPlusDecoder(nn.Module):
    """UNet++ decoder: nested, densely connected skip pathways (Zhou et al., 2018).

    Node ``X[i][j]`` (level ``i``, depth ``j >= 1``) convolves the concatenation of
    ``X[i][0..j-1]`` and the upsampled ``X[i+1][j-1]``; ``X[i][0]`` is the encoder feature. The
    output is ``X[0][L-1]``; ``X[0][L-2], ..., X[0][1]`` are the deep-supervision nodes.

    Args:
        spatial_dims: 1, 2 or 3.
        encoder_channels: Channels of the levels, finest first.
        decoder_channels: Channels of the nodes of each level but the coarsest, finest first.

    Example:
        >>> dec = UNetPlusPlusDecoder(3, [4, 8, 16])
        >>> feats = [torch.randn(1, 4, 8, 8, 7), torch.randn(1, 8, 4, 4, 4), torch.randn(1, 16, 2, 2, 2)]
        >>> [tuple(o.shape) for o in dec(feats)]
        [(1, 8, 8, 8, 7), (1, 8, 8, 8, 7)]
    """

    def __init__(self, spatial_dims: int, encoder_channels: Sequence[int],
                 decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        enc, dec = _check_channels(encoder_channels, decoder_channels)
        self.spatial_dims = spatial_dims
        self.depth = len(enc) - 1
        self.out_channels = [dec[0]] * self.depth
        nodes = {}
        for j in range(1, len(enc)):
            for i in range(len(enc) - j):
                below = enc[i + 1] if j == 1 else dec[i + 1]
                cin = enc[i] + (j - 1) * dec[i] + below
                nodes[f"x_{i}_{j}"] = _double_conv(spatial_dims, cin, dec[i])
        self.nodes = nn.ModuleDict(nodes)

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(levels) != self.depth + 1:
            raise ValueError(f"expected {self.depth + 1} feature levels, got {len(levels)}")
        grid: list[list[torch.Tensor]] = [[f] for f in levels]
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                up = upsample_to(grid[i + 1][j - 1], levels[i].shape[2:])
                grid[i].append(self.nodes[f"x_{i}_{j}"](torch.cat(grid[i][:j] + [up], dim=1)))
        return [grid[0][j] for j in range(self.depth, 0, -1)]
