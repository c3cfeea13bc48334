"""Plain-Python box arithmetic that tests compare the vectorised code against."""

import math


def iou_plus1(a, b):
    """IoU of two xyxy boxes [x1, y1, x2, y2] with the legacy +1 widths."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)

    def area(x):
        return (x[2] - x[0] + 1) * (x[3] - x[1] + 1)

    return inter / (area(a) + area(b) - inter)


def iou_continuous(a, b):
    """IoU of two xyxy boxes with detectron2's widths (x2 - x1, no +1)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def d2_deltas(anchor, gt):
    """detectron2's get_deltas with weights (1, 1, 1, 1) for one anchor and one GT box."""
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    wg, hg = gt[2] - gt[0], gt[3] - gt[1]
    cxa, cya = anchor[0] + 0.5 * wa, anchor[1] + 0.5 * ha
    cxg, cyg = gt[0] + 0.5 * wg, gt[1] + 0.5 * hg
    return [(cxg - cxa) / wa, (cyg - cya) / ha, math.log(wg / wa), math.log(hg / ha)]


def d2_decode(anchor, deltas, weights=(1.0, 1.0, 1.0, 1.0), clip=math.log(1000.0 / 16)):
    """detectron2's apply_deltas for one anchor: centre shift, clamped log-size change."""
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cxa, cya = anchor[0] + 0.5 * wa, anchor[1] + 0.5 * ha
    dx, dy, dw, dh = (d / w for d, w in zip(deltas, weights))
    cx, cy = dx * wa + cxa, dy * ha + cya
    w, h = math.exp(min(dw, clip)) * wa, math.exp(min(dh, clip)) * ha
    return [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
