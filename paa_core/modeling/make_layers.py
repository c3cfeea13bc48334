"""Small conv factories shared by the FPN (and any light backbone added later)."""
from torch import nn


def conv_with_kaiming_uniform():
    """Return `make_conv(in, out, kernel_size, stride=1)`: a biased conv with
    "same" padding, kaiming_uniform(a=1) weights and zero bias (the FPN's init)."""

    def make_conv(in_channels, out_channels, kernel_size, stride=1):
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size,
            stride=stride, padding=kernel_size // 2, bias=True,
        )
        nn.init.kaiming_uniform_(conv.weight, a=1)
        nn.init.constant_(conv.bias, 0)
        return conv

    return make_conv
