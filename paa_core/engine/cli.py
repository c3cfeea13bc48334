"""What `tools/train_net.py` and `tools/test_net.py` share: arguments, config, processes, logging,
and turning bad input into one clear line instead of a traceback."""

import argparse
import logging
import os
import random
import re
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from yacs.config import CfgNode as CN

from paa_core.checkpoint.checkpoint import CATALOG_PREFIX, catalog_url
from paa_core.checkpoint.model_serialization import WeightMismatchError
from paa_core.config import get_cfg
from paa_core.config.detector import PROPOSALS_ONLY, detector_kind
from paa_core.config.loading import load_catalog, load_config
from paa_core.data import make_data_loader
from paa_core.data.build import dataset_args
from paa_core.data.transforms import check_train_sizes
from paa_core.modeling.detector.detectors import check_buildable
from paa_core.solver import check_solver
from paa_core.utils.comm import get_rank, get_world_size, synchronize
from paa_core.utils.errors import InputError
from paa_core.utils.logger import setup_logger
from paa_core.utils.miscellaneous import mkdir, save_config

from .bbox_aug import check_bbox_aug, make_bbox_aug
from .inference import inference
from .trainer import TrainingStopped

# Errors that mean "the input is wrong", not "the program is wrong".
USER_ERRORS = (InputError, WeightMismatchError, FileNotFoundError)

# Settings that do not change what a training run computes: a run in OUTPUT_DIR may be
# resumed with other values of these (all of TEST.*, and the keys below).
NOT_RUN_DEFINITION = ("OUTPUT_DIR", "DATALOADER.NUM_WORKERS")


# How gloo and NCCL report that another process of the group is gone.
PEER_LOST = re.compile(r"Connection (closed|reset) by peer|remote worker crash|NCCL.*abort", re.I)


def _in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized() and get_world_size() > 1


def _fail(message: object) -> NoReturn:
    """Print `error: <message>` and exit with 1. In a process group the exit is immediate:
    a normal interpreter exit can wait forever for the others' pending collectives."""
    print(f"error: {message}", file=sys.stderr)
    if _in_process_group():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.exit(1)


def run_cli(main: Callable[[], object]) -> None:
    """Call `main()`; a user error or a stopped training run prints `error: <message>` on
    stderr and exits with 1.

    Under torchrun, the other processes of a run whose process failed lose their
    connection to it: each says so in one line instead of the backend's traceback."""
    try:
        main()
    except (*USER_ERRORS, TrainingStopped) as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail("interrupted")
    except RuntimeError as e:
        if not (_in_process_group() and PEER_LOST.search(str(e))):
            raise
        _fail(
            f"process {get_rank()} of {get_world_size()} stopped: another process of the run "
            "has ended (its own error line says why)"
        )


def make_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every tool takes: --config-file, the launchers' local rank, KEY VALUE
    overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="path to the config file"
    )
    # torch.distributed.launch passes --local-rank (or --local_rank); torchrun sets LOCAL_RANK.
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None)
    # Parsed with parse_intermixed_args, so flags may also follow the overrides.
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE pairs")
    return parser


def resolve_device(cfg: CN) -> str | None:
    """Check MODEL.DEVICE; "cuda" without a visible GPU falls back to "cpu" (set in `cfg`).

    Returns:
        The warning to log about the fallback, or None.
    """
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.MODEL.DEVICE):
        raise InputError(
            f"MODEL.DEVICE: unknown device {cfg.MODEL.DEVICE!r}, expected cpu, cuda or cuda:N"
        )
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        warning = f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but no GPU is visible: using the CPU"
        cfg.MODEL.DEVICE = "cpu"
        return warning
    return None


def check_schedule(cfg: CN) -> None:
    """Refuse a schedule with a non-positive iteration count, checkpoint period or batch."""
    for key in ("MAX_ITER", "CHECKPOINT_PERIOD", "IMS_PER_BATCH"):
        if cfg.SOLVER[key] <= 0:
            raise InputError(f"SOLVER.{key} must be positive, got {cfg.SOLVER[key]}")


