"""The detectors the whole-model benchmarks compare, built the same way, their inputs and
their training step.

Ours come from the repository's configs, torchvision's are built to match. Both sides: a
ResNet-50 with frozen BatchNorm, the stem and stage 1 frozen, random weights (no downloads),
80 classes, and each stage's stride in its 3x3 conv, torchvision's layout (our configs put it
in the 1x1 conv, as the MSRA weights need, which costs about 5% fewer FLOPs: as much as the
targets allow).

- PAA R-50-FPN (configs/paa/paa_R_50_FPN_1x.yaml) against torchvision's RetinaNet R-50-FPN
  given PAA's anchors (one square of 8x the stride per location) and PAA's GroupNorm in the
  head towers, so that the two differ only in what PAA adds (assignment, IoU branch, score
  voting) and in implementation; FPN P3-P7 (P6 from P5), 4-conv towers; in inference the
  same score threshold, 1000 candidates per level, NMS at 0.6 and 100 detections per image.
- PAA R-50-FPN against torchvision's FCOS R-50-FPN: the same body and FPN P3-P7, FCOS's own
  head (GroupNorm, 4-conv towers, centerness) and points (one anchor per location, the
  level's stride), the same inference settings as RetinaNet's.
- Faster R-CNN R-50-FPN with the PAA RPN or the standard one (configs/faster_rcnn) against
  torchvision's FasterRCNN: FPN P2-P6, 3 anchors per location, 2000 proposals per level
  before the RPN's NMS and 1000 per image after it, 256 sampled anchors and 512 sampled ROIs
  per image, 7x7 ROIAlign with adaptive sampling, a 2x1024 box head.

Inputs are random images already at the benchmark size, normalised as each model expects
before any timer, with 3-20 random GT boxes. torchvision's models would normalise and resize
(a no-op resize that still interpolates) inside their call; `PaddingOnly` leaves them the
padding and batching, which our models do inside theirs.
"""

import functools
import os

import numpy as np
import torch
import torchvision
from common import check, median, spread  # beside this script
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from paa_core.config import get_cfg
from paa_core.engine.trainer import backward_and_step
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import make_grad_scaler
from paa_core.structures.bounding_box import BoxList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 80
CONFIGS = {
    "paa": "paa/paa_R_50_FPN_1x.yaml",
    "faster_rcnn_paa": "faster_rcnn/faster_rcnn_R_50_FPN_paa_1x.yaml",
    "faster_rcnn": "faster_rcnn/faster_rcnn_R_50_FPN_1x.yaml",
}


def our_config(name, device, *opts):
    """The config `CONFIGS[name]` with the benchmarks' common changes and `opts`."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", CONFIGS[name]))
    cfg.merge_from_list(["MODEL.DEVICE", str(device), "MODEL.RESNETS.STRIDE_IN_1X1", False])
    cfg.merge_from_list(list(opts))
    return cfg


def build_ours(name, device, *opts):
    torch.manual_seed(0)
    return build_detection_model(our_config(name, device, *opts)).to(device)


def build_paa(device, score_thresh=0.05, *opts):
    return build_ours("paa", device, "MODEL.PAA.INFERENCE_TH", score_thresh, *opts)


# PAA with the framework's convolutions throughout, timed beside PAA (whose FPN and head
# towers use Winograd convolutions on the CPU) to show what they save in the same run.
DIRECT = "PAA, MODEL.WINOGRAD False"


def build_paa_models(device, score_thresh=0.05):
    """{"PAA": PAA} and on the CPU {DIRECT: the same weights without Winograd convolutions}
    (on a GPU the two are one model)."""
    models = {"PAA": build_paa(device, score_thresh)}
    if torch.device(device).type == "cpu":
        models[DIRECT] = build_paa(device, score_thresh, "MODEL.WINOGRAD", False)
    return models


def direct_summary(times):
    """The row's words on DIRECT ({name: seconds}), empty where it did not run."""
    if DIRECT not in times:
        return ""
    ratio = median(times["PAA"]) / median(times[DIRECT])
    return f"; {DIRECT} {spread(times[DIRECT])}, PAA / it {ratio:.3f}"


def torchvision_resnet50_fpn(returned_layers, extra_blocks):
    """ResNet-50 + FPN with frozen BatchNorm and 3 trainable stages (stem, layer1 frozen)."""
    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    return _resnet_fpn_extractor(body, 3, returned_layers, extra_blocks)


