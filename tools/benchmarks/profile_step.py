"""Where a PAA training step spends its time, by stage: data (waiting for the loader),
backbone body, FPN, head, assignment (IoU pre-assignment, candidate costs, the GMM cut:
`PAALossComputation.compute_targets`), losses (the rest of the forward: the loss evaluator
without the assignment, anchors, flattening, float32 casts), optimizer; the backward split
the same way. Each stage's median over the timed iterations, and its share of the sum of
the medians; `--top N` adds the N costliest operators of one step (torch.profiler, self CPU
time).

    python tools/benchmarks/profile_step.py --config-file configs/paa/paa_quick_shapes.yaml
    python tools/benchmarks/profile_step.py --config-file configs/paa/paa_R_50_FPN_1x.yaml \
        --synthetic --size 512 512 --images 2 SOLVER.OPTIMIZER SGD

The backward's split: every autograd node counts for the stage whose forward created it,
known by its sequence number (nodes are numbered as they are created, and the stages run
one after the other), and a parameter's gradient accumulation for the stage that owns the
parameter; the engine's time between nodes is "other". Timing each node costs two Python
calls, within the noise of a quick-config step (its backward: 309 ms CPU with them, 316
without). On a GPU every node is synchronised, so its backward is slower than unprofiled.

With the config's own data (the quick config's shapes), batches come from its training
loader with its workers, so "data" is the time the step waited for one. `--synthetic`
feeds random images with 3-20 boxes at `--size` (tools/benchmarks/models.py) and has no
data stage. Mixed precision follows SOLVER.AMP, the optimizer SOLVER.OPTIMIZER.

`--clock cpu` measures the process's CPU time instead of wall time (tools/benchmarks/common.py).
"""

import argparse
import bisect
from collections import defaultdict

import torch
from common import CLOCKS, add_model_arguments, median, setup, spread, synchronize
from models import NUM_CLASSES, make_inputs

from paa_core.config import get_cfg
from paa_core.config.loading import load_config
from paa_core.data import make_data_loader
from paa_core.engine.trainer import backward_and_step
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import make_amp_dtype, make_grad_scaler, make_optimizer
from paa_core.structures.image_list import to_image_list

FORWARD = ("backbone", "fpn", "head", "assignment", "losses")
# The modules of the stages with parameters, in forward order.
MODULES = {"backbone": "backbone.body", "fpn": "backbone.fpn", "head": "rpn.head"}
ROWS = ("data", *FORWARD, "optimizer", "backward, other")


