"""The two detectors the whole-model benchmarks compare, built the same way, and their inputs.

PAA R-50-FPN (configs/paa/paa_R_50_FPN_1x.yaml) against torchvision's RetinaNet R-50-FPN:
both a ResNet-50 with frozen BatchNorm, stem and stage 1 frozen, FPN P3-P7 and 4-conv
heads, random weights (no downloads), 80 classes. Inputs are random images already at the
benchmark size (so RetinaNet's transform does not resize them) with 3-20 random GT boxes.
"""

import os

import numpy as np
import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from paa_core.config import get_cfg
from paa_core.modeling.detector import build_detection_model
from paa_core.structures.bounding_box import BoxList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 80


def paa_config(height, width, device):
    paa_cfg = get_cfg()
    paa_cfg.merge_from_file(os.path.join(ROOT, "configs", "paa", "paa_R_50_FPN_1x.yaml"))
    paa_cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            str(device),
            "INPUT.MIN_SIZE_TEST",
            min(height, width),
            "INPUT.MAX_SIZE_TEST",
            max(height, width),
        ]
    )
    return paa_cfg


def build_paa(height, width, device):
    return build_detection_model(paa_config(height, width, device)).to(device)


def build_retinanet(height, width, device):
    """torchvision's RetinaNet R-50-FPN (v1) as `retinanet_resnet50_fpn` builds it with
    ImageNet weights (FrozenBN, 3 trainable stages), without downloading them."""
    body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(
        body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
    )
    model = torchvision.models.detection.RetinaNet(
        backbone,
        num_classes=NUM_CLASSES + 1,
        min_size=min(height, width),
        max_size=max(height, width),
        score_thresh=0.05,
        topk_candidates=1000,
    )
    return model.to(device)


def make_inputs(num_images, height, width, device, seed=0):
    """Random images and GTs in each model's format: (paa images, paa targets, retinanet
    images, retinanet targets). PAA takes BGR 0-255 minus the mean, torchvision RGB 0-1."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, height, width, generator=gen).to(device) for _ in range(num_images)]
    paa_targets, tv_targets = [], []
    for _ in range(num_images):
        n = int(rng.integers(3, 21))
        size = np.exp(rng.uniform(np.log(16), np.log(0.9 * min(height, width)), (n, 2)))
        x1, y1 = rng.uniform(0, width - size[:, 0]), rng.uniform(0, height - size[:, 1])
        boxes = torch.tensor(
            np.stack([x1, y1, x1 + size[:, 0] - 1, y1 + size[:, 1] - 1], 1), dtype=torch.float32
        )
        labels = torch.tensor(rng.integers(1, NUM_CLASSES + 1, n))
        target = BoxList(boxes, (width, height))
        target.add_field("labels", labels)
        paa_targets.append(target.to(device))
        tv_targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return [im * 255 - 115.0 for im in images], paa_targets, images, tv_targets
