"""The iteration-based training loop."""

import datetime
import logging
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from paa_core.checkpoint.checkpoint import Checkpointer
from paa_core.structures.image_list import ImageList
from paa_core.utils.comm import get_rank, get_world_size, is_main_process, reduce_dict
from paa_core.utils.errors import InputError
from paa_core.utils.events import listen
from paa_core.utils.metric_logger import MetricLogger
from paa_core.utils.metrics_file import append_metrics

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

LOG_PERIOD = 20

logger = logging.getLogger("paa_core.trainer")


class TrainingStopped(Exception):
    """A run stopped on request (SIGINT/SIGTERM) after saving its current iteration: not a
    fault of the input. The tools report it like an InputError, one `error:` line and exit
    code 1, so that a scheduler sees the job unfinished; the same command resumes it."""


def _summary_writer(log_dir: str) -> "SummaryWriter | None":
    """A TensorBoard writer on the main process when tensorboard is installed, else None."""
    if not is_main_process():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=log_dir)


def check_losses_finite(loss_dict: dict[str, Tensor], iteration: int, last_checkpoint: str) -> None:
    """Stop with the iteration, the offending losses and the checkpoint to go back to
    instead of training on NaN/inf.

    Args:
        loss_dict: this iteration's losses.
        iteration: named in the message.
        last_checkpoint: the checkpoint to go back to, "" when none was saved.

    Raises:
        InputError: when a loss is NaN or infinite.
    """
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
        self.received: int | None = None
        self.previous: dict = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def batches(self, data_loader: Iterable) -> Iterator:
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

    def requested(self) -> int:
        """The signal number that asked to stop (any process's), or 0."""
        flag = torch.tensor([self.received or 0])
        if get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)