def tensors_in(outputs):
    """The tensors of a module's output (a tensor, or lists and tuples of them, or None)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, list | tuple):
        return [t for o in outputs for t in tensors_in(o)]
    return []


class StageClock:
    """Adds the time between a module's forward pre-hook and its forward hook (or around a
    wrapped call) to `spent[stage]` and remembers the last autograd node the stage made;
    synchronises a GPU at both ends."""

    def __init__(self, device, clock):
        self.device, self.clock = device, clock
        self.spent, self.started, self.last_node = defaultdict(float), {}, {}

    def watch(self, module, stage):
        def start(*_):
            synchronize(self.device)
            self.started[stage] = self.clock()

        def stop(_, __, outputs):
            synchronize(self.device)
            self.spent[stage] += self.clock() - self.started[stage]
            numbers = [t.grad_fn._sequence_nr() for t in tensors_in(outputs) if t.grad_fn]
            self.last_node[stage] = max(numbers, default=-1)

        module.register_forward_pre_hook(start)
        module.register_forward_hook(stop)

    def wrap(self, owner, name, stage):
        call = getattr(owner, name)

        def timed(*args, **kwargs):
            synchronize(self.device)
            self.started[stage] = self.clock()
            out = call(*args, **kwargs)
            synchronize(self.device)
            self.spent[stage] += self.clock() - self.started[stage]
            return out

        setattr(owner, name, timed)

    def take(self):
        spent, self.spent = dict(self.spent), defaultdict(float)
        return spent


class BackwardClock:
    """Times each node of one backward pass for the stage that created it (see the module's
    docstring). `watch(loss, last_node)` before the backward, `take()` after it."""

    def __init__(self, model, device, clock):
        self.device, self.clock = device, clock
        self.owner = {}  # parameter -> stage
        for stage, path in MODULES.items():
            for p in model.get_submodule(path).parameters():
                self.owner[p] = stage
        self.spent, self.started = defaultdict(float), 0.0

    def stage_of(self, node, ends, stages):
        if type(node).__name__ == "AccumulateGrad":
            return self.owner.get(node.variable, "losses")
        return stages[bisect.bisect_left(ends, node._sequence_nr())]

    def watch(self, loss, last_node):
        """Hooks every node reachable from `loss`; `last_node`: {stage: its last node's
        sequence number} for the stages of MODULES."""
        ends = [last_node[s] for s in MODULES]
        stages = [*MODULES, "losses"]
        seen, todo = set(), [loss.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            todo.extend(next_node for next_node, _ in node.next_functions)
            self.hook(node, self.stage_of(node, ends, stages))

    def hook(self, node, stage):
        def start(*_):
            synchronize(self.device)
            self.started = self.clock()

        def stop(*_):
            synchronize(self.device)
            self.spent[stage] += self.clock() - self.started

        node.register_prehook(start)
        node.register_hook(stop)

    def take(self):
        spent, self.spent = dict(self.spent), defaultdict(float)
        return spent


def batches(cfg, args, device, clock):
    """Endless (images, targets, waited seconds by `clock`): the config's loader or random
    inputs."""
    if args.synthetic:
        images, targets, _, _ = make_inputs(args.images, *args.size, device)
        while True:
            yield to_image_list(images, cfg.DATALOADER.SIZE_DIVISIBILITY), targets, 0.0
    loader = make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0)
    iterator = iter(loader)
    while True:
        start = clock()
        images, targets, _ = next(iterator)
        waited = clock() - start
        yield images.to(device), [t.to(device) for t in targets], waited


def build(cfg, device, clock):
    torch.manual_seed(0)
    model = build_detection_model(cfg).to(device).train()
    forward = StageClock(device, clock)
    for stage, path in MODULES.items():
        forward.watch(model.get_submodule(path), stage)
    forward.wrap(model.rpn.loss_evaluator, "compute_targets", "assignment")
    return model, forward, BackwardClock(model, device, clock)


def one_step(model, clocks, optimizer, amp, scaler, batch):
    """One timed training step: {row: seconds} for the forward's and the optimizer's rows,
    {stage: seconds} of the backward, and the step's seconds."""
    forward, backward = clocks
    images, targets, waited = batch
    synchronize(forward.device)
    start = forward.clock()
    with torch.autocast(forward.device.type, dtype=amp, enabled=amp is not None):
        losses = sum(model(images, targets).values())
    synchronize(forward.device)
    forward_end = forward.clock()
    optimizer.zero_grad()
    backward.watch(losses, forward.last_node)  # untimed: between the two clocks
    backward_start = forward.clock()
    losses.backward() if scaler is None else scaler.scale(losses).backward()
    synchronize(forward.device)
    backward_end = forward.clock()
    optimizer.step() if scaler is None else (scaler.step(optimizer), scaler.update())
    synchronize(forward.device)
    end = forward.clock()
    spent = forward.take()
    known = sum(spent.get(s, 0.0) for s in FORWARD)
    spent.update(data=waited, optimizer=end - backward_end)
    spent["losses"] = forward_end - start - known
    back = backward.take()
    back["other"] = backward_end - backward_start - sum(back.values())
    return spent, back, waited + (forward_end - start) + (end - backward_start)


def profile(cfg, args, device):
    """({row: [seconds per timed iteration]}, {stage: [backward seconds]}, [step seconds])."""
    clock = CLOCKS[args.clock]
    model, forward, backward = build(cfg, device, clock)
    optimizer = make_optimizer(cfg, model)
    amp = make_amp_dtype(cfg, device)
    scaler = make_grad_scaler(amp, device)
    rows, back_rows, steps = defaultdict(list), defaultdict(list), []
    data = batches(cfg, args, device, clock)
    for it in range(args.warmup + args.repeats):
        spent, back, step = one_step(model, (forward, backward), optimizer, amp, scaler, next(data))
        if it < args.warmup:
            continue
        for row in ROWS[:-1]:
            rows[row].append(spent.get(row, 0.0))
        for stage in (*MODULES, "losses", "other"):
            back_rows[stage].append(back.get(stage, 0.0))
        steps.append(step)
    return rows, back_rows, steps, (model, optimizer, amp, data)


def print_table(rows, back_rows, steps, clock):
    """The stages' medians: forward (or the stage's own time), backward, both, share."""
    medians = {row: median(rows[row]) * 1000 for row in ROWS[:-1]}
    back = {stage: median(times) * 1000 for stage, times in back_rows.items()}
    back["backward, other"] = back.pop("other")
    total = sum(medians.values()) + sum(back.values())
    print(f"step ({clock} time): median {spread(steps)} over {len(steps)} iterations")
    print(f"| stage | forward ms | backward ms | ms | share (of {total:.0f} ms) |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        ms_f, ms_b = medians.get(row, 0.0), back.get(row, 0.0)
        print(
            f"| {row} | {ms_f:.1f} | {ms_b:.1f} | {ms_f + ms_b:.1f} | {(ms_f + ms_b) / total:.1%} |"
        )


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
    rows, back_rows, steps, state = profile(cfg, args, device)
    print_table(rows, back_rows, steps, args.clock)
    if args.top:
        top_operators(*state, device, args.top)


if __name__ == "__main__":
    main()
