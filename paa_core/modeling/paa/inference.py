"""PAA post-processing (docs/DESIGN.md §6): per-level candidates, class-wise NMS, cap, voting."""

import torch
from torch import Tensor, nn

from paa_core.modeling.box_coder import BoxCoder
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist

from ..head_outputs import permute_and_flatten
from .score_voting import score_voting


class PAAPostProcessor(nn.Module):
    """Turns head outputs into per-image detections ("scores", "labels" 1..C).

    `num_classes` = C counts the foreground classes, as in the head."""

    def __init__(
        self,
        pre_nms_thresh: float,
        pre_nms_top_n: int,
        nms_thresh: float,
        detections_per_img: int,
        num_classes: int,
        box_coder: BoxCoder,
        score_voting: bool,
    ):
        super().__init__()
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.num_classes = num_classes
        self.box_coder = box_coder
        self.score_voting = score_voting

    def forward_for_single_feature_map(
        self,
        box_cls: Tensor,
        box_regression: Tensor,
        iou_pred: Tensor | None,
        anchors: Tensor,
        image_sizes: list[tuple[int, int]],
    ) -> list[BoxList]:
        """One level for the whole batch (anchors [H*W*A, 4], image sizes (h, w)) ->
        per-image BoxLists of clipped candidates.

        A (location, class) pair is a candidate when its class probability exceeds
        `pre_nms_thresh`; at most `pre_nms_top_n` per image survive, ranked by
        sqrt(cls * sigmoid(iou)) (or cls alone without the IoU branch).
        """
        n, _, h, w = box_cls.shape
        num_anchors = box_regression.shape[1] // 4
        num_classes = self.num_classes
        if box_cls.shape[1] != num_anchors * num_classes:
            raise ValueError(
                f"PAAPostProcessor: box_cls has {box_cls.shape[1]} channels, expected {num_anchors} anchors x {num_classes} classes"
            )
        cls_prob = permute_and_flatten(box_cls, n, num_anchors, num_classes, h, w).sigmoid()
        box_regression = permute_and_flatten(box_regression, n, num_anchors, 4, h, w)
        candidates = (cls_prob > self.pre_nms_thresh).reshape(n, -1)
        scores = cls_prob
        if iou_pred is not None:
            iou_prob = permute_and_flatten(iou_pred, n, num_anchors, 1, h, w).sigmoid()
            scores = torch.sqrt(cls_prob * iou_prob)
        scores = scores.reshape(n, -1).masked_fill(~candidates, -1.0)

        k = min(self.pre_nms_top_n, scores.shape[1])
        top_scores, top_idx = scores.topk(k, dim=1)
        keep = candidates.gather(1, top_idx)
        locations = top_idx // num_classes
        anchor_boxes = anchors.to(box_regression.dtype).expand(n, -1, -1)
        index4 = locations[:, :, None].expand(-1, -1, 4)
        boxes = self.box_coder.decode(
            box_regression.gather(1, index4).reshape(-1, 4),
            anchor_boxes.gather(1, index4).reshape(-1, 4),
        ).reshape(n, k, 4)

        results = []
        for i, (height, width) in enumerate(image_sizes):
            boxlist = BoxList(boxes[i][keep[i]], (width, height), mode="xyxy")
            boxlist.add_field("labels", top_idx[i][keep[i]] % num_classes + 1)
            boxlist.add_field("scores", top_scores[i][keep[i]])
            # A decoded (finite) box has +1 widths > 0, before and after clipping, so the
            # reference's min_size=0 filter removed nothing.
            results.append(boxlist.clip_to_image(remove_empty=False))
        return results

    def select_over_all_levels(self, boxlist: BoxList) -> BoxList:
        """Class-wise NMS, keep the `detections_per_img` best, then optional score voting."""
        result = boxlist_ml_nms(boxlist, self.nms_thresh)
        if self.detections_per_img > 0:
            # NMS returns its boxes by descending score, so the best n are the first n; a
            # slice, unlike a branch on the count, is traced by torch.export.
            result = result[: self.detections_per_img]
        if self.score_voting:
            result = score_voting(result, boxlist)
        return result

    def forward(
        self,
        box_cls: list[Tensor],
        box_regression: list[Tensor],
        iou_pred: list[Tensor] | None,
        anchors: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[BoxList]:
        """Per-level lists of head outputs (iou_pred may be None) and anchors [T_l, 4];
        image_sizes: (h, w) per image. -> list of per-image BoxLists."""
        per_level = []
        for level, (cls_l, reg_l) in enumerate(zip(box_cls, box_regression)):
            iou_l = iou_pred[level] if iou_pred is not None else None
            per_level.append(
                self.forward_for_single_feature_map(
                    cls_l, reg_l, iou_l, anchors[level], image_sizes
                )
            )
        return [self.select_over_all_levels(cat_boxlist(list(image))) for image in zip(*per_level)]


def make_paa_postprocessor(cfg, box_coder: BoxCoder) -> PAAPostProcessor:
    p = cfg.MODEL.PAA
    return PAAPostProcessor(
        pre_nms_thresh=p.INFERENCE_TH,
        pre_nms_top_n=p.PRE_NMS_TOP_N,
        nms_thresh=p.NMS_TH,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMG,
        num_classes=p.NUM_CLASSES - 1,  # the key counts the background
        box_coder=box_coder,
        score_voting=p.INFERENCE_SCORE_VOTING,
    )
