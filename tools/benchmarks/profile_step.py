"""Where a PAA training step spends its time, by stage: data (waiting for the loader),
backbone body, FPN, head, assignment (IoU pre-assignment, candidate costs, the GMM cut:
`PAALossComputation.compute_targets`), losses (the rest of the loss evaluator), other
forward work (anchors, flattening), backward, optimizer. Each stage's median over the timed
iterations and its share of the median step; `--top N` adds the N costliest operators of
one step (torch.profiler, self CPU time). "losses" is the forward's time outside the other
stages: the loss evaluator without the assignment, plus the anchors and float32 casts.

    python tools/benchmarks/profile_step.py --config-file configs/paa/paa_quick_shapes.yaml
    python tools/benchmarks/profile_step.py --config-file configs/paa/paa_R_50_FPN_1x.yaml \
        --synthetic --size 512 512 --images 2 SOLVER.OPTIMIZER SGD

With the config's own data (the quick config's shapes), batches come from its training
loader with its workers, so "data" is the time the step waited for one. `--synthetic`
feeds random images with 3-20 boxes at `--size` (tools/benchmarks/models.py) and has no
data stage. Mixed precision follows SOLVER.AMP, the optimizer SOLVER.OPTIMIZER.
"""

import argparse
import time
from collections import defaultdict

import torch
from common import add_model_arguments, median, setup, spread, synchronize
from models import NUM_CLASSES, make_inputs

from paa_core.config import get_cfg
from paa_core.config.loading import load_config
from paa_core.data import make_data_loader
from paa_core.engine.trainer import backward_and_step
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import make_amp_dtype, make_grad_scaler, make_optimizer
from paa_core.structures.image_list import to_image_list

STAGES = ("data", "backbone", "fpn", "head", "assignment", "losses", "backward", "optimizer")


class StageClock:
    """Adds the wall time between a module's forward pre-hook and its forward hook (or
    around a wrapped call) to `spent[stage]`; synchronises a GPU at both ends."""

    def __init__(self, device):
        self.device, self.spent, self.started = device, defaultdict(float), {}

    def watch(self, module, stage):
        def start(*_):
            synchronize(self.device)
            self.started[stage] = time.perf_counter()

        def stop(*_):
            synchronize(self.device)
            self.spent[stage] += time.perf_counter() - self.started[stage]

        module.register_forward_pre_hook(start)
        module.register_forward_hook(stop)

    def wrap(self, owner, name, stage):
        call = getattr(owner, name)

        def timed(*args, **kwargs):
            self.started[stage] = time.perf_counter()
            synchronize(self.device)
            out = call(*args, **kwargs)
            synchronize(self.device)
            self.spent[stage] += time.perf_counter() - self.started[stage]
            return out

        setattr(owner, name, timed)

    def take(self):
        spent, self.spent = dict(self.spent), defaultdict(float)
        return spent


def batches(cfg, args, device):
    """Endless (images, targets, waited seconds): the config's loader or random inputs."""
    if args.synthetic:
        images, targets, _, _ = make_inputs(args.images, *args.size, device)
        while True:
            yield to_image_list(images, cfg.DATALOADER.SIZE_DIVISIBILITY), targets, 0.0
    loader = make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0)
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        images, targets, _ = next(iterator)
        waited = time.perf_counter() - start
        yield images.to(device), [t.to(device) for t in targets], waited


def build(cfg, device):
    torch.manual_seed(0)
    model = build_detection_model(cfg).to(device).train()
    clock = StageClock(device)
    clock.watch(model.backbone.body, "backbone")
    clock.watch(model.backbone.fpn, "fpn")
    clock.watch(model.rpn.head, "head")
    evaluator = model.rpn.loss_evaluator
    clock.wrap(evaluator, "compute_targets", "assignment")
    return model, clock


def profile(cfg, args, device):
    """{stage: [seconds per timed iteration]} and [step seconds]."""
    model, clock = build(cfg, device)
    optimizer = make_optimizer(cfg, model)
    amp = make_amp_dtype(cfg, device)
    scaler = make_grad_scaler(amp, device)
    stages, steps = defaultdict(list), []
    data = batches(cfg, args, device)
    for it in range(args.warmup + args.repeats):
        synchronize(device)
        start = time.perf_counter()
        images, targets, waited = next(data)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            losses = sum(model(images, targets).values())
        synchronize(device)
        forward_end = time.perf_counter()
        optimizer.zero_grad()
        losses.backward() if scaler is None else scaler.scale(losses).backward()
        synchronize(device)
        backward_end = time.perf_counter()
        optimizer.step() if scaler is None else (scaler.step(optimizer), scaler.update())
        synchronize(device)
        end = time.perf_counter()
        spent = clock.take()
        if it < args.warmup:
            continue
        forward = forward_end - start - waited
        known = sum(spent[s] for s in ("backbone", "fpn", "head", "assignment"))
        spent.update(
            {
                "data": waited,
                "losses": forward - known,
                "backward": backward_end - forward_end,
                "optimizer": end - backward_end,
            }
        )
        for stage in STAGES:
            stages[stage].append(spent[stage])
        steps.append(end - start)
    return stages, steps, (model, optimizer, amp, data)


def top_operators(model, optimizer, amp, data, device, count):
    """The `count` operators with the most self CPU time in one more step."""
    images, targets, _ = next(data)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            losses = sum(model(images, targets).values())
        optimizer.zero_grad()
        backward_and_step(losses, optimizer)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=count))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--synthetic", action="store_true", help="random inputs at --size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest operators")
    add_model_arguments(parser, images=2, per="iteration")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    device = setup("profile_step.py", args)
    cfg = get_cfg()
    load_config(cfg, args.config_file, ["MODEL.DEVICE", args.device, *args.opts])
    if args.synthetic:
        # As tools/benchmarks/models.py builds ours: 80 classes, stride in the 3x3 conv.
        cfg.merge_from_list(["MODEL.PAA.NUM_CLASSES", NUM_CLASSES + 1])
        cfg.merge_from_list(["MODEL.RESNETS.STRIDE_IN_1X1", False])
    else:
        cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", args.images])
    cfg.freeze()
    stages, steps, state = profile(cfg, args, device)
    step = median(steps)
    print(f"step: median {step * 1000:.1f} ms over {len(steps)} iterations ({spread(steps)})")
    print("| stage | median ms | share of the step |")
    print("|---|---|---|")
    for stage in STAGES:
        ms = median(stages[stage]) * 1000
        print(f"| {stage} | {ms:.1f} | {ms / (step * 1000):.1%} |")
    if args.top:
        top_operators(*state, device, args.top)


if __name__ == "__main__":
    main()
