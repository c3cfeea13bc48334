"""Deformable convolution (DCN v1 and modulated v2) on CPU and CUDA."""

from .deform_conv_func import deform_conv, modulated_deform_conv
from .deform_conv_module import DeformConv, DFConv2d, ModulatedDeformConv

__all__ = ["DFConv2d", "DeformConv", "ModulatedDeformConv", "deform_conv", "modulated_deform_conv"]
