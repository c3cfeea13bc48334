"""The compiled ops as `torch.ops.paa_core.*`, and what they need from Python.

Importing `paa_core._C` registers the schemas, the CPU/CUDA kernels, the autocast rules and
the Meta kernels (csrc/). This module adds the rest:

- autograd formulas of the focal loss and deformable convolution. They are registered
  here with `torch.library.register_autograd` rather than as C++ autograd kernels: each
  backward is itself a dispatcher op, so the formula is a few lines of Python, and
  AOTAutograd (torch.compile, torch.export) traces a formula registered either way alike;
- fake kernels of `nms` and `ml_nms`, whose output length depends on the data (the other
  ops' shapes come from their C++ Meta kernels, which run the same argument checks).

The Winograd tile transforms need no formula here: the convolution that composes them
(`paa_core.layers.winograd`) is one autograd Function whose backward calls their adjoints.

Input checks live in the C++ kernels only (`TORCH_CHECK`: a `RuntimeError` naming the
argument); the wrappers in `paa_core.layers` add no checks of their own.
"""

import torch

from paa_core import _C  # noqa: F401  (loads the library, which registers the ops)

ops = torch.ops.paa_core


@torch.library.register_fake("paa_core::nms")
def _nms_fake(dets, scores, iou_threshold, offset=1.0):
    return dets.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.int64)


@torch.library.register_fake("paa_core::ml_nms")
def _ml_nms_fake(dets, scores, labels, iou_threshold, offset=1.0):
    return dets.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.int64)


def _focal_setup(ctx, inputs, output):
    logits, targets, ctx.gamma, ctx.alpha = inputs
    ctx.save_for_backward(logits, targets)


def _focal_backward(ctx, d_losses):
    logits, targets = ctx.saved_tensors
    d_logits = ops.sigmoid_focal_loss_backward(logits, targets, d_losses, ctx.gamma, ctx.alpha)
    return d_logits, None, None, None


torch.library.register_autograd(
    "paa_core::sigmoid_focal_loss_forward", _focal_backward, setup_context=_focal_setup
)


def _deform_conv_setup(ctx, inputs, output):
    input, weight, offset, mask, bias, *conv_args = inputs
    ctx.conv_args = conv_args
    ctx.save_for_backward(input, weight, offset, mask, bias)


def _deform_conv_backward(ctx, grad_output):
    input, weight, offset, mask, bias = ctx.saved_tensors
    grads = ops.deform_conv_backward(grad_output, input, weight, offset, mask, bias, *ctx.conv_args)
    grad_input, grad_weight, grad_offset, grad_mask, grad_bias = grads
    # The op returns empty gradients for an absent mask / bias.
    grad_mask = grad_mask if mask is not None else None
    grad_bias = grad_bias if bias is not None else None
    return (grad_input, grad_weight, grad_offset, grad_mask, grad_bias) + (None,) * len(
        ctx.conv_args
    )


torch.library.register_autograd(
    "paa_core::deform_conv_forward", _deform_conv_backward, setup_context=_deform_conv_setup
)
