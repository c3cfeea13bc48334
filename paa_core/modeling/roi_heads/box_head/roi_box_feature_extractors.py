"""ROI box feature extractors: pooled FPN features -> one vector per box."""

import torch.nn.functional as F
from torch import Tensor, nn

from paa_core.modeling import registry
from paa_core.modeling.poolers import Pooler
from paa_core.structures.bounding_box import BoxList


def make_fc(dim_in: int, hidden_dim: int) -> nn.Linear:
    """Linear layer with kaiming_uniform(a=1) weights and zero bias."""
    fc = nn.Linear(dim_in, hidden_dim)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.constant_(fc.bias, 0)
    return fc


@registry.ROI_BOX_FEATURE_EXTRACTORS.register("FPN2MLPFeatureExtractor")
class FPN2MLPFeatureExtractor(nn.Module):
    """Pooler (R x R per box) -> flatten -> fc6 + ReLU -> fc7 + ReLU: [K, representation_size]."""

    def __init__(self, in_channels: int, pooler: Pooler, resolution: int, representation_size: int):
        super().__init__()
        self.pooler = pooler
        self.fc6 = make_fc(in_channels * resolution**2, representation_size)
        self.fc7 = make_fc(representation_size, representation_size)
        self.out_channels = representation_size

    def forward(self, features: list[Tensor], proposals: list[BoxList]) -> Tensor:
        """features: the FPN levels; proposals: per image, a BoxList -> [K, representation_size]."""
        x = self.pooler(features, proposals).flatten(start_dim=1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


def make_roi_box_feature_extractor(
    cfg, in_channels: int, box_offset: float
) -> FPN2MLPFeatureExtractor:
    h = cfg.MODEL.ROI_BOX_HEAD
    pooler = Pooler(
        h.POOLER_RESOLUTION, h.POOLER_SCALES, h.POOLER_SAMPLING_RATIO, box_offset=box_offset
    )
    return registry.ROI_BOX_FEATURE_EXTRACTORS[h.FEATURE_EXTRACTOR](
        in_channels, pooler, h.POOLER_RESOLUTION, h.MLP_HEAD_DIM
    )
