"""Head outputs in the anchor generator's order, shared by both detectors' losses and
post-processing."""

import torch
from torch import Tensor


def permute_and_flatten(
    layer: Tensor, num_images: int, num_anchors: int, channels: int, height: int, width: int
) -> Tensor:
    """[N, A*K, H, W] -> [N, H*W*A, K], the anchor generator's order."""
    layer = layer.view(num_images, num_anchors, channels, height, width)
    return layer.permute(0, 3, 4, 1, 2).reshape(num_images, -1, channels)


def concat_box_prediction_layers(
    box_cls: list[Tensor], box_regression: list[Tensor], iou_pred: list[Tensor] | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-level head outputs -> cls [N, A_total, C], reg [N, A_total, 4], iou [N, A_total] or None."""
    cls_flat, reg_flat, iou_flat = [], [], []
    for level, (cls_l, reg_l) in enumerate(zip(box_cls, box_regression)):
        n, a4, h, w = reg_l.shape
        num_anchors = a4 // 4
        channels = cls_l.shape[1] // num_anchors
        cls_flat.append(permute_and_flatten(cls_l, n, num_anchors, channels, h, w))
        reg_flat.append(permute_and_flatten(reg_l, n, num_anchors, 4, h, w))
        if iou_pred is not None:
            iou_flat.append(permute_and_flatten(iou_pred[level], n, num_anchors, 1, h, w))
    iou = torch.cat(iou_flat, dim=1).squeeze(2) if iou_pred is not None else None
    return torch.cat(cls_flat, dim=1), torch.cat(reg_flat, dim=1), iou


def flatten_rpn_outputs(objectness, box_regression, iou_pred=None):
    """Per level objectness [N, A, H, W], deltas [N, 4A, H, W] (4 consecutive channels per
    anchor) and IoU logits [N, A, H, W] or None -> objectness [N, T], deltas [N, T, 4],
    IoU [N, T] or None, with T = sum_l H_l * W_l * A in the anchors' (level, y, x, a) order."""
    obj, reg, iou = concat_box_prediction_layers(objectness, box_regression, iou_pred)
    return obj.squeeze(2), reg, iou
