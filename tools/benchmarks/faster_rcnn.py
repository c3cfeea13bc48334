"""One training iteration (forward, backward, SGD step) of our PAA Faster R-CNN R-50-FPN
against torchvision's Faster R-CNN R-50-FPN built the same way.

Both: ResNet-50 with frozen BatchNorm, stem and res2 frozen, FPN P2-P6, RPN with 3
anchors per location, 2000 pre-NMS proposals per level and 1000 per image after NMS,
256 sampled anchors and 512 sampled ROIs per image, 7x7 ROIAlign, a 2x1024 FC box head,
91-way classifier (torchvision's COCO count). Ours adds PAA's assignment (the GMM split
per GT) and the IoU branch to the RPN. Weights are random (no downloads); the same
images and GT boxes go to both; torchvision gets images already at the size it resizes to.

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/faster_rcnn.py [--size 512] [--batch 2] [--repeats 3] [--threads 2]`.
The two models alternate, and each time is the median of `--repeats` iterations.
"""

import argparse
import os
import statistics
import time

import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from paa_core.config import cfg
from paa_core.modeling.detector import build_detection_model
from paa_core.structures.bounding_box import BoxList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_ours(size, device):
    c = cfg.clone()
    c.merge_from_file(
        os.path.join(ROOT, "configs", "faster_rcnn", "faster_rcnn_R_50_FPN_paa_1x.yaml")
    )
    c.merge_from_list(
        [
            "MODEL.DEVICE",
            device,
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES",
            91,
            "INPUT.MIN_SIZE_TRAIN",
            (size,),
            "INPUT.MAX_SIZE_TRAIN",
            size,
        ]
    )
    return build_detection_model(c).to(device).train()


def build_torchvision(size, device):
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, trainable_layers=3)  # stem and layer1 frozen
    return (
        FasterRCNN(
            backbone,
            num_classes=91,
            min_size=size,
            max_size=size,
            rpn_pre_nms_top_n_train=2000,
            rpn_post_nms_top_n_train=1000,
            rpn_batch_size_per_image=256,
            box_batch_size_per_image=512,
        )
        .to(device)
        .train()
    )


def random_targets(batch, size, boxes_per_image, generator):
    targets = []
    for _ in range(batch):
        xy = torch.rand(boxes_per_image, 2, generator=generator) * size * 0.7
        wh = 16 + torch.rand(boxes_per_image, 2, generator=generator) * size * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        labels = torch.randint(1, 91, (boxes_per_image,), generator=generator)
        targets.append((boxes, labels))
    return targets


def training_step(model, optimizer, images, targets):
    losses = model(images, targets)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration")
    parser.add_argument("--boxes", type=int, default=8, help="GT boxes per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    device = torch.device(args.device)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
    gts = random_targets(args.batch, args.size, args.boxes, g)

    ours = build_ours(args.size, args.device)
    our_targets = []
    for boxes, labels in gts:
        t = BoxList(boxes.to(device), (args.size, args.size))
        t.add_field("labels", labels.to(device))
        our_targets.append(t)
    # Ours takes BGR 0-255 minus the mean; torchvision RGB 0-1 (it normalises inside).
    our_images = images * 255 - 115.0
    theirs = build_torchvision(args.size, device)
    tv_targets = [{"boxes": b.to(device), "labels": lab.to(device)} for b, lab in gts]

    steps = []
    for model, imgs, targets in (
        (ours, list(our_images), our_targets),
        (theirs, list(images), tv_targets),
    ):
        opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9
        )
        steps.append(lambda m=model, o=opt, i=imgs, t=targets: training_step(m, o, i, t))
    # Alternate the two models, so that a change in machine load hits both alike.
    times = [[], []]
    for repeat in range(args.repeats + 1):
        for k, step in enumerate(steps):
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat > 0:  # the first round warms up
                times[k].append(time.perf_counter() - start)
    ours_s, theirs_s = (statistics.median(t) for t in times)
    print(
        f"Faster R-CNN R-50-FPN training iteration, {args.batch} x {args.size}x{args.size} images, "
        f"{args.boxes} GT boxes each, {args.device}, {args.threads} threads: ours (PAA RPN) "
        f"{ours_s * 1e3:.0f} ms, torchvision {theirs_s * 1e3:.0f} ms, ratio {ours_s / theirs_s:.2f}"
    )


if __name__ == "__main__":
    main()
