"""PAA head and module: towers + classification / box / IoU branches over P3..P7."""

import math

import torch
from torch import Tensor, nn

from paa_core.layers import DFConv2d, Scale, WinogradConv2d
from paa_core.modeling.box_coder import BoxCoder
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.image_list import ImageList

from ..anchor_generator import AnchorGenerator, make_anchor_generator_paa
from ..paa_assigner import make_paa_assigner
from .inference import PAAPostProcessor, make_paa_postprocessor
from .loss import PAALossComputation, make_paa_loss_evaluator


def _init_normal(conv):
    """normal(std=0.01) weights, zero bias. For a DFConv2d only its offset conv is
    reset (the reference's init loop reaches the offset conv, not the deformable one)."""
    target = conv.offset if isinstance(conv, DFConv2d) else conv
    nn.init.normal_(target.weight, std=0.01)
    nn.init.constant_(target.bias, 0)


class PAAHead(nn.Module):
    """Two towers of `num_convs` x (conv3x3 + GroupNorm(32) + ReLU), then per level:
    cls logits [N, A*num_classes, H, W] (num_classes excludes background),
    box deltas [N, A*4, H, W] times the level's `Scale`, IoU logits [N, A, H, W].
    With `winograd` the towers' plain convs are `WinogradConv2d` (same parameters; faster
    on the CPU, docs/DESIGN.md §3).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_anchors: int,
        num_convs: int = 4,
        prior_prob: float = 0.01,
        use_dcn_in_tower: bool = False,
        use_iou_pred: bool = True,
        num_levels: int = 5,
        winograd: bool = True,
    ):
        super().__init__()
        self.use_iou_pred = use_iou_pred
        towers = {"cls_tower": [], "bbox_tower": []}
        for tower in towers.values():
            for i in range(num_convs):
                if use_dcn_in_tower and i == num_convs - 1:
                    conv = DFConv2d(
                        in_channels,
                        in_channels,
                        with_modulated_dcn=True,
                        kernel_size=3,
                        stride=1,
                        bias=True,
                    )
                else:
                    conv = (WinogradConv2d if winograd else nn.Conv2d)(
                        in_channels, in_channels, 3, stride=1, padding=1
                    )
                _init_normal(conv)
                tower.extend([conv, nn.GroupNorm(32, in_channels), nn.ReLU()])
        self.cls_tower = nn.Sequential(*towers["cls_tower"])
        self.bbox_tower = nn.Sequential(*towers["bbox_tower"])

        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        predictors = [self.cls_logits, self.bbox_pred]
        if use_iou_pred:
            self.iou_pred = nn.Conv2d(in_channels, num_anchors, 3, padding=1)
            predictors.append(self.iou_pred)
        for conv in predictors:
            _init_normal(conv)
        # Focal-loss prior: every anchor starts at foreground probability prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])

    def forward(
        self, features: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """-> (logits, bbox_reg, iou_pred): per-level lists; iou_pred is None
        without the IoU branch."""
        if len(features) > len(self.scales):
            raise ValueError(
                f"PAAHead got {len(features)} feature levels but has {len(self.scales)} scales"
            )
        logits, bbox_reg, iou_pred = [], [], []
        cls_feats = _tower_over_levels(self.cls_tower, features)
        box_feats = _tower_over_levels(self.bbox_tower, features)
        for level, (cls_feat, box_feat) in enumerate(zip(cls_feats, box_feats)):
            logits.append(self.cls_logits(cls_feat))
            bbox_reg.append(self.scales[level](self.bbox_pred(box_feat)))
            if self.use_iou_pred:
                iou_pred.append(self.iou_pred(box_feat))
        return logits, bbox_reg, (iou_pred if self.use_iou_pred else None)


def _tower_over_levels(tower: nn.Sequential, features: list[Tensor]) -> list[Tensor]:
    """tower(f) for each level f, a layer at a time: a Winograd conv takes all levels in one
    call (one weight transform, one set of products), the other layers go level by level."""
    for layer in tower:
        if isinstance(layer, WinogradConv2d):
            features = layer.forward_levels(features)
        else:
            features = [layer(f) for f in features]
    return features


def _float(outputs):
    """Per-level head outputs in float32 (None stays None)."""
    return None if outputs is None else [o.float() for o in outputs]


class PAAModule(nn.Module):
    """The detector's single stage: head + anchors, then losses (train) or boxes (eval)."""

    def __init__(
        self,
        head: PAAHead,
        anchor_generator: AnchorGenerator,
        loss_evaluator: PAALossComputation,
        box_selector_test: PAAPostProcessor,
    ):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.loss_evaluator = loss_evaluator
        self.box_selector_test = box_selector_test

    def forward(
        self, images: ImageList, features: list[Tensor], targets: list[BoxList] | None = None
    ) -> tuple[list[BoxList] | None, dict[str, Tensor]]:
        """images: ImageList; features: P3..P7; targets: per-image BoxLists ("labels").

        Training -> (None, {"loss_cls", "loss_reg"[, "loss_iou_pred"]});
        eval -> (per-image BoxLists with "scores" and "labels", {}).
        """
        box_cls, box_regression, iou_pred = self.head(features)
        anchors = self.anchor_generator(features)
        if self.training:
            if targets is None:
                raise ValueError("PAAModule: targets are required in training mode")
            # Under mixed precision (SOLVER.AMP) only the convolutions run in bf16/fp16:
            # anchor assignment and losses are computed in float32.
            with torch.autocast(images.tensors.device.type, enabled=False):
                loss_cls, loss_reg, loss_iou_pred = self.loss_evaluator(
                    _float(box_cls), _float(box_regression), _float(iou_pred), targets, anchors
                )
            losses = {"loss_cls": loss_cls, "loss_reg": loss_reg}
            if iou_pred is not None:
                losses["loss_iou_pred"] = loss_iou_pred
            return None, losses
        boxes = self.box_selector_test(
            box_cls, box_regression, iou_pred, anchors, images.image_sizes
        )
        return boxes, {}


def build_paa(cfg, in_channels: int) -> PAAModule:
    """The PAA stage from `MODEL.PAA` (checked by `check_buildable`)."""
    p = cfg.MODEL.PAA
    anchor_generator = make_anchor_generator_paa(cfg)
    head = PAAHead(
        in_channels,
        num_classes=p.NUM_CLASSES - 1,
        num_anchors=len(p.ASPECT_RATIOS) * p.SCALES_PER_OCTAVE,
        num_convs=p.NUM_CONVS,
        prior_prob=p.PRIOR_PROB,
        use_dcn_in_tower=p.USE_DCN_IN_TOWER,
        use_iou_pred=p.USE_IOU_PRED,
        num_levels=len(p.ANCHOR_STRIDES),
        winograd=cfg.MODEL.WINOGRAD,
    )
    box_coder = BoxCoder(p.BBOX_REG_WEIGHTS)
    return PAAModule(
        head,
        anchor_generator,
        make_paa_loss_evaluator(cfg, box_coder, make_paa_assigner(cfg)),
        make_paa_postprocessor(cfg, box_coder),
    )
