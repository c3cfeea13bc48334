"""Batch norm with frozen statistics and affine parameters (ImageNet backbones), and a
convolution followed by it computed as one convolution."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """y = x * scale + shift, scale = weight / sqrt(running_var), shift = bias - mean * scale.

    All four tensors are buffers (never trained), named as in the reference state
    dicts. There is deliberately no eps: the reference computes exactly this, and the
    MSRA/Caffe2 backbones it loads store already-folded affine terms with
    running_var = 1, so adding eps would shift every activation away from the
    released checkpoints' numbers.
    """

    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """(scale, shift) [C] of y = x * scale + shift, in the buffers' dtype."""
        scale = self.weight * self.running_var.rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x):
        scale, shift = self.scale_and_shift()
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self):
        return f"{self.weight.shape[0]}"


def conv_frozen_bn(conv: nn.Module, norm: nn.Module, x: Tensor) -> Tensor:
    """norm(conv(x)). A plain conv followed by FrozenBatchNorm2d runs as one convolution with
    the frozen scale folded into its weight and the shift as its bias: the same function
    with one pass over the activations fewer, forward and backward; the conv's weight still
    gets its gradient, and the state dict is untouched. Any other pair runs as it is."""
    plain = type(conv) is nn.Conv2d and conv.padding_mode == "zeros"
    if not (plain and isinstance(norm, FrozenBatchNorm2d)):
        return norm(conv(x))
    scale, shift = (t.to(conv.weight.dtype) for t in norm.scale_and_shift())
    bias = shift if conv.bias is None else shift + conv.bias * scale
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
