"""Sequence classifiers built from global long convolutions (SGConv or LongConv).

Input ``(N, in_chans, L)``; a linear stem lifts the channels to ``dim``; ``depth`` pre-norm
residual blocks follow, each ``x + DropPath(mixer(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``,
where the mixer is ``SGConv -> GELU -> Dropout -> Linear`` (:class:`~largekernel.nn.sgconv.SGConvBlock`)
or the same with :class:`~largekernel.nn.long_conv.LongConv`. A final LayerNorm, pooling over
time (``avg``, ``max`` or ``last`` step; ``last`` suits causal models) and a linear head
follow. The timm model interface is kept: ``forward_features``, ``forward_head(pre_logits=)``,
``get_classifier``, ``reset_classifier``, ``forward_intermediates``.

Registered: ``sgconv_seq_tiny``, ``sgconv_seq_small``, ``longconv_seq_tiny``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from largekernel.models.base import linear_head_like
from largekernel.models.registry import register_model
from largekernel.nn.layers import DropPath
from largekernel.nn.long_conv import LongConv
from largekernel.nn.sgconv import SGConvBlock

__all__ = ["SequenceClassifier", "SequenceBlock", "sgconv_seq_tiny", "sgconv_seq_small", "longconv_seq_tiny"]

_MIXERS = ("sgconv", "longconv")
_POOLS = ("avg", "max", "last")


class _LongConvMixer(nn.Module):
    """``LongConv -> GELU -> Dropout -> Linear`` on ``(N, C, L)`` (mirrors SGConvBlock)."""

    def __init__(self, dim, seq_len, causal, squash_lambda, dropout, mode, device=None, dtype=None):
        super().__init__()
        self.conv = LongConv(
            dim, seq_len, causal=causal, squash_lambda=squash_lambda, mode=mode, device=device, dtype=dtype
        )
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.conv(u)))
        return self.proj(y.transpose(1, 2)).transpose(1, 2)


class SequenceBlock(nn.Module):
    """Pre-norm residual block on ``(N, L, dim)`` tokens: global conv mixer, then an MLP.

    Args:
        dim: Channels.
        seq_len: Maximal sequence length of the mixer's kernel.
        mixer: ``"sgconv"`` or ``"longconv"``.
        kernel_dim: SGConv sub-kernel length.
        alpha: SGConv decay base.
        bidirectional: Mixer sees the future too (else causal).
        squash_lambda: LongConv soft threshold.
        mlp_ratio: MLP hidden width / dim.
        dropout: Dropout inside mixer and MLP.
        drop_path: Stochastic depth probability.
        mode: Conv execution path (``"auto"``, ``"fft"``, ``"direct"``).
        device: Parameter device.
        dtype: Parameter dtype.

    Example:
        >>> block = SequenceBlock(16, seq_len=128, kernel_dim=16)
        >>> block(torch.randn(2, 128, 16)).shape
        torch.Size([2, 128, 16])
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        mixer: str = "sgconv",
        kernel_dim: int = 32,
        alpha: float = 2.0,
        bidirectional: bool = False,
        squash_lambda: float = 0.003,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        mode: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if mixer not in _MIXERS:
            raise ValueError(f"mixer must be one of {_MIXERS}, got {mixer!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        factory = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, **factory)
        if mixer == "sgconv":
            self.mixer = SGConvBlock(dim, seq_len, kernel_dim, alpha, bidirectional, dropout, mode, **factory)
        else:
            self.mixer = _LongConvMixer(dim, seq_len, not bidirectional, squash_lambda, dropout, mode, **factory)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, **factory)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden, **factory),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim, **factory),
            nn.Dropout(dropout),
        )
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.mixer(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SequenceClassifier(nn.Module):
    """Classifier for ``(N, in_chans, L)`` sequences made of global-convolution blocks.

    Args:
        num_classes: Output classes (``0``: no head, ``forward`` returns pooled features).
        in_chans: Input channels.
        seq_len: Maximal sequence length (kernel length of the global convolutions).
        depth: Number of blocks.
        dim: Channels inside the model.
        mixer: ``"sgconv"`` or ``"longconv"``.
        kernel_dim: SGConv sub-kernel length.
        alpha: SGConv decay base.
        bidirectional: Non-causal mixing.
        squash_lambda: LongConv soft threshold.
        mlp_ratio: MLP expansion.
        dropout: Dropout inside the blocks.
        drop_rate: Dropout before the head.
        drop_path_rate: Stochastic depth, linearly increasing over the blocks.
        global_pool: ``"avg"``, ``"max"`` or ``"last"`` (last time step).
        mode: Conv execution path.
        device: Parameter device.
        dtype: Parameter dtype.

    Example:
        >>> model = SequenceClassifier(num_classes=2, in_chans=1, seq_len=256, depth=2, dim=16)
        >>> model(torch.randn(4, 1, 256)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        seq_len: int = 1024,
        depth: int = 4,
        dim: int = 64,
        mixer: str = "sgconv",
        kernel_dim: int = 32,
        alpha: float = 2.0,
        bidirectional: bool = False,
        squash_lambda: float = 0.003,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        mode: str = "auto",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("num_classes", num_classes, 0),
            ("in_chans", in_chans, 1),
            ("seq_len", seq_len, 1),
            ("depth", depth, 1),
            ("dim", dim, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        if global_pool not in _POOLS:
            raise ValueError(f"global_pool must be one of {_POOLS}, got {global_pool!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.seq_len = seq_len
        self.num_features = self.head_hidden_size = dim
        self.global_pool = global_pool
        self.stem = nn.Linear(in_chans, dim, **factory)
        rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            SequenceBlock(
                dim, seq_len, mixer, kernel_dim, alpha, bidirectional, squash_lambda,
                mlp_ratio, dropout, rates[i], mode, **factory,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, **factory)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes, **factory) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final classification layer."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (``num_classes=0`` removes it); optionally change the pooling."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f"global_pool must be one of {_POOLS}, got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = self.norm.weight
        self.head = linear_head_like(self.num_features, num_classes, ref)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.in_chans:
            raise ValueError(f"input must be (N, {self.in_chans}, L), got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, L) -> (N, dim, L)`` normalised features before pooling."""
        self._check_input(x)
        x = self.stem(x.transpose(1, 2))
        for block in self.blocks:
            x = block(x)
        return self.norm(x).transpose(1, 2)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Outputs ``(N, dim, L)`` of the selected blocks (``int n``: the last ``n``; ``None``: all)."""
        self._check_input(x)
        depth = len(self.blocks)
        if indices is None:
            wanted = set(range(depth))
        elif isinstance(indices, int):
            if not 1 <= indices <= depth:
                raise ValueError(f"indices must be in [1, {depth}] when an int, got {indices}")
            wanted = set(range(depth - indices, depth))
        else:
            wanted = {i % depth if -depth <= i < depth else i for i in indices}
            bad = [i for i in wanted if not 0 <= i < depth]
            if bad:
                raise ValueError(f"indices out of range for depth {depth}: {bad}")
        outs = []
        x = self.stem(x.transpose(1, 2))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                outs.append(x.transpose(1, 2))
        return outs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool ``(N, dim, L)`` features over time and apply the head (unless ``pre_logits``)."""
        if self.global_pool == "avg":
            x = x.mean(dim=-1)
        elif self.global_pool == "max":
            x = x.amax(dim=-1)
        else:
            x = x[..., -1]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _sgconv_variant(
    name: str, doc: str, seq_len: int, depth: int, dim: int, kernel_dim: int, dropout: float, drop_path_rate: float
):
    """Register an SGConv entry point whose defaults differ per size (explicit kwargs, no ``**kwargs``)."""
    default_seq_len, default_depth, default_dim = seq_len, depth, dim
    default_kernel_dim, default_dropout, default_drop_path_rate = kernel_dim, dropout, drop_path_rate

    def entry(
        num_classes: int = 10,
        in_chans: int = 1,
        seq_len: int = default_seq_len,
        depth: int = default_depth,
        dim: int = default_dim,
        kernel_dim: int = default_kernel_dim,
        alpha: float = 2.0,
        bidirectional: bool = False,
        mlp_ratio: float = 2.0,
        dropout: float = default_dropout,
        drop_rate: float = 0.0,
        drop_path_rate: float = default_drop_path_rate,
        global_pool: str = "avg",
        mode: str = "auto",
    ) -> SequenceClassifier:
        return SequenceClassifier(
            num_classes, in_chans, seq_len, depth, dim, "sgconv", kernel_dim, alpha, bidirectional,
            mlp_ratio=mlp_ratio, dropout=dropout, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            global_pool=global_pool, mode=mode,
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return register_model(entry)


sgconv_seq_tiny = _sgconv_variant(
    "sgconv_seq_tiny", "SGConv sequence classifier, 4 blocks of width 64 (~0.1 M parameters at L=1024).",
    seq_len=1024, depth=4, dim=64, kernel_dim=32, dropout=0.0, drop_path_rate=0.0,
)
sgconv_seq_small = _sgconv_variant(
    "sgconv_seq_small", "SGConv sequence classifier, 6 blocks of width 128.",
    seq_len=4096, depth=6, dim=128, kernel_dim=64, dropout=0.1, drop_path_rate=0.1,
)


@register_model
def longconv_seq_tiny(
    num_classes: int = 10,
    in_chans: int = 1,
    seq_len: int = 1024,
    depth: int = 4,
    dim: int = 64,
    bidirectional: bool = False,
    squash_lambda: float = 0.003,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    global_pool: str = "avg",
    mode: str = "auto",
) -> SequenceClassifier:
    """LongConv (one weight per lag + squash) sequence classifier, 4 blocks of width 64."""
    return SequenceClassifier(
        num_classes, in_chans, seq_len, depth, dim, "longconv",
        bidirectional=bidirectional, squash_lambda=squash_lambda, mlp_ratio=mlp_ratio, dropout=dropout,
        drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool, mode=mode,
    )
