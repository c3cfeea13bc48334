"""Timings of the compiled ops next to torchvision's equivalents, on the CPU or a GPU.

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/ops.py [--device cuda] [--boxes 5000] [--dcn-size 100 152] ...`.
Each benchmark prints the median over several runs of ours, of torchvision's (same
inputs, same device, same run), and the ratio ours / torchvision (below 1: ours faster).
"""

import argparse
import statistics
import time

import torch
import torchvision

from paa_core.layers import nms, sigmoid_focal_loss
from paa_core.layers.dcn import modulated_deform_conv


def synchronize(device):
    """Wait for the GPU's queued work, so wall-clock times cover it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats, device="cpu"):
    """Median wall time of `fn()` over `repeats` runs, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name, ours, theirs, baseline="torchvision"):
    """One result line; returns (name, ours s, baseline s, ratio) for reports."""
    ratio = ours / theirs
    print(
        f"{name}: ours {ours * 1e3:.3f} ms, {baseline} {theirs * 1e3:.3f} ms, ratio {ratio:.3f}",
        flush=True,
    )
    return name, ours, theirs, ratio


def random_boxes(num_boxes, generator):
    """Detection-like boxes in an 800x800 image, 8 to 256 px on a side, xyxy."""
    xy = torch.rand(num_boxes, 2, generator=generator) * 800
    wh = 8 + torch.rand(num_boxes, 2, generator=generator) * 248
    return torch.cat([xy, xy + wh], dim=1)


def bench_nms(args):
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(args.boxes, generator).to(args.device)
    scores = torch.rand(args.boxes, generator=generator).to(args.device)
    ours = median_seconds(lambda: nms(boxes, scores, 0.5), args.repeats, args.device)
    theirs = median_seconds(
        lambda: torchvision.ops.nms(boxes, scores, 0.5), args.repeats, args.device
    )
    return report(f"nms {args.device}, {args.boxes} boxes, IoU 0.5", ours, theirs)


def bench_dcn(args):
    """Modulated 3x3 deformable conv forward + backward (all five gradients)."""
    c, (h, w), n = args.dcn_channels, args.dcn_size, args.dcn_batch
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=generator)
    weight = 0.02 * torch.randn(c, c, 3, 3, generator=generator)
    offset = 2 * torch.randn(n, 18, h, w, generator=generator)
    mask = torch.rand(n, 9, h, w, generator=generator)
    inputs = [t.to(args.device).requires_grad_() for t in (x, offset, mask, weight, torch.zeros(c))]
    x, offset, mask, weight, bias = inputs

    def step(conv):
        out = conv()
        torch.autograd.grad(out, inputs, torch.ones_like(out))

    ours = median_seconds(
        lambda: step(lambda: modulated_deform_conv(x, offset, mask, weight, bias, padding=1)),
        args.repeats,
        args.device,
    )
    theirs = median_seconds(
        lambda: step(
            lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        ),
        args.repeats,
        args.device,
    )
    return report(
        f"modulated deform conv {args.device} fwd+bwd, batch {n}, {c}->{c} ch, {h}x{w}",
        ours,
        theirs,
    )


def bench_focal_loss(args, gamma=2.0, alpha=0.25):
    """Sigmoid focal loss forward + backward on PAA-sized logits, against torchvision's
    formula built from torch element-wise ops (sigmoid, BCE-with-logits, (1 - p_t)^gamma)."""
    num_anchors, num_classes = args.anchors, 80
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(num_anchors, num_classes, generator=generator) - 4
    labels = torch.randint(1, num_classes + 1, (num_anchors,), generator=generator)
    labels[torch.rand(num_anchors, generator=generator) < 0.9] = 0  # mostly background
    logits, labels = logits.to(args.device).requires_grad_(), labels.to(args.device)
    classes = torch.arange(1, num_classes + 1, device=args.device)

    def formula():
        one_hot = (labels[:, None] == classes).to(logits.dtype)
        return torchvision.ops.sigmoid_focal_loss(logits, one_hot, alpha, gamma, reduction="none")

    def step(loss_fn):
        torch.autograd.grad(loss_fn().sum(), logits)

    ours = median_seconds(
        lambda: step(lambda: sigmoid_focal_loss(logits, labels, gamma, alpha)),
        args.repeats,
        args.device,
    )
    theirs = median_seconds(lambda: step(formula), args.repeats, args.device)
    return report(
        f"sigmoid focal loss {args.device} fwd+bwd, {num_anchors}x{num_classes} float32",
        ours,
        theirs,
    )


# Benchmarks run by main(), in order; add new ones here.
BENCHMARKS = (bench_nms, bench_dcn, bench_focal_loss)


def make_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: the same footing for both sides of every comparison)",
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--boxes", type=int, default=5000, help="NMS input size")
    parser.add_argument("--dcn-channels", type=int, default=256)
    parser.add_argument("--dcn-size", type=int, nargs=2, default=(100, 152), metavar=("H", "W"))
    parser.add_argument("--dcn-batch", type=int, default=2)
    parser.add_argument(
        "--anchors", type=int, default=40000, help="focal loss rows (80 classes each)"
    )
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    return [bench(args) for bench in BENCHMARKS]


if __name__ == "__main__":
    main()
