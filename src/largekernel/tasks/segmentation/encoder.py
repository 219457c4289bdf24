"""A small N-d large-kernel encoder (UniRepLKNet-style blocks) with a ``features_only`` interface.

Until every model family takes ``spatial_dims``, this gives the segmentation models a 1-D/2-D/3-D
backbone whose kernel size is the only thing that changes between a large-kernel and a 3x3
network: each block is a depthwise mixer (a Dilated Reparam Block for kernels >= 5, a plain
depthwise conv + BN for 3), then a pointwise feed-forward network, with a residual connection.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from largekernel.models.features import FeatureInfo
from largekernel.nn.dilated_reparam import DilatedReparamConv
from largekernel.tasks.segmentation.layers import batch_norm_nd, conv_nd

__all__ = ["LKEncoder"]


class _Block(nn.Module):
    def __init__(self, spatial_dims: int, dim: int, kernel_size: int, ffn_factor: int = 2) -> None:
        super().__init__()
        if kernel_size >= 5:
            self.mixer: nn.Module = DilatedReparamConv(dim, kernel_size, ndim=spatial_dims)
        else:
            self.mixer = nn.Sequential(
                conv_nd(spatial_dims, dim, dim, kernel_size, padding=kernel_size // 2, groups=dim,
                        bias=False),
                batch_norm_nd(spatial_dims, dim))
        self.ffn = nn.Sequential(
            conv_nd(spatial_dims, dim, dim * ffn_factor, 1), nn.GELU(),
            conv_nd(spatial_dims, dim * ffn_factor, dim, 1), batch_norm_nd(spatial_dims, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.mixer(x))


class LKEncoder(nn.Module):
    """Four-stage N-d encoder returning the feature maps of ``out_indices`` (timm ``features_only``).

    Args:
        spatial_dims: 1, 2 or 3.
        in_chans: Input channels.
        dims: Channels of the four stages.
        depths: Blocks per stage.
        kernel_sizes: Depthwise kernel size per stage (3, or 5-17 for a Dilated Reparam Block).
        stem_stride: Reduction of the stem: 1, 2 or 4; stage ``i`` has reduction
            ``stem_stride * 2**i``.
        out_indices: Stages returned by ``forward``.

    Example:
        >>> enc = LKEncoder(3, 1, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))
        >>> [tuple(f.shape[2:]) for f in enc(torch.randn(1, 1, 32, 32, 32))]
        [(16, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)]
        >>> enc.feature_info.reduction()
        [2, 4, 8, 16]
    """

    def __init__(self, spatial_dims: int = 2, in_chans: int = 1, *,
                 dims: Sequence[int] = (16, 32, 64, 96), depths: Sequence[int] = (1, 1, 2, 1),
                 kernel_sizes: Sequence[int] = (7, 7, 7, 5), stem_stride: int = 2,
                 out_indices: Sequence[int] = (0, 1, 2, 3)) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        for name, seq in (("dims", dims), ("depths", depths), ("kernel_sizes", kernel_sizes)):
            if len(seq) != 4 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in seq):
                raise ValueError(f"{name} must be 4 positive ints, got {list(seq)!r}")
        for k in kernel_sizes:
            if k % 2 == 0 or (k != 3 and not 5 <= k <= 17):
                raise ValueError(f"kernel_sizes entries must be 3 or odd in 5..17, got {list(kernel_sizes)!r}")
        if stem_stride not in (1, 2, 4) or isinstance(stem_stride, bool):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride!r}")
        self.spatial_dims = spatial_dims
        stem: list[nn.Module] = [conv_nd(spatial_dims, in_chans, dims[0], 3, stride=1 if stem_stride == 1 else 2,
                                         padding=1, bias=False),
                                 batch_norm_nd(spatial_dims, dims[0]), nn.GELU()]
        if stem_stride == 4:
            stem += [conv_nd(spatial_dims, dims[0], dims[0], 3, stride=2, padding=1, bias=False),
                     batch_norm_nd(spatial_dims, dims[0]), nn.GELU()]
        self.stem = nn.Sequential(*stem)
        self.downsamples = nn.ModuleList([nn.Identity()] + [
            nn.Sequential(conv_nd(spatial_dims, dims[i - 1], dims[i], 3, stride=2, padding=1, bias=False),
                          batch_norm_nd(spatial_dims, dims[i])) for i in range(1, 4)])
        self.stages = nn.ModuleList([
            nn.Sequential(*[_Block(spatial_dims, dims[i], kernel_sizes[i]) for _ in range(depths[i])])
            for i in range(4)])
        entries = [dict(num_chs=dims[i], reduction=stem_stride * 2 ** i, module=f"stages.{i}")
                   for i in range(4)]
        self.feature_info = FeatureInfo(entries, out_indices)  # raises for out-of-range indices
        self.out_indices = self.feature_info.out_indices
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute stage activations in the backward pass to save memory."""
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"x must be N x C x {self.spatial_dims} spatial dims, got shape {tuple(x.shape)}")
        x = self.stem(x)
        features = []
        for i, (down, stage) in enumerate(zip(self.downsamples, self.stages)):
            x = down(x)
            if self.grad_checkpointing and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            if i in self.out_indices:
                features.append(x)
            if i >= max(self.out_indices):
                break
        return features