def _flatten(node: dict, prefix: str = "") -> dict:
    """{"A.B.C": value} for a nested config."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def run_definition_changes(cfg: CN, saved_config: str) -> list[str]:
    """The settings that define a training run and differ between `cfg` and the config.yml
    of a run, as ["KEY saved (now new)", ...]; keys that one of them lacks are skipped."""
    with open(saved_config) as f:
        try:
            saved = _flatten(CN.load_cfg(f))
        except Exception as e:
            raise InputError(f"{saved_config}: cannot parse: {str(e).splitlines()[0]}") from None
    current = _flatten(cfg)
    changes = []
    for key, value in current.items():
        if key.startswith("TEST.") or key in NOT_RUN_DEFINITION or key not in saved:
            continue
        old = saved[key]
        if isinstance(value, tuple) and isinstance(old, list):
            old = tuple(old)
        if old != value:
            changes.append(f"{key} {old!r} (now {value!r})")
    return changes


def check_run_definition(cfg: CN, resume_changed: bool) -> list[str]:
    """Refuse to continue the run in OUTPUT_DIR under settings other than its own, before
    anything in the folder is touched; `--resume-changed` continues it on purpose.

    Returns:
        The changes that `resume_changed` accepted.
    """
    saved_config = os.path.join(cfg.OUTPUT_DIR, "config.yml")
    if not cfg.OUTPUT_DIR or not os.path.isfile(saved_config):
        return []
    changes = run_definition_changes(cfg, saved_config)
    if changes and not resume_changed:
        listed = ", ".join(changes[:4]) + (
            f" and {len(changes) - 4} more" if len(changes) > 4 else ""
        )
        raise InputError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds a run with other settings: {listed}; "
            "to start afresh choose another OUTPUT_DIR, to continue that run with the new "
            "settings add --resume-changed"
        )
    return changes


def init_distributed(cfg: CN, local_rank: int | None) -> bool:
    """Join the process group when launched with several processes.

    NCCL when the model runs on GPUs (each process on GPU `local_rank`, which then is
    the current device that "cuda" means), gloo on the CPU.

    Returns:
        Whether there are several processes.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    on_gpu = cfg.MODEL.DEVICE.startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(local_rank)
    if distributed:
        dist.init_process_group(backend="nccl" if on_gpu else "gloo", init_method="env://")
        synchronize()
    return distributed


def check_config(cfg: CN, dataset_keys: Sequence[str]) -> None:
    """Refuse, in one line naming the key, every value of `cfg` that the config alone shows
    to be unusable, before a tool loads weights or writes a file: the model's keys, the
    datasets of DATASETS.<key> for `dataset_keys`, what training reads ("TRAIN") and
    test-time augmentation ("TEST"), a catalog:// MODEL.WEIGHT."""
    check_buildable(cfg)
    catalog = load_catalog(cfg).DatasetCatalog
    for key in dataset_keys:
        dataset_args(catalog, key, cfg.DATASETS[key])
    if cfg.MODEL.WEIGHT.startswith(CATALOG_PREFIX):
        catalog_url(cfg, cfg.MODEL.WEIGHT, "MODEL.WEIGHT")
    if "TRAIN" in dataset_keys:
        check_schedule(cfg)
        check_solver(cfg)
        check_train_sizes(cfg)
    if "TEST" in dataset_keys and cfg.TEST.BBOX_AUG.ENABLED:
        check_bbox_aug(cfg)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ToolSetup(NamedTuple):
    """What `setup` gives a tool: its parsed arguments, the frozen config, whether it runs
    in a process group, and its logger."""

    args: argparse.Namespace
    cfg: CN
    distributed: bool
    logger: logging.Logger


def parse_arguments(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None,
    training: bool,
) -> argparse.Namespace:
    """The arguments of every tool (`make_parser`), of training and of the tool itself."""
    parser = make_parser(description)
    if training:
        parser.add_argument(
            "--skip-test",
            dest="skip_test",
            action="store_true",
            help="do not evaluate the final model",
        )
        parser.add_argument(
            "--resume-changed",
            dest="resume_changed",
            action="store_true",
            help="continue the run in OUTPUT_DIR although its settings changed",
        )
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_intermixed_args()


