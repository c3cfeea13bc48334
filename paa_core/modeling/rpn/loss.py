"""RPN training targets and losses, with IoU-threshold labels (the standard RPN) or PAA labels.

Boxes use detectron2's convention (width x2 - x1) except the IoU-branch target, which
keeps the PAA authors' +1 areas. Anchors are shared by all images of a batch, so
everything is computed on [N, T] tensors (N images, T anchors); GTs of all images are
one list of G boxes, and the PAA mixtures of all GTs are fitted in one batched call.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from paa_core.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.matcher import Matcher
from paa_core.modeling.paa_assigner import ProbabilisticAnchorAssigner
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import PLUS_ONE_OFFSET, box_iou, paired_iou
from paa_core.utils.events import listening, publish


class RPNMatches(NamedTuple):
    """IoU matching of a batch's anchors (see `RPNLossComputation.match_targets`)."""

    labels: Tensor  # [N, T] 1 matched, 0 negative, -1 ignored
    matched: Tensor  # [N, T] each anchor's GT, an index into gt_boxes
    gt_boxes: Tensor  # [G, 4] the GT boxes of all images


class RPNTargets(NamedTuple):
    """Training targets of a batch's anchors (see `RPNLossComputation.prepare_targets`)."""

    labels: Tensor  # [N, T] 1 positive, 0 negative, -1 ignored
    matched_boxes: Tensor  # [N, T, 4] each anchor's GT box
    regression_targets: Tensor  # [N, T, 4] its encoded deltas


