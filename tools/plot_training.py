#!/usr/bin/env python
"""Draw a training run's losses, lr, PAA positives per GT and AP over iterations.

    python tools/plot_training.py OUTPUT_DIR [--output FILE.png]

Reads OUTPUT_DIR/metrics.jsonl (written by tools/train_net.py and tools/test_net.py)
and writes OUTPUT_DIR/training_curves.png (or FILE.png). Needs matplotlib.
"""

import argparse
import os
import sys

from paa_core.utils.errors import InputError
from paa_core.utils.metrics_file import METRICS_FILE
from paa_core.utils.miscellaneous import refuse_overwriting_inputs
from paa_core.visualization.plotting import PlottingUnavailable
from paa_core.visualization.training_plot import plot_training


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    parser.add_argument("--output", default=None, metavar="FILE.png")
    args = parser.parse_args()
    try:
        if args.output:
            metrics = os.path.join(args.output_dir, METRICS_FILE)
            refuse_overwriting_inputs(
                f"--output {args.output}", [args.output], {metrics: "the metrics file it draws"}
            )
        print(plot_training(args.output_dir, args.output))
    except (PlottingUnavailable, FileNotFoundError, ValueError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
