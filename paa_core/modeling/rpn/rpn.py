"""The Faster R-CNN region proposal network (optionally with PAA labels and an IoU branch)."""

import torch
from torch import Tensor, nn

from paa_core.config.detector import PROPOSALS_ONLY, detector_kind
from paa_core.modeling import registry
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.paa_assigner import make_paa_assigner
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import CONTINUOUS_OFFSET
from paa_core.structures.image_list import ImageList

from ..anchor_generator import AnchorGenerator, make_anchor_generator_rpn
from ..head_outputs import flatten_rpn_outputs
from .inference import RPNPostProcessor, make_rpn_postprocessor
from .loss import RPNLossComputation, make_rpn_loss_evaluator


@registry.RPN_HEADS.register("SingleConvRPNHead")
class RPNHead(nn.Module):
    """Shared over levels: t = ReLU(conv3x3(x)); objectness conv1x1 -> [N, A, H, W], deltas
    conv1x1 -> [N, 4A, H, W]; with `use_iou_pred`, IoU logits conv3x3(t) -> [N, A, H, W]
    (kept at PyTorch's default init, as in the PAA authors' RPN; the others are N(0, 0.01))."""

    def __init__(self, in_channels: int, num_anchors: int, use_iou_pred: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, stride=1, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for conv in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0)
        self.iou_pred = nn.Conv2d(in_channels, num_anchors, 3, padding=1) if use_iou_pred else None

    def forward(
        self, features: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """-> per-level lists (objectness, deltas, IoU logits or None)."""
        objectness, deltas, iou = [], [], []
        for feature in features:
            t = torch.relu(self.conv(feature))
            objectness.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
            if self.iou_pred is not None:
                iou.append(self.iou_pred(t))
        return objectness, deltas, (iou if self.iou_pred is not None else None)


class RPNModule(nn.Module):
    """Head + anchors; training -> (proposals or None, RPN losses), eval -> (proposals, {}).

    Proposals (detached, BoxLists with "objectness") are only made in training when the
    ROI heads need them (not `rpn_only`)."""

    def __init__(
        self,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        loss_evaluator: RPNLossComputation,
        box_selector_train: RPNPostProcessor,
        box_selector_test: RPNPostProcessor,
        rpn_only: bool = False,
    ):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.loss_evaluator = loss_evaluator
        self.box_selector_train = box_selector_train
        self.box_selector_test = box_selector_test
        self.rpn_only = rpn_only

    def forward(
        self, images: ImageList, features: list[Tensor], targets: list[BoxList] | None = None
    ) -> tuple[list[BoxList] | None, dict[str, Tensor]]:
        """images: the batch; features: the FPN levels; targets: per image GT BoxLists
        (training only)."""
        objectness, box_regression, iou_pred = self.head(features)
        anchors = self.anchor_generator(features)
        if not self.training:
            return self.box_selector_test(
                anchors, objectness, box_regression, iou_pred, images.image_sizes
            ), {}
        if targets is None:
            raise ValueError("RPNModule: targets are required in training mode")
        # Under mixed precision only the convolutions run in bfloat16: targets, losses and
        # proposals in float32.
        with torch.autocast(images.tensors.device.type, enabled=False):
            objectness = [o.float() for o in objectness]
            box_regression = [r.float() for r in box_regression]
            iou_pred = None if iou_pred is None else [q.float() for q in iou_pred]
            losses = self.loss_evaluator(
                anchors, *flatten_rpn_outputs(objectness, box_regression, iou_pred), targets
            )
            proposals = None
            if not self.rpn_only:
                with torch.no_grad():
                    proposals = self.box_selector_train(
                        anchors, objectness, box_regression, iou_pred, images.image_sizes
                    )
        return proposals, losses


def build_rpn(cfg, in_channels: int) -> RPNModule:
    r = cfg.MODEL.RPN
    anchor_generator = make_anchor_generator_rpn(cfg)
    head = registry.RPN_HEADS[r.RPN_HEAD](
        in_channels, anchor_generator.num_anchors_per_location()[0], use_iou_pred=r.USE_IOU_PRED
    )
    box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0), offset=CONTINUOUS_OFFSET)
    return RPNModule(
        head,
        anchor_generator,
        make_rpn_loss_evaluator(cfg, box_coder, make_paa_assigner(cfg) if r.USE_PAA else None),
        make_rpn_postprocessor(cfg, box_coder, is_train=True),
        make_rpn_postprocessor(cfg, box_coder, is_train=False),
        rpn_only=detector_kind(cfg) == PROPOSALS_ONLY,
    )
