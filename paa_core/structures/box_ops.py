"""Areas, IoUs and clipping of xyxy box tensors, for both pixel conventions.

`offset` chooses the convention and is always passed explicitly by the caller:
`PLUS_ONE_OFFSET` is the "+1" convention of the PAA reference and the datasets (a box
[x1, x2] covers x2 - x1 + 1 pixels), `CONTINUOUS_OFFSET` the one of detectron2 and
torchvision (width x2 - x1), which the Faster R-CNN path computes in. The same offset
goes to the NMS ops (`paa_core.layers.nms`), so one detector uses one convention
throughout.
"""

import torch
from torch import Tensor

PLUS_ONE_OFFSET = 1  # maskrcnn-benchmark's TO_REMOVE
CONTINUOUS_OFFSET = 0


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


def clip_boxes(boxes: Tensor, size: tuple[int, int], *, offset: float) -> Tensor:
    """boxes [..., 4] clamped to the image of `size` (w, h): [0, w - offset] x [0, h - offset]."""
    width, height = size
    return torch.stack(
        [
            boxes[..., 0].clamp(0, width - offset),
            boxes[..., 1].clamp(0, height - offset),
            boxes[..., 2].clamp(0, width - offset),
            boxes[..., 3].clamp(0, height - offset),
        ],
        dim=-1,
    )
