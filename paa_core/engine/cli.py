"""What `tools/train_net.py` and `tools/test_net.py` share: arguments, config, processes, logging,
and turning bad input into one clear line instead of a traceback."""
import argparse
import logging
import os
import random
import re
import sys

import numpy as np
import torch
import torch.distributed as dist
from yacs.config import CfgNode as CN

from paa_core.config import get_cfg
from paa_core.config.reference import check_reference_switches
from paa_core.data import make_data_loader
from paa_core.utils.comm import get_rank, synchronize
from paa_core.utils.imports import import_file
from paa_core.utils.logger import setup_logger
from paa_core.utils.miscellaneous import mkdir, save_config
from paa_core.utils.model_serialization import WeightMismatchError

from .bbox_aug import make_bbox_aug
from .inference import inference


class InputError(Exception):
    """Bad user input (config, dataset, weights): reported in one line, exit code 1."""


# Errors that mean "the input is wrong", not "the program is wrong".
USER_ERRORS = (InputError, WeightMismatchError, FileNotFoundError)


def run_cli(main):
    """Call `main()`; a user error prints `error: <message>` on stderr and exits with 1."""
    try:
        main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def make_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    # torch.distributed.launch passes --local-rank (or --local_rank); torchrun sets LOCAL_RANK.
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def _rephrase_yacs_error(error, where):
    """yacs' KeyError/AssertionError/ValueError text as a message naming the key and where it was set."""
    text = str(error.args[0]) if error.args else str(error)
    unknown = re.match(r"Non-existent (?:config )?key: (\S+)", text)
    if unknown:
        return f"{where}: unknown config key {unknown.group(1)}"
    return f"{where}: {text}"


def _ints_as_floats(defaults, loaded):
    """`loaded` with whole numbers given for float keys made floats (the reference's tree
    has `WEIGHT_DECAY_BIAS: 0`, ours 0.0; yacs would refuse either in the other)."""
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, CN) else None
        if isinstance(value, CN):
            _ints_as_floats(default, value)
        elif isinstance(default, float) and type(value) is int:
            loaded[key] = float(value)
    return loaded


def _ints_as_floats_in_opts(defaults, opts):
    """Command-line KEY VALUE pairs, whole numbers for float keys written as floats."""
    opts = list(opts)
    for i in range(0, len(opts) - 1, 2):
        node = defaults
        for name in str(opts[i]).split("."):
            node = node.get(name) if isinstance(node, CN) else None
        if isinstance(node, float) and str(opts[i + 1]).lstrip("-").isdigit():
            opts[i + 1] = str(float(opts[i + 1]))
    return opts


def load_config(cfg, config_file, opts):
    """Merge `config_file` and then `opts` into `cfg` (not frozen), as one-line InputErrors.

    Files written for the reference implementation load as they are; one that switches
    on a part paa_core leaves out (MODEL.MASK_ON True, ...) is refused here."""
    if not os.path.isfile(config_file):
        raise InputError(f"config file not found: {config_file}")
    try:
        with open(config_file) as f:
            loaded = cfg.load_cfg(f)
    except Exception as e:  # a YAML syntax error, whatever its class
        raise InputError(f"{config_file}: cannot parse: {str(e).splitlines()[0]}") from None
    try:
        cfg.merge_from_other_cfg(_ints_as_floats(cfg, loaded))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        raise InputError(_rephrase_yacs_error(e, config_file)) from None
    try:
        cfg.merge_from_list(_ints_as_floats_in_opts(cfg, opts))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        raise InputError(_rephrase_yacs_error(e, "command line")) from None
    try:
        check_reference_switches(cfg)
    except ValueError as e:
        raise InputError(str(e)) from None


def resolve_device(cfg):
    """MODEL.DEVICE "cuda" without a visible GPU falls back to "cpu" (with a warning)."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("paa_core").warning("MODEL.DEVICE is %s but no GPU is visible: using the CPU",
                                              cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"


def init_distributed(cfg, local_rank):
    """Join the process group when launched with several processes; returns `distributed`.

    NCCL when the model runs on GPUs (each process on GPU `local_rank`, which then is
    the current device that "cuda" means), gloo on the CPU.
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


def check_dataset_names(cfg, keys):
    """Fail early, in one line, on a dataset name the catalog does not know."""
    catalog = import_file("paa_core.config.paths_catalog", cfg.PATHS_CATALOG, True).DatasetCatalog
    for key in keys:
        names = getattr(cfg.DATASETS, key)
        if not names:
            raise InputError(f"DATASETS.{key} is empty: name at least one dataset")
        for name in names:
            try:
                catalog.get(name)
            except (KeyError, RuntimeError, ValueError) as e:
                raise InputError(f"DATASETS.{key}: {e}") from None


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(description, add_arguments=None):
    """Parse arguments, build the config, start the process group, logging and seeds.

    Returns (args, cfg, distributed, logger); cfg is frozen, saved to OUTPUT_DIR/config.yml.
    """
    cfg = get_cfg()
    parser = make_parser(description)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    load_config(cfg, args.config_file, args.opts)
    # Logging to the console first, so the device warning is visible before the file exists.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    resolve_device(cfg)
    distributed = init_distributed(cfg, args.local_rank)
    cfg.freeze()

    output_dir = cfg.OUTPUT_DIR
    if output_dir:
        mkdir(output_dir)
    rank = get_rank()
    logger = setup_logger("paa_core", output_dir, rank)
    logger.info("Using %d process(es), device %s", int(os.environ.get("WORLD_SIZE", 1)), cfg.MODEL.DEVICE)
    logger.info("Arguments: %s", args)
    logger.info("torch %s, CUDA available: %s", torch.__version__, torch.cuda.is_available())
    logger.info("Loaded configuration file %s", args.config_file)
    logger.debug("Running with config:\n%s", cfg)
    if output_dir and rank == 0:
        path = os.path.join(output_dir, "config.yml")
        save_config(cfg, path)
        logger.info("Saved the merged config to %s", path)
    # Different ranks draw different augmentations; DDP makes the initial weights equal.
    seed_everything(cfg.SEED + rank)
    return args, cfg, distributed, logger


def run_test(cfg, model, distributed, output_dir):
    """Evaluate `model` on every DATASETS.TEST set; outputs go to `<output_dir>/<dataset>`.

    Returns {dataset name: results dict} on the main process.
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
            box_only=cfg.MODEL.RPN_ONLY and not cfg.MODEL.PAA_ON,
            device=cfg.MODEL.DEVICE,
            expected_results=cfg.TEST.EXPECTED_RESULTS,
            expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
            output_folder=output_folder,
            bbox_aug=bbox_aug,
        )
        synchronize()
    return all_results
