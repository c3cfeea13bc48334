"""CPU timings of the compiled ops next to torchvision's equivalents.

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/ops.py`. Each benchmark prints the median over several runs
of ours, of torchvision's, and the ratio ours / torchvision.
"""
import statistics
import time

import torch
import torchvision

from paa_core.layers import nms, sigmoid_focal_loss
from paa_core.layers.dcn import modulated_deform_conv


def median_seconds(fn, repeats):
    """Median wall time of `fn()` over `repeats` runs, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name, ours, theirs):
    print(f"{name}: ours {ours * 1e3:.2f} ms, torchvision {theirs * 1e3:.2f} ms, ratio {ours / theirs:.3f}")


def random_boxes(num_boxes, generator):
    """Detection-like boxes in an 800x800 image, 8 to 256 px on a side, xyxy."""
    xy = torch.rand(num_boxes, 2, generator=generator) * 800
    wh = 8 + torch.rand(num_boxes, 2, generator=generator) * 248
    return torch.cat([xy, xy + wh], dim=1)


def bench_nms(num_boxes=5000, iou_threshold=0.5, repeats=9):
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(num_boxes, generator)
    scores = torch.rand(num_boxes, generator=generator)
    ours = median_seconds(lambda: nms(boxes, scores, iou_threshold), repeats)
    theirs = median_seconds(lambda: torchvision.ops.nms(boxes, scores, iou_threshold), repeats)
    report(f"nms CPU, {num_boxes} boxes, IoU {iou_threshold}", ours, theirs)


def bench_dcn(channels=256, height=100, width=152, repeats=3):
    """Modulated 3x3 deformable conv forward + backward (all five gradients), batch 1."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, height, width, generator=generator).requires_grad_()
    weight = (0.02 * torch.randn(channels, channels, 3, 3, generator=generator)).requires_grad_()
    bias = torch.zeros(channels, requires_grad=True)
    offset = (2 * torch.randn(1, 18, height, width, generator=generator)).requires_grad_()
    mask = torch.rand(1, 9, height, width, generator=generator).requires_grad_()
    inputs = (x, offset, mask, weight, bias)

    def step(conv):
        out = conv()
        torch.autograd.grad(out, inputs, torch.ones_like(out))

    ours = median_seconds(lambda: step(lambda: modulated_deform_conv(x, offset, mask, weight, bias, padding=1)),
                          repeats)
    theirs = median_seconds(
        lambda: step(lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)), repeats
    )
    report(f"modulated deform conv CPU fwd+bwd, {channels}->{channels} ch, {height}x{width}", ours, theirs)


def bench_focal_loss(num_anchors=40000, num_classes=80, gamma=2.0, alpha=0.25, repeats=9):
    """Sigmoid focal loss forward + backward on PAA-sized logits, against torchvision's
    formula built from torch element-wise ops (sigmoid, BCE-with-logits, (1 - p_t)^gamma)."""
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(num_anchors, num_classes, generator=generator) - 4).requires_grad_()
    labels = torch.randint(1, num_classes + 1, (num_anchors,), generator=generator)
    labels[torch.rand(num_anchors, generator=generator) < 0.9] = 0  # mostly background

    def formula():
        one_hot = (labels[:, None] == torch.arange(1, num_classes + 1)).to(logits.dtype)
        return torchvision.ops.sigmoid_focal_loss(logits, one_hot, alpha, gamma, reduction="none")

    def step(loss_fn):
        torch.autograd.grad(loss_fn().sum(), logits)

    ours = median_seconds(lambda: step(lambda: sigmoid_focal_loss(logits, labels, gamma, alpha)), repeats)
    theirs = median_seconds(lambda: step(formula), repeats)
    report(f"sigmoid focal loss CPU fwd+bwd, {num_anchors}x{num_classes} float32", ours, theirs)


# Benchmarks run by main(), in order; add new ones here.
BENCHMARKS = (bench_nms, bench_dcn, bench_focal_loss)


def main():
    torch.set_num_threads(1)  # same single-thread footing for both sides of every comparison
    for bench in BENCHMARKS:
        bench()


if __name__ == "__main__":
    main()
