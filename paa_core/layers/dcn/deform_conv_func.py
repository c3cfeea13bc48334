"""Autograd functions of (modulated) deformable convolution, backed by `paa_core._C`.

Layout is that of `torchvision.ops.deform_conv2d`: with K = kh*kw taps in row-major
order and deformable group d, offset channel `d*2K + 2k` is the vertical (y) and
`d*2K + 2k + 1` the horizontal (x) displacement of tap k, and mask channel `d*K + k`
scales the bilinear sample of tap k. Corners outside the image read zero.
"""
import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from paa_core import _C


def _shape_error(name, actual, expected, meaning):
    return ValueError(
        f"deform_conv: {name} must have shape {list(expected)} {meaning}, got {list(actual)}"
    )


def _check_args(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
    """Raise a one-line error unless the arguments fit together; returns (H_out, W_out).

    input [N, C, H, W], offset [N, 2*dg*K, H_out, W_out], mask [N, dg*K, H_out, W_out],
    weight [O, C/groups, kh, kw], bias [O].
    """
    tensors = {"input": input, "offset": offset, "mask": mask, "weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"deform_conv: {name} must be a tensor, got {type(t).__name__}")
    if input.dim() != 4:
        raise ValueError(f"deform_conv: input must be 4-D [N, C, H, W], got {list(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"deform_conv: weight must be 4-D [O, C/groups, kh, kw], got {list(weight.shape)}")
    if input.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"deform_conv: input must be float32 or float64, got {input.dtype}")
    for name, t in tensors.items():
        if t is None or name == "input":
            continue
        if t.device != input.device:
            raise ValueError(f"deform_conv: {name} is on {t.device} but input is on {input.device}")
        if t.dtype != input.dtype:
            raise TypeError(f"deform_conv: {name} has dtype {t.dtype} but input has dtype {input.dtype}")
    n, c, h, w = input.shape
    o, _, kh, kw = weight.shape
    if groups < 1 or c % groups or o % groups:
        raise ValueError(f"deform_conv: groups={groups} must divide in_channels={c} and out_channels={o}")
    if deformable_groups < 1 or c % deformable_groups:
        raise ValueError(f"deform_conv: deformable_groups={deformable_groups} must divide in_channels={c}")
    if tuple(weight.shape) != (o, c // groups, kh, kw):
        raise _shape_error("weight", weight.shape, (o, c // groups, kh, kw), "(out_channels, in_channels/groups, kh, kw)")
    out_h = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"deform_conv: kernel {kh}x{kw} does not fit the padded {h}x{w} input")
    taps = kh * kw
    expected = (n, 2 * deformable_groups * taps, out_h, out_w)
    if tuple(offset.shape) != expected:
        raise _shape_error("offset", offset.shape, expected, "(N, 2*deformable_groups*kh*kw, H_out, W_out)")
    if mask is not None and tuple(mask.shape) != (n, deformable_groups * taps, out_h, out_w):
        raise _shape_error(
            "mask", mask.shape, (n, deformable_groups * taps, out_h, out_w), "(N, deformable_groups*kh*kw, H_out, W_out)"
        )
    if bias is not None and tuple(bias.shape) != (o,):
        raise _shape_error("bias", bias.shape, (o,), "(out_channels)")


class DeformConvFunction(Function):
    """DCN v1 when `mask` is None, DCN v2 (modulated) otherwise; `bias` optional."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
        stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
        _check_args(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups)
        ctx.conv_args = (*stride, *padding, *dilation, groups, deformable_groups)
        ctx.save_for_backward(input, offset, mask, weight, bias)
        return _C.deform_conv_forward(input, weight, offset, mask, bias, *ctx.conv_args)

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_output):
        input, offset, mask, weight, bias = ctx.saved_tensors
        grad_input, grad_weight, grad_offset, grad_mask, grad_bias = _C.deform_conv_backward(
            grad_output, input, weight, offset, mask, bias, *ctx.conv_args
        )
        return grad_input, grad_offset, grad_mask, grad_weight, grad_bias, None, None, None, None, None


def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1, bias=None):
    """DCN v1: input [N, C, H, W], offset [N, 2*dg*kh*kw, H_out, W_out], weight [O, C/groups, kh, kw].

    stride, padding and dilation are ints or (h, w) pairs; bias [O] is optional.
    """
    return DeformConvFunction.apply(
        input, offset, None, weight, bias, stride, padding, dilation, groups, deformable_groups
    )


def modulated_deform_conv(
    input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1
):
    """DCN v2: as `deform_conv`, and mask [N, dg*kh*kw, H_out, W_out] scales each sample."""
    return DeformConvFunction.apply(
        input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups
    )
