#!/usr/bin/env python
"""Train PAA, then evaluate the final model on DATASETS.TEST.

    python tools/train_net.py --config-file configs/paa/paa_R_50_FPN_1x.yaml [OPTS]
    torchrun --nproc_per_node=8 tools/train_net.py --config-file ... [OPTS]
    python -m torch.distributed.launch --nproc_per_node=8 tools/train_net.py --config-file ...

A run resumes from OUTPUT_DIR/last_checkpoint when there is one, if its settings are
those of OUTPUT_DIR/config.yml (--resume-changed: continue it with new ones).
Ctrl-C or SIGTERM saves a checkpoint at the current iteration; the same command resumes.
"""

import os

import torch
from torch.nn.parallel import DistributedDataParallel

from paa_core.checkpoint.checkpoint import DetectronCheckpointer
from paa_core.data import make_data_loader
from paa_core.engine.cli import InputError, run_cli, run_test, setup
from paa_core.engine.trainer import TrainOptions, do_train
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import make_amp_dtype, make_grad_scaler, make_lr_scheduler, make_optimizer
from paa_core.utils.comm import get_rank, is_main_process
from paa_core.utils.metrics_file import METRICS_FILE, append_evaluation
from paa_core.utils.miscellaneous import remove_temporaries
from paa_core.utils.rng import ProcessRNG
from paa_core.visualization.plotting import INSTALL_HINT, have_matplotlib
from paa_core.visualization.training_plot import plot_training


def train(cfg, distributed, logger):
    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model.to(device)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)

    # Weights are loaded before wrapping, so every rank holds the same ones from the start.
    # The random states are saved too, so that a resumed run computes what an uninterrupted one would.
    checkpointer = DetectronCheckpointer(
        cfg,
        model,
        optimizer,
        scheduler,
        cfg.OUTPUT_DIR,
        get_rank() == 0,
        states={"rng": ProcessRNG()},
    )
    if cfg.OUTPUT_DIR and get_rank() == 0:
        for path in remove_temporaries(cfg.OUTPUT_DIR):
            logger.info("Removed %s, left by a run killed while saving", path)
    arguments = {"iteration": 0}
    arguments.update(checkpointer.load(cfg.MODEL.WEIGHT))
    if arguments["iteration"] > cfg.SOLVER.MAX_ITER:
        raise InputError(
            f"SOLVER.MAX_ITER is {cfg.SOLVER.MAX_ITER} but the run in {cfg.OUTPUT_DIR} is already "
            f"at iteration {arguments['iteration']}"
        )
    if distributed:
        device_ids = [torch.cuda.current_device()] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    data_loader = make_data_loader(
        cfg, is_train=True, is_distributed=distributed, start_iter=arguments["iteration"]
    )
    amp_dtype = make_amp_dtype(cfg, device)
    options = TrainOptions(
        device, cfg.SOLVER.CHECKPOINT_PERIOD, amp_dtype, make_grad_scaler(amp_dtype, device)
    )
    do_train(model, data_loader, optimizer, scheduler, checkpointer, arguments, options)
    return model, arguments["iteration"]


def main():
    args, cfg, distributed, logger = setup("PAA training", training=True)
    model, iteration = train(cfg, distributed, logger)
    if not args.skip_test:
        results = run_test(
            cfg,
            model,
            distributed,
            os.path.join(cfg.OUTPUT_DIR, "inference") if cfg.OUTPUT_DIR else "",
        )
        if cfg.OUTPUT_DIR and is_main_process():
            append_evaluation(cfg.OUTPUT_DIR, iteration, results)
    if (
        cfg.OUTPUT_DIR
        and is_main_process()
        and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, METRICS_FILE))
    ):
        if have_matplotlib():
            logger.info("Training curves: %s", plot_training(cfg.OUTPUT_DIR))
        else:
            logger.info(
                "Training curves need matplotlib (%s), then: python tools/plot_training.py %s",
                INSTALL_HINT,
                cfg.OUTPUT_DIR,
            )


if __name__ == "__main__":
    run_cli(main)
