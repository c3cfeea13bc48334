"""Per-anchor rows of the RPN head's outputs, and the PAA RPN's ranking score."""
import torch

from .paa.loss import concat_box_prediction_layers


def flatten_rpn_outputs(objectness, box_regression, iou_pred=None):
    """Per level objectness [N, A, H, W], deltas [N, 4A, H, W] (4 consecutive channels per
    anchor) and IoU logits [N, A, H, W] or None -> objectness [N, T], deltas [N, T, 4],
    IoU [N, T] or None, with T = sum_l H_l * W_l * A in the anchors' (level, y, x, a) order."""
    obj, reg, iou = concat_box_prediction_layers(objectness, box_regression, iou_pred)
    return obj.squeeze(2), reg, iou


def combined_objectness(objectness, iou_pred):
    """The PAA RPN's ranking logit: logit(sqrt(sigmoid(o) * sigmoid(q))) (may be +-inf;
    only the order is used); plain `objectness` without the IoU branch."""
    if iou_pred is None:
        return objectness
    p = torch.sqrt(torch.sigmoid(objectness) * torch.sigmoid(iou_pred))
    return torch.log(p) - torch.log1p(-p)
