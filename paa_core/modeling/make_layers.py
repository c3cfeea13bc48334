"""Small conv factories shared by the FPN (and any light backbone added later)."""

from torch import nn

from paa_core.layers import WinogradConv2d


def group_norm(channels, dim_per_group=-1, num_groups=32, eps=1e-5):
    """GroupNorm with `num_groups` groups, or groups of `dim_per_group` channels when
    that is set instead (the MODEL.GROUP_NORM keys; exactly one of the two is -1)."""
    if (dim_per_group == -1) == (num_groups == -1):
        raise ValueError("set one of the group size and the number of groups, the other to -1")
    groups = channels // dim_per_group if dim_per_group > 0 else num_groups
    if groups <= 0 or channels % groups:
        raise ValueError(f"{channels} channels do not split into equal groups")
    return nn.GroupNorm(groups, channels, eps=eps)


def conv_with_kaiming_uniform(
    use_gn=False, use_relu=False, gn_args=None, use_bias=True, winograd=False
):
    """Return `make_conv(in, out, kernel_size, stride=1)`: a conv with "same" padding,
    kaiming_uniform(a=1) weights and zero bias (the FPN's init); `use_bias=False` drops the
    bias (the PAA Faster R-CNN authors' FPN); with `use_gn` the conv has no bias either and
    is followed by `group_norm(out, **gn_args)`, with `use_relu` by a ReLU (then the result
    is a Sequential: `<name>.0` is the conv, as in the reference). With `winograd` the 3x3
    stride-1 convs are `WinogradConv2d` (same parameters)."""

    def make_conv(in_channels, out_channels, kernel_size, stride=1):
        plain = not (winograd and kernel_size == 3 and stride == 1)
        conv = (nn.Conv2d if plain else WinogradConv2d)(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=use_bias and not use_gn,
        )
        nn.init.kaiming_uniform_(conv.weight, a=1)
        if conv.bias is not None:
            nn.init.constant_(conv.bias, 0)
        layers = [conv]
        if use_gn:
            layers.append(group_norm(out_channels, **(gn_args or {})))
        if use_relu:
            layers.append(nn.ReLU(inplace=True))
        return conv if len(layers) == 1 else nn.Sequential(*layers)

    return make_conv
