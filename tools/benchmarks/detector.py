"""Whole-detector inference speed: PAA R-50-FPN against torchvision's RetinaNet R-50-FPN.

Both are one-stage detectors with a ResNet-50 + FPN (P3-P7) body and 4-conv heads
(tools/benchmarks/models.py builds both), so the ratio shows what PAA's extra IoU branch,
score voting and our post-processing cost next to a well-tuned reference. Weights are
random (no downloads); post-processing is made comparable by letting every image keep up
to 1000 candidates per level in both.

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/detector.py [--device cuda] [--size 800 1333] [--images 1] [--repeats 5]`.
"""

import argparse

import torch
from models import build_paa, build_retinanet, make_inputs  # beside this script
from ops import median_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=1, help="images per forward call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (h, w), device = args.size, torch.device(args.device)
    paa_images, _, tv_images, _ = make_inputs(args.images, h, w, device)
    paa = build_paa(h, w, device).eval()
    retinanet = build_retinanet(h, w, device).eval()
    with torch.no_grad():
        ours = median_seconds(lambda: paa(paa_images), args.repeats, device)
        theirs = median_seconds(lambda: retinanet(tv_images), args.repeats, device)
    print(
        f"detector inference {device}, {h}x{w}, {args.images} image(s) per call: PAA R-50-FPN {ours * 1e3:.1f} ms ({args.images / ours:.2f} images/s), "
        f"torchvision RetinaNet R-50-FPN {theirs * 1e3:.1f} ms ({args.images / theirs:.2f} images/s), ratio {ours / theirs:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
