"""Modules: drop-in convs, reparameterisable large-kernel layers and operators.

* Engine drop-ins: :class:`Conv1d`, :class:`Conv2d`, :class:`Conv3d`, :func:`accelerate` (and its inverse :func:`to_torch_convs`).
* Reparameterisable large-kernel layers: :class:`DilatedReparamConv` (UniRepLKNet),
  :class:`ReparamLargeKernelConv` (RepLKNet).
* Large-receptive-field operators: :class:`InceptionDWConv2d`, :class:`LSConv`,
  :class:`DCLSConv1d`/``2d``/``3d``, :class:`SGConv`, :class:`SGConv2d`, :class:`LongConv`,
  :class:`CPConv1d`/``2d``/``3d``, :class:`CPDepthwiseConv2d`, :class:`HyperKernelConv2d`,
  and :func:`create_mixer` to use any of them as a block's token mixer.
* Shared layers: :class:`DropPath`, :class:`LayerNorm2d`, :class:`GRN`, :class:`SqueezeExcite`.
"""

from largekernel.nn.acceleration import accelerate
from largekernel.nn.conv import Conv1d, Conv2d, Conv3d
from largekernel.nn.cp_conv import CPConv1d, CPConv2d, CPConv3d, CPDepthwiseConv2d
from largekernel.nn.dcls import DCLSConv1d, DCLSConv2d, DCLSConv3d, register_position_clamp
from largekernel.nn.dilated_reparam import DilatedReparamConv
from largekernel.nn.hyper_kernel import HyperKernelConv2d
from largekernel.nn.inception_dw import InceptionDWConv2d
from largekernel.nn.layers import GRN, DropPath, EngineGRN, LayerNorm2d, SqueezeExcite
from largekernel.nn.long_conv import LongConv
from largekernel.nn.ls_conv import LSConv
from largekernel.nn.mixers import create_mixer, list_mixers
from largekernel.nn.replk_conv import ReparamLargeKernelConv
from largekernel.nn.sgconv import SGConv, SGConv2d, SGConvBlock

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "accelerate",
    "to_torch_convs",
    "DilatedReparamConv",
    "ReparamLargeKernelConv",
    "InceptionDWConv2d",
    "LSConv",
    "DCLSConv1d",
    "DCLSConv2d",
    "DCLSConv3d",
    "register_position_clamp",
    "SGConv",
    "SGConv2d",
    "SGConvBlock",
    "LongConv",
    "CPConv1d",
    "CPConv2d",
    "CPConv3d",
    "CPDepthwiseConv2d",
    "HyperKernelConv2d",
    "create_mixer",
    "list_mixers",
    "DropPath",
    "LayerNorm2d",
    "GRN",
    "EngineGRN",
    "SqueezeExcite",
]
