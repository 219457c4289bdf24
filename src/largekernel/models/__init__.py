"""Model zoo: UniRepLKNet, RepLKNet, ConvNeXt, InceptionNeXt, LSNet, sequence models."""

from largekernel.models.convnext import ConvNeXt
from largekernel.models.counting import count_macs, count_params
from largekernel.models.inception_next import MetaNeXt
from largekernel.models.lsnet import LSNet
from largekernel.models.registry import create_model, is_model, list_models, register_model
from largekernel.models.replknet import RepLKNet
from largekernel.models.sequence import SequenceClassifier
from largekernel.models.unireplknet import UniRepLKNet

__all__ = [
    "create_model",
    "is_model",
    "list_models",
    "register_model",
    "count_params",
    "count_macs",
    "UniRepLKNet",
    "RepLKNet",
    "ConvNeXt",
    "MetaNeXt",
    "LSNet",
    "SequenceClassifier",
]
