"""The masked image model: sparse encoder + densify + light decoder, trained to fill in hidden patches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from largekernel.pretrain.decoder import Densify, LightDecoder, decoder_widths
from largekernel.pretrain.loss import masked_patch_loss
from largekernel.pretrain.masking import check_mask_ratio, random_mask
from largekernel.pretrain.sparse import SparseEncoder

__all__ = ["MaskedImageModel", "build_masked_image_model", "check_pretrainable", "create_backbone"]


def create_backbone(model: str, model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``create_model(model, features_only=True, **model_kwargs)`` with clear errors.

    Raises:
        ValueError: Unknown model, a model without ``features_only`` support, or
            ``features_only=False`` in ``model_kwargs``.

    Example:
        >>> create_backbone("convnext_atto", {"in_chans": 1}).features_only
        True
    """
    from largekernel.models.registry import create_model

    kwargs = check_pretrainable(model, model_kwargs)
    kwargs["features_only"] = True
    return create_model(model, **kwargs)


def check_pretrainable(model: str, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check (without building it) that ``model`` can be a masked-pre-training backbone.

    Returns:
        A copy of ``model_kwargs`` without ``num_classes``/``features_only``.

    Raises:
        ValueError: Unknown model, no ``features_only`` mode, or contradicting ``model_kwargs``.
    """
    import inspect

    from largekernel.models.registry import model_entrypoint

    kwargs = dict(model_kwargs or {})
    if kwargs.pop("features_only", True) is not True:
        raise ValueError("masked pre-training needs features_only=True; remove features_only from model_kwargs")
    if kwargs.pop("num_classes", 0):
        raise ValueError("masked pre-training builds a backbone without a head; remove num_classes from model_kwargs")
    params = inspect.signature(model_entrypoint(model)).parameters
    if "features_only" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"model {model!r} has no features_only mode (no multi-scale feature maps), so it "
                         f"cannot be pre-trained with masked image modelling; use an image backbone such as "
                         f"unireplknet_a, convnext_atto, inception_next_atto or replknet_31b")
    return kwargs


class MaskedImageModel(nn.Module):
    """SparK-style masked image modelling around any ``features_only`` backbone.

    ``forward(x)`` draws a random mask on the final-stride grid (torch's global RNG), runs the
    masked encoder, densifies every scale, decodes and returns the loss on the hidden patches
    (``forward`` returning the loss lets the ordinary training loop drive it).

    Args:
        backbone: A model built with ``features_only=True``; converted in place for masked forwards.
        in_chans: Image channels (default: the backbone's ``in_chans`` config, else 3).
        mask_ratio: Fraction of patches hidden, in ``(0, 1)``.
        decoder_width: Decoder width at the deepest scale (halved per shallower scale; default:
            the deepest encoder width).
        norm_pix_loss: Regress per-patch normalised pixels (SparK/MAE) instead of raw ones.

    Example:
        >>> import largekernel
        >>> bb = largekernel.create_model("convnext_atto", features_only=True, in_chans=1)
        >>> mim = MaskedImageModel(bb, in_chans=1)
        >>> mim(torch.randn(2, 1, 64, 64)).shape
        torch.Size([])
    """

    def __init__(self, backbone: nn.Module, *, in_chans: int | None = None, mask_ratio: float = 0.6,
                 decoder_width: int | None = None, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.mask_ratio = check_mask_ratio(mask_ratio)
        self.encoder = SparseEncoder(backbone)
        if in_chans is None:
            in_chans = int((getattr(backbone, "largekernel_config", None) or {}).get("kwargs", {}).get("in_chans", 3))
        self.in_chans = in_chans
        self.norm_pix_loss = bool(norm_pix_loss)
        channels, strides = self.encoder.channels, self.encoder.strides
        widths = decoder_widths(decoder_width if decoder_width is not None else channels[-1], len(channels))
        self.densify = Densify(channels, widths)
        self.decoder = LightDecoder(widths, strides, in_chans)
        self.mask_shard = (0, 1)  # (rank, world size): see random_mask

    @property
    def stride(self) -> int:
        """Patch size in pixels (the backbone's final stride)."""
        return self.encoder.stride

    def no_weight_decay(self) -> set[str]:
        """Mask tokens plus the backbone's own no-decay parameters."""
        names = {f"densify.mask_tokens.{i}" for i in range(len(self.densify.mask_tokens))}
        hook = getattr(self.encoder.backbone, "no_weight_decay", None)
        if callable(hook):
            names |= {f"encoder.backbone.{n}" for n in hook()}
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's stages in the backward pass (the backbone must support it).

        Raises:
            ValueError: The backbone has no ``set_grad_checkpointing``.
        """
        setter = getattr(self.encoder.backbone, "set_grad_checkpointing", None)
        if setter is None:
            raise ValueError(f"{type(self.encoder.backbone).__name__} does not support grad_checkpointing")
        setter(enable)

    def random_mask(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random ``(N, 1, h, w)`` visibility mask for the images ``x``.

        With ``mask_shard = (rank, world_size)`` (set by the data-parallel trainer) the masks of the
        whole global batch are drawn and rank ``rank``'s slice is returned: every rank starts from
        the same RNG state, so this gives each rank different masks, and together exactly the masks
        a single process would draw for the global batch.
        """
        rank, world = self.mask_shard
        n = x.shape[0]
        masks = random_mask(n * world, self.encoder.grid(x.shape[-2:]), self.mask_ratio,
                            device=x.device, generator=generator)
        return masks[rank * n:(rank + 1) * n]

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's image ``(N, C, H, W)`` (normalised-pixel space) for ``x`` seen through ``mask``."""
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans}-channel images, got shape {tuple(x.shape)}")
        feats = self.encoder(x, mask)
        return self.decoder(self.densify(feats, mask))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The masked-reconstruction loss of a batch (a random mask when ``mask`` is ``None``)."""
        if mask is None:
            mask = self.random_mask(x)
        return masked_patch_loss(self.reconstruct(x, mask), x, mask, norm_pix=self.norm_pix_loss)


def build_masked_image_model(model: str, model_kwargs: dict[str, Any] | None = None, **options: Any
                             ) -> MaskedImageModel:
    """Create ``model`` from the registry with ``features_only=True`` and wrap it.

    Args:
        model: Registered model name.
        model_kwargs: Extra options for ``create_model`` (``in_chans``, ``dims``, ...).
        **options: :class:`MaskedImageModel` options.

    Example:
        >>> mim = build_masked_image_model("unireplknet_a", dict(in_chans=1, stem_stride=1,
        ...     depths=[1, 1, 1, 1], dims=[8, 16, 24, 32], kernel_sizes=[[3], [13], [7], [3]]))
        >>> float(mim(torch.randn(2, 1, 32, 32)).detach()) > 0
        True
    """
    backbone = create_backbone(model, model_kwargs)
    options.setdefault("in_chans", (model_kwargs or {}).get("in_chans", 3))
    return MaskedImageModel(backbone, **options)
