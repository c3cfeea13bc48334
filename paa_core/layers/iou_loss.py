"""The GIoU loss of the PAA box branch (paired IoUs: `structures.box_ops`)."""

import torch


def giou_loss(pred, target, eps=1e-7):
    """Per-pair GIoU loss `1 - GIoU` [N] for xyxy boxes pred [N, 4], target [N, 4].

    Areas have no +1 here (unlike the rest of the code base), `eps` is added to the
    union and the enclosing area, and degenerate predictions are made empty with
    x2 = max(x1, x2), y2 = max(y1, y2), as in the reference.
    """
    px1, py1, px2, py2 = pred.unbind(dim=1)
    tx1, ty1, tx2, ty2 = target.unbind(dim=1)
    px2 = torch.max(px1, px2)
    py2 = torch.max(py1, py2)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)

    inter_w = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0)
    inter_h = (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    inter = inter_w * inter_h
    enclosing = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (
        torch.max(py2, ty2) - torch.min(py1, ty1)
    ) + eps
    union = pred_area + target_area - inter + eps
    giou = inter / union - (enclosing - union) / enclosing
    return 1 - giou
