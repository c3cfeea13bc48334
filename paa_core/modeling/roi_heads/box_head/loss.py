"""Fast R-CNN training: match proposals to GTs, sample them, and the classification and box losses."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from paa_core.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.matcher import Matcher
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import box_iou

# Objectness given to the GT boxes appended to the proposals: logit(1 - 1e-10).
GT_PROPOSAL_LOGIT = math.log((1.0 - 1e-10) / 1e-10)


class FastRCNNLossComputation:
    """Proposals (plus every GT box) are matched by IoU (`box_offset` convention):
    foreground with the GT's class when IoU >= the high threshold, background (class 0)
    below; the sampler keeps `batch_size_per_image` per image. loss_classifier is the
    softmax cross entropy averaged over all sampled proposals; loss_box_reg sums the L1
    error of the GT class's 4 deltas over the foreground and divides by that same count.
    """

    def __init__(
        self,
        proposal_matcher: Matcher,
        fg_bg_sampler: BalancedPositiveNegativeSampler,
        box_coder: BoxCoder,
        box_offset: float = 0,
    ):
        self.proposal_matcher = proposal_matcher
        self.fg_bg_sampler = fg_bg_sampler
        self.box_coder = box_coder
        self.box_offset = box_offset

    @torch.no_grad()
    def subsample(self, proposals: list[BoxList], targets: list[BoxList]) -> list[BoxList]:
        """The proposals the box head trains on.

        Args:
            proposals: per image, the RPN's BoxList (field "objectness").
            targets: per image, the GT BoxList (field "labels").
        Returns:
            per image the sampled proposals (GT boxes appended first) with fields
            "labels" (0 background, 1..C) and "regression_targets" [K, 4].
        """
        labels, regression_targets, candidates = [], [], []
        for proposal, target in zip(proposals, targets):
            target = target.convert("xyxy")
            gt_boxes = target.bbox.to(proposal.bbox.dtype)
            boxes = torch.cat([proposal.bbox, gt_boxes], dim=0)
            m = self.proposal_matcher(box_iou(gt_boxes, boxes, offset=self.box_offset))
            gt_labels = target.get_field("labels").long()
            if len(gt_boxes) == 0:
                labels.append(torch.zeros(len(boxes), dtype=torch.long, device=boxes.device))
                regression_targets.append(torch.zeros_like(boxes))
            else:
                labels.append(torch.where(m >= 0, gt_labels[m.clamp(min=0)], 0))
                regression_targets.append(self.box_coder.encode(gt_boxes[m.clamp(min=0)], boxes))
            objectness = torch.cat(
                [
                    proposal.get_field("objectness"),
                    boxes.new_full((len(gt_boxes),), GT_PROPOSAL_LOGIT),
                ]
            )
            candidate = BoxList(boxes, proposal.size, mode="xyxy")
            candidate.add_field("objectness", objectness)
            candidates.append(candidate)

        pos_masks, neg_masks = self.fg_bg_sampler([(lab > 0).long() for lab in labels])
        sampled = []
        for candidate, lab, reg, pos, neg in zip(
            candidates, labels, regression_targets, pos_masks, neg_masks
        ):
            keep = torch.nonzero(pos | neg).squeeze(1)
            candidate = candidate[keep]
            candidate.add_field("labels", lab[keep])
            candidate.add_field("regression_targets", reg[keep])
            sampled.append(candidate)
        return sampled

    def __call__(
        self, proposals: list[BoxList], class_logits: Tensor, box_regression: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(loss_classifier, loss_box_reg).

        Args:
            proposals: the output of `subsample`.
            class_logits [K, C+1], box_regression [K, 4 (C+1)]: for their K boxes in order.
        """
        labels = torch.cat([p.get_field("labels") for p in proposals], dim=0)
        targets = torch.cat([p.get_field("regression_targets") for p in proposals], dim=0)
        loss_classifier = F.cross_entropy(class_logits, labels)
        fg = torch.nonzero(labels > 0).squeeze(1)
        columns = 4 * labels[fg, None] + torch.arange(4, device=labels.device)
        deltas = box_regression[fg[:, None], columns]
        loss_box_reg = (deltas - targets[fg]).abs().sum() / max(labels.numel(), 1)
        return loss_classifier, loss_box_reg
