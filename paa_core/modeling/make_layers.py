"""Small conv factories shared by the FPN (and any light backbone added later)."""
from torch import nn


def conv_with_kaiming_uniform(use_bias=True):
    """Return `make_conv(in, out, kernel_size, stride=1)`: a conv with "same" padding,
    kaiming_uniform(a=1) weights and zero bias (the FPN's init); `use_bias=False`
    drops the bias (the PAA Faster R-CNN authors' FPN)."""

    def make_conv(in_channels, out_channels, kernel_size, stride=1):
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size,
            stride=stride, padding=kernel_size // 2, bias=use_bias,
        )
        nn.init.kaiming_uniform_(conv.weight, a=1)
        if use_bias:
            nn.init.constant_(conv.bias, 0)
        return conv

    return make_conv
