"""Sequence classifiers built from global long convolutions (SGConv or LongConv).

Input ``(N, in_chans, L)``; a linear stem lifts the channels to ``dim``; ``depth`` pre-norm
residual blocks follow, each ``x + DropPath(mixer(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``,
where the mixer is ``SGConv -> GELU -> Dropout -> Linear`` (:class:`~largekernel.nn.sgconv.SGConvBlock`)
or the same with :class:`~largekernel.nn.long_conv.LongConv`. A final LayerNorm, pooling over
time (``avg``, ``max`` or ``last`` step; ``last`` suits causal models) and a linear head
follow. timm's whole model contract is kept (:class:`~largekernel.models.base.TimmModelMixin`):
the feature levels are the blocks' outputs ``(N, dim, L)`` (reduction 1), so ``features_only``,
``forward_intermediates``, ``prune_intermediate_layers``, ``set_grad_checkpointing`` and
``no_weight_decay`` work as for the image models; ``global_pool`` is ``avg``, ``max``, ``last`` or
``""`` (per-step outputs).

Registered: ``sgconv_seq_tiny``, ``sgconv_seq_small``, ``longconv_seq_tiny``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from largekernel.models.base import TimmModelMixin, apply_channelwise, linear_head_like
from largekernel.models.builder import build_model, model_cfg, register_cfg
from largekernel.models.features import FeatureInfo
from largekernel.models.registry import register_model
from largekernel.nn.layers import DropPath
from largekernel.nn.long_conv import LongConv
from largekernel.nn.sgconv import SGConvBlock

__all__ = ["SequenceClassifier", "SequenceBlock", "sgconv_seq_tiny", "sgconv_seq_small", "longconv_seq_tiny"]

_MIXERS = ("sgconv", "longconv")
_POOLS = ("avg", "max", "last", "")


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


class SequenceClassifier(TimmModelMixin, nn.Module):
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
        global_pool: ``"avg"``, ``"max"``, ``"last"`` (last time step) or ``""`` (no pooling).
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
        self.feature_info = FeatureInfo([dict(num_chs=dim, reduction=1, module=f"blocks.{i}") for i in range(depth)])

    pool_types = _POOLS

    # ---- hooks of the timm contract (TimmModelMixin); the trunk is (N, L, dim) tokens -------
    def _check_input(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing: no shapes to check
            return
        if x.dim() != 3 or x.shape[1] != self.in_chans:
            raise ValueError(f"input must be (N, {self.in_chans}, L), got {tuple(x.shape)}")

    def _run_level(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if i == 0:
            self._check_input(x)
            x = self.stem(x.transpose(1, 2))
        block = self.blocks[i]
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
        return x, x.transpose(1, 2)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, dim)`` tokens -> normalised ``(N, dim, L)`` features."""
        return self.norm(x).transpose(1, 2)

    def _norm_last(self, feat: torch.Tensor) -> torch.Tensor:
        return apply_channelwise(self.norm, feat)

    def _prune_stages(self, n: int) -> None:
        self.blocks = self.blocks[:n]

    def _reset_head(self, num_classes: int) -> None:
        self.head = linear_head_like(self.num_features, num_classes, self.norm.weight)

    def _forward_head(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        """Pool ``(N, dim, L)`` features over time (``global_pool``) and apply the head."""
        if self.global_pool == "avg":
            x = x.mean(dim=-1)
        elif self.global_pool == "max":
            x = x.amax(dim=-1)
        elif self.global_pool == "last":
            x = x[..., -1]
        x = self.head_drop(x)
        return x if pre_logits else apply_channelwise(self.head, x)


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
        pretrained: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        pretrained_cfg: dict | str | None = None,
    ) -> SequenceClassifier:
        return build_model(
            SequenceClassifier, name, pretrained=pretrained, pretrained_cfg=pretrained_cfg,
            features_only=features_only, out_indices=out_indices,
            num_classes=num_classes, in_chans=in_chans, seq_len=seq_len, depth=depth, dim=dim, mixer="sgconv",
            kernel_dim=kernel_dim, alpha=alpha, bidirectional=bidirectional, mlp_ratio=mlp_ratio, dropout=dropout,
            drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool, mode=mode,
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    register_cfg(name, _seq_cfg(seq_len))
    return register_model(entry)


def _seq_cfg(seq_len: int) -> dict:
    # sequences are taken as given: zero mean / unit scale, one channel
    return model_cfg(num_classes=10, input_size=(1, seq_len), pool_size=None, crop_pct=1.0, interpolation=None,
                     mean=(0.0,), std=(1.0,), first_conv="stem", classifier="head")


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
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    pretrained_cfg: dict | str | None = None,
) -> SequenceClassifier:
    """LongConv (one weight per lag + squash) sequence classifier, 4 blocks of width 64."""
    return build_model(
        SequenceClassifier, "longconv_seq_tiny", pretrained=pretrained, pretrained_cfg=pretrained_cfg,
        features_only=features_only, out_indices=out_indices,
        num_classes=num_classes, in_chans=in_chans, seq_len=seq_len, depth=depth, dim=dim, mixer="longconv",
        bidirectional=bidirectional, squash_lambda=squash_lambda, mlp_ratio=mlp_ratio, dropout=dropout,
        drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool, mode=mode,
    )


register_cfg("longconv_seq_tiny", _seq_cfg(1024))
