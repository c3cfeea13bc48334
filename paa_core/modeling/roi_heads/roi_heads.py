"""The ROI heads of a two-stage detector (a box head; named `roi_heads.box.*`)."""

from torch import nn

from .box_head.box_head import build_roi_box_head


class CombinedROIHeads(nn.ModuleDict):
    """Runs the box head on the RPN's proposals; -> (features, detections, losses)."""

    def forward(self, features, proposals, targets=None):
        return self.box(features, proposals, targets)


def build_roi_heads(cfg, in_channels, box_offset):
    return CombinedROIHeads({"box": build_roi_box_head(cfg, in_channels, box_offset)})
