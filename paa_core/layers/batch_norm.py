"""Batch norm with frozen statistics and affine parameters (ImageNet backbones)."""

import torch
from torch import nn


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

    def forward(self, x):
        scale = self.weight * self.running_var.rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self):
        return f"{self.weight.shape[0]}"
