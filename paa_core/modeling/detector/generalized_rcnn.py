"""The detector: backbone (ResNet + FPN) followed by the PAA stage."""
from torch import nn

from paa_core.structures.image_list import to_image_list

from ..backbone import build_backbone
from ..rpn.paa.paa import build_paa


class GeneralizedRCNN(nn.Module):
    """`backbone` -> P3..P7 -> `rpn` (the PAA module).

    forward(images, targets=None): images are an ImageList, a tensor or a list of
    [3, H, W] tensors; training returns the loss dict, eval a BoxList per image.

    PAA has one stage and no region proposals, yet the class keeps maskrcnn-benchmark's
    name `GeneralizedRCNN` (MODEL.META_ARCHITECTURE) and the PAA stage the attribute
    name `rpn`: the reference built PAA this way, so its checkpoints store the head as
    `rpn.head.*` and its configs name this class. Renaming either would break loading
    released weights and config files.
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.rpn = build_paa(cfg, self.backbone.out_channels)
        self.size_divisible = cfg.DATALOADER.SIZE_DIVISIBILITY

    def forward(self, images, targets=None):
        if self.training and targets is None:
            raise ValueError("GeneralizedRCNN: targets are required in training mode")
        images = to_image_list(images, self.size_divisible)
        features = self.backbone(images.tensors)
        detections, losses = self.rpn(images, features, targets)
        return losses if self.training else detections
