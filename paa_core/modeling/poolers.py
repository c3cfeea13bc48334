"""Multi-level ROI feature pooling with torchvision's aligned ROIAlign."""

import math
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import box_area


class LevelMapper:
    """FPN level of each box: floor(k0 + log2(sqrt(area) / s0 + eps)) clamped to
    [k_min, k_max], returned as an index 0..k_max-k_min (area with `box_offset`)."""

    def __init__(
        self,
        k_min: int,
        k_max: int,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        box_offset: float = 0,
    ):
        self.k_min = k_min
        self.k_max = k_max
        self.s0 = canonical_scale
        self.lvl0 = canonical_level
        self.box_offset = box_offset

    def __call__(self, boxes: Tensor) -> Tensor:
        """boxes [K, 4] -> level indices [K] (int64)."""
        s = torch.sqrt(box_area(boxes, offset=self.box_offset))
        levels = torch.floor(self.lvl0 + torch.log2(s / self.s0 + sys.float_info.epsilon))
        return (levels.clamp(min=self.k_min, max=self.k_max) - self.k_min).to(torch.int64)


class Pooler(nn.Module):
    """ROIAlign (aligned=True: half-pixel offset) of each box on its FPN level.

    `scales` are the levels' 1 / stride (P2..P5: 1/4..1/32); the output is
    [K, C, output_size, output_size] for the K boxes of all images, in image order.
    """

    def __init__(
        self, output_size: int, scales: Sequence[float], sampling_ratio: int, box_offset: float = 0
    ):
        super().__init__()
        self.output_size = (output_size, output_size)
        self.scales = tuple(scales)
        self.sampling_ratio = sampling_ratio
        lvl_min = -math.log2(self.scales[0])
        lvl_max = -math.log2(self.scales[-1])
        self.map_levels = LevelMapper(round(lvl_min), round(lvl_max), box_offset=box_offset)

    def forward(self, features: list[Tensor], boxes: list[BoxList]) -> Tensor:
        """Pooled features [K, C, output_size, output_size] of all boxes.

        Args:
            features: per level [N, C, H, W] (extra levels are ignored).
            boxes: per image, a BoxList (xyxy).
        """
        rois = torch.cat(
            [
                torch.cat(
                    [torch.full((len(b), 1), i, dtype=b.bbox.dtype, device=b.bbox.device), b.bbox],
                    dim=1,
                )
                for i, b in enumerate(boxes)
            ],
            dim=0,
        )
        levels = self.map_levels(rois[:, 1:])
        first = features[0]
        result = first.new_zeros((len(rois), first.shape[1]) + self.output_size)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == level).squeeze(1)
            if idx.numel() == 0:
                continue
            # Box coordinates stay float32 (under bf16 autocast, torchvision's roi_align
            # computes in float32 itself).
            result[idx] = roi_align(
                feature,
                rois[idx],
                self.output_size,
                spatial_scale=scale,
                sampling_ratio=self.sampling_ratio,
                aligned=True,
            )
        return result
