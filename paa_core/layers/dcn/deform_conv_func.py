"""Deformable convolution functions: op `torch.ops.paa_core.deform_conv_forward`.

Layout is that of `torchvision.ops.deform_conv2d`: with K = kh*kw taps in row-major
order and deformable group d, offset channel `d*2K + 2k` is the vertical (y) and
`d*2K + 2k + 1` the horizontal (x) displacement of tap k, and mask channel `d*K + k`
scales the bilinear sample of tap k. Corners outside the image read zero.
The op's kernels, backward, autocast rule (lower precision inputs run in float32) and
argument checks are registered with PyTorch's dispatcher (see `paa_core._ops`).
"""

from torch import Tensor
from torch.nn.modules.utils import _pair

from paa_core._ops import ops

IntPair = int | tuple[int, int]


def _conv_args(
    stride: IntPair, padding: IntPair, dilation: IntPair, groups: int, deformable_groups: int
) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    return sh, sw, ph, pw, dh, dw, groups, deformable_groups


def deform_conv(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    deformable_groups: int = 1,
    bias: Tensor | None = None,
) -> Tensor:
    """DCN v1: input [N, C, H, W], offset [N, 2*dg*kh*kw, H_out, W_out], weight [O, C/groups, kh, kw].

    stride, padding and dilation are ints or (h, w) pairs; bias [O] is optional.
    """
    return ops.deform_conv_forward(
        input,
        weight,
        offset,
        None,
        bias,
        *_conv_args(stride, padding, dilation, groups, deformable_groups),
    )


def modulated_deform_conv(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    deformable_groups: int = 1,
) -> Tensor:
    """DCN v2: as `deform_conv`, and mask [N, dg*kh*kw, H_out, W_out] scales each sample."""
    return ops.deform_conv_forward(
        input,
        weight,
        offset,
        mask,
        bias,
        *_conv_args(stride, padding, dilation, groups, deformable_groups),
    )
