"""RPN proposals: per-level top-k, decoding, clipping, per-level NMS, per-image top-k."""

import torch
from torch import Tensor

from paa_core.layers import ml_nms
from paa_core.modeling.box_coder import BoxCoder
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import clip_boxes

from ..head_outputs import flatten_rpn_outputs


def combined_objectness(objectness: Tensor, iou_pred: Tensor | None) -> Tensor:
    """The PAA RPN's ranking logit: logit(sqrt(sigmoid(o) * sigmoid(q))) (may be +-inf;
    only the order is used); plain `objectness` without the IoU branch."""
    if iou_pred is None:
        return objectness
    p = torch.sqrt(torch.sigmoid(objectness) * torch.sigmoid(iou_pred))
    return torch.log(p) - torch.log1p(-p)


class RPNPostProcessor(torch.nn.Module):
    """Turns head outputs into at most `fpn_post_nms_top_n` proposals per image.

    For each image: the `pre_nms_top_n` best anchors of each level by score (the
    objectness logit, or with the IoU branch logit(sqrt(sigmoid(o) * sigmoid(q)))) are
    decoded, clipped to the image ([0, w] x [0, h]), boxes with a side <= `min_size` are
    dropped, NMS at `nms_thresh` runs within each level, and the best
    `fpn_post_nms_top_n` survivors of all levels are kept, best first. Returns BoxLists
    (xyxy, detectron2 convention) with the score in the field "objectness".
    """

    def __init__(
        self,
        pre_nms_top_n: int,
        fpn_post_nms_top_n: int,
        nms_thresh: float,
        min_size: float,
        box_coder: BoxCoder,
    ):
        super().__init__()
        self.pre_nms_top_n = pre_nms_top_n
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.box_coder = box_coder

    def select_top_per_level(
        self, anchors: list[Tensor], scores: Tensor, box_regression: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The `pre_nms_top_n` best anchors of each level, decoded.

        Args:
            anchors: per level [T_l, 4].
            scores [N, T], box_regression [N, T, 4]: flattened over the levels.
        Returns:
            decoded boxes [N, K, 4], their scores [N, K] and level ids [K].
        """
        boxes, top_scores, levels = [], [], []
        start = 0
        for level, anchors_l in enumerate(anchors):
            end = start + len(anchors_l)
            k = min(self.pre_nms_top_n, len(anchors_l))
            s, idx = scores[:, start:end].topk(k, dim=1, sorted=True)
            deltas = torch.gather(box_regression[:, start:end], 1, idx[..., None].expand(-1, -1, 4))
            decoded = self.box_coder.decode(deltas.reshape(-1, 4), anchors_l[idx.reshape(-1)])
            boxes.append(decoded.view(idx.shape[0], k, 4))
            top_scores.append(s)
            levels.append(torch.full((k,), level, dtype=torch.long, device=s.device))
            start = end
        return torch.cat(boxes, dim=1), torch.cat(top_scores, dim=1), torch.cat(levels)

    def forward(
        self,
        anchors: list[Tensor],
        objectness: list[Tensor],
        box_regression: list[Tensor],
        iou_pred: list[Tensor] | None,
        image_sizes: list[tuple[int, int]],
    ) -> list[BoxList]:
        """Proposals of each image.

        Args:
            anchors: per level [T_l, 4].
            objectness, box_regression, iou_pred: the head's per-level outputs
                (iou_pred None without the IoU branch).
            image_sizes: (h, w) per image.
        """
        objectness, box_regression, iou_pred = flatten_rpn_outputs(
            objectness, box_regression, iou_pred
        )
        scores = combined_objectness(objectness, iou_pred)
        boxes, scores, levels = self.select_top_per_level(anchors, scores, box_regression)
        proposals = []
        for boxes_i, scores_i, (height, width) in zip(boxes, scores, image_sizes):
            boxes_i = clip_boxes(boxes_i, (width, height), offset=self.box_coder.offset)
            size = boxes_i[:, 2:] - boxes_i[:, :2]
            keep = (
                ((size > self.min_size).all(dim=1) & torch.isfinite(boxes_i).all(dim=1))
                .nonzero()
                .squeeze(1)
            )
            boxes_i, scores_i, levels_i = boxes_i[keep], scores_i[keep], levels[keep]
            keep = ml_nms(
                boxes_i, scores_i, levels_i, self.nms_thresh, offset=self.box_coder.offset
            )
            keep = keep[: self.fpn_post_nms_top_n]
            proposal = BoxList(boxes_i[keep], (width, height), mode="xyxy")
            proposal.add_field("objectness", scores_i[keep])
            proposals.append(proposal)
        return proposals


def make_rpn_postprocessor(cfg, box_coder: BoxCoder, is_train: bool) -> RPNPostProcessor:
    r = cfg.MODEL.RPN
    return RPNPostProcessor(
        pre_nms_top_n=r.PRE_NMS_TOP_N_TRAIN if is_train else r.PRE_NMS_TOP_N_TEST,
        fpn_post_nms_top_n=r.FPN_POST_NMS_TOP_N_TRAIN if is_train else r.FPN_POST_NMS_TOP_N_TEST,
        nms_thresh=r.NMS_THRESH,
        min_size=r.MIN_SIZE,
        box_coder=box_coder,
    )
