"""Greedy NMS (ops `torch.ops.paa_core.nms` / `ml_nms`), for either box convention."""

import torch
from torch import Tensor

from paa_core._ops import ops


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: float = 1) -> Tensor:
    """Indices (int64) of the boxes kept by greedy NMS, by descending score.

    boxes [N, 4] xyxy, scores [N]. A box is dropped when its IoU, computed with
    widths x2 - x1 + offset (1: the PAA reference, 0: detectron2; see
    `structures.box_ops`), with a kept higher-scoring box exceeds `iou_threshold`.
    """
    return ops.nms(boxes, scores, float(iou_threshold), float(offset))


def ml_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, offset: float = 1
) -> Tensor:
    """Like `nms`, but a box only suppresses boxes that carry the same label (integer [N])."""
    if labels.is_floating_point():
        # The reference passed labels as floats; accept them when they are whole numbers.
        if not torch.equal(labels, labels.round()):
            raise ValueError("ml_nms: floating point labels must hold whole numbers")
        labels = labels.long()
    return ops.ml_nms(boxes, scores, labels, float(iou_threshold), float(offset))