class RPNLossComputation:
    """-> {"loss_objectness", "loss_rpn_box_reg"[, "loss_rpn_iou"]}.

    labels: 1 for anchors matched to a GT by `proposal_matcher` (IoU thresholds plus each
    GT's best anchors), 0 below the low threshold, -1 (ignored) in between; with a
    `paa_assigner`, the matched anchors are only PAA candidates and the assigner picks
    the positives per GT from their costs BCE(objectness, 1) + L1(deltas). The sampler then keeps
    `batch_size_per_image` anchors per image. Objectness BCE and L1 delta losses are
    divided by batch_size_per_image * N; with the IoU branch the L1 term of each
    positive is weighted by the IoU u of its decoded box with its GT (+1 areas,
    constant), and the branch learns u by BCE divided by the number of sampled positives.
    """

    def __init__(
        self,
        proposal_matcher: Matcher,
        fg_bg_sampler: BalancedPositiveNegativeSampler,
        box_coder: BoxCoder,
        paa_assigner: ProbabilisticAnchorAssigner | None = None,
        box_offset: int = 0,
    ):
        self.proposal_matcher = proposal_matcher
        self.fg_bg_sampler = fg_bg_sampler
        self.box_coder = box_coder
        self.paa_assigner = paa_assigner
        self.box_offset = box_offset

    def match_targets(self, anchors: Tensor, targets: list[BoxList]) -> RPNMatches:
        """IoU labels of every anchor of every image.

        Args:
            anchors: [T, 4], shared by the images.
            targets: per image, a BoxList of GT boxes.
        Returns:
            labels [N, T] (1, 0, -1 as above), the matched GT of every anchor [N, T] as an
            index into the batch's concatenated GT boxes [G, 4] (0 where unmatched or
            when G = 0), and those boxes.
        """
        labels, matched, gt_boxes = [], [], []
        start = 0
        for target in targets:
            boxes = target.convert("xyxy").bbox.to(anchors.dtype)
            m = self.proposal_matcher(box_iou(boxes, anchors, offset=self.box_offset))
            labels.append(
                torch.where(m >= 0, 1, torch.where(m == Matcher.BELOW_LOW_THRESHOLD, 0, -1))
            )
            matched.append(m.clamp(min=0) + start)
            gt_boxes.append(boxes)
            start += len(boxes)
        gt_boxes = torch.cat(gt_boxes, dim=0)
        # Unmatched anchors (all anchors of an image without GT) point at some valid GT.
        matched = torch.stack(matched).clamp(max=max(len(gt_boxes) - 1, 0))
        return RPNMatches(torch.stack(labels), matched, gt_boxes)

    @torch.no_grad()
    def paa_labels(
        self,
        labels: Tensor,
        matched: Tensor,
        num_gt: int,
        anchors: Tensor,
        anchor_levels: Tensor,
        objectness: Tensor,
        box_regression: Tensor,
        regression_targets: Tensor,
    ) -> Tensor:
        """PAA positives (1) among the matched anchors, every other anchor negative (0).

        Cost of a candidate: BCE(objectness, 1) + L1 distance of its deltas to its GT's.
        The assignment is published as the one-stage loss publishes its own (positives
        per GT for the training log; candidates for tools/visualize_assignment.py).

        Args:
            labels, matched: `match_targets`' [N, T] answers.
            num_gt: G, the number of GT boxes of the batch.
            anchors: [T, 4] the batch's anchors, all levels.
            anchor_levels: [T] FPN level of each anchor.
            objectness [N, T], box_regression [N, T, 4]: the head's outputs (detached).
            regression_targets: [N, T, 4] deltas of each anchor's GT.
        Returns:
            labels [N, T], 1 or 0.
        """
        num_levels = int(anchor_levels.max()) + 1
        cand = torch.nonzero(labels.reshape(-1) == 1).squeeze(1)
        cost = F.softplus(-objectness.reshape(-1)[cand]) + (
            box_regression.reshape(-1, 4)[cand] - regression_targets.reshape(-1, 4)[cand]
        ).abs().sum(dim=1)
        cand_gt = matched.reshape(-1)[cand]
        cand_level = anchor_levels[cand % labels.shape[1]]
        pos = self.paa_assigner(cand_gt, cand_level, cost, num_gt, num_levels)
        publish("pos_per_gt", pos.numel() / max(num_gt, 1))
        if listening():
            publish(
                "paa_candidates",
                {
                    "anchor_index": cand,
                    "box": anchors[cand % labels.shape[1]],
                    "gt": cand_gt,
                    "level": cand_level,
                    "score": cost,
                    "score_name": "objectness BCE + L1 of the deltas",
                    "anchors_per_image": labels.shape[1],
                    "num_levels": num_levels,
                },
            )
        paa = torch.zeros_like(labels).reshape(-1)
        paa[cand[pos]] = 1
        return paa.view_as(labels)

    def prepare_targets(
        self,
        anchors: list[Tensor],
        objectness: Tensor,
        box_regression: Tensor,
        targets: list[BoxList],
    ) -> RPNTargets:
        """Labels (PAA labels with a `paa_assigner`), GT boxes and regression targets.

        Args:
            anchors: per level [T_l, 4].
            objectness [N, T], box_regression [N, T, 4]: the flattened head outputs.
            targets: per image, a BoxList of GT boxes.
        """
        anchor_levels = torch.cat(
            [
                torch.full((len(a),), level, dtype=torch.long, device=a.device)
                for level, a in enumerate(anchors)
            ]
        )
        anchors = torch.cat(anchors, dim=0)
        labels, matched, gt_boxes = self.match_targets(anchors, targets)
        num_images, num_anchors = labels.shape
        if gt_boxes.numel() == 0:
            return RPNTargets(
                labels, torch.zeros_like(box_regression), torch.zeros_like(box_regression)
            )
        matched_boxes = gt_boxes[matched]  # [N, T, 4]
        regression_targets = self.box_coder.encode(
            matched_boxes.reshape(-1, 4), anchors.repeat(num_images, 1)
        ).view(num_images, num_anchors, 4)
        if self.paa_assigner is not None:
            labels = self.paa_labels(
                labels,
                matched,
                len(gt_boxes),
                anchors,
                anchor_levels,
                objectness.detach(),
                box_regression.detach(),
                regression_targets,
            )
        return RPNTargets(labels, matched_boxes, regression_targets)

    def __call__(
        self,
        anchors: list[Tensor],
        objectness: Tensor,
        box_regression: Tensor,
        iou_pred: Tensor | None,
        targets: list[BoxList],
    ) -> dict[str, Tensor]:
        """The RPN losses of a batch.

        Args:
            anchors: per level [T_l, 4].
            objectness [N, T], box_regression [N, T, 4], iou_pred [N, T] or None: the
                head's outputs as `flatten_rpn_outputs` gives them.
            targets: per image, a BoxList of GT boxes.
        Returns:
            {"loss_objectness", "loss_rpn_box_reg"[, "loss_rpn_iou"]}.
        """
        labels, matched_boxes, regression_targets = self.prepare_targets(
            anchors, objectness, box_regression, targets
        )
        num_images = labels.shape[0]
        anchors = torch.cat(anchors, dim=0)
        pos_masks, neg_masks = self.fg_bg_sampler(list(labels))
        pos = torch.stack(pos_masks)
        sampled = pos | torch.stack(neg_masks)
        normalizer = self.fg_bg_sampler.batch_size_per_image * num_images

        loss_objectness = (
            F.binary_cross_entropy_with_logits(
                objectness[sampled], pos[sampled].to(objectness.dtype), reduction="sum"
            )
            / normalizer
        )
        l1 = (box_regression[pos] - regression_targets[pos]).abs().sum(dim=1)
        losses = {"loss_objectness": loss_objectness}
        if iou_pred is None:
            losses["loss_rpn_box_reg"] = l1.sum() / normalizer
            return losses
        pos_anchors = anchors[pos.nonzero()[:, 1]]
        pred_boxes = self.box_coder.decode(box_regression[pos].detach(), pos_anchors)
        iou_targets = paired_iou(pred_boxes, matched_boxes[pos], offset=PLUS_ONE_OFFSET)
        losses["loss_rpn_box_reg"] = (iou_targets * l1).sum() / normalizer
        losses["loss_rpn_iou"] = F.binary_cross_entropy_with_logits(
            iou_pred[pos], iou_targets, reduction="sum"
        ) / max(int(pos.sum()), 1)
        return losses


def make_rpn_loss_evaluator(
    cfg, box_coder: BoxCoder, paa_assigner: ProbabilisticAnchorAssigner | None
) -> RPNLossComputation:
    """IoU labels, or PAA labels from `paa_assigner` (MODEL.RPN.USE_PAA)."""
    r = cfg.MODEL.RPN
    return RPNLossComputation(
        Matcher(r.FG_IOU_THRESHOLD, r.BG_IOU_THRESHOLD, allow_low_quality_matches=True),
        BalancedPositiveNegativeSampler(r.BATCH_SIZE_PER_IMAGE, r.POSITIVE_FRACTION),
        box_coder,
        paa_assigner=paa_assigner,
        box_offset=box_coder.offset,
    )