def build_retinanet(device, score_thresh=0.05):
    backbone = torchvision_resnet50_fpn([2, 3, 4], LastLevelP6P7(256, 256))
    anchors = AnchorGenerator(tuple((64 << i,) for i in range(5)), ((1.0,),) * 5)
    head = RetinaNetHead(256, 1, NUM_CLASSES + 1, norm_layer=functools.partial(nn.GroupNorm, 32))
    model = RetinaNet(
        backbone,
        num_classes=NUM_CLASSES + 1,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        nms_thresh=0.6,
        detections_per_img=100,
        topk_candidates=1000,
    )
    model.transform = PaddingOnly(model.transform)
    return model.to(device)


def build_fcos(device, score_thresh=0.05):
    """FCOS with its default points and head (GroupNorm, 4 convs per tower)."""
    backbone = torchvision_resnet50_fpn([2, 3, 4], LastLevelP6P7(256, 256))
    model = FCOS(
        backbone,
        num_classes=NUM_CLASSES + 1,
        score_thresh=score_thresh,
        nms_thresh=0.6,
        detections_per_img=100,
        topk_candidates=1000,
    )
    model.transform = PaddingOnly(model.transform)
    return model.to(device)


def build_torchvision_faster_rcnn(device):
    backbone = torchvision_resnet50_fpn([1, 2, 3, 4], None)  # None: P6 by max-pooling P5
    model = FasterRCNN(
        backbone,
        num_classes=NUM_CLASSES + 1,
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=1000,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=0),
        box_batch_size_per_image=512,
    )
    model.transform = PaddingOnly(model.transform)
    return model.to(device)


class PaddingOnly(nn.Module):
    """A torchvision detector's transform reduced to padding and batching (to multiples of
    32, as ours); images come normalised and at their size, targets as they are."""

    def __init__(self, transform):
        super().__init__()
        self.transform = transform

    def forward(self, images, targets=None):
        padded = self.transform.batch_images(images, self.transform.size_divisible)
        return ImageList(padded, [tuple(im.shape[-2:]) for im in images]), targets

    def postprocess(self, detections, image_sizes, original_sizes):
        return self.transform.postprocess(detections, image_sizes, original_sizes)


def make_inputs(num_images, height, width, device, seed=0):
    """Random images and GTs in each model's format: (our images, our targets, torchvision
    images, torchvision targets). Ours take BGR 0-255 minus the mean, torchvision's RGB
    normalised by ImageNet's statistics (channel order does not matter to random pixels)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, height, width, generator=gen).to(device) for _ in range(num_images)]
    our_targets, tv_targets = [], []
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
        our_targets.append(target.to(device))
        tv_targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    ours = [im * 255 - 115.0 for im in images]
    theirs = [(im - 0.45) / 0.225 for im in images]
    return ours, our_targets, theirs, tv_targets


def watch_input_shapes(models):
    """{name: the shapes of the batched images its backbone is called with, as they come}."""
    shapes = {}
    for name, model in models.items():
        shapes[name] = seen = []
        model.backbone.register_forward_pre_hook(lambda _, args, s=seen: s.append(args[0].shape))
    return shapes


def check_input_shapes(what, shapes):
    """CHECK that every model's backbone saw one and the same input shape."""
    seen = {name: sorted({tuple(s) for s in shapes_}) for name, shapes_ in shapes.items()}
    distinct = {s for shapes_ in seen.values() for s in shapes_}
    check(len(distinct) == 1, what, ", ".join(f"{k} {v}" for k, v in seen.items()))


def check_losses(what, losses):
    """CHECK that each model's last total loss ({name: scalar tensor}) is finite."""
    ok = all(bool(loss.isfinite()) for loss in losses.values())
    check(ok, what, ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items()))


def make_step(model, images, targets, amp_dtype, device):
    """One training iteration of `model` (forward under autocast when `amp_dtype` is set,
    backward, SGD with a tiny lr: the weights are random), returning the float losses."""
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9
    )
    scaler = make_grad_scaler(amp_dtype, device)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = model(images, targets)
        optimizer.zero_grad()
        total = sum(losses.values())
        backward_and_step(total, optimizer, scaler)
        return total.detach()

    return step
