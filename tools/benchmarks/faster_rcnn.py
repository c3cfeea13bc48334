"""One training iteration (forward, backward, SGD step) of our Faster R-CNN R-50-FPN, with the
PAA RPN and with the standard RPN, against torchvision's FasterRCNN R-50-FPN built the same way
(tools/benchmarks/models.py), in true float32 (no TF32).

The PAA RPN adds PAA's assignment (the GMM split per GT) and the IoU branch to the RPN;
otherwise the three models match. The same images and GT boxes go to all three. After
`--warmup` untimed iterations each model runs `--repeats` timed ones, the three alternating;
rows give the median and range. Targets: each of ours / torchvision <= 1.1. Checks: finite
losses, equal input shapes.

Run with paa_core importable (`PYTHONPATH=.` from the repository root):
`python tools/benchmarks/faster_rcnn.py [--device cuda] [--size 800 1333] [--images 2] [--repeats 5]`.
"""

import argparse

from common import (  # beside this script
    add_model_arguments,
    finish,
    median,
    setup,
    spread,
    target,
    time_calls,
)
from models import (
    build_ours,
    build_torchvision_faster_rcnn,
    check_input_shapes,
    check_losses,
    make_inputs,
    make_step,
    watch_input_shapes,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, images=2, per="iteration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per model")
    args = parser.parse_args(argv)
    device = setup("faster_rcnn.py", args)
    (h, w), n = args.size, args.images
    our_images, our_targets, tv_images, tv_targets = make_inputs(n, h, w, device)
    models = {
        "PAA RPN": build_ours("faster_rcnn_paa", device).train(),
        "standard RPN": build_ours("faster_rcnn", device).train(),
        "torchvision": build_torchvision_faster_rcnn(device).train(),
    }
    shapes = watch_input_shapes(models)
    inputs = {"torchvision": (tv_images, tv_targets)}
    steps = {
        name: make_step(model, *inputs.get(name, (our_images, our_targets)), None, device)
        for name, model in models.items()
    }
    times, losses = time_calls(steps, args.repeats, device, args.warmup, args.clock)
    print(
        f"Faster R-CNN R-50-FPN training iteration float32, {n} images {h}x{w}: "
        + ", ".join(f"{name} {spread(t)}" for name, t in times.items()),
        flush=True,
    )
    for name in ("PAA RPN", "standard RPN"):
        ratio = median(times[name]) / median(times["torchvision"])
        target(f"Faster R-CNN train iteration float32, ours ({name})/torchvision", ratio, "<=", 1.1)
    check_losses("Faster R-CNN losses", losses)
    check_input_shapes("Faster R-CNN input shapes", shapes)
    finish("faster_rcnn.py")


if __name__ == "__main__":
    main()