def backward_and_step(
    losses: Tensor, optimizer: Optimizer, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backward pass and optimizer step; with a float16 `scaler` the loss is scaled first and
    a step whose gradients overflowed is skipped (the scaler then lowers its scale).

    Args:
        losses: the scalar loss of the iteration.
        optimizer: steps the parameters.
        scaler: float16 training's loss scaler, or None.
    """
    if scaler is None:
        losses.backward()
        optimizer.step()
        return
    scaler.scale(losses).backward()
    scaler.step(optimizer)
    scaler.update()


class TrainOptions(NamedTuple):
    """How `do_train` runs, read from the config by tools/train_net.py.

    `amp_dtype` (bfloat16 or float16) runs the forward under autocast in that dtype; float16
    comes with a GradScaler `scaler`, whose state travels in `arguments["grad_scaler"]`.
    """

    device: torch.device
    checkpoint_period: int
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None


class TrainingLog:
    """The run's meters, its log line every LOG_PERIOD iterations, TensorBoard scalars and
    `metrics.jsonl` (for tools/plot_training.py)."""

    def __init__(self, save_dir: str, max_iter: int, device: torch.device):
        self.meters = MetricLogger(delimiter="  ")
        self.save_dir, self.max_iter, self.device = save_dir, max_iter, device
        self.writer = _summary_writer(save_dir) if save_dir else None
        self.started = time.time()

    def update(
        self, losses: dict[str, Tensor], published: dict, batch_time: float, data_time: float
    ) -> None:
        """Record one iteration: the losses averaged over processes, the statistics the model
        published (e.g. PAA's positives per GT, this process's) and the times."""
        self.meters.update(loss=sum(losses.values()), **losses)
        self.meters.update(**{k: v for k, v in published.items() if isinstance(v, float)})
        self.meters.update(time=batch_time, data=data_time)

    def write(self, iteration: int, lr: float) -> None:
        """Log, plot and append the smoothed meters at every LOG_PERIOD-th and the last iteration."""
        if iteration % LOG_PERIOD and iteration != self.max_iter:
            return
        meters = self.meters
        eta = datetime.timedelta(seconds=int(meters.time.global_avg * (self.max_iter - iteration)))
        fields = [f"eta: {eta}", f"iter: {iteration}", str(meters), f"lr: {lr:.6f}"]
        if self.device.type == "cuda":
            fields.append(f"max mem: {torch.cuda.max_memory_allocated() / 1024.0 / 1024.0:.0f}MB")
        logger.info(meters.delimiter.join(fields))
        if self.writer is not None:
            for name, meter in meters.meters.items():
                self.writer.add_scalar(f"train/{name}", meter.median, iteration)
            self.writer.add_scalar("train/lr", lr, iteration)
        if self.save_dir and is_main_process():
            medians = {k: m.median for k, m in meters.meters.items()}
            append_metrics(self.save_dir, {"iteration": iteration, "lr": lr, **medians})

    def finish(self, iterations: int) -> None:
        """Log the total training time of this process's `iterations`."""
        total = time.time() - self.started
        logger.info(
            "Total training time: %s (%.4f s / it)",
            datetime.timedelta(seconds=int(total)),
            total / max(iterations, 1),
        )

    def __enter__(self) -> "TrainingLog":
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()


def _restore_scaler(scaler: torch.amp.GradScaler | None, arguments: dict) -> None:
    """Give the loss scaler the state saved with the checkpoint, so that a resumed run scales
    as the uninterrupted one would; without float16 there is nothing to carry on."""
    if scaler is not None and "grad_scaler" in arguments:
        scaler.load_state_dict(arguments["grad_scaler"])
    elif scaler is None:
        arguments.pop("grad_scaler", None)


def _step_scheduler(scheduler: LRScheduler) -> None:
    """Step the lr schedule after the optimizer, as the reference does on PyTorch >= 1.1:
    iteration i (counting from 1) trains with the schedule's lr at i - 1, so the first
    iteration uses exactly the warm-up factor and a milestone m takes effect at iteration
    m + 1 (docs/DESIGN.md §8)."""
    with warnings.catch_warnings():
        # A float16 loss scaler skips the optimizer steps whose gradients overflowed, and
        # PyTorch then warns that the schedule stepped without an optimizer step; the
        # schedule counts iterations, not updates, so that is intended.
        warnings.filterwarnings(
            "ignore", message=re.escape("Detected call of `lr_scheduler.step()`")
        )
        scheduler.step()


def _forward(
    model: torch.nn.Module, images: ImageList, targets: list, options: TrainOptions
) -> tuple[dict[str, Tensor], dict]:
    """The model's losses on one batch and what it published while computing them."""
    images = images.to(options.device)
    targets = [target.to(options.device) for target in targets]
    amp = options.amp_dtype
    with (
        listen() as published,
        torch.autocast(options.device.type, dtype=amp, enabled=amp is not None),
    ):
        return model(images, targets), published


def _save(checkpointer: Checkpointer, name: str, arguments: dict, options: TrainOptions) -> None:
    """Save a checkpoint with `arguments`, the loss scaler's state included."""
    if options.scaler is not None:
        arguments["grad_scaler"] = options.scaler.state_dict()
    checkpointer.save(name, **arguments)


def _save_on_schedule(
    checkpointer: Checkpointer, arguments: dict, options: TrainOptions, max_iter: int
) -> None:
    """Save every `checkpoint_period` iterations and `model_final` at the last one."""
    iteration = arguments["iteration"]
    if iteration % options.checkpoint_period == 0:
        _save(checkpointer, f"model_{iteration:07d}", arguments, options)
    if iteration == max_iter:
        _save(checkpointer, "model_final", arguments, options)


def _stop_if_requested(
    stop: StopSignals,
    checkpointer: Checkpointer,
    arguments: dict,
    options: TrainOptions,
    start_iter: int,
    max_iter: int,
) -> None:
    """After a stop signal, make sure a checkpoint of the current iteration exists and raise
    TrainingStopped saying where it is. Collective: every process calls it."""
    iteration = arguments["iteration"]
    signum = stop.requested() if iteration < max_iter else 0
    if not signum:
        return
    name = f"model_{iteration:07d}"
    if iteration % options.checkpoint_period or iteration == start_iter:
        _save(checkpointer, name, arguments, options)
    saved = os.path.join(checkpointer.save_dir, name + ".pth")
    raise TrainingStopped(
        f"stopped by {signal.Signals(signum).name} after iteration {iteration} of {max_iter}; "
        f"saved {saved}; run the same command to resume"
    )


def do_train(
    model: torch.nn.Module,
    data_loader: Iterable,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    checkpointer: Checkpointer,
    arguments: dict,
    options: TrainOptions,
) -> None:
    """Train until `len(data_loader)` iterations (the sampler's total), starting after
    `arguments["iteration"]`; `arguments` is saved with every checkpoint.

    Args:
        model: the detector; returns its loss dict in training mode.
        data_loader: yields `(images, targets, image ids)` for the remaining iterations.
        optimizer, scheduler: the solver; the scheduler steps after each optimizer step.
        checkpointer: saves every `options.checkpoint_period` iterations and at the end.
        arguments: `{"iteration": ...}` and whatever else travels with the checkpoints.
        options: device, checkpoint period, mixed precision.

    Raises:
        TrainingStopped: after SIGINT/SIGTERM, once the current iteration is saved.
        InputError: when a loss is not finite.
    """
    logger.info("Start training")
    max_iter, start_iter = len(data_loader), arguments["iteration"]
    rank, world_size = get_rank(), get_world_size()
    _restore_scaler(options.scaler, arguments)
    model.train()
    log = TrainingLog(checkpointer.save_dir, max_iter, options.device)
    with StopSignals() as stop, log:
        end = time.time()
        for iteration, (images, targets, idxs) in enumerate(
            stop.batches(data_loader), start_iter + 1
        ):
            data_time = time.time() - end
            arguments["iteration"] = iteration
            logger.debug(
                "iteration %d rank %d/%d images %s", iteration, rank, world_size, list(idxs)
            )
            loss_dict, published = _forward(model, images, targets, options)
            check_losses_finite(loss_dict, iteration, checkpointer.last_checkpoint())
            losses = sum(loss_dict.values())
            reduced = reduce_dict(loss_dict)
            optimizer.zero_grad()
            backward_and_step(losses, optimizer, options.scaler)
            lr = optimizer.param_groups[0]["lr"]  # the lr this iteration trained with
            _step_scheduler(scheduler)
            log.update(reduced, published, time.time() - end, data_time)
            end = time.time()
            log.write(iteration, lr)
            _save_on_schedule(checkpointer, arguments, options, max_iter)
            if iteration < max_iter and stop.requested():
                break
        _stop_if_requested(stop, checkpointer, arguments, options, start_iter, max_iter)
        log.finish(max_iter - start_iter)
