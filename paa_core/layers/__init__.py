"""Building blocks and compiled ops shared by the backbone, head, loss and post-processing."""

from .batch_norm import FrozenBatchNorm2d, conv_frozen_bn
from .dcn import DeformConv, DFConv2d, ModulatedDeformConv, deform_conv, modulated_deform_conv
from .nms import ml_nms, nms
from .scale import Scale
from .sigmoid_focal_loss import sigmoid_focal_loss
from .winograd import WinogradConv2d, winograd_conv3x3

__all__ = [
    "DFConv2d",
    "DeformConv",
    "FrozenBatchNorm2d",
    "ModulatedDeformConv",
    "Scale",
    "WinogradConv2d",
    "conv_frozen_bn",
    "deform_conv",
    "ml_nms",
    "modulated_deform_conv",
    "nms",
    "sigmoid_focal_loss",
    "winograd_conv3x3",
]
