"""ROI box predictors: class scores and class-specific box deltas from a box's feature vector."""

from torch import Tensor, nn

from paa_core.modeling import registry


@registry.ROI_BOX_PREDICTOR.register("FPNPredictor")
class FPNPredictor(nn.Module):
    """cls_score [K, num_classes] (background included, column 0), bbox_pred
    [K, 4 num_classes]; weights N(0, 0.01) and N(0, 0.001), zero biases."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for fc in (self.cls_score, self.bbox_pred):
            nn.init.constant_(fc.bias, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [K, in_channels] -> (class logits [K, num_classes], deltas [K, 4 num_classes])."""
        return self.cls_score(x), self.bbox_pred(x)


def make_roi_box_predictor(cfg, in_channels: int) -> FPNPredictor:
    h = cfg.MODEL.ROI_BOX_HEAD
    return registry.ROI_BOX_PREDICTOR[h.PREDICTOR](in_channels, h.NUM_CLASSES)
