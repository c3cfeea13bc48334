"""The ROI box head: features of the proposals -> class scores and refined boxes."""

import torch
from torch import Tensor, nn

from paa_core.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.matcher import Matcher
from paa_core.structures.bounding_box import BoxList

from .inference import PostProcessor
from .loss import FastRCNNLossComputation
from .roi_box_feature_extractors import FPN2MLPFeatureExtractor, make_roi_box_feature_extractor
from .roi_box_predictors import FPNPredictor, make_roi_box_predictor


class ROIBoxHead(nn.Module):
    """Training: samples the proposals, -> (features, sampled proposals,
    {"loss_classifier", "loss_box_reg"}); eval: -> (features, detections, {})."""

    def __init__(
        self,
        feature_extractor: FPN2MLPFeatureExtractor,
        predictor: FPNPredictor,
        post_processor: PostProcessor,
        loss_evaluator: FastRCNNLossComputation,
    ):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.post_processor = post_processor
        self.loss_evaluator = loss_evaluator

    def forward(
        self,
        features: list[Tensor],
        proposals: list[BoxList],
        targets: list[BoxList] | None = None,
    ) -> tuple[Tensor, list[BoxList], dict[str, Tensor]]:
        """features: the FPN levels; proposals, targets: per image BoxLists."""
        if self.training:
            proposals = self.loss_evaluator.subsample(proposals, targets)
        x = self.feature_extractor(features, proposals)
        class_logits, box_regression = self.predictor(x)
        if not self.training:
            return x, self.post_processor(class_logits, box_regression, proposals), {}
        with torch.autocast(x.device.type, enabled=False):
            loss_classifier, loss_box_reg = self.loss_evaluator(
                proposals, class_logits.float(), box_regression.float()
            )
        return x, proposals, {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


def build_roi_box_head(cfg, in_channels: int, box_offset: float) -> ROIBoxHead:
    r = cfg.MODEL.ROI_HEADS
    box_coder = BoxCoder(r.BBOX_REG_WEIGHTS, offset=box_offset)
    feature_extractor = make_roi_box_feature_extractor(cfg, in_channels, box_offset)
    return ROIBoxHead(
        feature_extractor,
        make_roi_box_predictor(cfg, feature_extractor.out_channels),
        PostProcessor(r.SCORE_THRESH, r.NMS, r.DETECTIONS_PER_IMG, box_coder),
        FastRCNNLossComputation(
            Matcher(r.FG_IOU_THRESHOLD, r.BG_IOU_THRESHOLD, allow_low_quality_matches=False),
            BalancedPositiveNegativeSampler(r.BATCH_SIZE_PER_IMAGE, r.POSITIVE_FRACTION),
            box_coder,
            box_offset=box_offset,
        ),
    )
