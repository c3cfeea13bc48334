#!/usr/bin/env python
"""Evaluate a detector checkpoint (or every checkpoint of a folder) on DATASETS.TEST.

    python tools/test_net.py --config-file F [--ckpt W.pth] [OPTS]
    python tools/test_net.py --config-file F MODEL.WEIGHT W.pth TEST.IMS_PER_BATCH 4
    python tools/test_net.py --config-file F --eval-dir OUTPUT/  # every model_*.pth in it

Weights, first found: --ckpt, MODEL.WEIGHT given on the command line, OUTPUT_DIR's
last_checkpoint, MODEL.WEIGHT of the config file. With MODEL.RPN_ONLY True a whole Faster
R-CNN checkpoint gives its backbone and RPN (the proposal recall, AR@100/AR@1000 by size);
its ROI-head keys are left unused, said in one log line. The APs are also appended, at the
checkpoint's iteration, to metrics.jsonl in OUTPUT_DIR (or in the --eval-dir folder).
"""

import glob
import os
import pickle

import torch

from paa_core.checkpoint.checkpoint import DetectronCheckpointer
from paa_core.engine.cli import InputError, run_cli, run_test, setup
from paa_core.modeling.detector import build_detection_model
from paa_core.utils.comm import is_main_process
from paa_core.utils.metrics_file import append_evaluation


def checkpoint_iteration(path):
    """The iteration a training checkpoint (.pth) was saved at, or None for other weights."""
    if not path.endswith(".pth") or not os.path.isfile(path):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError):  # an old or foreign format: no iteration to read
        return None
    return checkpoint.get("iteration") if isinstance(checkpoint, dict) else None


def evaluate_checkpoint(cfg, model, distributed, output_dir, weight=None, metrics_dir=""):
    """Load `weight` (None: OUTPUT_DIR's last checkpoint) and evaluate; results on the main process.

    The APs are appended to `metrics_dir`/metrics.jsonl at the checkpoint's iteration,
    when it is known, for tools/plot_training.py.
    """
    checkpointer = DetectronCheckpointer(cfg, model, save_dir=cfg.OUTPUT_DIR)
    iteration = checkpointer.load(weight, use_latest=weight is None).get("iteration")
    results = run_test(cfg, model, distributed, output_dir)
    if iteration is None and weight is not None:
        iteration = checkpoint_iteration(weight)
    if metrics_dir and iteration is not None and is_main_process():
        append_evaluation(metrics_dir, iteration, results)
    return results


def _headline(results):
    """Box AP, or the proposal recall AR@100 of an RPN-only model."""
    if "bbox" in results:
        return f"AP {100 * results['bbox']['AP']:.2f}"
    return f"AR@100 {100 * results['box_proposal']['AR@100']:.2f}"


def main():
    def add_arguments(parser):
        parser.add_argument("--ckpt", default=None, help="checkpoint to evaluate")
        parser.add_argument(
            "--eval-dir",
            dest="eval_dir",
            default=None,
            help="evaluate every model_*.pth in this folder",
        )

    args, cfg, distributed, logger = setup("PAA evaluation", add_arguments)
    model = build_detection_model(cfg)
    model.to(torch.device(cfg.MODEL.DEVICE))

    if args.eval_dir is None:
        weight = args.ckpt
        if weight is None and "MODEL.WEIGHT" in args.opts[::2]:
            weight = cfg.MODEL.WEIGHT
        has_latest = bool(cfg.OUTPUT_DIR) and os.path.isfile(
            os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
        )
        if weight is None and not has_latest:
            weight = cfg.MODEL.WEIGHT
        if weight == "":
            raise InputError(
                "no weights to evaluate: give --ckpt, MODEL.WEIGHT or an OUTPUT_DIR with a last_checkpoint"
            )
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference") if cfg.OUTPUT_DIR else ""
        evaluate_checkpoint(cfg, model, distributed, output_dir, weight, cfg.OUTPUT_DIR)
        return

    checkpoints = sorted(glob.glob(os.path.join(args.eval_dir, "model_*.pth")))
    if not checkpoints:
        raise InputError(f"--eval-dir {args.eval_dir}: no model_*.pth files in it")
    summary = []
    for path in checkpoints:
        name = os.path.splitext(os.path.basename(path))[0]
        results = evaluate_checkpoint(
            cfg,
            model,
            distributed,
            os.path.join(args.eval_dir, "inference", name),
            path,
            args.eval_dir,
        )
        if is_main_process():
            summary.extend(f"{name}  {dataset}  {_headline(r)}" for dataset, r in results.items())
    if is_main_process():
        logger.info("AP per checkpoint:\n%s", "\n".join(summary))


if __name__ == "__main__":
    run_cli(main)
