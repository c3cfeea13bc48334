"""Thin wrappers kept for maskrcnn-benchmark API compatibility."""

from torch import nn


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` under the reference's name.

    The reference patched empty-batch support in by hand; current PyTorch already
    returns a [0, C_out, H_out, W_out] tensor (with working gradients) for an empty
    batch, so no override is needed.
    """
