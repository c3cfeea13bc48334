"""The quick start's recipe, one change at a time: each variant changes one thing of the quick
config as it was before this study (BASE, overrides of configs/paa/paa_quick_shapes.yaml),
trains to the end of its schedule on shapes with the same seed and is evaluated on
shapes_val; "quick" is today's config as it is, and quick_* variants change that instead.

    python tools/benchmarks/recipe_ablation.py [--out output/ablation] [VARIANT ...]
    python tools/benchmarks/recipe_ablation.py --list

Prints one row per variant: AP, AP50, AP_small/medium/large, positives per GT (the mean of
the logged window medians over the last 200 iterations) and seconds per iteration. A variant
whose evaluation exists is not run again, so a stopped ablation resumes; without names,
every variant runs. The trainings may share the machine (`OMP_NUM_THREADS=1` and two
ablations at once use two cores well), so their times mean little: the s/it column comes
from a separate timing run of each variant, `--timing-iterations` (default 40) iterations
with `--threads` (default 2) threads, the median of the last 20, made after the trainings;
run it on an otherwise idle machine. Runs from the repository root and needs
datasets/shapes (tools/make_shapes_dataset.py).
"""

import argparse
import os
import sys

from common import metrics_records, run_tool

CONFIG = "configs/paa/paa_quick_shapes.yaml"


def schedule(iterations, first, second, warmup=100):
    """SOLVER overrides of a schedule of that length."""
    return [
        *("SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", f"({first}, {second})"),
        *("SOLVER.WARMUP_ITERS", str(warmup)),
    ]


def train_size(pixels):
    """INPUT overrides for square training images of that side."""
    return ["INPUT.MIN_SIZE_TRAIN", f"({pixels},)", "INPUT.MAX_SIZE_TRAIN", str(pixels)]


def test_size(pixels):
    """INPUT overrides for square test images of that side."""
    return ["INPUT.MIN_SIZE_TEST", str(pixels), "INPUT.MAX_SIZE_TEST", str(pixels)]


# The quick config before this study (P3-P7, anchors 8x the stride, 320 px, 1800
# iterations at lr 0.002): the "base" that every variant but "quick" changes one thing of.
BASE = [
    *("MODEL.BACKBONE.CONV_BODY", "R-18-GN-FPN-RETINANET"),
    *("MODEL.PAA.ANCHOR_STRIDES", "(8, 16, 32, 64, 128)"),
    *("MODEL.PAA.ANCHOR_SIZES", "(32, 64, 128, 256, 512)"),
    *train_size(320),
    *test_size(320),
    *schedule(1800, 1400, 1650),
    *("SOLVER.BASE_LR", "0.002"),
]
P2P6 = [
    *("MODEL.BACKBONE.CONV_BODY", "R-18-GN-FPN", "MODEL.PAA.ANCHOR_STRIDES", "(4, 8, 16, 32, 64)"),
    *("MODEL.PAA.ANCHOR_SIZES", "(16, 32, 64, 128, 256)"),
]

# name -> (what changes, KEY VALUE overrides of BASE, or of CONFIG as it is for quick*)
VARIANTS = {
    "base": ("the quick config before this study", []),
    "head4": ("4 convs per head tower (the paper's depth)", ["MODEL.PAA.NUM_CONVS", "4"]),
    "width128": ("128 FPN and head channels", ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "128"]),
    "anchors2x": (
        "anchors 2x the stride (16-256 on P3-P7)",
        ["MODEL.PAA.ANCHOR_SIZES", "(16, 32, 64, 128, 256)"],
    ),
    "p2p6": ("FPN P2-P6, anchors 4x the stride (16-256)", P2P6),
    "lr004": ("AdamW lr 0.004", ["SOLVER.BASE_LR", "0.004"]),
    "b4x2": (
        "4 images per batch, twice the iterations (the same images seen)",
        ["SOLVER.IMS_PER_BATCH", "4", *schedule(3600, 2800, 3300, 200)],
    ),
    "sched2x": ("twice the schedule (3600 iterations)", schedule(3600, 2800, 3300)),
    "size256": ("256 px images, training and test", [*train_size(256), *test_size(256)]),
    "train256": ("training on 256 px images, test at 320", train_size(256)),
    "train192": (
        "training on 192 px, 3300 iterations (the same time), test at 320",
        [*train_size(192), *schedule(3300, 2570, 3030)],
    ),
    "train160": (
        "training on 160 px, 4400 iterations (the same time), test at 288",
        [*train_size(160), *schedule(4400, 3420, 4030), *test_size(288)],
    ),
    "p2p6_train224": (
        "p2p6, training on 224 px (the same time), test at 320",
        [*P2P6, *train_size(224)],
    ),
    "p2p6_train192": (
        "p2p6, training on 192 px, 2200 iterations (the same time), test at 288",
        [*P2P6, *train_size(192), *schedule(2200, 1710, 2020), *test_size(288)],
    ),
    "p2p6_train192_steps": (
        "p2p6_train192 with the lr steps at 1500 and 1900",
        [*P2P6, *train_size(192), *schedule(2200, 1500, 1900), *test_size(288)],
    ),
    "quick": ("p2p6_train192 at lr 0.0015: today's quick config", []),
    "quick_2500": ("quick for 2500 iterations", schedule(2500, 1940, 2300)),
    "quick_gmm_spread": (
        "departure from the paper, on quick: each GT's mixture starts at its scores' variance",
        ["MODEL.PAA.GMM_INIT_VARIANCE", "spread"],
    ),
}
COLUMNS = ("AP", "AP50", "APs", "APm", "APl")


