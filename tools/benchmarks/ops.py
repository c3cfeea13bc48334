"""The compiled ops against torchvision's equivalents, on the CPU or a GPU: NMS at several
sizes, modulated deformable convolution and sigmoid focal loss (forward + backward); on the
CPU also the Winograd 3x3 convolution against torch's own (forward + backward).

Each row gives the median and range of ours and of torchvision's over `--repeats` alternating
calls on the same inputs, a TARGET line for the ratio of the medians ours / torchvision (<= 1.0;
below 1: ours faster) and a CHECK that the results agree: NMS keeps the same indices, DCN's
output and its five gradients and the focal loss and its gradient are equal up to float32
rounding.

Run with paa_core importable (`PYTHONPATH=.` from the repository root):
`python tools/benchmarks/ops.py [--device cuda] [--boxes 1000 5000 20000] [--dcn-size 100 152] ...`.
"""

import argparse

import torch
import torchvision
from common import check, finish, median, setup, spread, target, time_calls  # beside this script

from paa_core.layers import nms, sigmoid_focal_loss, winograd_conv3x3
from paa_core.layers.dcn import modulated_deform_conv

# Largest difference allowed, relative to the largest magnitude of torchvision's result.
TOLERANCE = 1e-4


def relative_error(ours, theirs):
    """Largest |a - b| over the pairs of tensors, relative to the largest |b| of the pair."""
    return max(
        float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)) for a, b in zip(ours, theirs)
    )


def compare(what, calls, args, baseline="torchvision"):
    """Times {"ours": fn, baseline: fn}; prints the row and the TARGET line, returns both
    outputs."""
    times, outputs = time_calls(calls, args.repeats, args.device)
    ours, theirs = times["ours"], times[baseline]
    ratio = median(ours) / median(theirs)
    print(f"{what}: ours {spread(ours)}, {baseline} {spread(theirs)}, ratio {ratio:.3f}")
    target(f"{what}, ours/{baseline}", ratio, "<=", 1.0)
    return outputs["ours"], outputs[baseline]


def random_boxes(num_boxes, generator):
    """Detection-like boxes in an 800x800 image, 8 to 256 px on a side, xyxy, on whole
    pixels: their IoUs are ratios of integers below 2^18, which float rounding cannot move
    across the threshold, so two correct NMS keep exactly the same boxes."""
    xy = torch.randint(0, 800, (num_boxes, 2), generator=generator)
    wh = torch.randint(8, 257, (num_boxes, 2), generator=generator)
    return torch.cat([xy, xy + wh], dim=1).float()


def bench_nms(args):
    """Greedy NMS at IoU 0.5 (our op with torchvision's box convention, offset 0)."""
    for n in args.boxes:
        generator = torch.Generator().manual_seed(n)
        boxes = random_boxes(n, generator).to(args.device)
        scores = (torch.randperm(n, generator=generator).float() / n).to(args.device)  # no ties
        calls = {
            "ours": lambda b=boxes, s=scores: nms(b, s, 0.5, offset=0),
            "torchvision": lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.5),
        }
        ours, theirs = compare(f"nms {n} boxes", calls, args)
        check(
            torch.equal(ours, theirs),
            f"nms {n} boxes",
            f"kept {len(ours)} (ours), {len(theirs)} (torchvision), same indices: {torch.equal(ours, theirs)}",
        )


