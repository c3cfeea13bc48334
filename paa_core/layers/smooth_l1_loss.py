"""Smooth L1 (Huber-like) loss as used by maskrcnn-benchmark's box heads."""

import torch.nn.functional as F


def smooth_l1_loss(input, target, beta=1.0 / 9, size_average=True):
    """0.5 * d^2 / beta where |d| < beta, else |d| - 0.5 * beta; mean or sum.

    `F.smooth_l1_loss` with `beta` is exactly this piecewise function (and it also
    handles beta = 0 as plain L1 without a 0/0 in the gradient).
    """
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    return F.smooth_l1_loss(input, target, reduction="mean" if size_average else "sum", beta=beta)