def overrides(name):
    """The KEY VALUE overrides of CONFIG that make the variant."""
    opts = VARIANTS[name][1]
    return opts if name.startswith("quick") else [*BASE, *opts]


def train_and_test(folder, opts):
    """Train the variant (resuming a stopped run) and evaluate its final model."""
    os.makedirs(folder, exist_ok=True)
    if not os.path.isfile(os.path.join(folder, "model_final.pth")):
        args = ["tools/train_net.py", "--config-file", CONFIG, "--skip-test", "SEED", "0"]
        run_tool([*args, "OUTPUT_DIR", folder, *opts], os.path.join(folder, "train.log"))
    weights = os.path.join(folder, "model_final.pth")
    args = ["tools/test_net.py", "--config-file", CONFIG, "MODEL.WEIGHT", weights]
    run_tool([*args, "OUTPUT_DIR", folder, *opts], os.path.join(folder, "test.log"))


def seconds_per_iteration(folder, opts, iterations, threads):
    """The median time of the last logged window of a short training of the variant."""
    timing = os.path.join(folder, "timing")
    if not metrics_records(timing)[0]:
        os.makedirs(timing, exist_ok=True)
        short = ["SOLVER.MAX_ITER", str(iterations), "SOLVER.CHECKPOINT_PERIOD", "100000"]
        args = ["tools/train_net.py", "--config-file", CONFIG, "--skip-test", "SEED", "0"]
        run_tool(
            [*args, "OUTPUT_DIR", timing, *opts, *short],
            os.path.join(timing, "train.log"),
            env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
        )
    return metrics_records(timing)[0][-1]["time"]


def row(name, folder, per_iteration):
    """The table row of a finished variant."""
    train, evals = metrics_records(folder)
    last = train[-1]["iteration"]
    positives = [r["pos_per_gt"] for r in train if r["iteration"] > last - 200]
    cells = [f"{100 * evals[-1][c]:.1f}" for c in COLUMNS]
    cells += [f"{sum(positives) / len(positives):.1f}", f"{per_iteration:.2f}"]
    return f"| {name} | {VARIANTS[name][0]} | " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="names of VARIANTS (default: all)")
    parser.add_argument("--out", default="output/ablation")
    parser.add_argument("--list", action="store_true", help="list the variants and stop")
    parser.add_argument("--timing-iterations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2, help="threads of the timing runs")
    args = parser.parse_args()
    if args.list:
        for name, (what, _) in VARIANTS.items():
            print(f"{name}: {what}: {' '.join(overrides(name)) or CONFIG}")
        return
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {', '.join(unknown)}; --list shows them")
    for name in names:
        folder = os.path.join(args.out, name)
        if not metrics_records(folder)[1]:
            print(f"== {name}: {VARIANTS[name][0]}", flush=True)
            train_and_test(folder, overrides(name))
    timings = {}
    for name in names:
        folder = os.path.join(args.out, name)
        timings[name] = seconds_per_iteration(
            folder, overrides(name), args.timing_iterations, args.threads
        )
    print(f"\n| variant | change | {' | '.join(COLUMNS)} | positives / GT | s / it |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for name in names:
        print(row(name, os.path.join(args.out, name), timings[name]))


if __name__ == "__main__":
    main()
