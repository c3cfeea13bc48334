"""Whole-detector CPU inference time: PAA R-50-FPN against torchvision's RetinaNet R-50-FPN.

Both are one-stage detectors with a ResNet-50 + FPN (P3-P7) body and 4-conv heads, so
the ratio shows what PAA's extra IoU branch, score voting and our post-processing cost
next to a well-tuned reference. Weights are random (no downloads); post-processing is
made comparable by letting every image keep up to 1000 candidates per level in both.

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/detector.py [--size 512] [--repeats 3] [--threads 2]`.
"""
import argparse
import os

import torch
import torchvision
from ops import median_seconds  # tools/benchmarks/ops.py, beside this script

from paa_core.config import get_cfg
from paa_core.modeling.detector import build_detection_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_paa(size):
    paa_cfg = get_cfg()
    paa_cfg.merge_from_file(os.path.join(ROOT, "configs", "paa", "paa_R_50_FPN_1x.yaml"))
    paa_cfg.merge_from_list(["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", size, "INPUT.MAX_SIZE_TEST", size])
    return build_detection_model(paa_cfg).eval()


def build_retinanet(size):
    return torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=size, max_size=size,
        score_thresh=0.05, topk_candidates=1000,
    ).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = torch.rand(3, args.size, args.size)

    paa = build_paa(args.size)
    retinanet = build_retinanet(args.size)
    # Both take the image as it comes out of the loader: PAA BGR 0-255 minus the mean,
    # torchvision RGB 0-1 (it normalises inside).
    paa_input = [image * 255 - 115.0]
    with torch.no_grad():
        ours = median_seconds(lambda: paa(paa_input), args.repeats)
        theirs = median_seconds(lambda: retinanet([image]), args.repeats)
    print("detector inference CPU, {0}x{0}, {1} threads: PAA R-50-FPN {2:.0f} ms, torchvision "
          "RetinaNet R-50-FPN {3:.0f} ms, ratio {4:.2f}".format(
              args.size, args.threads, ours * 1e3, theirs * 1e3, ours / theirs))


if __name__ == "__main__":
    main()
