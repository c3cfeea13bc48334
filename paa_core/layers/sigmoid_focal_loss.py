"""Sigmoid focal loss (RetinaNet): op `torch.ops.paa_core.sigmoid_focal_loss_forward`.

The op's CPU/CUDA kernels, backward, autocast rule (lower precision logits run in
float32) and checks are registered with PyTorch's dispatcher (see `paa_core._ops`).
"""

from torch import Tensor

from paa_core._ops import ops


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, gamma: float, alpha: float) -> Tensor:
    """Per-element focal loss [N, C] of logits [N, C]; targets [N] hold 0 (background) or
    1..C (logit column c scores label c + 1), rows with a negative target are ignored."""
    return ops.sigmoid_focal_loss_forward(logits, targets, float(gamma), float(alpha))
