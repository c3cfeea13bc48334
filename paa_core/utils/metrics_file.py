"""OUTPUT_DIR/metrics.jsonl: a run's numbers over iterations, one JSON object per line.

The trainer appends a training line at every logging step: {"iteration", "lr", and the
window median of each logged meter: "loss", "loss_cls", "loss_reg", "loss_iou_pred",
"pos_per_gt" (PAA positives per GT box), "time", "data" (seconds per iteration)}.
An evaluation of a checkpoint appends {"iteration", "dataset", "AP", "AP50", ...}
(AP in [0, 1]). A resumed run appends again; readers keep the last line per iteration
(and dataset). `tools/plot_training.py` draws the file.
"""

import json
import logging
import os

from paa_core.utils.errors import InputError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def append_metrics(output_dir, record):
    """Append `record` (a dict with "iteration") as one line of OUTPUT_DIR/metrics.jsonl;
    a last line cut short by a killed run is ended first, so the record starts a line."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, METRICS_FILE), "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(json.dumps(record).encode() + b"\n")


def append_evaluation(output_dir, iteration, results):
    """One evaluation line per dataset of `results` ({dataset: {"bbox": {"AP": ...}}}, or
    {"box_proposal": {"AR@100": ...}} for a proposal-only model)."""
    for dataset, result in results.items():
        metrics = {k: v for task in result.values() for k, v in task.items()}
        append_metrics(
            output_dir, {"iteration": iteration, "dataset": dataset.split(":")[0], **metrics}
        )


def read_metrics(path):
    """(training lines, evaluation lines) of a metrics file, each sorted by iteration.

    A line that is not a record (a run killed while writing it leaves a partial one) is
    skipped with a warning naming it; a file without any record is an InputError."""
    train, evals, skipped = {}, {}, []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                iteration = int(record["iteration"])
            except (ValueError, KeyError, TypeError) as e:
                skipped.append(f"line {number} ({e})")
                continue
            if "dataset" in record:
                evals[(iteration, record["dataset"])] = record
            else:
                train[iteration] = record
    if skipped and not (train or evals):
        raise InputError(f"{path}: not a metrics file: no record, {skipped[0]}")
    if skipped:
        logger.warning("%s: skipped what is not a metrics record: %s", path, "; ".join(skipped))
    return ([train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)])
