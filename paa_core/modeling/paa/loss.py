"""PAA training targets (IoU pre-assignment and candidate costs, docs/DESIGN.md §4.1-4.2,
then the assigner's selection, §4.3-4.4) and losses (§5).

Everything is batched: anchors of all images are handled as one flat list of
B * A entries (image-major, then level, then row-major (y, x), then anchor), GTs of
all images as one list of G boxes, and the per-GT mixtures are fitted in a single
batched EM call. Only the IoU pre-assignment loops over images.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from paa_core.layers.iou_loss import giou_loss
from paa_core.layers.sigmoid_focal_loss import sigmoid_focal_loss
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.matcher import Matcher
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import PLUS_ONE_OFFSET, box_iou, paired_iou
from paa_core.utils.comm import get_world_size, reduce_sum
from paa_core.utils.events import listening, publish

from ..head_outputs import concat_box_prediction_layers
from ..paa_assigner import ProbabilisticAnchorAssigner


class IoUPreassignment(NamedTuple):
    """The batch after IoU pre-assignment (see `prepare_iou_based_targets`)."""

    anchor_boxes: Tensor  # [B, A, 4]
    levels: Tensor  # [A] FPN level of each anchor
    matched: Tensor  # [B, A] index into gt_boxes, -1 when unmatched
    gt_boxes: Tensor  # [G, 4] all GTs of the batch
    gt_labels: Tensor  # [G]


class PAATargets(NamedTuple):
    """The assignment of a batch (see `compute_targets`), B images of A anchors each."""

    labels: Tensor  # [B*A] 0 background, 1..C
    pos_idx: Tensor  # [P] flat indices of the positives
    pos_anchors: Tensor  # [P, 4] their anchors
    reg_targets: Tensor  # [P, 4] their regression target boxes


class PAALossComputation:
    """Pre-assigns anchors by IoU, scores the candidates, lets `assigner` pick the
    positives and returns (loss_cls, loss_reg, loss_iou_pred)."""

    def __init__(
        self,
        iou_threshold: float,
        assigner: ProbabilisticAnchorAssigner,
        gamma: float,
        alpha: float,
        reg_loss_weight: float,
        iou_loss_weight: float,
        box_coder: BoxCoder,
    ):
        self.matcher = Matcher(iou_threshold, iou_threshold, allow_low_quality_matches=True)
        self.assigner = assigner
        self.gamma = gamma
        self.alpha = alpha
        self.reg_loss_weight = reg_loss_weight
        self.iou_loss_weight = iou_loss_weight
        self.box_coder = box_coder

    def prepare_iou_based_targets(
        self, targets: list[BoxList], anchors: list[Tensor]
    ) -> IoUPreassignment:
        """IoU pre-assignment (docs/DESIGN.md §4.1).

        Returns anchor boxes [B, A, 4], per-anchor level [A], the matched GT of every
        anchor [B, A] as an index into the batch's concatenated GTs (-1 when none),
        and those GT boxes [G, 4] and labels [G].
        """
        boxes = torch.cat(anchors, dim=0)
        matched, gt_boxes, gt_labels = [], [], []
        offset = 0
        for targets_im in targets:
            targets_im = targets_im.convert("xyxy")
            matched_im = self.matcher(box_iou(targets_im.bbox, boxes, offset=PLUS_ONE_OFFSET))
            matched.append(torch.where(matched_im >= 0, matched_im + offset, -1))
            gt_boxes.append(targets_im.bbox)
            gt_labels.append(targets_im.get_field("labels").long())
            offset += len(targets_im)
        levels = torch.repeat_interleave(
            torch.arange(len(anchors), device=boxes.device),
            torch.as_tensor([len(a) for a in anchors], device=boxes.device),
        )
        return IoUPreassignment(
            boxes.expand(len(targets), -1, -1),
            levels,
            torch.stack(matched),
            torch.cat(gt_boxes, dim=0),
            torch.cat(gt_labels, dim=0),
        )

    @torch.no_grad()
    def compute_anchor_scores(
        self,
        cls_logits: Tensor,
        box_regression: Tensor,
        anchors: Tensor,
        target_boxes: Tensor,
        labels: Tensor,
    ) -> Tensor:
        """Per-candidate cost (docs/DESIGN.md §4.2, eq. P2): focal loss summed over classes
        + GIoU loss. [K]"""
        cls_cost = sigmoid_focal_loss(cls_logits, labels, self.gamma, self.alpha).sum(dim=1)
        pred_boxes = self.box_coder.decode(box_regression, anchors)
        return cls_cost + giou_loss(pred_boxes, target_boxes)

    def compute_targets(
        self,
        cls_flat: Tensor,
        reg_flat: Tensor,
        targets: list[BoxList],
        anchors: list[Tensor],
    ) -> PAATargets:
        """PAA assignment for a batch (docs/DESIGN.md §4.1-4.5).

        cls_flat [B*A, C], reg_flat [B*A, 4] (flattened head outputs). Returns labels
        [B*A] (0 background, 1..C), the flat indices of the positives [P], their
        anchors [P, 4] and their regression target boxes [P, 4].
        """
        anchor_boxes, levels, matched, gt_boxes, gt_labels = self.prepare_iou_based_targets(
            targets, anchors
        )
        num_anchors = anchor_boxes.shape[1]
        anchor_flat = anchor_boxes.reshape(-1, 4).to(reg_flat.dtype)
        matched = matched.reshape(-1)

        cand_idx = torch.nonzero(matched >= 0).squeeze(1)
        cand_gt = matched[cand_idx]
        cand_anchors = anchor_flat[cand_idx]
        # The reference regresses to decode(encode(gt)): keep that round trip.
        cand_targets = self.box_coder.decode(
            self.box_coder.encode(gt_boxes[cand_gt].to(reg_flat.dtype), cand_anchors),
            cand_anchors,
        )
        cand_score = self.compute_anchor_scores(
            cls_flat[cand_idx], reg_flat[cand_idx], cand_anchors, cand_targets, gt_labels[cand_gt]
        )
        cand_level = levels[cand_idx % num_anchors]
        pos = self.assigner(cand_gt, cand_level, cand_score, len(gt_labels), len(anchors))
        pos_idx = cand_idx[pos]
        publish("pos_per_gt", pos_idx.numel() / max(len(gt_labels), 1))
        if listening():
            publish(
                "paa_candidates",
                {
                    "anchor_index": cand_idx,
                    "box": cand_anchors,
                    "gt": cand_gt,
                    "level": cand_level,
                    "score": cand_score,
                    "score_name": "focal + GIoU loss",
                    "anchors_per_image": num_anchors,
                    "num_levels": len(anchors),
                },
            )
        labels = torch.zeros_like(matched)
        labels[pos_idx] = gt_labels[cand_gt[pos]]
        return PAATargets(labels, pos_idx, cand_anchors[pos], cand_targets[pos])

    def __call__(
        self,
        box_cls: list[Tensor],
        box_regression: list[Tensor],
        iou_pred: list[Tensor] | None,
        targets: list[BoxList],
        anchors: list[Tensor],
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """box_cls [N, A*C, H, W], box_regression [N, A*4, H, W], iou_pred [N, A, H, W]
        (or None) per level; targets: per-image BoxLists with "labels" 1..C;
        anchors: per level [T_l, 4], shared by the images. -> (loss_cls, loss_reg, loss_iou_pred).

        With the IoU branch the GIoU loss of each positive is weighted by its IoU target
        and normalised by the IoU targets' sum; without it (iou_pred None, the paper's
        ablation) it is a plain sum over positives normalised by their number, and
        loss_iou_pred is None."""
        cls_flat, reg_flat, iou_flat = concat_box_prediction_layers(
            box_cls, box_regression, iou_pred
        )
        cls_flat = cls_flat.reshape(-1, cls_flat.shape[2])
        reg_flat = reg_flat.reshape(-1, 4)
        labels, pos_idx, pos_anchors, reg_targets = self.compute_targets(
            cls_flat, reg_flat, targets, anchors
        )
        pred_boxes = self.box_coder.decode(reg_flat[pos_idx], pos_anchors)
        iou_targets = paired_iou(pred_boxes.detach(), reg_targets, offset=PLUS_ONE_OFFSET)

        totals = (
            reduce_sum(
                torch.stack([iou_targets.new_tensor(float(pos_idx.numel())), iou_targets.sum()])
            )
            / get_world_size()
        )
        num_pos_avg = totals[0].clamp(min=1.0)
        # Zero only when every IoU target is 0; the numerator is then 0 as well.
        iou_sum_avg = totals[1].clamp(min=1e-12)

        loss_cls = sigmoid_focal_loss(cls_flat, labels, self.gamma, self.alpha).sum() / num_pos_avg
        # Empty selections still reach reg_flat / iou_flat, so every parameter gets a gradient.
        reg_losses = giou_loss(pred_boxes, reg_targets)
        loss_iou_pred = None
        if iou_flat is None:
            loss_reg = reg_losses.sum() / num_pos_avg
        else:
            loss_reg = (reg_losses * iou_targets).sum() / iou_sum_avg
            loss_iou_pred = (
                F.binary_cross_entropy_with_logits(
                    iou_flat.reshape(-1)[pos_idx], iou_targets, reduction="sum"
                )
                / num_pos_avg
                * self.iou_loss_weight
            )
        return loss_cls, loss_reg * self.reg_loss_weight, loss_iou_pred


def make_paa_loss_evaluator(
    cfg, box_coder: BoxCoder, assigner: ProbabilisticAnchorAssigner
) -> PAALossComputation:
    p = cfg.MODEL.PAA
    return PAALossComputation(
        iou_threshold=p.IOU_THRESHOLD,
        assigner=assigner,
        gamma=p.LOSS_GAMMA,
        alpha=p.LOSS_ALPHA,
        reg_loss_weight=p.REG_LOSS_WEIGHT,
        iou_loss_weight=p.IOU_LOSS_WEIGHT,
        box_coder=box_coder,
    )
