"""torch.compile (inductor) against eager on the CPU: compile time and compiled/eager time.

Models with random weights (no downloads): the quick-start model (paa_quick_shapes.yaml)
and PAA R-50-FPN with modulated DCN in res3-res5 and the head tower (the dcnv2 configs'
layout on a ResNet-50). Each is timed in inference and in a training step (forward,
backward), eager and compiled, after checking that both give the same losses (1e-4).
Training-step losses run through PAA's GMM assignment, which stays eager (graph breaks
at its data-dependent sizes), so the compiled share is the backbone, head and losses.

Run with paa_core importable (`PYTHONPATH=.` from the repository root):
`python tools/benchmarks/compile.py [--model quick|dcn|both] [--size 320] [--repeats 3] [--threads 2]`.
"""

import argparse
import os
import time

import torch
from common import median, setup, time_calls  # beside this script

from paa_core.config import cfg
from paa_core.modeling.detector import build_detection_model
from paa_core.structures.bounding_box import BoxList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(name, size):
    model_cfg = cfg.clone()
    config = "paa_quick_shapes.yaml" if name == "quick" else "paa_R_50_FPN_1x.yaml"
    model_cfg.merge_from_file(os.path.join(ROOT, "configs", "paa", config))
    model_cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", size, "INPUT.MAX_SIZE_TEST", size]
    )
    if name == "dcn":
        model_cfg.merge_from_list(
            [
                "MODEL.RESNETS.STAGE_WITH_DCN",
                (False, True, True, True),
                "MODEL.RESNETS.WITH_MODULATED_DCN",
                True,
                "MODEL.PAA.USE_DCN_IN_TOWER",
                True,
            ]
        )
    torch.manual_seed(0)
    return build_detection_model(model_cfg)


def targets_for(size, batch):
    targets = []
    for i in range(batch):
        t = BoxList(
            torch.tensor(
                [[10.0, 20.0, size * 0.6, size * 0.7], [size * 0.3, 5.0, size - 8.0, size * 0.5]]
            ),
            (size, size),
        )
        t.add_field("labels", torch.tensor([1 + i % 3, 2]))
        targets.append(t)
    return targets


def train_step(model, images, targets):
    model.zero_grad()
    losses = model(images, targets)
    sum(losses.values()).backward()
    return {k: float(v) for k, v in losses.items()}


def bench(name, args):
    model = build(name, args.size)
    images = (
        torch.rand(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)) * 255
        - 115
    )
    targets = targets_for(args.size, 2)
    compiled = torch.compile(model)
    for mode in ("inference", "train"):
        model.train(mode == "train")
        if mode == "inference":

            def run(m):
                with torch.no_grad():
                    return m(images)
        else:

            def run(m):
                return train_step(m, images, targets)

        start = time.perf_counter()
        first = run(compiled)
        compile_s = time.perf_counter() - start
        if mode == "train":
            eager = run(model)
            assert all(abs(first[k] - eager[k]) <= 1e-4 for k in eager), (first, eager)
        times, _ = time_calls(
            {"eager": lambda: run(model), "compiled": lambda: run(compiled)}, args.repeats, "cpu"
        )
        eager_s, compiled_s = median(times["eager"]), median(times["compiled"])
        print(
            f"{name} {mode}, 2 images {args.size}x{args.size}, {args.threads} threads: first compiled call "
            f"{compile_s:.0f} s, eager {eager_s * 1e3:.0f} ms, compiled {compiled_s * 1e3:.0f} ms, "
            f"compiled/eager {compiled_s / eager_s:.2f}",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("quick", "dcn", "both"), default="both")
    parser.add_argument("--size", type=int, default=320, help="square input side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.set_defaults(device="cpu")
    args = parser.parse_args()
    setup("compile.py", args)
    for name in ("quick", "dcn") if args.model == "both" else (args.model,):
        bench(name, args)


if __name__ == "__main__":
    main()
