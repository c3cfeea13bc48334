"""Deformable convolution modules; `DFConv2d` is the block the backbone and head use."""

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .deform_conv_func import deform_conv, modulated_deform_conv


class _DeformConvBase(nn.Module):
    """Holds `weight` [out, in/groups, kh, kw] and optional `bias` [out] of a deformable conv."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        deformable_groups,
        bias,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{type(self).__name__}: groups={groups} must divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"{type(self).__name__}: deformable_groups={deformable_groups} must divide in_channels={in_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # Uniform in +-1/sqrt(in_channels*kh*kw) (groups ignored), as the reference's modules.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DeformConv(_DeformConvBase):
    """DCN v1: forward(input, offset) with offset [N, 2*dg*kh*kw, H_out, W_out]."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        bias=False,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            deformable_groups,
            bias,
        )

    def forward(self, input, offset):
        return deform_conv(
            input,
            offset,
            self.weight,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.deformable_groups,
            self.bias,
        )


class ModulatedDeformConv(_DeformConvBase):
    """DCN v2: forward(input, offset, mask) with mask [N, dg*kh*kw, H_out, W_out] in [0, 1]."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        bias=True,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            deformable_groups,
            bias,
        )

    def forward(self, input, offset, mask):
        return modulated_deform_conv(
            input,
            offset,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.deformable_groups,
        )


class DFConv2d(nn.Module):
    """Deformable conv whose offsets (and mask) come from a plain conv on the same input.

    `offset` predicts dg*K*2 offset channels, plus dg*K mask logits when modulated
    (27 channels for a 3x3 kernel). Init as in the reference: kaiming_uniform(a=1) and
    zero bias for `offset`, the deformable conv's own uniform init for `conv` (ImageNet
    backbones carry no DCN offsets, so this decides how dcnv2 training starts).
    Padding keeps the spatial size at stride 1.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        with_modulated_dcn=True,
        kernel_size=3,
        stride=1,
        groups=1,
        dilation=1,
        deformable_groups=1,
        bias=False,
    ):
        super().__init__()
        kh, kw = _pair(kernel_size)
        dil = _pair(dilation)
        padding = (dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2)
        taps = deformable_groups * kh * kw
        self.with_modulated_dcn = with_modulated_dcn
        self.offset_split = 2 * taps
        self.offset = nn.Conv2d(
            in_channels,
            taps * (3 if with_modulated_dcn else 2),
            (kh, kw),
            stride=stride,
            padding=padding,
            dilation=dil,
        )
        nn.init.kaiming_uniform_(self.offset.weight, a=1)
        nn.init.zeros_(self.offset.bias)
        conv_block = ModulatedDeformConv if with_modulated_dcn else DeformConv
        self.conv = conv_block(
            in_channels,
            out_channels,
            (kh, kw),
            stride=stride,
            padding=padding,
            dilation=dil,
            groups=groups,
            deformable_groups=deformable_groups,
            bias=bias,
        )

    def forward(self, x):
        offset_mask = self.offset(x)
        if not self.with_modulated_dcn:
            return self.conv(x, offset_mask)
        offset = offset_mask[:, : self.offset_split]
        mask = offset_mask[:, self.offset_split :].sigmoid()
        return self.conv(x, offset, mask)