def bench_dcn(args):
    """Modulated 3x3 deformable conv forward + backward (all five gradients)."""
    c, (h, w), n = args.dcn_channels, args.dcn_size, args.dcn_batch
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=generator)
    weight = 0.02 * torch.randn(c, c, 3, 3, generator=generator)
    offset = 2 * torch.randn(n, 18, h, w, generator=generator)
    mask = torch.rand(n, 9, h, w, generator=generator)
    bias = torch.randn(c, generator=generator)
    inputs = [t.to(args.device).requires_grad_() for t in (x, offset, mask, weight, bias)]
    x, offset, mask, weight, bias = inputs
    grad_out = torch.randn(n, c, h, w, generator=generator).to(args.device)

    def step(conv):
        out = conv()
        return (out.detach(), *torch.autograd.grad(out, inputs, grad_out))

    calls = {
        "ours": lambda: step(
            lambda: modulated_deform_conv(x, offset, mask, weight, bias, padding=1)
        ),
        "torchvision": lambda: step(
            lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        ),
    }
    what = f"modulated deform conv fwd+bwd, batch {n}, {c}->{c} ch, {h}x{w}"
    error = relative_error(*compare(what, calls, args))
    check(
        error <= TOLERANCE,
        "modulated deform conv",
        f"output and 5 gradients, largest relative difference {error:.1e} (allowed {TOLERANCE:g})",
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
    one_hot = (labels[:, None] == torch.arange(1, num_classes + 1, device=args.device)).float()

    def step(loss_fn):
        loss = loss_fn()
        return loss.detach(), torch.autograd.grad(loss.sum(), logits)[0]

    calls = {
        "ours": lambda: step(lambda: sigmoid_focal_loss(logits, labels, gamma, alpha)),
        "torchvision": lambda: step(
            lambda: torchvision.ops.sigmoid_focal_loss(
                logits, one_hot, alpha, gamma, reduction="none"
            )
        ),
    }
    what = f"sigmoid focal loss fwd+bwd, {num_anchors}x{num_classes}"
    error = relative_error(*compare(what, calls, args))
    check(
        error <= TOLERANCE,
        "sigmoid focal loss",
        f"loss and gradient, largest relative difference {error:.1e} (allowed {TOLERANCE:g})",
    )


def bench_winograd(args):
    """A head tower's 3x3 conv (256 -> 256 channels over P3-P7 of 2 images 512x512, the
    levels in one call) forward + backward by Winograd F(4x4, 3x3), against torch's
    convolution (oneDNN's direct algorithm) level by level. CPU only."""
    if torch.device(args.device).type != "cpu":
        print("winograd conv: CPU only, skipped on", args.device)
        return
    generator = torch.Generator().manual_seed(0)
    sizes = [args.winograd_size // 8 >> level for level in range(5)]
    xs = [
        torch.randn(2, 256, s, s, generator=generator)
        .contiguous(memory_format=torch.channels_last)
        .requires_grad_()
        for s in sizes
    ]
    weight = (0.02 * torch.randn(256, 256, 3, 3, generator=generator)).requires_grad_()
    bias = torch.randn(256, generator=generator).requires_grad_()
    grads = [torch.randn(x.shape, generator=generator) for x in xs]

    def step(conv):
        outputs = conv()
        return outputs + list(torch.autograd.grad(outputs, xs + [weight, bias], grads))

    calls = {
        "ours": lambda: step(lambda: winograd_conv3x3(xs, weight, bias)),
        "torch conv2d": lambda: step(
            lambda: [torch.nn.functional.conv2d(x, weight, bias, padding=1) for x in xs]
        ),
    }
    what = f"3x3 conv fwd+bwd, 256 channels, 2 images, levels {'/'.join(map(str, sizes))}"
    error = relative_error(*compare(what, calls, args, baseline="torch conv2d"))
    check(
        error <= TOLERANCE,
        "winograd conv",
        f"outputs and 7 gradients, largest relative difference {error:.1e} (allowed {TOLERANCE:g})",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: the same footing for both sides of every comparison)",
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each side")
    parser.add_argument(
        "--boxes", type=int, nargs="+", default=(1000, 5000, 20000), help="NMS input sizes"
    )
    parser.add_argument("--dcn-channels", type=int, default=256)
    parser.add_argument("--dcn-size", type=int, nargs=2, default=(100, 152), metavar=("H", "W"))
    parser.add_argument("--dcn-batch", type=int, default=2)
    parser.add_argument(
        "--anchors", type=int, default=40000, help="focal loss rows (80 classes each)"
    )
    parser.add_argument(
        "--winograd-size", type=int, default=512, help="image side whose P3-P7 the conv sees"
    )
    args = parser.parse_args(argv)
    setup("ops.py", args)
    for bench in (bench_nms, bench_dcn, bench_focal_loss, bench_winograd):
        bench(args)
    finish("ops.py")


if __name__ == "__main__":
    main()