def load_checked_config(args: argparse.Namespace, training: bool) -> tuple[CN, list[str]]:
    """The config `args` give, refused in one line, before anything is written, if the run
    cannot use it (`check_config`, and for `training` `check_run_definition`).

    Returns:
        The config (not frozen) and the warnings to log.
    """
    cfg = get_cfg()
    load_config(cfg, args.config_file, args.opts)
    if training:
        check_config(cfg, ("TRAIN",) if args.skip_test else ("TRAIN", "TEST"))
    else:
        check_config(cfg, ("TEST",))
    device_warning = resolve_device(cfg)
    warnings = [device_warning] if device_warning else []
    if training:
        changes = check_run_definition(cfg, args.resume_changed)
        if changes:
            warnings.append(
                f"Continuing the run in {cfg.OUTPUT_DIR} with changed settings "
                f"(--resume-changed): {', '.join(changes)}"
            )
    return cfg, warnings


def start_logging(cfg: CN, args: argparse.Namespace, warnings: Sequence[str]) -> logging.Logger:
    """The "paa_core" logger, to OUTPUT_DIR/log.txt too (the folder is created), opened
    with `warnings` and the run's arguments, versions and config."""
    if cfg.OUTPUT_DIR:
        mkdir(cfg.OUTPUT_DIR)
    logger = setup_logger("paa_core", cfg.OUTPUT_DIR, get_rank())
    for warning in warnings:
        logger.warning("%s", warning)
    logger.info(
        "Using %d process(es), device %s", int(os.environ.get("WORLD_SIZE", 1)), cfg.MODEL.DEVICE
    )
    logger.info("Arguments: %s", args)
    logger.info("torch %s, CUDA available: %s", torch.__version__, torch.cuda.is_available())
    logger.info("Loaded configuration file %s", args.config_file)
    logger.debug("Running with config:\n%s", cfg)
    return logger


def save_run_definition(cfg: CN, logger: logging.Logger) -> None:
    """OUTPUT_DIR/config.yml, the merged config that defines a training run (main process)."""
    if cfg.OUTPUT_DIR and get_rank() == 0:
        path = os.path.join(cfg.OUTPUT_DIR, "config.yml")
        save_config(cfg, path)
        logger.info("Saved the merged config to %s", path)


def setup(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    training: bool = False,
) -> ToolSetup:
    """Parse arguments, build and check the config, start the process group, logging and
    seeds.

    For `training` (--skip-test: no evaluation), the config must match the run already in
    OUTPUT_DIR (if any), unless `--resume-changed` is given, and is saved as
    OUTPUT_DIR/config.yml, the run's definition.

    Args:
        description: the tool's --help text.
        add_arguments: adds the tool's own arguments to the parser.
        training: train_net.py's arguments, checks and config.yml.
    """
    args = parse_arguments(description, add_arguments, training)
    cfg, warnings = load_checked_config(args, training)
    distributed = init_distributed(cfg, args.local_rank)
    cfg.freeze()
    logger = start_logging(cfg, args, warnings)
    if training:
        save_run_definition(cfg, logger)
    # Different ranks draw different augmentations; DDP makes the initial weights equal.
    seed_everything(cfg.SEED + get_rank())
    return ToolSetup(args, cfg, distributed, logger)


def run_test(cfg: CN, model: nn.Module, distributed: bool, output_dir: str) -> dict:
    """Evaluate `model` on every DATASETS.TEST set; outputs go to `<output_dir>/<dataset>`.

    Returns:
        {dataset name: results dict} on the main process (see `inference`).
    """
    model = model.module if distributed else model
    bbox_aug = make_bbox_aug(cfg) if cfg.TEST.BBOX_AUG.ENABLED else None
    data_loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    all_results = {}
    for dataset_name, data_loader in zip(cfg.DATASETS.TEST, data_loaders):
        output_folder = None
        if output_dir:
            output_folder = os.path.join(output_dir, dataset_name.split(":")[0])
            mkdir(output_folder)
        all_results[dataset_name] = inference(
            model,
            data_loader,
            dataset_name=dataset_name,
            iou_types=("bbox",),
            box_only=detector_kind(cfg) == PROPOSALS_ONLY,
            device=cfg.MODEL.DEVICE,
            expected_results=cfg.TEST.EXPECTED_RESULTS,
            expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
            output_folder=output_folder,
            bbox_aug=bbox_aug,
        )
        synchronize()
    return all_results
