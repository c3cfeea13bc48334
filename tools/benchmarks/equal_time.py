"""The one-stage PAA and both Faster R-CNNs trained on shapes with the same training
wall-time budget on this machine, each for as many iterations as fit, then evaluated on
shapes_val: AP per detector.

    python tools/benchmarks/equal_time.py [--minutes 10] [--out output/equal_time] [KEY VALUE ...]

For each detector (configs/paa/paa_quick_shapes.yaml, configs/faster_rcnn/
faster_rcnn_paa_quick_shapes.yaml, configs/faster_rcnn/faster_rcnn_quick_shapes.yaml) a
probe of `--probe` iterations measures its seconds per iteration (the median of the last 20),
then the run gets `minutes * 60 / (s/it)` iterations with its own config's schedule scaled to
them (warm-up and lr steps at the same fractions of the run as in the config). The
probe's time is not part of the budget; the measured training wall time is printed beside
the AP. A detector whose `model_final.pth` exists in the output folder is not trained again,
so a stopped comparison resumes. Needs datasets/shapes (tools/make_shapes_dataset.py) and
runs from the repository root. Extra KEY VALUE pairs go to every training and evaluation.
"""

import argparse
import os
import time

from common import metrics_records, run_tool

from paa_core.config import get_cfg

DETECTORS = {
    "PAA (one-stage)": "configs/paa/paa_quick_shapes.yaml",
    "Faster R-CNN, PAA RPN": "configs/faster_rcnn/faster_rcnn_paa_quick_shapes.yaml",
    "Faster R-CNN, standard RPN": "configs/faster_rcnn/faster_rcnn_quick_shapes.yaml",
}
COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def probe_seconds_per_iteration(config, folder, iterations, opts):
    """Median seconds per iteration over the probe's last logged window (20 iterations)."""
    if not metrics_records(folder)[0]:
        os.makedirs(folder, exist_ok=True)
        schedule = ["SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", f"({iterations},)"]
        schedule += ["SOLVER.CHECKPOINT_PERIOD", str(iterations), "SOLVER.WARMUP_ITERS", "1"]
        args = ["tools/train_net.py", "--config-file", config, "--skip-test"]
        run_tool([*args, "OUTPUT_DIR", folder, *schedule, *opts], os.path.join(folder, "train.log"))
    return metrics_records(folder)[0][-1]["time"]


def scaled_schedule(config, iterations):
    """The config's schedule as KEY VALUE overrides for a run of `iterations`."""
    solver = get_cfg()
    solver.merge_from_file(config)
    solver = solver.SOLVER
    scale = iterations / solver.MAX_ITER
    steps = tuple(max(1, round(s * scale)) for s in solver.STEPS)
    return [
        "SOLVER.MAX_ITER",
        str(iterations),
        "SOLVER.STEPS",
        str(steps),
        "SOLVER.WARMUP_ITERS",
        str(max(1, round(solver.WARMUP_ITERS * scale))),
        "SOLVER.CHECKPOINT_PERIOD",
        str(iterations),
    ]


def train_and_test(config, folder, iterations, opts):
    """Train `iterations` (unless done before) and evaluate; returns (seconds, evaluation)."""
    seconds_file = os.path.join(folder, "train_seconds")
    if not os.path.isfile(os.path.join(folder, "model_final.pth")):
        os.makedirs(folder, exist_ok=True)
        start = time.time()
        args = ["tools/train_net.py", "--config-file", config, "--skip-test", "OUTPUT_DIR"]
        run_tool(
            [*args, folder, *scaled_schedule(config, iterations), *opts],
            os.path.join(folder, "train.log"),
        )
        with open(seconds_file, "w") as f:
            f.write(f"{time.time() - start:.0f}")
    weights = os.path.join(folder, "model_final.pth")
    args = ["tools/test_net.py", "--config-file", config, "MODEL.WEIGHT", weights]
    run_tool([*args, "OUTPUT_DIR", folder, *opts], os.path.join(folder, "test.log"))
    with open(seconds_file) as f:
        return float(f.read()), metrics_records(folder)[1][-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per detector")
    parser.add_argument("--probe", type=int, default=30, help="iterations of the speed probe")
    parser.add_argument("--out", default="output/equal_time")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    rows = []
    for index, (name, config) in enumerate(DETECTORS.items()):
        folder = os.path.join(args.out, f"detector{index}")
        per_iteration = probe_seconds_per_iteration(
            config, folder + "_probe", args.probe, args.opts
        )
        iterations = max(1, int(args.minutes * 60 / per_iteration))
        print(f"== {name}: {per_iteration:.3f} s/it -> {iterations} iterations", flush=True)
        seconds, evaluation = train_and_test(config, folder, iterations, args.opts)
        rows.append((name, per_iteration, iterations, seconds, evaluation))
    print(f"\n| detector | s/it | iterations | training wall time | {' | '.join(COLUMNS)} |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for name, per_iteration, iterations, seconds, evaluation in rows:
        cells = " | ".join(f"{100 * evaluation[c]:.1f}" for c in COLUMNS)
        wall = f"{int(seconds) // 60} min {int(seconds) % 60} s"
        print(f"| {name} | {per_iteration:.2f} | {iterations} | {wall} | {cells} |")


if __name__ == "__main__":
    main()
