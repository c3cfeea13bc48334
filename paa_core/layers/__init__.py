"""Building blocks and compiled ops shared by the backbone, head, loss and post-processing."""

from .batch_norm import FrozenBatchNorm2d
from .dcn import DeformConv, DFConv2d, ModulatedDeformConv, deform_conv, modulated_deform_conv
from .misc import Conv2d
from .nms import ml_nms, nms
from .scale import Scale
from .sigmoid_focal_loss import SigmoidFocalLoss, sigmoid_focal_loss
from .smooth_l1_loss import smooth_l1_loss

__all__ = [
    "Conv2d",
    "DFConv2d",
    "DeformConv",
    "FrozenBatchNorm2d",
    "ModulatedDeformConv",
    "Scale",
    "SigmoidFocalLoss",
    "deform_conv",
    "ml_nms",
    "modulated_deform_conv",
    "nms",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
]
