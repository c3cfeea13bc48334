"""Real PAA anchors for a padded test batch, shared by the loss and inference tests."""

import math

import torch

from paa_core.config import get_cfg
from paa_core.modeling.anchor_generator import make_anchor_generator_paa
from paa_core.structures.image_list import to_image_list


def real_anchors(image_sizes):
    """Anchors of the default config for images of `image_sizes` [(h, w)] padded to 32,
    and the (h, w) of each level P3..P7 -> (per-level anchors [T_l, 4], shapes)."""
    images = to_image_list([torch.zeros(3, h, w) for h, w in image_sizes], 32)
    _, _, ph, pw = images.tensors.shape
    feats = [
        torch.zeros(len(image_sizes), 1, math.ceil(ph / s), math.ceil(pw / s))
        for s in (8, 16, 32, 64, 128)
    ]
    return make_anchor_generator_paa(get_cfg())(feats), [tuple(f.shape[-2:]) for f in feats]
