"""The ROI heads of a two-stage detector (a box head; named `roi_heads.box.*`)."""

from torch import Tensor, nn

from paa_core.structures.bounding_box import BoxList

from .box_head.box_head import build_roi_box_head


class CombinedROIHeads(nn.ModuleDict):
    """Runs the box head on the RPN's proposals; -> (features, detections, losses)."""

    def forward(
        self,
        features: list[Tensor],
        proposals: list[BoxList],
        targets: list[BoxList] | None = None,
    ) -> tuple[Tensor, list[BoxList], dict[str, Tensor]]:
        return self.box(features, proposals, targets)


def build_roi_heads(cfg, in_channels: int, box_offset: float) -> CombinedROIHeads:
    return CombinedROIHeads({"box": build_roi_box_head(cfg, in_channels, box_offset)})
