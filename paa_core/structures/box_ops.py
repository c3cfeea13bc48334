"""Areas and IoUs of xyxy box tensors, for both pixel conventions.

`offset` chooses the convention and is always passed explicitly by the caller:
1 is the legacy "+1" convention of the PAA reference (a box [x1, x2] covers
x2 - x1 + 1 pixels; `bounding_box.TO_REMOVE`), 0 is the continuous convention of
detectron2 and torchvision (width x2 - x1). The same offset goes to the NMS ops
(`paa_core.layers.nms`), so one detector uses one convention throughout.
"""

import torch
from torch import Tensor


def box_area(boxes: Tensor, *, offset: float) -> Tensor:
    """Areas [N] of boxes [N, 4]."""
    return (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)


def box_iou(boxes1: Tensor, boxes2: Tensor, *, offset: float) -> Tensor:
    """IoU matrix [N, M] of boxes1 [N, 4] against boxes2 [M, 4]."""
    area1 = box_area(boxes1, offset=offset)
    area2 = box_area(boxes2, offset=offset)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def paired_iou(boxes1: Tensor, boxes2: Tensor, *, offset: float) -> Tensor:
    """IoU [N] of boxes1[i] with boxes2[i] (both [N, 4])."""
    area1 = box_area(boxes1, offset=offset)
    area2 = box_area(boxes2, offset=offset)
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area1 + area2 - inter)
