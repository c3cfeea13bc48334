"""Sigmoid focal loss (RetinaNet) with the compiled forward/backward on CPU and CUDA."""
import torch
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from paa_core import _C


class _SigmoidFocalLoss(Function):
    """Per-element focal loss [N, C]; targets [N] hold 0 (background) or 1..C."""

    @staticmethod
    def forward(ctx, logits, targets, gamma, alpha):
        ctx.save_for_backward(logits, targets)
        ctx.gamma, ctx.alpha = gamma, alpha
        return _C.sigmoid_focalloss_forward(logits, targets, logits.shape[1], gamma, alpha)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_loss):
        logits, targets = ctx.saved_tensors
        d_logits = _C.sigmoid_focalloss_backward(
            logits, targets, d_loss.contiguous(), logits.shape[1], ctx.gamma, ctx.alpha
        )
        return d_logits, None, None, None


def sigmoid_focal_loss(logits, targets, gamma, alpha):
    """Per-element focal loss; logit column c scores label c + 1."""
    if logits.dim() != 2:
        raise ValueError(f"sigmoid_focal_loss: logits must be [N, C], got {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"sigmoid_focal_loss: targets must be [N] with N={logits.shape[0]}, got {tuple(targets.shape)}"
        )
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()  # the kernels run in float32/float64 (e.g. under autocast)
    return _SigmoidFocalLoss.apply(logits, targets, float(gamma), float(alpha))


class SigmoidFocalLoss(nn.Module):
    """Sum of the focal loss over all anchors and classes (normalise outside)."""

    def __init__(self, gamma, alpha):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits, targets):
        return sigmoid_focal_loss(logits, targets, self.gamma, self.alpha).sum()

    def extra_repr(self):
        return f"gamma={self.gamma}, alpha={self.alpha}"
