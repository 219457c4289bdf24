"""Densify the sparse feature maps and decode them to pixels with a light U-Net."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.nn.layers import LayerNorm2d

__all__ = ["Densify", "LightDecoder", "decoder_widths"]


def decoder_widths(deepest: int, levels: int, minimum: int = 8) -> list[int]:
    """Widths of the decoder levels, shallow to deep: ``deepest`` halved per level up (>= ``minimum``).

    Example:
        >>> decoder_widths(128, 4)
        [16, 32, 64, 128]
    """
    if isinstance(deepest, bool) or not isinstance(deepest, int) or deepest < 1:
        raise ValueError(f"decoder_width must be a positive int, got {deepest!r}")
    return [max(deepest >> (levels - 1 - i), minimum) for i in range(levels)]


class Densify(nn.Module):
    """Per-scale densification: norm, learned mask token at hidden positions, projection.

    Args:
        channels: Encoder channels per scale (shallow to deep).
        widths: Decoder widths per scale.

    Example:
        >>> d = Densify([8, 16], [4, 8])
        >>> feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
        >>> [f.shape[1] for f in d(feats, torch.ones(1, 1, 2, 2, dtype=torch.bool))]
        [4, 8]
    """

    def __init__(self, channels: Sequence[int], widths: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != len(widths):
            raise ValueError(f"channels {list(channels)} and widths {list(widths)} must have one length")
        # LayerNorm over channels is per position: the hidden (zero) positions cannot shift it
        self.norms = nn.ModuleList(LayerNorm2d(c) for c in channels)
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels)
        deepest = len(channels) - 1
        self.projs = nn.ModuleList(
            nn.Conv2d(c, w, 1 if i == deepest else 3, padding=0 if i == deepest else 1)
            for i, (c, w) in enumerate(zip(channels, widths)))
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02)

    def forward(self, feats: Sequence[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for f, norm, token, proj in zip(feats, self.norms, self.mask_tokens, self.projs):
            m = mask
            if f.shape[-2:] != mask.shape[-2:]:
                m = mask.repeat_interleave(f.shape[-2] // mask.shape[-2], dim=-2)
                m = m.repeat_interleave(f.shape[-1] // mask.shape[-1], dim=-1)
            out.append(proj(torch.where(m, norm(f), token.to(f.dtype))))
        return out


class _UpBlock(nn.Module):
    """Up-sample by ``factor`` (transposed conv), add the skip map, two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, factor: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, factor, stride=factor)
        self.conv = nn.Sequential(
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x) + skip)


class LightDecoder(nn.Module):
    """U-Net decoder from the densified maps (shallow to deep) to an image.

    Starting from the deepest map, each level is up-sampled to the next shallower scale and
    summed with it; the shallowest level goes to pixels with a 1x1 conv and a pixel shuffle.

    Args:
        widths: Decoder widths per scale (shallow to deep).
        strides: Strides of the scales (shallow to deep); consecutive ratios must be integers.
        out_chans: Image channels.

    Example:
        >>> dec = LightDecoder([4, 8], [2, 4], 1)
        >>> dec([torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)]).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(self, widths: Sequence[int], strides: Sequence[int], out_chans: int) -> None:
        super().__init__()
        widths, strides = list(widths), list(strides)
        for a, b in zip(strides, strides[1:]):
            if b % a:
                raise ValueError(f"feature strides must each divide the next, got {strides}")
        self.blocks = nn.ModuleList(
            _UpBlock(widths[i + 1], widths[i], strides[i + 1] // strides[i]) for i in range(len(widths) - 1))
        self.first_stride = strides[0]
        self.out_chans = out_chans
        self.head = nn.Conv2d(widths[0], out_chans * strides[0] ** 2, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            x = self.blocks[i](x, feats[i])
        x = self.head(x)
        return F.pixel_shuffle(x, self.first_stride) if self.first_stride > 1 else x
