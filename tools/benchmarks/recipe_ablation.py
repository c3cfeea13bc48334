"""The quick start's recipe, one change at a time: each variant of
configs/paa/paa_quick_shapes.yaml trained to the end of its schedule on shapes with the same
seed, then evaluated on shapes_val.

    python tools/benchmarks/recipe_ablation.py [--out output/ablation] [VARIANT ...]
    python tools/benchmarks/recipe_ablation.py --list

Prints one row per variant: AP, AP50, AP_small/medium/large, positives per GT (the mean of
the logged window medians over the last 200 iterations), seconds per iteration (the median of
the logged windows after the first) and the training wall time. A variant whose evaluation
exists is not run again, so a stopped ablation resumes; without names, every variant runs.
Runs from the repository root and needs datasets/shapes (tools/make_shapes_dataset.py).
Times per iteration are only comparable between runs made on an otherwise idle machine.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CONFIG = "configs/paa/paa_quick_shapes.yaml"
P2P6 = ["MODEL.BACKBONE.CONV_BODY", "R-18-GN-FPN", "MODEL.PAA.ANCHOR_STRIDES", "(4, 8, 16, 32, 64)"]

# name -> (what changes, KEY VALUE overrides of CONFIG)
VARIANTS = {
    "base": ("the quick config as it was (today's)", []),
    "head4": ("4 convs per head tower (the paper's depth)", ["MODEL.PAA.NUM_CONVS", "4"]),
    "width128": (
        "128 FPN and head channels",
        ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "128"],
    ),
    "p2p6": (
        "FPN P2-P6, anchors 4x the stride (16-256)",
        [*P2P6, "MODEL.PAA.ANCHOR_SIZES", "(16, 32, 64, 128, 256)"],
    ),
    "anchors2x": (
        "anchors 2x the stride (16-256 on P3-P7)",
        ["MODEL.PAA.ANCHOR_SIZES", "(16, 32, 64, 128, 256)"],
    ),
}
COLUMNS = ("AP", "AP50", "APs", "APm", "APl")


def run(args, log):
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"error: {' '.join(args[:3])} failed (exit {done.returncode}); see {log}")


def records(folder):
    """(training lines, evaluation lines) of folder/metrics.jsonl."""
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        return [], []
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [r for r in lines if "dataset" not in r], [r for r in lines if "dataset" in r]


def train_and_test(folder, opts):
    """Train the variant (resuming a stopped run) and evaluate its final model."""
    os.makedirs(folder, exist_ok=True)
    if not os.path.isfile(os.path.join(folder, "model_final.pth")):
        start = time.time()
        args = ["tools/train_net.py", "--config-file", CONFIG, "--skip-test", "SEED", "0"]
        run([*args, "OUTPUT_DIR", folder, *opts], os.path.join(folder, "train.log"))
        with open(os.path.join(folder, "train_seconds"), "w") as f:
            f.write(f"{time.time() - start:.0f}")
    weights = os.path.join(folder, "model_final.pth")
    args = ["tools/test_net.py", "--config-file", CONFIG, "MODEL.WEIGHT", weights]
    run([*args, "OUTPUT_DIR", folder, *opts], os.path.join(folder, "test.log"))


def row(name, folder):
    """The table row of a finished variant."""
    train, evals = records(folder)
    last = train[-1]["iteration"]
    positives = [r["pos_per_gt"] for r in train if r["iteration"] > last - 200]
    times = sorted(r["time"] for r in train[1:])
    with open(os.path.join(folder, "train_seconds")) as f:
        seconds = int(float(f.read()))
    cells = [f"{100 * evals[-1][c]:.1f}" for c in COLUMNS]
    cells += [f"{sum(positives) / len(positives):.1f}", f"{times[len(times) // 2]:.2f}"]
    return f"| {name} | {VARIANTS[name][0]} | " + " | ".join(cells) + f" | {seconds // 60} min |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="names of VARIANTS (default: all)")
    parser.add_argument("--out", default="output/ablation")
    parser.add_argument("--list", action="store_true", help="list the variants and stop")
    args = parser.parse_args()
    if args.list:
        for name, (what, opts) in VARIANTS.items():
            print(f"{name}: {what}: {' '.join(opts)}")
        return
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {', '.join(unknown)}; --list shows them")
    for name in names:
        folder = os.path.join(args.out, name)
        if not records(folder)[1]:
            print(f"== {name}: {VARIANTS[name][0]}", flush=True)
            train_and_test(folder, VARIANTS[name][1])
    print(f"\n| variant | change | {' | '.join(COLUMNS)} | positives / GT | s / it | training |")
    print("|---" * (len(COLUMNS) + 5) + "|")
    for name in names:
        print(row(name, os.path.join(args.out, name)))


if __name__ == "__main__":
    main()
