"""Model zoo: UniRepLKNet, RepLKNet, ConvNeXt, InceptionNeXt, LSNet, sequence models."""

from largekernel.models.registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
