"""The iteration-based training loop."""

import datetime
import logging
import os
import re
import signal
import threading
import time
import warnings

import torch
import torch.distributed as dist

from paa_core.utils.comm import get_rank, get_world_size, is_main_process, reduce_dict
from paa_core.utils.errors import InputError
from paa_core.utils.events import listen
from paa_core.utils.metric_logger import MetricLogger
from paa_core.utils.metrics_file import append_metrics

LOG_PERIOD = 20


def _summary_writer(log_dir):
    """A TensorBoard writer on the main process when tensorboard is installed, else None."""
    if not is_main_process():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=log_dir)


def check_losses_finite(loss_dict, iteration, last_checkpoint):
    """Stop with the iteration, the offending losses and the checkpoint to go back to
    instead of training on NaN/inf."""
    bad = {k: v.item() for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        where = (
            f"the last checkpoint is {last_checkpoint}, but resuming from it with the same settings "
            "will likely diverge again (lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS)"
            if last_checkpoint
            else "no checkpoint was saved"
        )
        raise InputError(f"non-finite loss at iteration {iteration}: {listed}; {where}")


class StopSignals:
    """Turns SIGINT (Ctrl-C) and SIGTERM (a scheduler's notice) into a request to stop
    after the current iteration; a second Ctrl-C stops at once.

    `requested()` is collective in a process group, so all processes stop at the same
    iteration even when the signal reached them at different moments.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self.previous = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def batches(self, data_loader):
        """The loader's batches; they end early when the stop signal also ended one of the
        loader's workers while this process waited for a batch (workers ignore stop signals,
        see data/build.py, but one signalled while it starts has not begun to yet)."""
        iterator = iter(data_loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError:
                if self.received is None:
                    raise
                return
            yield batch

    def requested(self):
        """The signal number that asked to stop (any process's), or 0."""
        flag = torch.tensor([self.received or 0])
        if get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)


def backward_and_step(losses, optimizer, scaler=None):
    """Backward pass and optimizer step; with a float16 `scaler` the loss is scaled first and
    a step whose gradients overflowed is skipped (the scaler then lowers its scale)."""
    if scaler is None:
        losses.backward()
        optimizer.step()
        return
    scaler.scale(losses).backward()
    scaler.step(optimizer)
    scaler.update()


def do_train(
    model,
    data_loader,
    optimizer,
    scheduler,
    checkpointer,
    device,
    checkpoint_period,
    arguments,
    amp_dtype=None,
    scaler=None,
):
    """Train until `len(data_loader)` iterations (the sampler's total), starting after
    `arguments["iteration"]`; `arguments` is saved with every checkpoint.

    The scheduler is stepped at the start of each iteration, before the optimizer, so
    iteration i trains with the schedule's lr at i, as in the reference's training.
    With `amp_dtype` (bfloat16 or float16) the forward runs under autocast in that dtype;
    float16 comes with a GradScaler `scaler`, whose state travels in `arguments["grad_scaler"]`
    (saved with every checkpoint, restored from it here), so a resumed run scales as the
    uninterrupted one would. SIGINT/SIGTERM save a checkpoint at the current iteration and
    raise an InputError that says where it is; the same command then resumes.
    """
    with StopSignals() as stop:
        logger = logging.getLogger("paa_core.trainer")
        logger.info("Start training")
        meters = MetricLogger(delimiter="  ")
        max_iter = len(data_loader)
        start_iter = arguments["iteration"]
        writer = _summary_writer(checkpointer.save_dir) if checkpointer.save_dir else None
        rank, world_size = get_rank(), get_world_size()
        if scaler is not None and "grad_scaler" in arguments:
            scaler.load_state_dict(arguments["grad_scaler"])
        elif scaler is None:
            arguments.pop("grad_scaler", None)  # resumed without float16: nothing to carry on
        model.train()
        start_training_time = time.time()
        end = time.time()
        for iteration, (images, targets, idxs) in enumerate(
            stop.batches(data_loader), start_iter + 1
        ):
            data_time = time.time() - end
            arguments["iteration"] = iteration
            logger.debug(
                "iteration %d rank %d/%d images %s", iteration, rank, world_size, list(idxs)
            )

            with warnings.catch_warnings():
                # PyTorch warns when the scheduler steps before the first optimizer step; that
                # order is deliberate here (see the docstring).
                warnings.filterwarnings(
                    "ignore", message=re.escape("Detected call of `lr_scheduler.step()`")
                )
                scheduler.step()

            images = images.to(device)
            targets = [target.to(device) for target in targets]
            with (
                listen() as published,
                torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
            ):
                loss_dict = model(images, targets)
            check_losses_finite(loss_dict, iteration, checkpointer.last_checkpoint())
            losses = sum(loss_dict.values())

            loss_dict_reduced = reduce_dict(loss_dict)
            meters.update(loss=sum(loss_dict_reduced.values()), **loss_dict_reduced)
            # Statistics the model published (e.g. PAA's positives per GT), this process's.
            meters.update(**{k: v for k, v in published.items() if isinstance(v, float)})

            optimizer.zero_grad()
            backward_and_step(losses, optimizer, scaler)

            batch_time = time.time() - end
            end = time.time()
            meters.update(time=batch_time, data=data_time)

            if iteration % LOG_PERIOD == 0 or iteration == max_iter:
                eta_seconds = meters.time.global_avg * (max_iter - iteration)
                lr = optimizer.param_groups[0]["lr"]
                fields = [
                    f"eta: {datetime.timedelta(seconds=int(eta_seconds))}",
                    f"iter: {iteration}",
                    str(meters),
                    f"lr: {lr:.6f}",
                ]
                if device.type == "cuda":
                    fields.append(
                        f"max mem: {torch.cuda.max_memory_allocated() / 1024.0 / 1024.0:.0f}MB"
                    )
                logger.info(meters.delimiter.join(fields))
                if writer is not None:
                    for name, meter in meters.meters.items():
                        writer.add_scalar(f"train/{name}", meter.median, iteration)
                    writer.add_scalar("train/lr", lr, iteration)
                if checkpointer.save_dir and is_main_process():
                    append_metrics(
                        checkpointer.save_dir,
                        {
                            "iteration": iteration,
                            "lr": lr,
                            **{k: m.median for k, m in meters.meters.items()},
                        },
                    )
            if scaler is not None and (iteration % checkpoint_period == 0 or iteration == max_iter):
                arguments["grad_scaler"] = scaler.state_dict()
            if iteration % checkpoint_period == 0:
                checkpointer.save(f"model_{iteration:07d}", **arguments)
            if iteration == max_iter:
                checkpointer.save("model_final", **arguments)
            if iteration < max_iter and stop.requested():
                break
        iteration = arguments["iteration"]
        signum = stop.requested() if iteration < max_iter else 0
        if signum:
            name = f"model_{iteration:07d}"
            if iteration % checkpoint_period or iteration == start_iter:
                if scaler is not None:
                    arguments["grad_scaler"] = scaler.state_dict()
                checkpointer.save(name, **arguments)
            saved = os.path.join(checkpointer.save_dir, name + ".pth")
            raise InputError(
                f"stopped by {signal.Signals(signum).name} after iteration {iteration} of {max_iter}; "
                f"saved {saved}; run the same command to resume"
            )

        total_training_time = time.time() - start_training_time
        done = max(max_iter - start_iter, 1)
        logger.info(
            "Total training time: %s (%.4f s / it)",
            datetime.timedelta(seconds=int(total_training_time)),
            total_training_time / done,
        )
        if writer is not None:
            writer.close()
