"""Box <-> regression-target coding (the reference's "BOX" regression).

Widths are `x2 - x1 + offset` (`offset` 1: the PAA reference's +1 convention, the
default; 0: detectron2's, used by the Faster R-CNN path; see `structures.box_ops`),
centres are the midpoints `(x1 + x2) / 2`, and decoding returns
`ctr +- 0.5 * (w - offset)`, so decoding an encoding gives back the original box exactly.
"""

import math

import torch


class BoxCoder:
    """Encodes boxes as (dx, dy, dw, dh) relative to reference boxes (anchors)."""

    def __init__(self, weights, bbox_xform_clip=math.log(1000.0 / 16), offset=1):
        if len(weights) != 4:
            raise ValueError(f"BoxCoder weights must be 4 numbers, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip
        self.offset = offset

    def _centre_size(self, boxes):
        widths = boxes[:, 2] - boxes[:, 0] + self.offset
        heights = boxes[:, 3] - boxes[:, 1] + self.offset
        ctr_x = (boxes[:, 2] + boxes[:, 0]) / 2
        ctr_y = (boxes[:, 3] + boxes[:, 1]) / 2
        return ctr_x, ctr_y, widths, heights

    def encode(self, reference_boxes, proposals):
        """Targets [N, 4] that turn `proposals` (anchors) [N, 4] into `reference_boxes` (GT) [N, 4]."""
        ex_ctr_x, ex_ctr_y, ex_w, ex_h = self._centre_size(proposals)
        gt_ctr_x, gt_ctr_y, gt_w, gt_h = self._centre_size(reference_boxes)
        wx, wy, ww, wh = self.weights
        return torch.stack(
            (
                wx * (gt_ctr_x - ex_ctr_x) / ex_w,
                wy * (gt_ctr_y - ex_ctr_y) / ex_h,
                ww * torch.log(gt_w / ex_w),
                wh * torch.log(gt_h / ex_h),
            ),
            dim=1,
        )

    def decode(self, rel_codes, boxes):
        """Boxes [N, 4*k] from codes [N, 4*k] applied to `boxes` [N, 4] (k boxes per row)."""
        boxes = boxes.to(rel_codes.dtype)
        ctr_x, ctr_y, widths, heights = self._centre_size(boxes)
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        # Clamp before exp() so that wild predictions cannot overflow.
        dw = (rel_codes[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (rel_codes[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None] - self.offset)
        half_h = 0.5 * (torch.exp(dh) * heights[:, None] - self.offset)

        pred = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
            dim=2,
        )  # [N, k, 4]
        return pred.reshape(rel_codes.shape)
