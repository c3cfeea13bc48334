"""The detector: backbone (ResNet + FPN), then the PAA stage, or an RPN and ROI heads."""

from torch import Tensor, nn

from paa_core.config.detector import FASTER_RCNN, PAA, detector_kind
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import CONTINUOUS_OFFSET, PLUS_ONE_OFFSET
from paa_core.structures.boxlist_ops import convert_box_offset
from paa_core.structures.image_list import ImageList, to_image_list

from ..backbone import build_backbone
from ..paa.paa import build_paa
from ..roi_heads.roi_heads import build_roi_heads
from ..rpn.rpn import build_rpn


class GeneralizedRCNN(nn.Module):
    """`backbone` -> FPN levels -> `rpn` (the one-stage PAA module, or the Faster R-CNN
    RPN) -> `roi_heads` (Faster R-CNN only, absent with MODEL.RPN_ONLY).

    forward(images, targets=None): images are an ImageList, a tensor or a list of
    [3, H, W] tensors; training returns the loss dict, eval a BoxList per image.

    PAA has one stage and no region proposals, yet the class keeps maskrcnn-benchmark's
    name `GeneralizedRCNN` (MODEL.META_ARCHITECTURE) and the PAA stage the attribute
    name `rpn`: the reference built PAA this way, so its checkpoints store the head as
    `rpn.head.*` and its configs name this class. Renaming either would break loading
    released weights and config files.

    Targets come in and boxes go out in the datasets' +1 convention; the Faster R-CNN
    path computes in detectron2's (no +1) and converts at this boundary.
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        # The proposal module keeps the name `rpn` for PAA too (see above).
        kind = detector_kind(cfg)
        build_proposals = build_paa if kind == PAA else build_rpn
        self.rpn = build_proposals(cfg, self.backbone.out_channels)
        self.box_offset = PLUS_ONE_OFFSET if kind == PAA else CONTINUOUS_OFFSET
        self.roi_heads = None
        if kind == FASTER_RCNN:
            self.roi_heads = build_roi_heads(cfg, self.backbone.out_channels, self.box_offset)
        # What a whole Faster R-CNN checkpoint holds beyond a proposal-only model: loading
        # one for proposal recall leaves these keys unused instead of refusing the file.
        self.parts_left_out = (
            ("roi_heads",) if self.roi_heads is None and not cfg.MODEL.PAA_ON else ()
        )
        self.size_divisible = cfg.DATALOADER.SIZE_DIVISIBILITY

    def forward(
        self,
        images: ImageList | Tensor | list[Tensor],
        targets: list[BoxList] | None = None,
    ) -> dict[str, Tensor] | list[BoxList]:
        if self.training and targets is None:
            raise ValueError("GeneralizedRCNN: targets are required in training mode")
        images = to_image_list(images, self.size_divisible)
        if targets is not None:
            targets = [convert_box_offset(t, PLUS_ONE_OFFSET, self.box_offset) for t in targets]
        features = self.backbone(images.tensors)
        result, losses = self.rpn(images, features, targets)
        if self.roi_heads is not None:
            _, result, detector_losses = self.roi_heads(features, result, targets)
            losses = {**losses, **detector_losses}
        if self.training:
            return losses
        return [convert_box_offset(r, self.box_offset, PLUS_ONE_OFFSET) for r in result]
