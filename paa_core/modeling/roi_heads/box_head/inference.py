"""Fast R-CNN inference: class-specific boxes, score threshold, per-class NMS, top detections."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from paa_core.layers import ml_nms
from paa_core.modeling.box_coder import BoxCoder
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import clip_boxes


class PostProcessor(nn.Module):
    """Softmax over classes (background, column 0, dropped); each class's decoded box is
    clipped to [0, w] x [0, h]; (box, class) pairs scoring > `score_thresh` go through
    NMS at `nms` within their class and the best `detections_per_img` are kept.
    Returns BoxLists with "scores" and "labels" (1..C)."""

    def __init__(
        self, score_thresh: float, nms: float, detections_per_img: int, box_coder: BoxCoder
    ):
        super().__init__()
        self.score_thresh = score_thresh
        self.nms = nms
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder

    def forward(
        self, class_logits: Tensor, box_regression: Tensor, proposals: list[BoxList]
    ) -> list[BoxList]:
        """Detections of each image.

        Args:
            class_logits [K, C+1], box_regression [K, 4 (C+1)]: the predictor's outputs
                for the K boxes of `proposals`, in order.
            proposals: per image, a BoxList.
        """
        probs = F.softmax(class_logits, dim=-1)
        boxes = self.box_coder.decode(box_regression, torch.cat([p.bbox for p in proposals], dim=0))
        num_classes = probs.shape[1]
        results = []
        start = 0
        for proposal in proposals:
            end = start + len(proposal)
            scores = probs[start:end, 1:]
            boxes_i = boxes[start:end].view(-1, num_classes, 4)[:, 1:]
            boxes_i = clip_boxes(boxes_i, proposal.size, offset=self.box_coder.offset)
            keep = (scores > self.score_thresh) & torch.isfinite(boxes_i).all(dim=-1)
            rows, cols = keep.nonzero(as_tuple=True)
            boxes_k, scores_k = boxes_i[rows, cols], scores[rows, cols]
            keep = ml_nms(boxes_k, scores_k, cols, self.nms, offset=self.box_coder.offset)
            keep = keep[: self.detections_per_img]
            result = BoxList(boxes_k[keep], proposal.size, mode="xyxy")
            result.add_field("scores", scores_k[keep])
            result.add_field("labels", cols[keep] + 1)
            results.append(result)
            start = end
        return results
