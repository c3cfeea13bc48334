"""One training iteration (forward, backward, SGD step) of PAA R-50-FPN against torchvision's
RetinaNet R-50-FPN built the same way (tools/benchmarks/models.py), in float32 and under
mixed precision, and the share of PAA's iteration spent in anchor assignment (IoU
pre-assignment, candidate scores, the batched GMM: `PAALossComputation.compute_targets`).

Run with paa_core importable (installed, or `PYTHONPATH=.` from the repository root):
`python tools/benchmarks/train.py [--device cuda] [--size 800 1333] [--images 4] [--amp auto]`.
`--amp` follows SOLVER.AMP: auto is bf16 on GPUs that have it, fp16 (with a loss scaler) on
those that don't, and on a CPU bf16 where native, else no mixed-precision run.
"""

import argparse
import time

import torch
from models import build_paa, build_retinanet, make_inputs, paa_config  # beside this script
from ops import median_seconds, synchronize

from paa_core.engine.trainer import backward_and_step
from paa_core.solver import make_amp_dtype, make_grad_scaler


def make_step(model, loss_fn, amp_dtype, device):
    """A closure running one training iteration of `model` (SGD, tiny lr: random weights)."""
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9
    )
    scaler = make_grad_scaler(amp_dtype, device)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = loss_fn()
        optimizer.zero_grad()
        backward_and_step(sum(losses.values()), optimizer, scaler)

    return step


def assignment_share(paa, step, repeats, device):
    """Fraction of PAA's iteration inside the loss evaluator's `compute_targets`, timed
    with a synchronisation around each call (so slightly pessimistic on a GPU)."""
    evaluator = paa.rpn.loss_evaluator
    spent = []
    original = evaluator.compute_targets

    def timed_compute_targets(*args):
        synchronize(device)
        start = time.perf_counter()
        out = original(*args)
        synchronize(device)
        spent.append(time.perf_counter() - start)
        return out

    evaluator.compute_targets = timed_compute_targets
    try:
        total = median_seconds(step, repeats, device)
    finally:
        del evaluator.compute_targets  # back to the class's method
    return sorted(spent[1:])[len(spent[1:]) // 2] / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=4, help="images per iteration")
    parser.add_argument(
        "--amp",
        default="auto",
        choices=("off", "bf16", "fp16", "auto"),
        help="the mixed-precision run (besides float32); off skips it",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (h, w), device = args.size, torch.device(args.device)
    paa_images, paa_targets, tv_images, tv_targets = make_inputs(args.images, h, w, device)
    paa = build_paa(h, w, device).train()
    retinanet = build_retinanet(h, w, device).train()
    amp_cfg = paa_config(h, w, device)
    amp_cfg.SOLVER.AMP = args.amp
    precisions = [("float32", None)]
    amp_dtype = make_amp_dtype(amp_cfg, device)
    if amp_dtype is not None:
        precisions.append((str(amp_dtype).replace("torch.", "") + " autocast", amp_dtype))
    else:
        print(f"--amp {args.amp} on {device}: no mixed-precision run", flush=True)

    times = {}
    for name, dtype in precisions:
        paa_step = make_step(paa, lambda: paa(paa_images, paa_targets), dtype, device)
        tv_step = make_step(retinanet, lambda: retinanet(tv_images, tv_targets), dtype, device)
        ours = median_seconds(paa_step, args.repeats, device)
        theirs = median_seconds(tv_step, args.repeats, device)
        times[name] = ours
        share = assignment_share(paa, paa_step, args.repeats, device)
        print(
            f"train iteration {device} {name}, {args.images} images {h}x{w}: PAA R-50-FPN {ours * 1e3:.1f} ms, torchvision RetinaNet "
            f"R-50-FPN {theirs * 1e3:.1f} ms, ratio {ours / theirs:.3f}; assignment + GMM {share:.1%} of the PAA iteration",
            flush=True,
        )
    if len(times) == 2:
        (_, fp32), (name, mixed) = times.items()
        print(
            f"mixed precision ({name}) speed-up of the PAA iteration over float32: {fp32 / mixed:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
